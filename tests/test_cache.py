"""The response cache (``chat.cache``) through the real service, router and
context manager, with a scripted provider behind them: what is stored, what is
replayed, and what never is."""

from __future__ import annotations

from contextlib import aclosing

import pytest

from chat.cache import MemoryKeyValue, ResponseCache
from chat.catalogue import Catalogue, ModelSpec
from chat.errors import AllModelsFailed, Unavailable
from chat.events import Cached, Finish, ModelSelected, TextDelta, Usage
from chat.messages import Message
from chat.runtime import Runtime
from chat.service import Turn
from tests.scripted import Reply, scripted_runtime

CATALOGUE = Catalogue(models=(ModelSpec("fake:a", "Model A", "fast", 8000),))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class BrokenStore:
    """A store that cannot be reached (Redis down): the cache must fail open."""

    async def get(self, key: str) -> bytes | None:
        raise ConnectionError("store down")

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        raise ConnectionError("store down")


@pytest.fixture
def runtime(settings_factory):
    return scripted_runtime(settings_factory(local_model_enabled=False, ollama_enabled=False, response_cache_ttl=60),
                            CATALOGUE)


async def events_of(rt: Runtime, turn: Turn) -> list:
    return [event async for event in rt.service.respond(turn)]


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


TURN = Turn("What is the capital of France?", model_id="fake:a", system_prompt="Be brief.", temperature=0.2)


async def test_a_complete_answer_is_replayed_without_calling_the_model(runtime):
    rt, fake = runtime
    fake.enqueue("a", Reply(["Paris ", "is the capital."], usage=Usage(12, 5)))
    first = await events_of(rt, TURN)
    again = await events_of(rt, TURN)
    assert len(fake.calls) == 1, "the second answer came from the cache"
    assert text_of(again) == text_of(first) == "Paris is the capital."
    selected = next(e for e in again if isinstance(e, ModelSelected))
    cached = next(e for e in again if isinstance(e, Cached))
    assert selected.model_id == "fake:a" and "cached answer" in selected.reason
    assert (cached.input_tokens, cached.output_tokens) == (12, 5)
    assert isinstance(again[-1], Finish) and not any(isinstance(e, Usage) for e in again)
    assert len([e for e in again if isinstance(e, TextDelta)]) >= 1


@pytest.mark.parametrize("change", [
    {"model_id": "auto"},
    {"system_prompt": "Be verbose."},
    {"temperature": 0.3},
    {"max_tokens": 99},
    {"message": "What is the capital of Spain?"},
    {"history": (Message("user", "hi"), Message("assistant", "hello"))},
])
async def test_any_part_of_the_request_changes_the_key(runtime, change):
    rt, fake = runtime
    await events_of(rt, TURN)
    await events_of(rt, Turn(**{**{f: getattr(TURN, f) for f in ("message", "history", "model_id", "system_prompt",
                                                                     "temperature", "max_tokens")}, **change}))
    assert len(fake.calls) == 2


def test_the_key_is_canonical():
    same = dict(model="auto", system_prompt="s", messages=[Message("user", "q")], temperature=None, max_tokens=5)
    assert ResponseCache.key(**same) == ResponseCache.key(**{**same, "messages": (Message("user", "q"),)})
    assert ResponseCache.key(**same) != ResponseCache.key(**{**same, "temperature": 0.0})


@pytest.mark.parametrize("reply", [
    Reply(["Cut by the ", "length limit"], finish_reason="length"),
    Reply(["Half an "], error=Unavailable("upstream 503")),  # failed (no fallback in this catalogue)
    Reply([]),  # no text at all
], ids=["length", "failed", "empty"])
async def test_only_complete_answers_are_stored(runtime, reply):
    rt, fake = runtime
    fake.enqueue("a", reply)
    try:
        await events_of(rt, TURN)
    except AllModelsFailed:
        rt.router.cooldowns.clear("fake:a")  # the failure benched the only model
    fake.enqueue("a", Reply(["Fresh."]))
    assert text_of(await events_of(rt, TURN)) == "Fresh."
    assert len(fake.calls) == 2, "the cut, failed or empty answer was not replayed"


async def test_a_stopped_answer_is_not_stored(runtime):
    rt, fake = runtime
    fake.enqueue("a", Reply(["one ", "two ", "three"], delay=0.01))
    async with aclosing(rt.service.respond(TURN)) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                break  # Stop after the first text
    fake.enqueue("a", Reply(["Fresh."]))
    assert text_of(await events_of(rt, TURN)) == "Fresh."


async def test_a_continuation_neither_reads_nor_writes_the_cache(runtime):
    rt, fake = runtime
    fake.enqueue("a", Reply(["Paris."]))
    await events_of(rt, TURN)
    cont = Turn(TURN.message, model_id="fake:a", system_prompt="Be brief.", temperature=0.2, answer_so_far="Par")
    fake.enqueue("a", Reply(["is."]))
    await events_of(rt, cont)
    assert len(fake.calls) == 2


async def test_a_store_that_fails_is_a_miss_and_the_answer_still_comes(runtime):
    rt, fake = runtime
    rt.service.cache = ResponseCache(BrokenStore(), 60)
    for _ in range(2):
        fake.enqueue("a", Reply(["Paris."]))
        assert text_of(await events_of(rt, TURN)) == "Paris."
    assert len(fake.calls) == 2


async def test_memory_entries_expire_and_the_oldest_go_first():
    clock = Clock()
    store = MemoryKeyValue(max_entries=2, clock=clock)
    await store.set("a", b"1", ttl=10)
    clock.now = 9.9
    assert await store.get("a") == b"1"
    clock.now = 10.0
    assert await store.get("a") is None
    await store.set("x", b"1", ttl=100)
    await store.set("y", b"2", ttl=100)
    await store.set("z", b"3", ttl=100)
    assert [await store.get(k) for k in "xyz"] == [None, b"2", b"3"]


async def test_the_cache_is_off_by_default(settings_factory):
    rt, fake = scripted_runtime(settings_factory(local_model_enabled=False, ollama_enabled=False), CATALOGUE)
    assert rt.service.cache is None
    await events_of(rt, TURN)
    await events_of(rt, TURN)
    assert len(fake.calls) == 2


async def test_with_redis_an_answer_stored_by_one_replica_is_replayed_by_another(settings_factory, tmp_path):
    """REDIS_URL set: the cache lives in the shared store, so a second replica
    (its own runtime and provider) replays the answer without calling a model."""
    from tests.conftest import free_port
    from tests.redis_server import RedisServer

    with RedisServer(free_port(), tmp_path) as redis:
        (a, fake_a), (b, fake_b) = (scripted_runtime(settings_factory(
            local_model_enabled=False, ollama_enabled=False, response_cache_ttl=60, redis_url=redis.url), CATALOGUE)
            for _ in range(2))
        try:
            assert a.store.shared and b.store.shared
            fake_a.enqueue("a", Reply(["Paris ", "is the capital."], usage=Usage(12, 5)))
            first = await events_of(a, TURN)
            again = await events_of(b, TURN)
            assert text_of(again) == text_of(first) == "Paris is the capital."
            assert len(fake_a.calls) == 1 and fake_b.calls == [], "replica B replayed A's answer"
            assert any(isinstance(e, Cached) for e in again)
        finally:
            await a.store.aclose()
            await b.store.aclose()
