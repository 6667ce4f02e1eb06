"""The router, branch by branch, against scripted providers.

Two providers, ``a`` and ``b``, each with one model per tier. Time is fake
(``FakeTime``) except where a real time limit is the point of the test. The
last section repeats the key scenarios through the real OpenAI adapter against
local wire servers (``tests.wire``): real bytes, real sockets, real disconnects.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from chat.catalogue import Catalogue, ModelSpec
from chat.config import Settings
from chat.continuation import Seam, continue_instruction, strip_overlap
from chat.errors import (
    AllModelsFailed,
    AuthenticationFailed,
    ConnectionFailed,
    ContentFiltered,
    ContextLengthExceeded,
    InputError,
    Interrupted,
    InvalidRequest,
    ModelNotFound,
    NotConfigured,
    RateLimited,
    Timeout,
    Unavailable,
)
from chat.events import FallingBack, Finish, ModelSelected, Progress, Retrying, TextDelta, Usage
from chat.messages import Message
from chat.providers.base import Availability, State
from chat.providers.openai import OpenAIProvider
from chat.router import Router
from tests.scripted import Reply, ScriptedProvider
from tests.wire import Script, WireServer

WALL_OFFSET = 1_800_000_000.0


def spec(model_id: str, tier: str, max_output_tokens: int | None = None) -> ModelSpec:
    return ModelSpec(model_id, model_id.upper(), tier, 8000, max_output_tokens)


CATALOGUE = Catalogue(
    models=(
        spec("a:fast", "fast"),
        spec("a:std", "standard"),
        spec("a:prem", "premium"),
        spec("b:fast", "fast"),
        spec("b:std", "standard", max_output_tokens=100),
        spec("b:prem", "premium"),
    ),
    fallback=("a:fast", "b:fast"),
)


class FakeTime:
    """A monotonic clock, a wall clock and a sleep that only advances them."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL_OFFSET + self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


def settings(**overrides: object) -> Settings:
    # model_construct: defaults only, nothing read from the environment or a .env file.
    values = dict(
        first_token_timeout=5.0,
        stall_timeout=5.0,
        max_retries=2,
        retry_base_delay=0.5,
        retry_max_delay=4.0,
        cooldown_seconds=60.0,
        fallback_depth=4,
    )
    values.update(overrides)
    return Settings.model_construct(**values)


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def a() -> ScriptedProvider:
    return ScriptedProvider("a")


@pytest.fixture
def b() -> ScriptedProvider:
    return ScriptedProvider("b")


def make_router(clock: FakeTime, *providers: ScriptedProvider, catalogue: Catalogue = CATALOGUE, **overrides: object) -> Router:
    return Router(
        settings(**overrides),
        catalogue,
        {p.name: p for p in providers},
        clock=clock.clock,
        wall=clock.wall,
        sleep=clock.sleep,
        rand=lambda: 0.5,
    )


USER = [Message("user", "hello")]


async def collect(router: Router, model_id: str, messages=USER, **kwargs) -> list:
    return [event async for event in router.stream(model_id, messages, **kwargs)]


async def collect_until_error(router: Router, model_id: str, messages=USER, **kwargs):
    events: list = []
    with pytest.raises(Exception) as info:
        async for event in router.stream(model_id, messages, **kwargs):
            events.append(event)
    return events, info.value


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def of_type(events: list, cls: type) -> list:
    return [e for e in events if isinstance(e, cls)]


# -- choice ------------------------------------------------------------------------


async def test_explicit_model_answers_and_is_announced(clock, a, b):
    a.enqueue("std", Reply(["Hel", "lo"], usage=Usage(3, 2)))
    events = await collect(make_router(clock, a, b), "a:std")
    assert events == [
        ModelSelected("a:std", "A:STD", None, "chosen in the model menu"),
        TextDelta("Hel"),
        TextDelta("lo"),
        Usage(3, 2),
        Finish("stop"),
    ]


async def test_unknown_model_lists_available_ids(clock, a, b):
    router = make_router(clock, a, b)
    with pytest.raises(InputError) as info:
        await collect(router, "x:nope")
    assert str(info.value) == (
        "Unknown model 'x:nope'. Available: auto, a:fast, a:std, a:prem, b:fast, b:std, b:prem"
    )
    with pytest.raises(InputError):
        router.resolve("nope", "hi")


