"""The store seam (``chat.store``): the same behaviour from the in-process
backend and from a real redis-server, and the shared state built on it —
limits, leases, spend, cooldowns, summaries — as two replicas see it (two
store instances on one Redis). No mocks of Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from chat.access import Gate, Identity, Refused
from chat.catalogue import load_catalogue
from chat.context import ContextManager
from chat.cooldown import Cooldowns
from chat.errors import RateLimited
from chat.messages import Message
from chat.store import MemoryStore, StoreUnavailable
from chat.store.cooldowns import SharedCooldowns
from chat.store.redis import RedisStore, redacted
from chat.store.summaries import SharedSummaries
from tests.conftest import free_port
from tests.redis_server import RedisServer
from tests.test_context import SYSTEM, FakeSummarizer, conversation, resend, run, settings, word_counter


@pytest.fixture(scope="module")
def redis(tmp_path_factory) -> Iterator[RedisServer]:
    with RedisServer(free_port(), tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def store(request, redis):
    if request.param == "memory":
        return MemoryStore()
    return RedisStore(redis.url)


def key(name: str) -> str:
    return f"{name}:{time.monotonic_ns()}"


async def test_the_key_value_pair_expires(store):
    k = key("kv")
    assert await store.get(k) is None
    await store.set(k, b"\x00value", 0.3)
    assert await store.get(k) == b"\x00value" and await store.get_many([k, k + "x"]) == [b"\x00value", None]
    await asyncio.sleep(0.4)
    assert await store.get(k) is None


async def test_leases_cap_holders_and_expire_unless_renewed(store):
    bucket = key("leases")
    assert await store.lease_acquire(bucket, "a", 2, 0.5) == (True, 1)
    assert await store.lease_acquire(bucket, "b", 2, 0.5) == (True, 2)
    assert await store.lease_acquire(bucket, "c", 2, 0.5) == (False, 2)
    await store.lease_release(bucket, "a")
    assert await store.lease_acquire(bucket, "c", 2, 0.5) == (True, 2)
    await asyncio.sleep(0.3)
    assert await store.lease_renew(bucket, "c", 0.5)
    await asyncio.sleep(0.3)  # b expired (a holder that died); c was renewed
    assert await store.lease_acquire(bucket, "d", 2, 0.5) == (True, 2)
    assert not await store.lease_renew(bucket, "b", 0.5)


async def test_counters_and_event_buffers(store):
    k = key("spend")
    assert await store.incr(k, 0.25, 10) == 0.25 and await store.incr(k, 0.5, 10) == 0.75
    assert await store.read_counter(k) == 0.75
    s = key("events")
    assert not (await store.stream_read(s, 0, 0)).exists
    await store.stream_append(s, [(1, b"one"), (2, b"two")], 10)
    assert (await store.stream_read(s, 1, 0)).entries == [(2, b"two")]

    async def later() -> None:
        await asyncio.sleep(0.2)
        await store.stream_append(s, [(3, b"three")], 10)
        await store.stream_end(s, 10)

    task = asyncio.create_task(later())
    started = time.monotonic()
    read = await store.stream_read(s, 2, 1.5)
    assert read.entries == [(3, b"three")] and 0.1 < time.monotonic() - started < 1.2, "a read waits for the next"
    await task
    assert (await store.stream_read(s, 3, 0.1)).ended


async def test_rate_limits_and_leases_are_shared_by_two_replicas(redis):
    one, two = RedisStore(redis.url), RedisStore(redis.url)
    s = settings(rate_limit="3/minute", max_concurrent_streams=1)
    catalogue = load_catalogue(None, include_local=False)
    gates = [Gate(s, one, lambda: catalogue), Gate(s, two, lambda: catalogue)]
    who = Identity("key", key("shared"))
    passes = [await gates[i % 2].admit(who, lease=False) for i in range(3)]
    assert [p.headers["X-RateLimit-Remaining"] for p in passes] == ["2", "1", "0"]
    with pytest.raises(Refused) as refused:
        await gates[1].admit(who, lease=False)
    assert refused.value.limit == "rate" and int(refused.value.headers["Retry-After"]) >= 1
    other = Identity("key", key("leases"))
    held = await gates[0].admit(other)
    with pytest.raises(Refused) as refused:
        await gates[1].admit(other)
    assert refused.value.limit == "streams"
    await held.release()
    await (await gates[1].admit(other)).release()


async def test_spend_is_booked_from_the_catalogue_prices_and_refuses_when_spent(redis):
    catalogue = load_catalogue(None, include_local=False)
    priced = next(m for m in catalogue.models if m.output_cost_per_mtok)
    gate = Gate(settings(daily_budget_usd=0.01), RedisStore(redis.url), lambda: catalogue)
    who = Identity("user", key("spender"))
    await gate.admit(who, lease=False)
    tokens = int(0.011 / (priced.output_cost_per_mtok / 1_000_000)) + 1
    await gate.book(who, {priced.id: [0, tokens]})
    usd, _ = await gate.spent(who)
    assert usd == pytest.approx(tokens * priced.output_cost_per_mtok / 1_000_000)
    with pytest.raises(Refused) as refused:
        await gate.admit(who, lease=False)
    assert refused.value.limit == "budget" and "resets at 00:00 UTC" in refused.value.message


async def test_a_stopped_redis_fails_fast_and_the_store_reconnects(tmp_path):
    server = RedisServer(free_port(), tmp_path).start()
    store = RedisStore(server.url)
    gate = Gate(settings(rate_limit="1/minute", max_concurrent_streams=1), store,
                lambda: load_catalogue(None, include_local=False))
    await store.set("k", b"v", 10)
    server.stop()
    with pytest.raises(StoreUnavailable):
        await store.get("k")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.get("k")  # fails fast, no connect timeout per call
    assert time.monotonic() - started < 0.1
    who = Identity("ip", "192.0.2.1")
    for _ in range(3):
        await gate.admit(who)  # fails open: over both limits, still admitted
    assert (await store.probe()).state == "unreachable"
    server.start()
    assert (await store.probe()).state == "ok"
    await gate.admit(who)
    with pytest.raises(Refused):
        await gate.admit(who)
    server.stop()


async def test_a_cooldown_benched_by_one_replica_shows_in_the_others_mirror(redis):
    one, two = Cooldowns(60, max_seconds=600), Cooldowns(60, max_seconds=600)
    a = SharedCooldowns(one, RedisStore(redis.url), lambda: RedisStore(redis.url))
    b = SharedCooldowns(two, RedisStore(redis.url), lambda: RedisStore(redis.url))
    model = key("p:model")
    one.bench(model, RateLimited("slow down", retry_after=30))
    await asyncio.gather(*a._pending)
    await b.refresh()
    bench = two.get(model)
    assert bench is not None and 29 <= two.remaining(bench) <= 30
    assert bench.error.describe() == "rate limited: slow down"
    one.clear(model)
    await asyncio.gather(*a._pending)
    await b.refresh()
    assert two.get(model) is None, "a clear travels too"


async def test_a_summary_made_by_one_replica_is_reused_by_the_other(redis):
    s = settings(summary_threshold=1500, max_context_tokens=4000)
    first, second = FakeSummarizer(), FakeSummarizer()
    one = ContextManager(s, first, word_counter(), shared=SharedSummaries(RedisStore(redis.url)))
    two = ContextManager(s, second, word_counter(), shared=SharedSummaries(RedisStore(redis.url)))
    history = conversation(6, 150)
    _, prepared = await run(one, history, 3000)
    assert len(first.calls) == 1 and prepared.summary_turns
    _, again = await run(two, resend(history), 3000)
    assert second.calls == [], "the other replica found the summary in the store"
    assert again.messages == prepared.messages and SYSTEM in again.messages[0].content


async def test_a_replica_holding_another_chats_summary_of_the_same_length_still_reuses_the_shared_one(redis):
    """Its local cache having *a* summary ending at that message must not stop
    it looking up the store for *this* conversation's summary."""
    s = settings(summary_threshold=1500, max_context_tokens=4000)
    first, second = FakeSummarizer(), FakeSummarizer()
    one = ContextManager(s, first, word_counter(), shared=SharedSummaries(RedisStore(redis.url)))
    two = ContextManager(s, second, word_counter(), shared=SharedSummaries(RedisStore(redis.url)))
    mine, theirs = key("mine"), key("theirs")  # unseen chats (the store outlives each test)
    other = [Message(m.role, f"{theirs} {m.content}") for m in conversation(6, 150)]
    _, own = await run(two, other, 3000)
    assert len(second.calls) == 1 and own.summary_turns, "replica two summarized a chat of its own"
    history = [Message(m.role, f"{mine} {m.content}") for m in conversation(6, 150)]
    _, prepared = await run(one, history, 3000)
    assert len(first.calls) == 1 and prepared.summary_turns
    assert prepared.summary_turns == own.summary_turns, "both summaries end at the same message"
    _, again = await run(two, resend(history), 3000)
    assert len(second.calls) == 1, "replica two found replica one's summary in the store"
    assert again.messages == prepared.messages


