"""Load: 200 concurrent API sessions × 5 turns, through one replica and through
nginx in front of two replicas sharing one Redis.

Each session has its own API key (so its own identity, limits and leases) and
its own unguessable token; it sends ``--turns`` streaming requests to
``/v1/chat/completions``, each carrying the whole conversation so far (growing,
and different per session). Upstream is the wire server (OpenAI dialect,
echoing each message a token every 10 ms). Three runs of the same workload:

- ``direct``: the wire server itself (the baseline, same machine, same run);
- ``one_replica``: ``python app.py`` alone (in-process store);
- ``nginx_two_replicas_redis``: ``deploy/nginx.conf`` in front of two replicas
  with ``REDIS_URL`` on one real redis-server.

Per run: ``errors`` (a turn not ending in ``[DONE]`` with text), ``crosstalk``
(answers, and requests the wire server received, holding another session's
token), time to first token p50/p95, and per app process ``rss_growth_mb``
(resident memory after the run minus after a warm-up turn of every session;
target ≤ 50 MB). ``p95_ratio_*``: a run's p95 over direct's. Prints ONE JSON
line; ``ok`` is true when there are 0 errors, 0 cross-talk and every growth is
within target. Run it under ``flock /tmp/relay-heavy.lock``.

    python bench/load.py [--sessions 200] [--turns 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

import httpx  # noqa: E402

from tests.conftest import free_port  # noqa: E402
from tests.nginx_server import NginxServer  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.servers import rss_mb, stop_process, wait_http  # noqa: E402
from tests.wire import WireServer  # noqa: E402

CATALOGUE = """\
[[models]]
id = "openai:wire-gpt"
label = "Wire GPT"
tier = "fast"
context_window = 32000