async def test_auto_picks_tier_and_reports_it(clock, a, b):
    router = make_router(clock, a, b)
    events = await collect(router, "auto", [Message("user", "Prove step by step that sqrt(2) is irrational.")])
    selected = of_type(events, ModelSelected)[0]
    assert (selected.model_id, selected.tier) == ("a:prem", "premium")
    assert "prove" in selected.reason and "step by step" in selected.reason
    assert [c.model for c in a.calls] == ["prem"]

    events = await collect(router, "auto", [Message("user", "hi there")])
    assert of_type(events, ModelSelected)[0].model_id == "a:fast"
    assert of_type(events, ModelSelected)[0].tier == "fast"


async def test_forced_tier_overrides_the_heuristic(clock, a, b):
    router = make_router(clock, a, b)
    events = await collect(router, "auto", [Message("user", "Prove step by step and compare.")], tier="fast")
    selected = of_type(events, ModelSelected)[0]
    assert (selected.model_id, selected.tier, selected.reason) == ("a:fast", "fast", "fast tier requested")
    with pytest.raises(InputError):
        router.resolve("auto", "hi", tier="turbo")


async def test_auto_skips_unready_models_and_uses_nearest_tier(clock, a, b):
    for provider in (a, b):
        provider.states["prem"] = Availability(State.MISSING_KEY, "no key")
    a.states["std"] = Availability(State.UNREACHABLE, "down")
    route = make_router(clock, a, b).resolve("auto", "Prove it step by step.")
    assert route.tier == "premium"
    assert route.primary.id == "b:std"  # standard is nearer to premium than fast
    assert "no premium model is ready" in route.reason
    assert [s.id for s in route.chain] == ["b:std", "a:fast", "b:fast"]


async def test_route_chain_order_skips_unready_and_is_capped(clock, a, b):
    router = make_router(clock, a, b, fallback_depth=3)
    route = router.resolve("a:std", "hi")
    assert route.primary.id == "a:std" and route.tier is None
    assert [s.id for s in route.chain] == ["a:std", "b:std", "a:fast"]  # then b:fast, capped
    b.states["std"] = Availability(State.MISSING_KEY, "no key")
    router.cooldowns.bench("a:fast", RateLimited())
    assert [s.id for s in router.resolve("a:std", "hi").chain] == ["a:std", "b:fast"]


async def test_options_list_every_model_with_availability(clock, a):
    a.states["prem"] = Availability(State.MISSING_KEY, "OPENAI_API_KEY is not set")
    options = make_router(clock, a).options()  # no provider "b" at all
    assert [o.id for o in options] == list(CATALOGUE.ids())
    states = {o.id: o.availability.state for o in options}
    assert states["a:fast"] is State.READY
    assert states["a:prem"] is State.MISSING_KEY
    assert states["b:fast"] is State.DISABLED


async def test_catalogue_can_be_replaced(clock, a, b):
    router = make_router(clock, a, b)
    router.catalogue = CATALOGUE.with_models([spec("a:discovered", "fast")])
    assert router.options()[-1].id == "a:discovered"
    events = await collect(router, "a:discovered")
    assert of_type(events, ModelSelected)[0].model_id == "a:discovered"


async def test_auto_with_nothing_ready_says_why(clock, a):
    for model in ("fast", "std", "prem"):
        a.states[model] = Availability(State.MISSING_KEY, "set A_KEY")
    events, raised = await collect_until_error(make_router(clock, a), "auto")
    assert isinstance(raised, AllModelsFailed)
    assert ("a:fast", "not configured: set A_KEY") in [(m, e.describe()) for m, e in raised.attempts]
    assert events == []


async def test_max_tokens_capped_by_the_model(clock, a, b):
    router = make_router(clock, a, b)
    await collect(router, "b:std", max_tokens=500, temperature=0.2)
    await collect(router, "a:std", max_tokens=500)
    assert (b.calls[0].max_tokens, b.calls[0].temperature) == (100, 0.2)
    assert a.calls[0].max_tokens == 500


# -- fallback by error class -------------------------------------------------------

FALLBACK_ERRORS = [
    (RateLimited("slow down", retry_after=2), True),
    (Unavailable("503"), True),
    (ConnectionFailed("refused"), False),
    (Timeout("read timeout"), False),
    (AuthenticationFailed("401"), True),
    (NotConfigured("no key"), False),
    (ModelNotFound("404"), True),
]


