"""Cooldowns: Retry-After clamped, honoured from an in-stream error, the table
shared safely across threads and event loops, and the menu always readable."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time

import pytest

from chat.catalogue import Catalogue, ModelSpec
from chat.cooldown import Cooldowns
from chat.errors import RateLimited, Unavailable
from chat.messages import Message
from chat.providers.errors_map import make_error, retry_after
from chat.providers.openai import OpenAIProvider
from chat.runtime import Runtime
from chat.ui import model_choices
from tests.scripted import Reply, ScriptedProvider
from tests.wire import WireServer
from tests.wire.fixtures import make_settings, sdk_env  # noqa: F401 - a fixture

MIN_SECONDS = 1.0

CATALOGUE = Catalogue(
    models=(ModelSpec("fake:a", "Model A", "fast", 8000), ModelSpec("fake:b", "Model B", "fast", 8000)),
    fallback=("fake:a", "fake:b"),
)


@pytest.mark.parametrize(
    ("retry_after", "seconds"),
    [
        (7.0, 7.0),
        (0.0, MIN_SECONDS),
        (0.2, MIN_SECONDS),
        (-30.0, MIN_SECONDS),
        (599.0, 599.0),
        (601.0, 600.0),
        (1e308, 600.0),
        (math.inf, 600.0),
        (-math.inf, MIN_SECONDS),
        (math.nan, 600.0),
    ],
)
def test_every_retry_after_is_clamped(retry_after, seconds):
    now = [1000.0]
    table = Cooldowns(60.0, lambda: now[0])  # CHAT_MAX_COOLDOWN's default: 600 s
    bench = table.bench("m", RateLimited(retry_after=retry_after))
    assert bench.until - now[0] == seconds


def test_the_longest_bench_is_configurable():
    from chat.cooldown import clamp_retry_after

    assert Cooldowns(60.0, lambda: 0.0, max_seconds=30.0).bench("m", RateLimited(retry_after=math.inf)).until == 30
    assert clamp_retry_after(math.inf, 30.0) == 30.0


def test_no_retry_after_benches_for_the_default():
    table = Cooldowns(60.0, lambda: 0.0)
    assert table.bench("m", Unavailable()).until == 60.0
    assert Cooldowns(0.0, lambda: 0.0).bench("m", Unavailable()).until == 0.0  # 0 turns benches off


def test_retry_after_headers_that_mean_nothing_are_ignored():
    from chat.providers.errors_map import retry_after_in_text

    assert retry_after({"retry-after": "nan"}) is None
    assert retry_after({"retry-after": "inf"}) == math.inf  # clamped where it is used
    assert retry_after({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_in_text("Rate limit reached. Please try again in 20s.") == 20
    assert retry_after_in_text("Please try again in 1m30s") == 90
    assert retry_after_in_text("try again in 250ms") == 0.25
    assert retry_after_in_text("no hint here") is None
    error = make_error(None, "Rate limit reached for requests. Please try again in 7s.", hint="rate_limit_exceeded")
    assert isinstance(error, RateLimited) and error.retry_after == 7


def test_the_table_is_safe_across_threads_and_event_loops():
    # A clock that runs fast (every bench has expired by the next look) and lets
    # another thread in between "is it expired?" and "forget it": without a
    # lock two threads forget the same entry (KeyError).
    ticks = itertools.count()
    table = Cooldowns(60.0, lambda: time.sleep(0.0005) or next(ticks) * 10.0)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    async def hammer(worker: int) -> None:
        for i in range(25):
            table.bench("shared", RateLimited(retry_after=1))
            table.get("shared")
            table.bench(f"own-{worker}-{i}", RateLimited(retry_after=1))
            table.clear(f"own-{worker}-{i}")
            await asyncio.sleep(0)

    def run(worker: int) -> None:
        start.wait()
        try:
            asyncio.run(hammer(worker))  # one event loop per thread
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []


async def test_an_infinite_retry_after_leaves_the_menu_readable(settings_factory):
    fake = ScriptedProvider("fake")
    settings = settings_factory(local_model_enabled=False, ollama_enabled=False)
    runtime = Runtime.build(settings, providers={"fake": fake}, catalogue=CATALOGUE)
    fake.enqueue("a", Reply(error=RateLimited("429", retry_after=math.inf)))
    async for _ in runtime.router.stream("fake:a", [Message("user", "hi")]):
        pass
    label = dict((v, k) for k, v in model_choices(runtime))["fake:a"]
    assert "cooling down until" in label, label
    until = runtime.router.availability("fake:a").until
    assert until is not None and time.time() + 590 < until <= time.time() + 600


async def test_an_in_stream_rate_limit_benches_for_its_retry_after(settings_factory):
    fake = ScriptedProvider("fake")
    runtime = Runtime.build(settings_factory(local_model_enabled=False, ollama_enabled=False),
                            providers={"fake": fake}, catalogue=CATALOGUE)
    fake.enqueue("a", Reply(["Hel"], error=RateLimited("429 in the stream", retry_after=7)))
    text = [e.text async for e in runtime.router.stream("fake:a", [Message("user", "hi")]) if hasattr(e, "text")]
    assert text[0] == "Hel"
    bench = runtime.router.cooldowns.get("fake:a")
    assert bench is not None and 6 < runtime.router.cooldowns.remaining(bench) <= 7


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "ollama"])
async def test_wire_in_stream_rate_limit_retry_after_is_honoured(protocol, sdk_env):
    from chat.providers.anthropic import AnthropicProvider
    from chat.providers.ollama import OllamaProvider
    from chat.router import Router

    with WireServer(ollama_models=["m"]) as wire:
        settings = make_settings(
            OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=wire.openai_base_url,
            ANTHROPIC_API_KEY="sk-test", ANTHROPIC_BASE_URL=wire.url, OLLAMA_HOST=wire.url,
        )
        provider = {
            "openai": lambda: OpenAIProvider(settings, api_key=settings.openai_api_key, base_url=wire.openai_base_url),
            "anthropic": lambda: AnthropicProvider(settings, api_key=settings.anthropic_api_key, base_url=wire.url),
            "ollama": lambda: OllamaProvider(settings),
        }[protocol]()
        if protocol == "ollama":
            await provider.discover()
        catalogue = Catalogue(models=(ModelSpec(f"{protocol}:m", "M", "fast", 8000),))
        router = Router(settings, catalogue, {protocol: provider})
        events = [e async for e in _until_failure(router.stream(
            f"{protocol}:m", [Message("user", "one two three four [[error-event:2:429]] [[retry-after:42]]")]))]
        assert "".join(getattr(e, "text", "") for e in events) == "Echo: one"
        bench = router.cooldowns.get(f"{protocol}:m")
        assert bench is not None, "an in-stream rate limit benches the model"
        assert 40 < router.cooldowns.remaining(bench) <= 42, router.cooldowns.remaining(bench)
        await provider.aclose()


async def _until_failure(stream):
    try:
        async for event in stream:
            yield event
    except Exception:  # every model failed: what was shown is what we check
        return