async def test_the_summary_cache_stays_local_without_a_shared_store():
    s = settings(summary_threshold=1500, max_context_tokens=4000)
    first, second = FakeSummarizer(), FakeSummarizer()
    await run(ContextManager(s, first, word_counter()), conversation(6, 150), 3000)
    await run(ContextManager(s, second, word_counter()), conversation(6, 150), 3000)
    assert len(first.calls) == len(second.calls) == 1


def test_urls_are_printed_without_their_password():
    assert redacted("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert redacted("redis://user:pw@host/0") == "redis://user:***@host/0"
    assert redacted("redis://host:6379/0") == "redis://host:6379/0"


async def test_a_lease_is_renewed_while_its_answer_runs_and_freed_at_the_end(redis):
    gate = Gate(settings(max_concurrent_streams=1, stream_lease_ttl=0.3), RedisStore(redis.url),
                lambda: load_catalogue(None, include_local=False))
    who = Identity("key", key("long-answer"))
    running = await gate.admit(who)
    await asyncio.sleep(1.0)  # three lease lives: only renewal keeps it
    with pytest.raises(Refused):
        await gate.admit(who)
    await running.release()
    await (await gate.admit(who)).release()


async def test_tokens_of_models_without_prices_count_against_the_daily_token_limit():
    catalogue = load_catalogue(None, include_local=False)
    gate = Gate(settings(daily_token_limit=100), MemoryStore(), lambda: catalogue)
    who = Identity("ip", "198.51.100.7")
    await gate.book(who, {"ollama:llama3.2:latest": [40, 70]})  # discovered models carry no prices
    assert await gate.spent(who) == (0.0, 110.0)
    with pytest.raises(Refused) as refused:
        await gate.admit(who)
    assert "CHAT_DAILY_TOKEN_LIMIT" in refused.value.message and refused.value.limit == "budget"