@pytest.mark.parametrize(("error", "benched"), FALLBACK_ERRORS, ids=lambda v: type(v).__name__)
async def test_fallback_per_error_class(clock, a, b, error, benched):
    a.enqueue("std", Reply(error=error))
    b.enqueue("std", Reply(["from b"]))
    router = make_router(clock, a, b)
    events = await collect(router, "a:std")
    assert of_type(events, FallingBack) == [FallingBack("a:std", error.describe(), "b:std", continuing=False)]
    assert [e.model_id for e in of_type(events, ModelSelected)] == ["a:std", "b:std"]
    assert text_of(events) == "from b"
    assert isinstance(events[-1], Finish)
    assert clock.sleeps == []
    state = router.availability("a:std").state
    assert state is (State.COOLING_DOWN if benched else State.READY)


@pytest.mark.parametrize(
    "error",
    [InvalidRequest("bad parameter"), ContentFiltered("refused"), ContextLengthExceeded("too long")],
    ids=lambda v: type(v).__name__,
)
async def test_no_fallback_on_errors_the_user_must_see(clock, a, b, error):
    a.enqueue("std", Reply(error=error))
    events, raised = await collect_until_error(make_router(clock, a, b), "a:std")
    assert raised is error
    assert b.calls == []
    assert of_type(events, FallingBack) == []


async def test_context_length_after_text_is_a_failure(clock, a, b):
    a.enqueue("std", Reply(["Once upon a time"], error=ContextLengthExceeded()))
    b.enqueue("std", Reply([", the end."]))
    events = await collect(make_router(clock, a, b), "a:std")
    assert text_of(events) == "Once upon a time, the end."
    assert of_type(events, FallingBack)[0].continuing


async def test_content_filter_after_text_stops_the_answer(clock, a, b):
    error = ContentFiltered("flagged")
    a.enqueue("std", Reply(["Some text"], error=error))
    events, raised = await collect_until_error(make_router(clock, a, b), "a:std")
    assert raised is error
    assert text_of(events) == "Some text"
    assert b.calls == []


# -- retries -----------------------------------------------------------------------

ONLY_A = Catalogue(models=(spec("a:std", "standard"),))


async def test_immediate_fallback_when_another_model_is_ready(clock, a, b):
    a.enqueue("std", Reply(error=RateLimited(retry_after=1)))
    events = await collect(make_router(clock, a, b), "a:std")
    assert clock.sleeps == []
    assert of_type(events, Retrying) == []
    assert of_type(events, FallingBack)[0].next_model == "b:std"


async def test_retry_with_backoff_when_no_other_model(clock, a):
    a.enqueue("std", Reply(error=Unavailable("503")), Reply(error=Unavailable("503")), Reply(["ok"]))
    events = await collect(make_router(clock, a, catalogue=ONLY_A), "a:std")
    # base 0.5 doubling, jitter factor 0.5 + 0.5 * rand() = 0.75
    assert clock.sleeps == [0.375, 0.75]
    assert of_type(events, Retrying) == [
        Retrying("a:std", 1, 0.375, "unavailable or overloaded: 503"),
        Retrying("a:std", 2, 0.75, "unavailable or overloaded: 503"),
    ]
    assert len(of_type(events, ModelSelected)) == 1
    assert text_of(events) == "ok"
    assert len(a.calls) == 3


async def test_success_after_retry_ends_the_cooldown(clock, a):
    a.enqueue("std", Reply(error=Unavailable()))
    router = make_router(clock, a, catalogue=ONLY_A)
    await collect(router, "a:std")
    assert router.availability("a:std").ready


async def test_retry_after_is_honoured(clock, a):
    a.enqueue("std", Reply(error=RateLimited(retry_after=1.5)))
    events = await collect(make_router(clock, a, catalogue=ONLY_A), "a:std")
    assert clock.sleeps == [1.5]
    assert of_type(events, Retrying)[0].delay == 1.5


async def test_retry_after_beyond_the_cap_is_not_waited_for(clock, a):
    error = RateLimited(retry_after=30)
    a.enqueue("std", Reply(error=error))
    events, raised = await collect_until_error(make_router(clock, a, catalogue=ONLY_A), "a:std")
    assert clock.sleeps == []
    assert isinstance(raised, AllModelsFailed) and raised.attempts == [("a:std", error)]


