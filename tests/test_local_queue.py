"""The embedded model's pool under contention, with a scripted stand-in for
``llama_cpp.Llama`` (the ``llama_factory`` seam of ``LocalProvider``) so the
timing is in the test's hands: first come first served, places in the line,
leaving the line, falling back from it, abandoning a silent generation, the
output cap, and handing the instances over on a hot reload.

The real model's behaviour (tokens, Stop, loops) is covered in
``test_local_model`` and ``test_local_loops``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from chat.catalogue import Catalogue, ModelSpec
from chat.config import Settings
from chat.errors import Unavailable
from chat.events import FallingBack, Finish, Progress, TextDelta
from chat.messages import ChatRequest, Message
from chat.providers.local import LocalProvider
from chat.router import Router
from tests.scripted import Reply, ScriptedProvider


class FakeLlama:
    """Answers with the last user message, word by word.

    A word ``wait:NAME`` blocks until ``gates[NAME]`` is set (an instance held,
    or silent); ``sleep:S`` is S seconds of silence. Records every call.
    """

    def __init__(self, gates: dict[str, threading.Event], calls: list[dict], closed: list[FakeLlama]) -> None:
        self.gates, self.calls, self.closed = gates, calls, closed
        self.n_tokens = 0
        self.produced: list[str] = []

    def n_ctx(self) -> int:
        return 2048

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self.closed.append(self)

    def create_chat_completion(self, messages, *, max_tokens=None, stream=True, **_: object) -> Iterator[dict]:
        self.calls.append({"messages": messages, "max_tokens": max_tokens})
        words = messages[-1]["content"].split()

        def chunks() -> Iterator[dict]:
            for word in words:
                if word.startswith("wait:"):
                    self.gates.setdefault(word[5:], threading.Event()).wait(30)
                    continue
                if word.startswith("sleep:"):
                    time.sleep(float(word[6:]))
                    continue
                self.produced.append(word)
                yield {"choices": [{"delta": {"content": word + " "}, "finish_reason": None}]}
            yield {"choices": [{"delta": {}, "finish_reason": "stop"}]}

        return chunks()


@pytest.fixture
def pool():
    """``make(size, **settings)`` → a loaded provider on fake instances, and the fakes' records."""
    gates: dict[str, threading.Event] = {}
    calls: list[dict] = []
    closed: list[FakeLlama] = []
    made: list[FakeLlama] = []

    def factory(path: str, n_ctx: int, threads: int) -> FakeLlama:
        made.append(FakeLlama(gates, calls, closed))
        return made[-1]

    def make(size: int = 1, kept: dict | None = None, **values: object) -> LocalProvider:
        settings = Settings.model_construct(**{
            "local_pool_size": size, "local_warmup": False, "local_model_path": "fake.gguf",
            "first_token_timeout": 5.0, "stall_timeout": 5.0, **values,
        })
        provider = LocalProvider(settings, kept=kept, llama_factory=factory)
        provider.wait_ready(10)
        return provider

    make.gates, make.calls, make.closed, make.made = gates, calls, closed, made  # type: ignore[attr-defined]
    yield make
    for gate in gates.values():
        gate.set()  # nothing stays blocked after a test


def ask(text: str, max_tokens: int | None = None) -> ChatRequest:
    return ChatRequest("smollm2", (Message("user", text),), max_tokens=max_tokens)


async def consume(stream, name: str, served: list[str], log: list[object] | None = None) -> str:
    text = []
    async for event in stream:
        if log is not None:
            log.append(event)
        if isinstance(event, TextDelta):
            if not text:
                served.append(name)
            text.append(event.text)
    return "".join(text)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


def places(log: list[object]) -> list[str]:
    return [e.detail for e in log if isinstance(e, Progress)]


