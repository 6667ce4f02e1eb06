"""Benchmark the embedded model directly and through the UI path.

Prints one JSON line:
  load_s                  time to load the pool (all instances), no warm-up
  cold_ttft_s             first generation after load (why the app warms up)
  warm_ttft_s             median time to first token, direct provider call
  tokens_per_s            median decode speed, direct provider call
  ui_ttft_s               median time to first answer text through Gradio's
                          queue protocol over HTTP (POST queue/join + SSE
                          queue/data), as a browser speaks it
  ui_overhead_ms          ui_ttft_s - warm_ttft_s, measured in the same run
  ui_ttft_ratio           ui_ttft_s / warm_ttft_s
  ui_chars_per_s          answer characters per second seen by the UI client

Direct and UI runs alternate on the same provider instance, with a fresh
prompt each time (no exact-prompt cache hit for either side).

Usage: python bench/local_model.py [--runs 7] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("CHAT_ENV_FILE", "")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

import httpx  # noqa: E402

from chat.config import Settings  # noqa: E402
from chat.events import TextDelta  # noqa: E402
from chat.messages import ChatRequest, Message  # noqa: E402
from chat.runtime import Runtime  # noqa: E402
from chat.ui import build_demo  # noqa: E402

SYSTEM = "You are a helpful assistant."
TOPICS = ["rivers", "volcanoes", "bridges", "owls", "comets", "glaciers", "deserts", "tides",
          "bees", "lighthouses", "forests", "caves", "storms", "whales", "islands", "canyons"]


async def direct_run(provider, prompt: str, max_tokens: int) -> tuple[float, float]:
    request = ChatRequest("smollm2", (Message("system", SYSTEM), Message("user", prompt)),
                          temperature=0.0, max_tokens=max_tokens)
    started = time.perf_counter()
    first = None
    count = 0
    async for event in provider.stream(request):
        if isinstance(event, TextDelta):
            count += 1
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return first - started, (count - 1) / (end - first) if count > 1 else 0.0


async def ui_run(client: httpx.AsyncClient, fn_index: int, prompt: str, max_tokens: int) -> tuple[float, float]:
    session = uuid.uuid4().hex[:11]
    payload = {
        "data": [prompt, [], "local:smollm2", SYSTEM, 0.0, max_tokens],
        "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None,
    }
    started = time.perf_counter()
    first = None
    last_len = 0
    end = started
    chat = _Chat()
    (await client.post("/gradio_api/queue/join", json=payload)).raise_for_status()
    async with client.stream("GET", f"/gradio_api/queue/data?session_hash={session}") as stream:
        async for line in stream.aiter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            kind = message.get("msg")
            if kind in ("process_generating", "process_completed"):
                chat.update(message)
                text = chat.answer_len()
                if text > 0 and first is None:
                    first = time.perf_counter()
                last_len = max(last_len, text)
                end = time.perf_counter()
            if kind == "process_completed":
                break
    assert first is not None, "no answer text arrived"
    return first - started, last_len / (end - first) if end > first else 0.0


class _Chat:
    """The first output of a queue stream, rebuilt from Gradio's diff messages."""

    def __init__(self) -> None:
        self.value: list = []

    def update(self, message: dict) -> None:
        data = (message.get("output") or {}).get("data") or []
        if not data:
            return
        first = data[0]
        is_diff = isinstance(first, list) and first and isinstance(first[0], list) and isinstance(first[0][0], str)
        if not is_diff:
            self.value = first if isinstance(first, list) else []
            return
        for op, path, *rest in first:
            value = rest[0] if rest else None
            target = self.value
            for key in path[:-1]:
                target = target[key]
            key = path[-1] if path else None
            if op == "replace" and key is None:
                self.value = value
            elif op == "replace" or (op == "add" and isinstance(target, dict)):
                target[key] = value
            elif op == "add":
                target.insert(key, value)
            elif op == "append":
                target[key] += value
            elif op == "delete":
                del target[key]

    def answer_len(self) -> int:
        return sum(len(m.get("content") or "") for m in self.value
                   if isinstance(m, dict) and not (m.get("metadata") or {}).get("title"))


async def main(runs: int, max_tokens: int, port: int) -> dict:
    settings = Settings(_env_file=None, local_warmup=False)  # type: ignore[call-arg]
    runtime = Runtime.build(settings)
    provider = runtime.providers["local"]
    started = time.perf_counter()
    await asyncio.to_thread(provider.wait_ready)
    load_s = time.perf_counter() - started
    cold_ttft, _ = await direct_run(provider, "Say hello.", 8)
    for _ in range(2):  # warm both instances of the pool
        await asyncio.gather(direct_run(provider, "Warm up.", 4), direct_run(provider, "Warm.", 4))

    demo = build_demo(runtime)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    config = httpx.get(f"http://127.0.0.1:{port}/config").json()
    fn_index = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "chat")
    direct_ttft, direct_tps, ui_ttft, ui_tps = [], [], [], []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        for i in range(runs):
            topic = TOPICS[i % len(TOPICS)]
            t, r = await direct_run(provider, f"Tell me one fact about {topic} (direct {i}).", max_tokens)
            direct_ttft.append(t)
            direct_tps.append(r)
            t, r = await ui_run(client, fn_index, f"Tell me one fact about {topic} (ui {i}).", max_tokens)
            ui_ttft.append(t)
            ui_tps.append(r)
    demo.close()
    warm = statistics.median(direct_ttft)
    ui = statistics.median(ui_ttft)
    return {
        "bench": "local_model",
        "runs": runs,
        "pool_size": settings.local_pool_size,
        "load_s": round(load_s, 3),
        "cold_ttft_s": round(cold_ttft, 3),
        "warm_ttft_s": round(warm, 3),
        "tokens_per_s": round(statistics.median(direct_tps), 1),
        "ui_ttft_s": round(ui, 3),
        "ui_overhead_ms": round((ui - warm) * 1000, 1),
        "ui_ttft_ratio": round(ui / warm, 3),
        "ui_chars_per_s": round(statistics.median(ui_tps), 1),
        "targets": {"warm_ttft_s": 0.5, "tokens_per_s": 40, "ui_overhead_ms": 20},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--port", type=int, default=7899)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.runs, args.tokens, args.port))))
