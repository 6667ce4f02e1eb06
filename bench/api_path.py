"""What the API path adds: ``python app.py``'s /v1/chat/completions against the
same upstream read directly, in the same run.

A wire server (``python -m tests.wire --keep-alive``, its own process: it keeps
connections open between requests, as providers' servers do) speaks OpenAI's SSE;
``python app.py`` (its own process) has one model, ``openai:wire``, on it. One
client (httpx, asyncio, reading ``data:`` lines as any SSE client does) reads
the wire server directly and through the app, alternating, so both see the
same machine load:

- ``ttft_1``: time to the first text of a short answer at 1 stream, ``--runs``
  times each; added = app − direct at p50 and p95. Targets ≤ 5 / ≤ 15 ms.
- ``streams_50``: 50 concurrent streams of 200 tokens at 50 tokens/s each;
  p95 time to first text (target ≤ 2× direct's) and aggregate tokens/s
  (target ≥ 0.8× direct's).

  Each concurrent scenario runs a first round for each target, then
  ``--rounds`` more of each (``scenario``); the figures pool the measured
  rounds (the p95 over every stream of them, CPU over every token: /proc's
  CPU counts in 10 ms ticks). The first round is reported apart
  (``first_round``): there the app opens its upstream connections, one per
  stream, as after a start or a pause of over 5 s; in the later ones,
  back to back as under steady load, it finds them open (the single-stream
  runs warm up likewise).
- ``long_4000``: one 4,000-token answer at 1,000 tokens/s; total time
  (target ≤ 1.05× direct's).
- ``streams_20``: issue #10's load, as ``bench/ui_path.py`` puts it on the page:
  20 concurrent streams, first token at 100 ms, then 500 tokens/s, 200 tokens.
- ``app_cpu_us_per_token``: the app process's CPU (``/proc/<pid>/stat``,
  user + system) over the tokens it relayed, in the 20-stream, 50-stream and
  long runs. (Issue #10's target for the API path, on its 20-stream load:
  ≤ 25 µs. At 50 tokens/s per stream every token is an event of its own, so
  the 50-stream figure is the cost per event.) ``app_cpu_over_idle_us_per_token``
  is the same less what the app burns when it serves nothing
  (``app_idle_cpu_ms_per_s``, measured first: Gradio's queue polls every 1 ms),
  so a slow answer is not charged for the clock. It includes the provider
  adapter's parsing of each upstream chunk, so ``layer`` separates the API's
  own share: in this process, a provider yielding one token per event (no
  network) is read through ``ChatService.respond`` alone and through the API's
  ASGI app (``StreamingResponse``, one send per event — the worst case), and
  the difference per event is what the API adds.

Prints one JSON line. Run it alone: ``flock /tmp/relay-heavy.lock python bench/api_path.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import cpu_seconds, free_port, stop_process, tls_files, wait_http  # noqa: E402

CATALOGUE = """\
[[models]]
id = "openai:wire"
label = "Wire"
tier = "fast"
context_window = 128000
"""


class Target:
    def __init__(self, name: str, url: str, model: str) -> None:
        self.name, self.url, self.model = name, url, model


async def one(client: httpx.AsyncClient, target: Target, prompt: str) -> tuple[float, float, int]:
    """(seconds to the first text, total seconds, characters of text) of one streamed answer."""
    body = {"model": target.model, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    started = time.perf_counter()
    first = None
    chars = 0
    async with client.stream("POST", target.url, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{target.name}: HTTP {response.status_code}: {(await response.aread())[:200]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"{target.name}: {chunk['error']}")
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    chars += len(text)
                    if first is None:
                        first = time.perf_counter() - started
    return (first if first is not None else float("nan")), time.perf_counter() - started, chars


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def ttft_single(client: httpx.AsyncClient, direct: Target, app: Target, runs: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"direct": [], "app": []}
    for i in range(runs + 5):
        for target in (direct, app) if i % 2 else (app, direct):
            first, _, _ = await one(client, target, f"Short answer {i} [[tokens:5]]")
            if i >= 5:  # warm-up: connection pools, first-call imports
                times[target.name].append(first * 1000)
    d, a = times["direct"], times["app"]
    return {
        "direct_p50_ms": round(pct(d, 0.5), 2), "direct_p95_ms": round(pct(d, 0.95), 2),
        "app_p50_ms": round(pct(a, 0.5), 2), "app_p95_ms": round(pct(a, 0.95), 2),
        "added_p50_ms": round(pct(a, 0.5) - pct(d, 0.5), 2), "added_p95_ms": round(pct(a, 0.95) - pct(d, 0.95), 2),
    }


async def idle_cpu_per_s(pid: int, seconds: float = 3.0) -> float:
    """The app's CPU per second while it serves nothing (Gradio's queue polls every 1 ms)."""
    cpu = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - cpu) / seconds


async def concurrent(clients: list[httpx.AsyncClient], target: Target, streams: int, tokens: int, pace: str,
                     pid: int | None) -> dict[str, object]:
    """One round: ``streams`` answers at once, each from a client of its own (as
    many users would: one shared pool of 50+ connections costs httpcore time
    that grows with their number, in the client, and would blur both sides);
    their TTFTs, the wall time and the app's CPU."""
    prompt = f"Many [[tokens:{tokens}]] {pace}"
    cpu = cpu_seconds(pid) if pid else 0.0
    started = time.perf_counter()
    results = await asyncio.gather(*(one(clients[i], target, prompt) for i in range(streams)))
    wall = time.perf_counter() - started
    chars = sum(r[2] for r in results)
    expected = streams * len("".join(f"w{i} " for i in range(tokens)))
    if chars != expected:
        raise RuntimeError(f"{target.name}: {chars} characters received, {expected} expected")
    return {"ttfts_ms": [r[0] * 1000 for r in results], "tokens": streams * tokens, "wall_s": wall,
            "cpu_s": cpu_seconds(pid) - cpu if pid else 0.0}


