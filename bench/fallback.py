"""Fallback cost: from the failing model's error to the fallback's first token.

Two OpenAI-compatible providers, ``p`` (primary) and ``f`` (fallback), each
pointed at its own local wire server (``tests.wire``), so the real SDK adapter
parses real bytes over real sockets. In every run the primary fails and the
router falls back; a stopwatch wrapped around each provider records, at the
provider boundary, when the primary's stream raised and when the fallback's
request started and yielded its first text; the consumer records when the
router handed that text over. Then

    cost     = consumer's first text − primary's error
    overhead = cost − fallback's own TTFT (request start → first text, same run)

``overhead`` is what the router adds by falling back: deciding, notices, the
new request, the seam check. Target: ≤ 50 ms when another model is ready.
Scenarios: ``error`` (503 before any text), ``cut`` (socket cut after 10 tokens;
the fallback continues the answer), and ``in_process`` (scripted providers, no
network: the router alone). Prints one JSON line.

    python bench/fallback.py [--runs 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

from chat.catalogue import Catalogue, ModelSpec  # noqa: E402
from chat.config import Settings  # noqa: E402
from chat.errors import ProviderError, Unavailable  # noqa: E402
from chat.events import Event, FallingBack, TextDelta  # noqa: E402
from chat.messages import ChatRequest, Message  # noqa: E402
from chat.providers.openai import OpenAIProvider  # noqa: E402
from chat.router import Router  # noqa: E402
from tests.scripted import Reply, ScriptedProvider  # noqa: E402
from tests.wire import Script, WireServer  # noqa: E402

TARGET_MS = 50.0
CATALOGUE = Catalogue(
    models=(
        ModelSpec("p:model", "Primary", "standard", 32000),
        ModelSpec("f:model", "Fallback", "standard", 32000),
    )
)
MESSAGES = [Message("user", "Tell me about the sea.")]


class Stopwatch:
    """A provider wrapper recording, at the provider boundary, when things happen."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[attr-defined]
        self.reset()

    def reset(self) -> None:
        self.started: float | None = None
        self.first_text: float | None = None
        self.failed: float | None = None

    def availability(self, model: str):  # noqa: ANN201
        return self.inner.availability(model)  # type: ignore[attr-defined]

    async def discover(self) -> list[ModelSpec]:
        return []

    async def aclose(self) -> None:
        await self.inner.aclose()  # type: ignore[attr-defined]

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        self.started = time.perf_counter()
        try:
            async with aclosing(self.inner.stream(request)) as events:  # type: ignore[attr-defined]
                async for event in events:
                    if self.first_text is None and isinstance(event, TextDelta):
                        self.first_text = time.perf_counter()
                    yield event
        except ProviderError:
            self.failed = time.perf_counter()
            raise


async def one_run(
    settings: Settings, primary: Stopwatch, fallback: Stopwatch, expect: str | None = None
) -> dict[str, float]:
    primary.reset()
    fallback.reset()
    # A new router each run: the primary's failure benches it, and the next run
    # must see it ready again. Providers (and their HTTP clients) are reused.
    router = Router(settings, CATALOGUE, {"p": primary, "f": fallback})
    first_shown = None
    fell_back = False
    text: list[str] = []
    async for event in router.stream("p:model", MESSAGES):
        if isinstance(event, FallingBack):
            fell_back = True
        elif isinstance(event, TextDelta):
            text.append(event.text)
            if fell_back and first_shown is None:
                first_shown = time.perf_counter()
    assert fell_back and first_shown is not None
    assert expect is None or "".join(text) == expect, "".join(text)
    assert primary.failed is not None and fallback.started is not None and fallback.first_text is not None
    cost = first_shown - primary.failed
    ttft = fallback.first_text - fallback.started
    return {"cost": cost * 1000, "ttft": ttft * 1000, "overhead": (cost - ttft) * 1000,
            "decide": (fallback.started - primary.failed) * 1000}


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    out: dict[str, float] = {}
    for key in ("overhead", "cost", "ttft", "decide"):
        values = [r[key] for r in rows]
        out[f"{key}_p50_ms"] = round(statistics.median(values), 3)
        out[f"{key}_p95_ms"] = round(pct(values, 0.95), 3)
    out["overhead_max_ms"] = round(max(r["overhead"] for r in rows), 3)
    out["cost_to_ttft_ratio"] = round(out["cost_p50_ms"] / out["ttft_p50_ms"], 3) if out["ttft_p50_ms"] else None
    out["overhead_to_target_ratio"] = round(out["overhead_p50_ms"] / TARGET_MS, 4)
    return out


async def wire_scenario(kind: str, runs: int) -> dict[str, float]:
    settings = Settings(_env_file=None, max_retries=2, first_token_timeout=10, stall_timeout=10)  # type: ignore[call-arg]
    with WireServer() as p_server, WireServer() as f_server:
        primary = Stopwatch(OpenAIProvider(settings, name="p", base_url=p_server.openai_base_url, key_required=False))
        fallback = Stopwatch(OpenAIProvider(settings, name="f", base_url=f_server.openai_base_url, key_required=False))
        rows = []
        try:
            for index in range(runs + 3):  # three warm-up runs (clients, connections)
                words = [f"w{i} " for i in range(30)]
                if kind == "error":
                    p_server.enqueue(Script(status=503, error="overloaded"))
                    f_server.enqueue(Script(tokens=words))
                else:
                    p_server.enqueue(Script(tokens=words, cut_after=10))
                    f_server.enqueue(Script(tokens=words[10:]))
                row = await one_run(settings, primary, fallback, expect="".join(words))
                if index >= 3:
                    rows.append(row)
        finally:
            await primary.aclose()
            await fallback.aclose()
    return summary(rows)


async def in_process_scenario(runs: int) -> dict[str, float]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    p, f = ScriptedProvider("p"), ScriptedProvider("f")
    primary, fallback = Stopwatch(p), Stopwatch(f)
    rows = []
    for index in range(runs + 3):
        p.enqueue("model", Reply(error=Unavailable("503")))
        f.enqueue("model", Reply(["The ", "sea."], delay=0.002))
        row = await one_run(settings, primary, fallback)
        if index >= 3:
            rows.append(row)
    return summary(rows)


async def main(runs: int) -> None:
    result = {
        "bench": "fallback",
        "runs": runs,
        "target_overhead_ms": TARGET_MS,
        "error": await wire_scenario("error", runs),
        "cut": await wire_scenario("cut", runs),
        "in_process": await in_process_scenario(runs),
    }
    result["meets_target"] = all(
        result[k]["overhead_p95_ms"] <= TARGET_MS for k in ("error", "cut", "in_process")
    )
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    asyncio.run(main(parser.parse_args().runs))