async def test_retries_are_capped(clock, a):
    a.enqueue("std", *[Reply(error=Unavailable())] * 5)
    events, raised = await collect_until_error(make_router(clock, a, catalogue=ONLY_A, max_retries=2), "a:std")
    assert isinstance(raised, AllModelsFailed)
    assert len(raised.attempts) == 3 and len(a.calls) == 3
    assert len(clock.sleeps) == 2


async def test_backoff_is_capped_by_retry_max_delay(clock, a):
    a.enqueue("std", *[Reply(error=Unavailable())] * 3)
    router = make_router(clock, a, catalogue=ONLY_A, max_retries=3, retry_base_delay=2.0, retry_max_delay=3.0)
    router._rand = lambda: 1.0
    await collect(router, "a:std")
    assert clock.sleeps == [2.0, 3.0, 3.0]


async def test_not_retried_when_the_error_forbids_it(clock, a):
    a.enqueue("std", Reply(error=Timeout()))
    _, raised = await collect_until_error(make_router(clock, a, catalogue=ONLY_A), "a:std")
    assert isinstance(raised, AllModelsFailed) and clock.sleeps == []


async def test_retry_then_fallback(clock, a, b):
    # b:std is benched when a:std fails, so a:std is retried; the backoff outlasts
    # b's cooldown, so when a:std fails again the router falls back to b:std.
    router = make_router(clock, a, b, catalogue=Catalogue(models=(spec("a:std", "standard"), spec("b:std", "standard"))),
                         retry_base_delay=2.0)
    router.cooldowns.bench("b:std", Unavailable(retry_after=1.0))
    a.enqueue("std", Reply(error=Unavailable("503")), Reply(error=Unavailable("503 again")))
    b.enqueue("std", Reply(["from b"]))
    events = await collect(router, "a:std")
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ModelSelected", "Retrying", "FallingBack", "ModelSelected", "TextDelta", "Finish"]
    assert of_type(events, FallingBack)[0].reason == "unavailable or overloaded: 503 again"
    assert clock.sleeps == [1.5]
    assert text_of(events) == "from b"


# -- cooldown ----------------------------------------------------------------------


async def test_cooldown_entered_shown_and_expired(clock, a, b):
    router = make_router(clock, a, b)
    a.enqueue("std", Reply(error=RateLimited("429", retry_after=30)))
    await collect(router, "a:std")

    option = next(o for o in router.options() if o.id == "a:std")
    assert option.availability.state is State.COOLING_DOWN
    assert option.availability.until == pytest.approx(clock.wall() + 30)
    assert option.availability.detail == "rate limited: 429"
    assert "a:std" not in [s.id for s in router.resolve("auto", "hi", tier="standard").chain]

    # Asked for explicitly while benched: a notice says why, another model answers.
    events = await collect(router, "a:std")
    notice = of_type(events, FallingBack)[0]
    assert notice.failed_model == "a:std" and notice.next_model == "b:std"
    assert "cooling down" in notice.reason and "rate limited" in notice.reason
    assert len(a.calls) == 1

    clock.now += 30
    assert router.availability("a:std").ready
    events = await collect(router, "a:std")
    assert of_type(events, ModelSelected)[0].model_id == "a:std" and len(a.calls) == 2


async def test_cooldown_default_length(clock, a, b):
    router = make_router(clock, a, b, cooldown_seconds=45)
    a.enqueue("std", Reply(error=ModelNotFound()))
    await collect(router, "a:std")
    assert router.availability("a:std").until == pytest.approx(clock.wall() + 45)
    clock.now += 44.9
    assert not router.availability("a:std").ready
    clock.now += 0.1
    assert router.availability("a:std").ready


async def test_interrupted_benches_only_per_cause(clock, a, b):
    router = make_router(clock, a, b)
    a.enqueue("std", Reply(["x"], error=ConnectionFailed()))
    await collect(router, "a:std")
    assert router.availability("a:std").ready
    a.enqueue("std", Reply(["x"], error=Unavailable()))
    await collect(router, "a:std")
    assert router.availability("a:std").state is State.COOLING_DOWN


# -- not ready, depth, all failed --------------------------------------------------


