"""Coalescing the event stream into UI updates."""

from __future__ import annotations

import asyncio
import time

import pytest

from chat.streaming import coalesce


async def ticking(n: int, every: float, log: list[str] | None = None, fail: Exception | None = None):
    try:
        for i in range(n):
            await asyncio.sleep(every)
            yield i
        if fail is not None:
            raise fail
    finally:
        if log is not None:
            log.append("closed")


async def test_first_item_passes_at_once_then_items_are_grouped():
    started = time.monotonic()
    batches, times = [], []
    async for batch in coalesce(ticking(20, 0.01), 0.05):
        batches.append(batch)
        times.append(time.monotonic() - started)
    assert [i for b in batches for i in b] == list(range(20)), "nothing lost, nothing reordered"
    assert batches[0] == [0] and times[0] < 0.05, "the first token is not delayed"
    assert len(batches) < 10, f"20 items every 10 ms in 50 ms windows: {batches}"


async def test_idle_ticks_while_the_source_is_silent():
    batches = [b async for b in coalesce(ticking(2, 0.3), 0.01, idle=0.1)]
    assert [] in batches and [i for b in batches for i in b] == [0, 1]


async def test_errors_arrive_after_the_items_before_them():
    got = []
    with pytest.raises(RuntimeError, match="boom"):
        async for batch in coalesce(ticking(3, 0.0, fail=RuntimeError("boom")), 0.05):
            got.extend(batch)
    assert got == [0, 1, 2]


async def test_a_consumer_that_stops_closes_the_source():
    log: list[str] = []
    stream = coalesce(ticking(1000, 0.01, log), 0.02)
    async for _ in stream:
        break
    await stream.aclose()
    await asyncio.sleep(0.05)
    assert log == ["closed"]
