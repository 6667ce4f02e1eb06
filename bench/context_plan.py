"""Planning cost per turn for a 1,000-turn history, with summaries cached.

A turn is one user message and one assistant reply, so the final history holds
2,001 messages (~40-400 words each). The conversation is first grown turn by
turn through one ``ContextManager`` (an instant scripted summarizer, the real
token estimate), which fills the summary and per-message caches exactly as the
app would. Then the full history is planned again and again, each time as fresh
string objects — what a stateless caller (the Gradio UI) sends every turn, so
even Python's cached string hashes do not help.

Baseline, measured in the same run: the naive approach of re-counting every
message with the same estimator on each turn (no planning at all on top).

Prints one JSON line: wall-clock mean and p95 per plan, and CPU time per plan
(``thread_time``), which other processes on a busy machine inflate less.
Run: ``python bench/context_plan.py [--turns 1000] [--reps 200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chat.config import Settings  # noqa: E402
from chat.context import ContextManager, PreparedContext  # noqa: E402
from chat.messages import Message  # noqa: E402
from chat.tokens import TokenCounter  # noqa: E402

VOCAB = (
    "the a plan launch budget review contract meeting Friday Maria Tokyo 2026 invoice "
    "numbers we should decide whether to ship version three and ask about the open "
    "questions before next week because costs rose by twelve percent, so what next?"
).split()
SYSTEM = "You are a helpful assistant."


class InstantSummarizer:
    def __init__(self) -> None:
        self.calls = 0

    async def summarize(self, previous: str | None, turns: Sequence[Message]) -> str:
        self.calls += 1
        return f"Summary {self.calls}: " + " ".join(VOCAB[:60])


def text(rng: random.Random, tag: str) -> str:
    return tag + " " + " ".join(rng.choice(VOCAB) for _ in range(rng.randint(40, 400)))


def fresh(history: Sequence[Message]) -> list[Message]:
    return [Message(m.role, "".join(list(m.content))) for m in history]


async def plan_once(cm: ContextManager, history: Sequence[Message], budget: int) -> PreparedContext:
    prepared = None
    async for item in cm.prepare(SYSTEM, history, budget):
        if isinstance(item, PreparedContext):
            prepared = item
    assert prepared is not None
    return prepared


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


async def main(turns: int, reps: int) -> dict[str, object]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    counter = TokenCounter()
    summarizer = InstantSummarizer()
    cm = ContextManager(settings, summarizer, counter)
    budget = cm.budget_for([8192], settings.max_output_tokens)
    rng = random.Random(1000)

    history: list[Message] = []
    growth: list[float] = []
    for turn in range(turns):
        history.append(Message("user", text(rng, f"q{turn}")))
        start = time.perf_counter()
        await plan_once(cm, history, budget)
        growth.append((time.perf_counter() - start) * 1000)
        history.append(Message("assistant", text(rng, f"a{turn}")))
    history.append(Message("user", text(rng, "latest")))
    await plan_once(cm, history, budget)
    calls_after_growth = summarizer.calls

    copies = [fresh(history) for _ in range(reps)]
    steady: list[float] = []
    cpu: list[float] = []
    for copy in copies:
        start, start_cpu = time.perf_counter(), time.thread_time()
        prepared = await plan_once(cm, copy, budget)
        cpu.append((time.thread_time() - start_cpu) * 1000)
        steady.append((time.perf_counter() - start) * 1000)
    same: list[float] = []
    for _ in range(reps):
        start = time.perf_counter()
        await plan_once(cm, history, budget)
        same.append((time.perf_counter() - start) * 1000)
    assert summarizer.calls == calls_after_growth, "a cached plan called the summarizer"

    baseline: list[float] = []
    for copy in copies[: max(5, reps // 10)]:
        start = time.perf_counter()
        counter.request([Message("system", SYSTEM), *copy])
        baseline.append((time.perf_counter() - start) * 1000)

    mean = statistics.fmean(steady)
    return {
        "bench": "context_plan",
        "turns": turns,
        "messages": len(history),
        "history_tokens_est": counter.request(history),
        "sent_tokens_est": prepared.estimated_tokens,
        "budget": budget,
        "summary_covers": prepared.summary_turns,
        "summarizer_calls": calls_after_growth,
        "plan_ms_mean": round(mean, 3),
        "plan_ms_p95": round(p95(steady), 3),
        "plan_cpu_ms_mean": round(statistics.fmean(cpu), 3),
        "plan_ms_mean_same_objects": round(statistics.fmean(same), 3),
        "growth_ms_mean_last100": round(statistics.fmean(growth[-100:]), 3),
        "growth_ms_p95_last100": round(p95(growth[-100:]), 3),
        "baseline_full_recount_ms_mean": round(statistics.fmean(baseline), 3),
        "speedup_vs_baseline": round(statistics.fmean(baseline) / mean, 1),
        "target_ms": 5.0,
        "python": sys.version.split()[0],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.turns, args.reps))))