async def test_explicit_model_not_ready_falls_back_with_reason(clock, a, b):
    a.states["std"] = Availability(State.MISSING_KEY, "OPENAI_API_KEY is not set")
    events = await collect(make_router(clock, a, b), "a:std")
    assert events[0] == FallingBack("a:std", "not configured: OPENAI_API_KEY is not set", "b:std")
    assert of_type(events, ModelSelected)[0].model_id == "b:std"
    assert a.calls == []


async def test_nothing_ready_lists_why(clock, a):
    for model in ("std", "fast"):
        a.states[model] = Availability(State.UNREACHABLE, "connection refused")
    _, raised = await collect_until_error(make_router(clock, a), "a:std")
    assert isinstance(raised, AllModelsFailed)
    listed = [(model, err.describe()) for model, err in raised.attempts]
    assert listed[:2] == [
        ("a:std", "connection failed: connection refused"),
        ("b:std", "not configured: no 'b' provider is set up"),
    ]
    assert {m for m, _ in listed} == {"a:std", "b:std", "a:fast", "b:fast"}


async def test_depth_cap(clock, a, b):
    for provider in (a, b):
        for model in ("std", "fast"):
            provider.enqueue(model, Reply(error=ConnectionFailed()))
    router = make_router(clock, a, b, fallback_depth=2, max_retries=0)
    _, raised = await collect_until_error(router, "a:std")
    assert isinstance(raised, AllModelsFailed)
    assert [m for m, _ in raised.attempts] == ["a:std", "b:std"]
    assert len(a.calls) + len(b.calls) == 2


async def test_all_failed_keeps_partial_text_and_lists_each_model(clock, a, b):
    catalogue = Catalogue(models=(spec("a:std", "standard"), spec("b:std", "standard")))
    a.enqueue("std", Reply(["Hello ", "wor"], error=Unavailable("503")))
    b.enqueue("std", Reply(error=AuthenticationFailed("bad key")))
    events, raised = await collect_until_error(make_router(clock, a, b, catalogue=catalogue), "a:std")
    assert isinstance(raised, AllModelsFailed)
    assert raised.partial_text == "Hello wor" == text_of(events)
    assert [(m, e.describe()) for m, e in raised.attempts] == [
        ("a:std", "stream interrupted (unavailable or overloaded: 503)"),
        ("b:std", "authentication failed: bad key"),
    ]
    assert "a:std" in str(raised) and "b:std" in str(raised)


# -- mid-stream recovery -----------------------------------------------------------


async def test_mid_stream_interruption_is_continued_without_duplicates(clock, a, b):
    history = [Message("system", "be brief"), Message("user", "Capital of France?")]
    a.enqueue("std", Reply(["The capital ", "of France ", "is"], error=ConnectionFailed("reset")))
    b.enqueue("std", Reply(["is", " Paris", "."]))
    events = await collect(make_router(clock, a, b), "a:std", history)
    assert text_of(events) == "The capital of France is Paris."
    notice = of_type(events, FallingBack)[0]
    assert notice == FallingBack(
        "a:std", "stream interrupted (connection failed: reset)", "b:std", continuing=True
    )
    assert of_type(events, ModelSelected)[1].reason == "continuing the answer of a:std"
    assert b.calls[0].messages == (
        *history,
        Message("assistant", "The capital of France is"),
        Message("user", continue_instruction("The capital of France is")),
    )


async def test_continuation_repeating_a_long_tail_is_cut(clock, a, b):
    a.enqueue("std", Reply(["Step 1: open the lid. ", "Step 2: pour"], finish=False))
    b.enqueue("std", Reply(["Step 2: ", "pour the water. ", "Step 3: wait."]))
    events = await collect(make_router(clock, a, b), "a:std")
    assert text_of(events) == "Step 1: open the lid. Step 2: pour the water. Step 3: wait."


async def test_genuine_continuation_is_untouched(clock, a, b):
    a.enqueue("std", Reply(["It is rain", "ing"], error=Unavailable()))
    b.enqueue("std", Reply([" today, so bring an umbrella."]))
    events = await collect(make_router(clock, a, b), "a:std")
    assert text_of(events) == "It is raining today, so bring an umbrella."


