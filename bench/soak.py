"""Soak: many concurrent page sessions against ``python app.py``, as browsers.

``--sessions`` page sessions (default 200) each send ``--turns`` messages
(default 5) with a growing history, all at once, through Gradio's queue
protocol over raw SSE (``POST /gradio_api/queue/join``, then the
``/gradio_api/queue/data`` stream), as the page does. Models are mixed: the
three wire-server providers (OpenAI, Anthropic and Ollama dialects of
``tests.wire``, streaming with small delays) and, for every ``--local-every``-th
session, the embedded model. Every message carries its session's own tokens.

Checked and reported:

- ``errors``: turns that did not end in a completed answer;
- ``crosstalk``: answers, or requests the wire server received, holding another
  session's token (every answer and every upstream request must hold only its
  own session's text);
- ``rss_growth_mb``: the app's resident memory after the run minus before it
  (both after warming up: every path once, then one turn of as many pages at
  once, so the working set for that many streams is in place; target ≤ 50 MB);
- ``local_late``: embedded-model turns neither answered nor fallen back within
  ``CHAT_FIRST_TOKEN_TIMEOUT`` plus ``--local-grace`` seconds.

The baseline is measured in the same run: the median wire-model turn of one
session alone, before the crowd. ``p50_ratio`` is the crowd's median over it.
Prints ONE JSON line; ``ok`` is true when every target holds.

    python bench/soak.py [--sessions 200] [--turns 5] [--local-every 8]
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

import httpx  # noqa: E402

from tests.conftest import free_port  # noqa: E402
from tests.servers import rss_mb, stop_process, wait_http  # noqa: E402
from tests.wire import WireServer  # noqa: E402

SYSTEM = "Be brief."
MODELS = ("openai:wire-gpt", "anthropic:wire-claude", "ollama:llama3.2:latest")
LOCAL = "local:smollm2"
CATALOGUE = """\
[[models]]
id = "openai:wire-gpt"
label = "Wire GPT"
tier = "fast"
context_window = 16000

[[models]]
id = "anthropic:wire-claude"
label = "Wire Claude"
tier = "fast"
context_window = 16000