def pooled(runs: list[dict[str, object]], idle: float = 0.0) -> dict[str, float]:
    """Rounds of one target taken together: p95 TTFT over every stream, tokens/s
    over the summed wall time, the app's CPU per token over every token."""
    ttfts = [t for run in runs for t in run["ttfts_ms"]]  # type: ignore[attr-defined]
    tokens = sum(run["tokens"] for run in runs)  # type: ignore[misc]
    wall = sum(run["wall_s"] for run in runs)  # type: ignore[misc]
    cpu = sum(run["cpu_s"] for run in runs)  # type: ignore[misc]
    return {"p95_ttft_ms": round(pct(ttfts, 0.95), 1), "tokens_per_s": round(tokens / wall, 1),
            "wall_s": round(wall / len(runs), 3), "cpu_us_per_token": round(cpu / tokens * 1e6, 1),
            "cpu_over_idle_us_per_token": round(max(0.0, cpu - idle * wall) / tokens * 1e6, 1)}


async def scenario(clients: list[httpx.AsyncClient], direct: Target, app: Target, streams: int, tokens: int, pace: str,
                   pid: int, idle: float, rounds: int) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(direct, app, the first rounds): a first round each, then ``rounds`` of
    the app back to back, then ``rounds`` direct, each target's pooled.

    In its first round the app opens its upstream connections, one per
    stream, as after a start or 5 s without a request (idle connections are
    closed then, as the SDKs' clients do): reported apart. The later rounds
    follow each other, as the requests of a steadily loaded app do, and find
    the connections open."""
    cold_d = await concurrent(clients, direct, streams, tokens, pace, None)
    cold_a = await concurrent(clients, app, streams, tokens, pace, pid)
    app_runs = [await concurrent(clients, app, streams, tokens, pace, pid) for _ in range(rounds)]
    direct_runs = [await concurrent(clients, direct, streams, tokens, pace, None) for _ in range(rounds)]
    cold = {"direct_p95_ttft_ms": pooled([cold_d])["p95_ttft_ms"], "app_p95_ttft_ms": pooled([cold_a])["p95_ttft_ms"]}
    cold["ttft_ratio"] = round(cold["app_p95_ttft_ms"] / cold["direct_p95_ttft_ms"], 2)
    return pooled(direct_runs), pooled(app_runs, idle), cold


async def layer(events: int = 2000, requests: int = 10) -> dict[str, float]:
    """CPU per event: the service alone, and the same through the API's ASGI app (in process)."""
    sys.path.insert(0, str(ROOT))
    from starlette.applications import Starlette

    from chat.api import build_routes
    from chat.catalogue import Catalogue, ModelSpec
    from chat.config import Settings
    from chat.events import Finish, TextDelta, Usage
    from chat.providers.base import Availability, guard_stream
    from chat.runtime import Runtime
    from chat.service import Turn

    class OneTokenPerEvent:
        name = "fast"

        def availability(self, model: str) -> Availability:
            return Availability.ok()

        async def discover(self) -> list:
            return []

        async def aclose(self) -> None:
            return None

        def stream(self, request):  # noqa: ANN001, ANN201
            return guard_stream(self._raw(), "fast:m")

        async def _raw(self):  # noqa: ANN202
            for _ in range(events):
                await asyncio.sleep(0)  # one event per loop turn, as from a socket
                yield TextDelta("w ")
            yield Usage(1, events)
            yield Finish("stop")

    settings = Settings(_env_file=None, local_model_enabled=False, ollama_enabled=False)  # type: ignore[call-arg]
    runtime = Runtime.build(settings, providers={"fast": OneTokenPerEvent()},
                            catalogue=Catalogue(models=(ModelSpec("fast:m", "M", "fast", 128000),)))
    app = Starlette(routes=build_routes(runtime))
    body = json.dumps({"model": "fast:m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}

    async def through_api() -> None:
        delivered = False

        async def receive() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.get_running_loop().create_future()  # no disconnect
            return {}

        async def send(message: dict) -> None:
            return None

        await app(scope, receive, send)

    async def service_alone() -> None:
        async for _ in runtime.service.respond(Turn("hi", model_id="fast:m")):
            pass

    async def per_event(run) -> float:  # noqa: ANN001
        await run()  # warm-up
        started = time.process_time()
        for _ in range(requests):
            await run()
        return (time.process_time() - started) / (events * requests) * 1e6

    service = await per_event(service_alone)
    api = await per_event(through_api)
    return {"service_us_per_event": round(service, 2), "with_api_us_per_event": round(api, 2),
            "api_adds_us_per_event": round(api - service, 2)}


async def measure(direct: Target, app: Target, app_pid: int, runs: int, rounds: int,
                  verify: ssl.SSLContext | bool = True) -> dict[str, object]:
    # Idle connections dropped after 2 s, before uvicorn's 5 s keep-alive timeout (as bench/soak.py):
    # each round opens its client connections anew, to both targets alike.
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2, keepalive_expiry=2.0)
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(httpx.AsyncClient(timeout=120, limits=limits, verify=verify))
                   for _ in range(50)]
        idle = await idle_cpu_per_s(app_pid)
        single = await ttft_single(clients[0], direct, app, runs)
        many_d, many_a, many_cold = await scenario(clients, direct, app, 50, 200, "[[delay:0.02]]", app_pid, idle,
                                                   rounds)
        # Issue #10's load (as bench/ui_path.py): first token at 100 ms, then 500 tokens/s.
        twenty_d, twenty_a, _ = await scenario(clients, direct, app, 20, 200, "[[stall:0.1]] [[rate:500]]", app_pid,
                                               idle, rounds)
        long_d, long_a, _ = await scenario(clients, direct, app, 1, 4000, "[[delay:0.001]]", app_pid, idle, rounds)
    return {
        "layer": await layer(),
        "ttft_1": single,
        "streams_50": {
            "direct_p95_ttft_ms": many_d["p95_ttft_ms"], "app_p95_ttft_ms": many_a["p95_ttft_ms"],
            "ttft_ratio": round(many_a["p95_ttft_ms"] / many_d["p95_ttft_ms"], 2),
            "direct_tokens_per_s": many_d["tokens_per_s"], "app_tokens_per_s": many_a["tokens_per_s"],
            "tokens_per_s_ratio": round(many_a["tokens_per_s"] / many_d["tokens_per_s"], 3),
            "first_round": many_cold,
        },
        "streams_20": {
            "direct_p95_ttft_ms": twenty_d["p95_ttft_ms"], "app_p95_ttft_ms": twenty_a["p95_ttft_ms"],
            "added_p95_ttft_ms": round(twenty_a["p95_ttft_ms"] - twenty_d["p95_ttft_ms"], 1),
        },
        "long_4000": {"direct_s": long_d["wall_s"], "app_s": long_a["wall_s"],
                      "ratio": round(long_a["wall_s"] / long_d["wall_s"], 3)},
        "app_cpu_us_per_token": {"streams_20": twenty_a["cpu_us_per_token"],
                                 "streams_50": many_a["cpu_us_per_token"], "long_4000": long_a["cpu_us_per_token"]},
        "app_idle_cpu_ms_per_s": round(idle * 1000, 1),
        "app_cpu_over_idle_us_per_token": {"streams_20": twenty_a["cpu_over_idle_us_per_token"],
                                           "streams_50": many_a["cpu_over_idle_us_per_token"],
                                           "long_4000": long_a["cpu_over_idle_us_per_token"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="single-stream requests per target")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds of each concurrent scenario")
    parser.add_argument("--tls", action="store_true",
                        help="the upstream serves HTTPS (a throwaway CA's certificate), as providers do")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "OLLAMA_", "CHAT_"))}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
                "GRADIO_ANALYTICS_ENABLED": "False",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    wire_port, app_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        catalogue = Path(tmp) / "models.toml"
        catalogue.write_text(CATALOGUE)
        scheme, tls, verify = "http", [], True
        if args.tls:
            ca, cert, key = tls_files(Path(tmp))
            scheme, tls, verify = "https", ["--tls", cert, key], ssl.create_default_context(cafile=ca)
            env["SSL_CERT_FILE"] = os.environ["SSL_CERT_FILE"] = ca  # trusted as a provider's would be
        upstream = f"{scheme}://127.0.0.1:{wire_port}"
        wire = subprocess.Popen([sys.executable, "-m", "tests.wire", "--port", str(wire_port), "--ollama-models", "",
                                 "--keep-alive", *tls],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        app_env = {**env, "OPENAI_BASE_URL": f"{upstream}/v1", "OPENAI_API_KEY": "sk-bench",
                   "CHAT_MODELS_FILE": str(catalogue), "CHAT_LOCAL_MODEL_ENABLED": "false",
                   "CHAT_OLLAMA_ENABLED": "false", "CHAT_ENV_FILE": "", "GRADIO_SERVER_NAME": "127.0.0.1",
                   "GRADIO_SERVER_PORT": str(app_port),
                   "CHAT_MAX_CONCURRENT_STREAMS": "0"}  # every stream comes from one address
        app = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=tmp, env=app_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_http(f"{upstream}/v1/models", 90, wire)
            wait_http(f"http://127.0.0.1:{app_port}/health?live=1", 90, app)
            direct = Target("direct", f"{upstream}/v1/chat/completions", "wire")
            via_app = Target("app", f"http://127.0.0.1:{app_port}/v1/chat/completions", "openai:wire")
            figures = asyncio.run(measure(direct, via_app, app.pid, args.runs, args.rounds, verify))
        finally:
            for proc in (app, wire):
                stop_process(proc)
    single, many, long_ = figures["ttft_1"], figures["streams_50"], figures["long_4000"]
    figures["meets"] = {
        "added_ttft_p50_le_5ms": single["added_p50_ms"] <= 5,
        "added_ttft_p95_le_15ms": single["added_p95_ms"] <= 15,
        "streams_50_ttft_le_2x": many["ttft_ratio"] <= 2,
        "streams_50_tokens_per_s_ge_0.8x": many["tokens_per_s_ratio"] >= 0.8,
        "long_4000_le_1.05x": long_["ratio"] <= 1.05,
        # Issue #10's target, on its load (20 streams at 500 tokens/s).
        "cpu_streams_20_le_25us_per_token": figures["app_cpu_us_per_token"]["streams_20"] <= 25,
    }
    print(json.dumps({"bench": "api_path", "runs": args.runs, "rounds": args.rounds, "upstream": scheme, **figures}))


if __name__ == "__main__":
    main()