async def test_second_interruption_sends_all_text_so_far(clock, a, b):
    a.enqueue("std", Reply(["One, "], error=Unavailable()))
    b.enqueue("std", Reply(["two, "], error=Unavailable()))
    a.enqueue("fast", Reply(["three."]))
    events = await collect(make_router(clock, a, b), "a:std")
    assert text_of(events) == "One, two, three."
    assert a.calls[1].model == "fast"
    assert a.calls[1].messages[-2] == Message("assistant", "One, two, ")
    assert [n.continuing for n in of_type(events, FallingBack)] == [True, True]


async def test_whitespace_only_partial_is_not_continued(clock, a, b):
    a.enqueue("std", Reply(["\n"], error=Unavailable()))
    b.enqueue("std", Reply(["Fresh answer."]))
    events = await collect(make_router(clock, a, b), "a:std")
    assert text_of(events) == "\nFresh answer."
    assert b.calls[0].messages == tuple(USER)
    assert not of_type(events, FallingBack)[0].continuing


def test_strip_overlap_cases():
    assert strip_overlap("France is", "is Paris.") == " Paris."
    assert strip_overlap("France is ", "is Paris.") == "Paris."
    assert strip_overlap("France is", " is Paris.") == " Paris."
    assert strip_overlap("pour the", " the water") == " water"
    assert strip_overlap("It is rain", "ing today") == "ing today"  # too short, not whole words
    assert strip_overlap("abc Hello world", "Hello world again") == " again"
    assert strip_overlap("A whole answer.", "A whole answer. More.") == " More."
    assert strip_overlap("no overlap here", "Something else") == " Something else"  # not glued
    assert strip_overlap("no overlap here ", "Something else") == "Something else"


def test_seam_holds_back_only_while_a_repeat_is_possible():
    seam = Seam("The answer is forty")
    assert seam.feed("forty") == ""  # still a possible repeat
    assert seam.feed("-two.") == "-two."  # "forty-two." is not in the shown text: decided
    assert seam.feed(" Done") == " Done"
    seam = Seam("abc")
    assert seam.feed(" ") == ""
    assert seam.flush() == " "


# -- time limits and Stop ----------------------------------------------------------


async def test_first_token_timeout_falls_back(clock, a, b):
    a.enqueue("std", Reply(["late"], delay=5))
    b.enqueue("std", Reply(["on time"]))
    router = make_router(clock, a, b, first_token_timeout=0.2)
    started = time.monotonic()
    events = await collect(router, "a:std")
    assert time.monotonic() - started < 1.5
    assert of_type(events, FallingBack)[0].reason == "timed out: no text within 0.2 s"
    assert text_of(events) == "on time"
    assert a.closed_early == 1 and a.active == 0


async def test_progress_keeps_the_only_model_waiting(clock, a, b):
    # Queued behind other users, or reading a long prompt: alive, not stalled,
    # and with no other model ready the user waits for it, with progress.
    b.states["std"] = Availability(State.MISSING_KEY, "set B_KEY")
    a.enqueue("std", Reply(["worth the wait"], progress=5, progress_interval=0.1))
    only = Catalogue(models=(spec("a:std", "standard"), spec("b:std", "standard")))
    router = make_router(clock, a, b, catalogue=only, first_token_timeout=0.25)
    events = await collect(router, "a:std")
    assert text_of(events) == "worth the wait"
    assert [e.model_id for e in of_type(events, ModelSelected)] == ["a:std"] and b.calls == []
    assert len(of_type(events, Progress)) == 5


async def test_progress_does_not_hold_a_model_when_another_is_ready(clock, a, b):
    # A queued or hung request falls back once the first-token limit passes.
    a.enqueue("std", Reply(["too late"], progress=50, progress_interval=0.1))
    b.enqueue("std", Reply(["from b"]))
    router = make_router(clock, a, b, first_token_timeout=0.3)
    started = time.monotonic()
    events = await collect(router, "a:std")
    assert time.monotonic() - started < 2.0
    assert text_of(events) == "from b"
    assert of_type(events, FallingBack)[0].reason == "timed out: no text within 0.3 s"
    assert 1 <= len(of_type(events, Progress)) <= 4
    assert a.closed_early == 1 and a.active == 0


async def test_silence_after_progress_still_times_out(clock, a, b):
    a.enqueue("std", Reply(["late"], progress=1, progress_interval=0.05, delay=5))
    b.enqueue("std", Reply(["on time"]))
    router = make_router(clock, a, b, first_token_timeout=0.2)
    started = time.monotonic()
    events = await collect(router, "a:std")
    assert time.monotonic() - started < 1.5
    assert text_of(events) == "on time"