[routing]
fallback = ["openai:wire-gpt", "anthropic:wire-claude", "ollama:llama3.2:latest", "local:smollm2"]
"""
TOKEN = re.compile(r"\bk[0-9a-f]{10}\b")
TOKENS: dict[str, int] = {}  # every session token sent → its page
RSS_TARGET_MB = 50.0


@dataclass
class Turn:
    session: int
    model: str
    seconds: float = 0.0
    ok: bool = False
    answer: str = ""
    fell_back: bool = False
    error: str = ""


@dataclass
class Page:
    """One browser page: a session hash and the chat as the Chatbot holds it."""

    index: int
    model: str
    session_hash: str = field(default_factory=lambda: uuid.uuid4().hex[:11])
    history: list[dict[str, Any]] = field(default_factory=list)


async def send(client: httpx.AsyncClient, url: str, fn_index: int, page: Page, turn: int,
               max_tokens: int, padding: int = 0) -> Turn:
    """One message from ``page``, as the browser sends it; the page's history grows.
    ``padding`` adds that many words to the message."""
    words = " ".join(f"w{turn}{k}" for k in range(4 + turn + padding))
    # Wire models stream their echo a token every 10 ms, like a fast provider.
    pace = "" if page.model == LOCAL else " [[delay:0.01]]"
    # A token nobody could guess (not even a model imitating the pattern).
    token = f"k{uuid.uuid4().hex[:10]}"
    TOKENS[token] = page.index
    message = f"Session {token}: tell me more about {words}{pace}"
    result = Turn(page.index, page.model)
    started = time.monotonic()
    try:
        joined = await client.post(url + "gradio_api/queue/join", json={
            "data": [message, page.history, page.model, SYSTEM, 0.5, max_tokens],
            "fn_index": fn_index, "session_hash": page.session_hash, "event_data": None, "trigger_id": None,
        })
        joined.raise_for_status()
        event_id = joined.json().get("event_id")
        final = None
        async with client.stream("GET", url + f"gradio_api/queue/data?session_hash={page.session_hash}") as stream:
            async for line in stream.aiter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") not in (None, event_id):
                    continue
                if msg.get("msg") == "process_completed":
                    if not msg.get("success"):
                        raise RuntimeError(str(msg.get("output"))[:200])
                    final = msg["output"]["data"][0]
                    break
        if final is None:
            raise RuntimeError("the stream ended without a result")
        plain = [m for m in final if not (m.get("metadata") or {}).get("title")]
        result.answer = _text(plain[-1]["content"]) if plain else ""
        titles = [str((m.get("metadata") or {}).get("title")) for m in final if (m.get("metadata") or {}).get("title")]
        result.fell_back = any(t.startswith("⚠️ ") and "failed" in t for t in titles)
        failed = any(t.startswith("❌") for t in titles)
        result.ok = bool(result.answer.strip()) and not failed
        if not result.ok:
            result.error = "; ".join(titles)[:200] or "no answer"
        # The page's chat now holds the user message and everything shown.
        page.history += [{"role": "user", "content": [{"type": "text", "text": message}], "metadata": None}]
        page.history += [{**m, "content": [{"type": "text", "text": _text(m.get("content"))}]} for m in final]
    except Exception as exc:  # reported as an error of this turn
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    result.seconds = time.monotonic() - started
    return result


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(p) for p in content)
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or "")
    return ""


async def run_pages(url: str, pages: list[Page], turns: int, max_tokens: int, padding: int = 0) -> list[Turn]:
    # Idle connections are dropped before the server's keep-alive timeout (uvicorn: 5 s, the same as
    # httpx's default), or a request sent on one the server is closing fails before any response (a
    # browser would resend it; httpx does not) and is counted against the app.
    limits = httpx.Limits(max_connections=len(pages) * 2 + 10, max_keepalive_connections=len(pages) * 2,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(180, connect=30), limits=limits) as client:
        config = (await client.get(url + "config")).json()
        fn_index = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "chat")

        async def page_run(page: Page) -> list[Turn]:
            return [await send(client, url, fn_index, page, t, max_tokens, padding) for t in range(turns)]

        per_page = await asyncio.gather(*(page_run(p) for p in pages))
    return [t for turns_ in per_page for t in turns_]


def crosstalk(results: list[Turn], wire: WireServer) -> list[str]:
    """Every answer and upstream request holding another session's token."""
    bad = []
    for turn in results:
        if any(TOKENS.get(t, turn.session) != turn.session for t in TOKEN.findall(turn.answer)):
            bad.append(f"answer of session {turn.session} ({turn.model}): {turn.answer[:160]}")
    for record in wire.chat_requests:
        sessions = {TOKENS[t] for t in TOKEN.findall(json.dumps(record.body, ensure_ascii=False)) if t in TOKENS}
        if len(sessions) > 1:
            bad.append(f"request to {record.body.get('model')} holds sessions {sorted(sessions)}")
    return bad


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--local-every", type=int, default=8, help="every Nth session uses the embedded model")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--first-token-timeout", type=float, default=10.0)
    parser.add_argument("--local-grace", type=float, default=10.0,
                        help="seconds past the first-token limit an embedded-model turn may take to end")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, \
            WireServer(ollama_models=["llama3.2:latest"]) as wire:
        cwd = Path(tmp)
        (cwd / "models.toml").write_text(CATALOGUE, encoding="utf-8")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "OLLAMA_", "CHAT_"))}
        env.update({
            "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False",
            "CHAT_ENV_FILE": "", "CHAT_MODELS_FILE": str(cwd / "models.toml"),
            "OPENAI_API_KEY": "sk-soak", "OPENAI_BASE_URL": wire.openai_base_url,
            "ANTHROPIC_API_KEY": "sk-soak", "ANTHROPIC_BASE_URL": wire.url, "OLLAMA_HOST": wire.url,
            "CHAT_FIRST_TOKEN_TIMEOUT": str(args.first_token_timeout),
            "CHAT_STALL_TIMEOUT": str(args.first_token_timeout),
            # Every page is served at once (the default 64 would queue the rest in Gradio).
            "CHAT_CONCURRENCY_LIMIT": str(max(64, args.sessions + 8)),
            "CHAT_MAX_THREADS": str(max(200, args.sessions + 40)),
            "CHAT_COOLDOWN_SECONDS": "0",
            # Every page comes from 127.0.0.1: one identity, not capped at 4 streams.
            "CHAT_MAX_CONCURRENT_STREAMS": "0",
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        })
        log = open(cwd / "app.log", "wb")
        app = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=cwd, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_http(url, 120, app)
            httpx.post(url + "gradio_api/run/refresh_models", json={"data": ["auto"]}, timeout=30)
            # Warm-up: the embedded model loaded and warm, every path exercised once.
            warm = [Page(10_000 + i, m) for i, m in enumerate([*MODELS, LOCAL] * 3)]
            for _ in range(60):
                warmed = asyncio.run(run_pages(url, warm[-4:], 1, args.max_tokens))
                if all(t.ok and not t.fell_back for t in warmed):
                    break
                time.sleep(1)
            asyncio.run(run_pages(url, warm, 2, args.max_tokens))
            # Each embedded instance reads a long prompt once: llama.cpp sizes its
            # compute buffers to the largest batch it has seen.
            asyncio.run(run_pages(url, [Page(10_100 + i, LOCAL) for i in range(2)], 1, args.max_tokens,
                                  padding=600))
            # And once at full concurrency: memory reaches its working level for
            # that many streams; growth after this is what the soak measures.
            crowd = [Page(30_000 + i, MODELS[i % len(MODELS)]) for i in range(args.sessions)]
            asyncio.run(run_pages(url, crowd, 1, args.max_tokens))
            baseline = asyncio.run(run_pages(url, [Page(20_000, MODELS[0])], 5, args.max_tokens))
            if not all(t.ok for t in baseline):
                raise RuntimeError(f"the baseline session failed: {[t.error for t in baseline]}")
            before = rss_mb(app.pid)

            pages = [Page(i, LOCAL if args.local_every and i % args.local_every == 0 else MODELS[i % len(MODELS)])
                     for i in range(args.sessions)]
            started = time.monotonic()
            results = asyncio.run(run_pages(url, pages, args.turns, args.max_tokens))
            duration = time.monotonic() - started
            time.sleep(2)
            after = rss_mb(app.pid)
            alive = httpx.get(url + "config", timeout=10).status_code == 200
        finally:
            stop_process(app, 15)
            log.close()
        talk = crosstalk(results, wire)

    local = [t for t in results if t.model == LOCAL]
    limit = args.first_token_timeout + args.local_grace
    wire_seconds = sorted(t.seconds for t in results if t.model != LOCAL)
    base = statistics.median(t.seconds for t in baseline)
    errors = [t for t in results if not t.ok]
    figures = {
        "bench": "soak",
        "sessions": args.sessions,
        "turns": args.turns,
        "requests": len(results),
        "errors": len(errors),
        "crosstalk": len(talk),
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "rss_growth_mb": round(after - before, 1),
        "local_requests": len(local),
        "local_answered": sum(1 for t in local if t.ok and not t.fell_back),
        "local_fell_back": sum(1 for t in local if t.ok and t.fell_back),
        "local_late": sum(1 for t in local if t.seconds > limit),
        "local_max_s": round(max((t.seconds for t in local), default=0.0), 2),
        "p50_s": round(statistics.median(wire_seconds), 3) if wire_seconds else None,
        "p95_s": round(wire_seconds[int(len(wire_seconds) * 0.95) - 1], 3) if wire_seconds else None,
        "baseline_p50_s": round(base, 3),
        "p50_ratio": round(statistics.median(wire_seconds) / base, 2) if wire_seconds and base else None,
        "duration_s": round(duration, 1),
        "app_alive": alive,
        "first_errors": [t.error for t in errors[:3]],
        "crosstalk_examples": talk[:3],
    }
    figures["ok"] = (not errors and not talk and figures["rss_growth_mb"] <= RSS_TARGET_MB
                     and figures["local_late"] == 0 and alive)
    print(json.dumps(figures, ensure_ascii=False), flush=True)
    return figures


if __name__ == "__main__":
    main()