async def test_waiters_are_served_in_arrival_order_and_told_their_place(pool):
    provider = pool(size=1)
    served: list[str] = []
    holder = asyncio.create_task(consume(provider.stream(ask("A wait:A done")), "A", served))
    await wait_until(lambda: served == ["A"])
    logs: dict[str, list[object]] = {}
    waiting = {}
    for name in "BCD":
        logs[name] = []
        # B and C take a moment each, so D sees itself move up the line.
        waiting[name] = asyncio.create_task(consume(provider.stream(ask(f"{name} sleep:0.4 answer")), name, served, logs[name]))
        await wait_until(lambda: bool(places(logs[name])))  # queued, and told so at once
    assert places(logs["B"])[0] == "waiting for the embedded model: yours is next"
    assert places(logs["C"])[0] == "waiting for the embedded model: 1 request ahead of yours"
    assert places(logs["D"])[0] == "waiting for the embedded model: 2 requests ahead of yours"

    # A newcomer arrives just as the instance is freed (the event loop is busy
    # while the worker releases it). It must queue behind B, C and D, not take
    # the instance before the request at the head of the line wakes up.
    late = asyncio.create_task(consume(provider.stream(ask("E answer")), "E", served))
    pool.gates["A"].set()
    time.sleep(0.3)  # blocks the event loop: the worker releases the instance meanwhile
    await asyncio.wait_for(asyncio.gather(holder, late, *waiting.values()), 10)
    assert served == ["A", "B", "C", "D", "E"]
    assert places(logs["D"])[-1] == "waiting for the embedded model: yours is next", "D moved up the line"


async def test_a_request_that_leaves_the_line_is_forgotten(pool):
    provider = pool(size=1)
    served: list[str] = []
    holder = asyncio.create_task(consume(provider.stream(ask("A wait:A")), "A", served))
    await wait_until(lambda: served == ["A"])
    b_log: list[object] = []
    c_log: list[object] = []
    b = asyncio.create_task(consume(provider.stream(ask("B answer")), "B", served, b_log))
    await wait_until(lambda: bool(places(b_log)))
    c = asyncio.create_task(consume(provider.stream(ask("C answer")), "C", served, c_log))
    await wait_until(lambda: bool(places(c_log)))
    b.cancel()  # Stop while queued
    await wait_until(lambda: places(c_log)[-1].endswith("yours is next"))
    pool.gates["A"].set()
    await asyncio.wait_for(asyncio.gather(holder, c), 5)
    assert served == ["A", "C"]
    assert [call["messages"][-1]["content"] for call in pool.calls] == ["A wait:A", "C answer"]


def router_with(provider: LocalProvider, fallback: ScriptedProvider | None, **values: object) -> Router:
    models = [ModelSpec("local:smollm2", "Local", "fast", 2048)]
    if fallback is not None:
        models.append(ModelSpec("b:model", "B", "fast", 8000))
    settings = Settings.model_construct(**{"first_token_timeout": 0.5, "stall_timeout": 0.5, **values})
    providers = {"local": provider, **({"b": fallback} if fallback else {})}
    return Router(settings, Catalogue(models=tuple(models)), providers)


async def test_a_queued_request_falls_back_when_another_model_is_ready(pool):
    provider = pool(size=1, first_token_timeout=0.5, stall_timeout=0.5)  # as the router's
    served: list[str] = []
    holder = asyncio.create_task(consume(provider.stream(ask("A wait:A")), "A", served))
    await wait_until(lambda: served == ["A"])
    b = ScriptedProvider("b")
    b.enqueue("model", Reply(["from b"]))
    events: list[object] = []
    started = time.monotonic()
    text = await consume(router_with(provider, b).stream("local:smollm2", [Message("user", "B answer")]),
                         "B", served, events)
    assert text == "from b"
    assert 0.4 < time.monotonic() - started < 3
    assert [e.reason for e in events if isinstance(e, FallingBack)] == ["timed out: no text within 0.5 s"]
    # It left the line: when A is done, a newcomer is served at once.
    pool.gates["A"].set()
    await holder
    assert await asyncio.wait_for(consume(provider.stream(ask("C now")), "C", served), 2) == "C now "