async def test_fallbacks_too_small_for_the_request_are_skipped(clock, a, b):
    small = Catalogue(
        models=(ModelSpec("a:big", "BIG", "fast", 100_000), ModelSpec("b:small", "SMALL", "fast", 4_000)),
        fallback=("a:big", "b:small"),
    )
    a.enqueue("big", Reply(error=Unavailable("down")))
    router = make_router(clock, a, b, catalogue=small, max_retries=0)
    events, error = await collect_until_error(router, "a:big", min_window=20_000)
    assert isinstance(error, AllModelsFailed) and b.calls == []
    assert "needs ~20,000 tokens; its window is 4,000" in str(error)
    # A request that fits goes to the small model as usual.
    a.enqueue("big", Reply(error=Unavailable("down")))
    assert text_of(await collect(router, "a:big", min_window=3_000)) == "echo: hello"


async def test_stall_timeout_continues_with_next_model(clock, a, b):
    a.enqueue("std", Reply(["Hello", " there"], stall=5, stall_after=1))
    b.enqueue("std", Reply([", friend."]))
    router = make_router(clock, a, b, stall_timeout=0.2)
    started = time.monotonic()
    events = await collect(router, "a:std")
    assert time.monotonic() - started < 1.5
    notice = of_type(events, FallingBack)[0]
    assert notice.continuing and notice.reason == "stream interrupted (timed out: no text for 0.2 s)"
    assert text_of(events) == "Hello, friend."
    assert a.closed_early == 1 and a.active == 0


async def test_time_limits_are_per_event_not_per_answer(clock, a):
    a.enqueue("std", Reply(["a"] * 8, delay=0.05))
    router = make_router(clock, a, catalogue=ONLY_A, first_token_timeout=0.2, stall_timeout=0.2)
    assert text_of(await collect(router, "a:std")) == "a" * 8


async def test_a_slow_consumer_is_not_a_stall(clock, a):
    a.enqueue("std", Reply(["a", "b", "c"]))
    router = make_router(clock, a, catalogue=ONLY_A, stall_timeout=0.1)
    events = []
    async for event in router.stream("a:std", USER):
        events.append(event)
        await asyncio.sleep(0.2)  # e.g. the UI busy with the previous update
    assert text_of(events) == "abc" and of_type(events, FallingBack) == []


async def test_stop_during_backoff_is_prompt(a):
    a.enqueue("std", Reply(error=RateLimited(retry_after=3)))
    router = Router(settings(), ONLY_A, {"a": a})  # real sleep
    seen: list = []

    async def consume() -> None:
        async for event in router.stream("a:std", USER):
            seen.append(event)

    task = asyncio.create_task(consume())
    while not any(isinstance(e, Retrying) for e in seen):
        await asyncio.sleep(0.01)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 0.1
    assert len(a.calls) == 1 and a.active == 0


async def test_stop_mid_stream_closes_the_provider_stream(clock, a):
    a.enqueue("std", Reply(["tok "] * 100, delay=0.02))
    router = make_router(clock, a, catalogue=ONLY_A)
    seen: list = []

    async def consume() -> None:
        async for event in router.stream("a:std", USER):
            seen.append(event)

    task = asyncio.create_task(consume())
    while len(of_type(seen, TextDelta)) < 3:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert a.active == 0 and a.closed_early == 1


async def test_closing_the_router_stream_closes_the_provider_stream(clock, a):
    a.enqueue("std", Reply(["tok "] * 100))
    stream = make_router(clock, a, catalogue=ONLY_A).stream("a:std", USER)
    async for event in stream:
        if isinstance(event, TextDelta):
            break
    await stream.aclose()
    assert a.active == 0 and a.closed_early == 1


async def test_interrupted_partial_text_matches_what_was_shown(clock, a, b):
    # guard_stream's partial text and the router's shown text agree on a plain failure.
    a.enqueue("std", Reply(["abc", "def"], error=Unavailable()))
    b.enqueue("std", Reply(error=Unavailable()))
    catalogue = Catalogue(models=(spec("a:std", "standard"), spec("b:std", "standard")))
    router = make_router(clock, a, b, catalogue=catalogue, max_retries=0)
    events, raised = await collect_until_error(router, "a:std")
    first = raised.attempts[0][1]
    assert isinstance(first, Interrupted) and first.partial_text == "abcdef" == raised.partial_text


