"""The per-event work of the streaming path stays O(1): no timer, scope or task
per token in the router's time limits or in coalescing; how often the page is
updated; and why the answer travels to the browser as appends.

Timers and tasks are counted by an event loop that counts them (a subclass of
asyncio's own loop, run for the test), not by patching anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gradio.utils import diff

from chat.catalogue import Catalogue, ModelSpec
from chat.config import Settings
from chat.events import FallingBack, ModelSelected, TextDelta, Usage
from chat.messages import Message
from chat.render import AnswerView
from chat.router import Router
from chat.streaming import Pacer, coalesce
from tests.scripted import Reply, ScriptedProvider


class CountingLoop(asyncio.SelectorEventLoop):
    """asyncio's loop, counting the timers and tasks it is asked for."""

    timers = 0
    tasks = 0

    def call_at(self, when, callback, *args, context=None):  # noqa: ANN001, ANN201
        self.timers += 1
        return super().call_at(when, callback, *args, context=context)

    def create_task(self, coro, *, name=None, context=None):  # noqa: ANN001, ANN201
        self.tasks += 1
        return super().create_task(coro, name=name, context=context)


def counted(main: Callable[[], Awaitable[Any]]) -> tuple[Any, CountingLoop]:
    loop = CountingLoop()
    try:
        return loop.run_until_complete(main()), loop
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# -- the router's time limits ------------------------------------------------------


def test_time_limits_cost_no_timer_per_event() -> None:
    provider = ScriptedProvider("a")
    provider.enqueue("m", Reply([f"t{i} " for i in range(2000)]))
    catalogue = Catalogue(models=(ModelSpec("a:m", "M", "fast", 8000),))
    settings = Settings.model_construct(first_token_timeout=5.0, stall_timeout=5.0, max_retries=0,
                                        retry_base_delay=0.5, retry_max_delay=4.0, cooldown_seconds=60.0,
                                        fallback_depth=1)
    router = Router(settings, catalogue, {"a": provider})

    async def run() -> list[Any]:
        return [event async for event in router.stream("a:m", [Message("user", "hi")])]

    events, loop = counted(run)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "".join(f"t{i} " for i in range(2000))
    assert loop.timers <= 3, f"{loop.timers} timers for 2,000 events"


# -- coalescing --------------------------------------------------------------------


async def items(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i
        if i % 10 == 0:
            await asyncio.sleep(0)  # arrivals spread over many loop iterations


def test_coalescing_sets_timers_per_batch_not_per_item() -> None:
    async def run() -> tuple[list[list[int]], int, int]:
        loop: CountingLoop = asyncio.get_running_loop()  # type: ignore[assignment]
        tasks, timers = loop.tasks, loop.timers
        batches = [batch async for batch in coalesce(items(3000), 0.001, idle=1.0)]
        return batches, loop.tasks - tasks, loop.timers - timers

    (batches, tasks, timers), _ = counted(run)
    assert [i for batch in batches for i in batch] == list(range(3000))
    assert tasks == 1  # the pump
    assert timers <= 2 * len(batches) + 2, f"{timers} timers for {len(batches)} batches of 3,000 items"


async def test_a_function_interval_is_asked_before_each_batch() -> None:
    asked: list[int] = []

    def interval() -> float:
        asked.append(1)
        return 0.0

    batches = [b async for b in coalesce(items(50), interval)]
    assert [i for b in batches for i in b] == list(range(50))
    assert len(asked) == len(batches)


# -- how often the page is updated ---------------------------------------------------------


def test_pacer_sends_the_first_text_at_once_then_spaces_updates() -> None:
    pacer = Pacer(0.04)
    with pacer.streaming():
        assert pacer.interval(0) == 0.0  # the first text goes out at once
        assert pacer.interval(100) == 0.04  # then the configured interval
        assert pacer.interval(10_000) == 0.2  # longer as the answer grows (20 ms per 1,000 characters)
        assert pacer.interval(10**7) == Pacer.MAX_LENGTH_WAIT
    for _ in range(20):  # twenty answers streaming at once share the update budget
        pacer.streams += 1
    assert pacer.interval(100) == 20 / Pacer.UPDATES_PER_S
    pacer.streams = 0
    with pacer.streaming():
        pass
    assert pacer.streams == 0


# -- what travels to the browser ---------------------------------------------------------


def view_after(*events: Any) -> AnswerView:
    view = AnswerView(Catalogue(models=(ModelSpec("a:m", "Model A", "fast", 8000),)))
    for event in events:
        view.apply(event)
    return view


def test_a_growing_answer_diffs_as_appends_only() -> None:
    # Gradio streams each update as utils.diff(previous, new); it looks inside
    # dicts and lists, so the answer's new text is all that travels.
    view = view_after(ModelSelected("a:m", "Model A", None, "chosen"), TextDelta("Hello"))
    before = view.messages()
    view.apply(TextDelta(", world"))
    after = view.messages()
    ops = diff(before, after)
    assert ["append", [1, "content"], ", world"] in ops
    # Besides the new text, only the note's live figures change: one short
    # string replaced in place (issue 12), never a whole message.
    others = [op for op in ops if op != ["append", [1, "content"], ", world"]]
    assert all(op[0] == "replace" and op[1] == [0, "metadata", "log"] and len(op[2]) < 120 for op in others), ops
    assert after[-1] == {"role": "assistant", "content": "Hello, world", "metadata": {}}


def test_every_update_is_a_fresh_value() -> None:
    # Gradio keeps the previous update by reference to diff against: an update
    # that mutated it would diff as "no change".
    view = view_after(ModelSelected("a:m", "Model A", None, "chosen"), TextDelta("Hi"))
    first, second = view.messages(), view.messages()
    assert first == second
    assert all(a is not b and a["metadata"] is not b["metadata"] for a, b in zip(first, second))


def test_notes_keep_their_positions_as_the_answer_grows() -> None:
    view = view_after(ModelSelected("a:m", "Model A", None, "chosen"), TextDelta("Part one. "),
                      FallingBack("a:m", "timed out", "a:m", continuing=True))
    before = view.messages()
    view.apply(TextDelta("Part two."))
    view.apply(Usage(10, 4))
    ops = diff(before, view.messages())
    assert ["append", [2, "content"], "Part two."] in ops
    assert all(op[1][0] != 2 or op[0] == "append" for op in ops), ops