async def test_the_only_model_keeps_a_queued_request_waiting_with_its_place(pool):
    provider = pool(size=1, first_token_timeout=0.5, stall_timeout=0.5)  # as the router's
    served: list[str] = []
    holder = asyncio.create_task(consume(provider.stream(ask("A wait:A")), "A", served))
    await wait_until(lambda: served == ["A"])
    events: list[object] = []
    waiting = asyncio.create_task(consume(router_with(provider, None).stream(
        "local:smollm2", [Message("user", "B answer")]), "B", served, events))
    await asyncio.sleep(1.5)  # three first-token limits
    assert not waiting.done()
    pool.gates["A"].set()
    assert await asyncio.wait_for(waiting, 5) == "B answer "
    assert "waiting for the embedded model: yours is next" in places(events)
    await holder


async def test_a_silent_generation_is_abandoned_and_its_instance_freed(pool):
    provider = pool(size=1, first_token_timeout=0.5, stall_timeout=0.5)  # as the router's
    b = ScriptedProvider("b")
    router = router_with(provider, b)
    served: list[str] = []
    events: list[object] = []
    # Two words, then 1.5 s of silence (the stall limit is 0.5 s), then 20 more.
    words = " ".join(f"w{i}" for i in range(20))
    started = time.monotonic()
    text = await consume(router.stream("local:smollm2", [Message("user", f"one two sleep:1.5 {words}")]),
                         "A", served, events)
    assert text.startswith("one two ") and [e.continuing for e in events if isinstance(e, FallingBack)] == [True]
    assert time.monotonic() - started < 1.4, "abandoned at the stall limit, not after the silence"
    # The instance is free again as soon as the silent worker wakes: it computes
    # nothing more for the abandoned answer.
    answer = await asyncio.wait_for(consume(provider.stream(ask("next please")), "B", served), 3)
    assert answer == "next please "
    assert pool.made[0].produced[:2] == ["one", "two"] and "w1" not in pool.made[0].produced


async def test_answers_are_capped_by_the_local_output_limit(pool):
    provider = pool(size=1, local_max_output_tokens=300)
    served: list[str] = []
    await consume(provider.stream(ask("hi", max_tokens=4000)), "A", served)
    await consume(provider.stream(ask("hi", max_tokens=100)), "B", served)
    await consume(provider.stream(ask("hi")), "C", served)
    assert [c["max_tokens"] for c in pool.calls] == [300, 100, 300]


async def test_a_hot_reload_takes_the_instances_over(pool):
    kept: dict[str, object] = {}
    first = pool(size=2, kept=kept)
    instances = [slot.llm for slot in first._slots]
    second = pool(size=2, kept=kept)
    assert len(pool.made) == 2, "no second copy loaded"
    assert [slot.llm for slot in second._slots] == instances
    assert second.warmed_up
    served: list[str] = []
    assert await consume(second.stream(ask("still here")), "A", served) == "still here "
    with pytest.raises(Unavailable):
        await consume(first.stream(ask("old page")), "B", served)
    # Other settings: the old copy is freed and a fresh one loaded.
    third = pool(size=1, kept=kept)
    assert len(pool.made) == 3 and sorted(map(id, pool.closed)) == sorted(map(id, instances))
    assert await consume(third.stream(ask("fresh")), "C", served) == "fresh "


async def test_a_loop_ends_the_answer_with_a_loop_finish(pool):
    provider = pool(size=1)
    line = "The process is the same every time.\n"
    served: list[str] = []
    events: list[object] = []
    text = await consume(provider.stream(ask("Intro.\n" + line * 6)), "A", served, events)
    assert [e.reason for e in events if isinstance(e, Finish)] == ["loop"]
    assert text.count("The process is the same every time.") == 2, text