# -- through the real OpenAI adapter and local wire servers ------------------------

WIRE_CATALOGUE = Catalogue(
    models=(spec("p:model", "standard"), spec("f:model", "standard")),
)


@pytest.fixture
def servers():
    with WireServer() as p_server, WireServer() as f_server:
        yield p_server, f_server


def wire_router(servers, **overrides: object) -> Router:
    s = settings(connect_timeout=2.0, **overrides)
    p_server, f_server = servers
    providers = {
        name: OpenAIProvider(s, name=name, base_url=server.openai_base_url, key_required=False)
        for name, server in (("p", p_server), ("f", f_server))
    }
    return Router(s, WIRE_CATALOGUE, providers)


def words(n: int, start: int = 0) -> list[str]:
    return [f"w{i} " for i in range(start, n)]


async def test_wire_503_falls_back(servers):
    p_server, f_server = servers
    p_server.enqueue(Script(status=503, error="overloaded"))
    f_server.enqueue(Script(tokens=["from ", "f"]))
    events = await collect(wire_router(servers), "p:model")
    notice = of_type(events, FallingBack)[0]
    assert (notice.failed_model, notice.next_model) == ("p:model", "f:model")
    assert "503" in notice.reason
    assert text_of(events) == "from f"


async def test_wire_cut_after_ten_tokens_is_continued(servers):
    p_server, f_server = servers
    p_server.enqueue(Script(tokens=words(30), cut_after=10))
    f_server.enqueue(Script(tokens=["w9 ", *words(30, 10)]))  # repeats the last token
    events = await collect(wire_router(servers), "p:model")
    assert text_of(events) == "".join(words(30))
    assert of_type(events, FallingBack)[0].continuing
    sent = f_server.chat_requests[0].body["messages"]
    assert sent[-2] == {"role": "assistant", "content": "".join(words(10))}
    assert sent[-1] == {"role": "user", "content": continue_instruction("".join(words(10)))}


async def test_wire_first_token_stall_falls_back_and_disconnects(servers):
    p_server, f_server = servers
    p_server.enqueue(Script(tokens=["late"], stall=5))
    f_server.enqueue(Script(tokens=["on time"]))
    started = time.monotonic()
    events = await collect(wire_router(servers, first_token_timeout=0.3), "p:model")
    assert time.monotonic() - started < 2
    assert text_of(events) == "on time"
    assert await p_server.wait_disconnect(1.0) is not None


async def test_wire_mid_stream_stall_is_continued(servers):
    p_server, f_server = servers
    p_server.enqueue(Script(tokens=words(6), stall=5, stall_after=3))
    f_server.enqueue(Script(tokens=words(6, 3)))
    events = await collect(wire_router(servers, stall_timeout=0.3), "p:model")
    assert text_of(events) == "".join(words(6))
    assert "no text for 0.3 s" in of_type(events, FallingBack)[0].reason
    assert await p_server.wait_disconnect(1.0) is not None


async def test_wire_stop_during_fallback_disconnects_upstream(servers):
    p_server, f_server = servers
    p_server.enqueue(Script(status=503))
    f_server.enqueue(Script(tokens=words(200), delay=0.02))
    router = wire_router(servers)
    seen: list = []

    async def consume() -> None:
        async for event in router.stream("p:model", USER):
            seen.append(event)

    task = asyncio.create_task(consume())
    while not of_type(seen, TextDelta):
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gone = await f_server.wait_disconnect(1.0)
    assert gone is not None and gone.finished is None


async def test_ollama_ids_may_omit_the_latest_tag(clock):
    ollama = ScriptedProvider("ollama")
    catalogue = Catalogue(models=(ModelSpec("ollama:llama3.2:latest", "llama", "fast", 8000),))
    router = make_router(clock, ollama, catalogue=catalogue)
    assert router.resolve("ollama:llama3.2", "hi").primary.id == "ollama:llama3.2:latest"
    assert text_of(await collect(router, "ollama:llama3.2")) == "echo: hello"
    with pytest.raises(InputError):
        router.resolve("ollama:mistral", "hi")