[routing]
fallback = ["openai:wire-gpt"]
"""
TOKEN = re.compile(r"\bk[0-9a-f]{12}\b")
RSS_TARGET_MB = 50.0


class Session:
    def __init__(self, index: int) -> None:
        self.index = index
        self.key = f"sk-load-{index}-{uuid.uuid4().hex[:8]}"
        self.history: list[dict[str, str]] = []


async def turn(client: httpx.AsyncClient, url: str, session: Session, n: int, tokens: dict[str, int],
               *, direct: bool) -> tuple[float | None, str]:
    """One streamed turn; (seconds to first text or None on error, error text)."""
    token = f"k{uuid.uuid4().hex[:12]}"
    tokens[token] = session.index
    words = " ".join(f"t{n}x{k}" for k in range(6 + 2 * n))
    message = {"role": "user", "content": f"Session {token} turn {n}: {words} [[delay:0.01]]"}
    body = {"model": "wire-gpt" if direct else "openai:wire-gpt", "stream": True,
            "messages": [*session.history, message]}
    headers = {} if direct else {"Authorization": f"Bearer {session.key}"}
    path = "chat/completions" if direct else "v1/chat/completions"
    started = time.perf_counter()
    first = None
    text: list[str] = []
    done = False
    try:
        async with client.stream("POST", url + path, json=body, headers=headers) as response:
            if response.status_code != 200:
                return None, f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return None, str(chunk["error"])[:200]
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        first = first or time.perf_counter() - started
                        text.append(piece)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    answer = "".join(text)
    if not done or not answer:
        return None, "no [DONE] or no text"
    foreign = {t for t in TOKEN.findall(answer) if tokens.get(t) != session.index}
    if foreign:
        return None, f"crosstalk: {sorted(foreign)[:3]}"
    session.history += [message, {"role": "assistant", "content": answer}]
    return first, ""


async def run(url: str, sessions: list[Session], turns: int, *, direct: bool, tokens: dict[str, int],
              start_turn: int = 0) -> dict:
    limits = httpx.Limits(max_connections=len(sessions) + 10, max_keepalive_connections=len(sessions) + 10)
    ttft: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(session: Session) -> None:
            for n in range(start_turn, start_turn + turns):
                seconds, error = await turn(client, url, session, n, tokens, direct=direct)
                if seconds is None:
                    errors.append(error)
                else:
                    ttft.append(seconds)

        await asyncio.gather(*(one(s) for s in sessions))
    ttft.sort()
    return {
        "turns": len(sessions) * turns, "errors": len(errors), "crosstalk": sum("crosstalk" in e for e in errors),
        "error_samples": errors[:3], "seconds": round(time.perf_counter() - started, 2),
        "ttft_p50_ms": round(statistics.median(ttft) * 1000, 1) if ttft else None,
        "ttft_p95_ms": round(ttft[int(0.95 * (len(ttft) - 1))] * 1000, 1) if ttft else None,
    }


def upstream_crosstalk(wire: WireServer, tokens: dict[str, int]) -> int:
    """Requests the wire server received holding tokens of more than one session."""
    bad = 0
    for record in wire.chat_requests:
        text = json.dumps(record.body)
        if len({tokens.get(t, -1) for t in TOKEN.findall(text)}) > 1:
            bad += 1
    return bad


def start_app(port: int, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "OLLAMA_", "CHAT_"))}
    full.update({"GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "CHAT_ENV_FILE": "",
                 "GRADIO_ANALYTICS_ENABLED": "False", **env})
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=cwd, env=full,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/health?live=1", 90, proc)
    return proc


async def measure(url: str, procs: list[subprocess.Popen], sessions: list[Session], turns: int,
                  wire: WireServer, tokens: dict[str, int]) -> dict:
    await run(url, sessions, 1, direct=False, tokens=tokens, start_turn=0)  # warm-up: every session once
    before = [rss_mb(p.pid) for p in procs]
    result = await run(url, sessions, turns, direct=False, tokens=tokens, start_turn=1)
    await asyncio.sleep(1.0)
    after = [rss_mb(p.pid) for p in procs]
    result["rss_growth_mb"] = [round(a - b, 1) for a, b in zip(after, before)]
    result["upstream_crosstalk"] = upstream_crosstalk(wire, tokens)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--turns", type=int, default=5)
    args = parser.parse_args()
    tokens: dict[str, int] = {}
    out: dict = {"sessions": args.sessions, "turns": args.turns}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        cwd = Path(tmp)
        (cwd / "models.toml").write_text(CATALOGUE)
        wire = stack.enter_context(WireServer(ollama_models=[]))
        sessions = [Session(i) for i in range(args.sessions)]
        env = {"OPENAI_BASE_URL": wire.openai_base_url, "OPENAI_API_KEY": "sk-upstream-fake",
               "CHAT_MODELS_FILE": str(cwd / "models.toml"), "CHAT_LOCAL_MODEL_ENABLED": "false",
               "CHAT_OLLAMA_ENABLED": "false", "CHAT_LOG_LEVEL": "WARNING",
               "CHAT_API_KEYS": ",".join(f"s{s.index}:{s.key}" for s in sessions),
               "CHAT_MAX_CONCURRENT_STREAMS": "4", "CHAT_RATE_LIMIT": "1000/minute"}

        direct_sessions = [Session(i) for i in range(args.sessions)]
        asyncio.run(run(wire.openai_base_url + "/", direct_sessions, 1, direct=True, tokens=tokens))
        out["direct"] = asyncio.run(run(wire.openai_base_url + "/", direct_sessions, args.turns, direct=True,
                                        tokens=tokens, start_turn=1))

        port = free_port()
        proc = start_app(port, env, cwd, cwd / "one.log")
        try:
            out["one_replica"] = asyncio.run(measure(f"http://127.0.0.1:{port}/", [proc], sessions, args.turns,
                                                     wire, tokens))
        finally:
            stop_process(proc)

        redis = stack.enter_context(RedisServer(free_port(), cwd / "redis"))
        ports = [free_port(), free_port()]
        procs = [start_app(p, {**env, "REDIS_URL": redis.url, "CHAT_TRUSTED_PROXIES": "127.0.0.1"}, cwd,
                           cwd / f"replica-{i}.log") for i, p in enumerate(ports)]
        try:
            nginx = stack.enter_context(NginxServer(free_port(), ports, cwd / "nginx"))
            sessions = [Session(i) for i in range(args.sessions)]
            # Same keys as the configured ones (the replicas were started with them).
            for s, key in zip(sessions, env["CHAT_API_KEYS"].split(",")):
                s.key = key.split(":", 1)[1]
            out["nginx_two_replicas_redis"] = asyncio.run(measure(nginx.url, procs, sessions, args.turns, wire,
                                                                  tokens))
        finally:
            for p in procs:
                p.terminate()  # both at once, then each waited for (killed if stuck)
            for p in procs:
                stop_process(p)
    direct_p95 = out["direct"]["ttft_p95_ms"]
    for name in ("one_replica", "nginx_two_replicas_redis"):
        p95 = out[name]["ttft_p95_ms"]
        out[f"p95_ratio_{name}"] = round(p95 / direct_p95, 2) if p95 and direct_p95 else None
    runs = [out["one_replica"], out["nginx_two_replicas_redis"]]
    out["ok"] = all(r["errors"] == 0 and r["crosstalk"] == 0 and r["upstream_crosstalk"] == 0
                    and all(g <= RSS_TARGET_MB for g in r["rss_growth_mb"]) for r in runs)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
