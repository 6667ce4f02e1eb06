"""Context management: planning, folding, caching, failure and recovery.

Most tests count one token per word (plus the usual per-message overhead) so
budgets can be reasoned about; the unicode tests use the real estimate. The
summarizer is scripted; ``RouterSummarizer`` is tested against a scripted router.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import pytest

from chat.config import Settings
from chat.context import (
    SUMMARY_HEADER,
    ContextManager,
    Fold,
    Limits,
    PreparedContext,
    Summary,
    Use,
    View,
    plan,
    plan_trim,
)
from chat.errors import AllModelsFailed, InputError, RateLimited
from chat.events import (
    ContextTrimmed,
    Event,
    Finish,
    ModelSelected,
    SummaryInUse,
    Summarizing,
    TextDelta,
    Usage,
)
from chat.messages import Message
from chat.summarizer import MAX_CHARS_PER_MESSAGE, RouterSummarizer, SummaryFailed
from chat.tokens import TokenCounter

SYSTEM = "You are helpful."  # 3 words + 4 overhead; with reply priming the fixed part is 10


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = dict(
        max_context_tokens=8000, summary_threshold=6000, summary_max_tokens=400, summary_model=""
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def word_counter() -> TokenCounter:
    return TokenCounter(lambda text: len(text.split()))


VOCAB = (
    "the plan for the launch needs three more reviews and a budget of twelve thousand "
    "euros before Friday while Maria checks the contract and asks about open questions"
).split()


def words(n: int, tag: str) -> str:
    """``n`` words: a unique tag, then ordinary English (so the real estimate is realistic)."""
    return " ".join([tag, *(VOCAB[i % len(VOCAB)] for i in range(n - 1))])


class FakeSummarizer:
    """Scripted summarizer: records each call; ``fail`` makes calls raise or return ``""``."""

    def __init__(self, seen: list[object] | None = None) -> None:
        self.calls: list[tuple[str | None, tuple[Message, ...]]] = []
        self.fail: BaseException | str | None = None
        self.seen = seen  # events the caller had received when we were called

    async def summarize(self, previous: str | None, turns: Sequence[Message]) -> str:
        self.calls.append((previous, tuple(turns)))
        if self.seen is not None:
            assert any(isinstance(e, Summarizing) for e in self.seen), "Summarizing must come first"
        if isinstance(self.fail, BaseException):
            raise self.fail
        if self.fail is not None:
            return self.fail
        return f"summary#{len(self.calls)} of {len(turns)} turns"


def conversation(exchanges: int, size: int = 200) -> list[Message]:
    """``exchanges`` user/assistant pairs plus a final user message, ``size`` words each."""
    history: list[Message] = []
    for i in range(exchanges):
        history.append(Message("user", words(size, f"u{i}_")))
        history.append(Message("assistant", words(size, f"a{i}_")))
    history.append(Message("user", words(size, "latest_")))
    return history


def resend(history: Sequence[Message]) -> list[Message]:
    """What a stateless caller sends: equal messages, new string objects."""
    return [Message(m.role, "".join(list(m.content))) for m in history]


async def run(
    cm: ContextManager, history: Sequence[Message], budget: int, **kw: object
) -> tuple[list[Event], PreparedContext]:
    events: list[Event] = []
    prepared = None
    async for item in cm.prepare(SYSTEM, history, budget, **kw):  # type: ignore[arg-type]
        if isinstance(item, PreparedContext):
            prepared = item
        else:
            events.append(item)
    assert prepared is not None
    return events, prepared


def manager(
    summarizer: FakeSummarizer | None = None, **overrides: object
) -> tuple[ContextManager, FakeSummarizer]:
    fake = summarizer or FakeSummarizer()
    return ContextManager(settings(**overrides), fake, word_counter()), fake


BUDGET = 8000 - 1024  # budget_for([8192], 1024) with the default cap


# -- budgets -------------------------------------------------------------------


def test_budget_is_smallest_window_or_cap_minus_reserved_output() -> None:
    cm, _ = manager()
    assert cm.budget_for([8192], 1024) == BUDGET
    assert cm.budget_for([128_000, 4096], 1024) == 4096 - 1024
    assert cm.budget_for([], 500) == 7500
    # the reserve never takes more than half the window
    assert cm.budget_for([2048], 4096) == 1024


async def test_short_history_goes_verbatim_with_system_prompt_first() -> None:
    cm, fake = manager()
    history = conversation(2, size=50)
    events, prepared = await run(cm, history, BUDGET)
    assert events == []
    assert prepared.messages == (Message("system", SYSTEM), *history)
    assert fake.calls == []
    assert prepared.estimated_tokens == cm.counter.request(prepared.messages)
    assert prepared.summary_turns == prepared.dropped_turns == 0


async def test_empty_system_prompt_is_left_out() -> None:
    cm, _ = manager()
    history = conversation(1, size=5)
    items = [item async for item in cm.prepare("", history, BUDGET)]
    assert items[-1].messages == tuple(history)


async def test_history_must_end_with_user_and_hold_no_system_messages() -> None:
    cm, _ = manager()
    for bad in (
        [],
        [Message("user", "hi"), Message("assistant", "hello")],
        [Message("system", "be nice"), Message("user", "hi")],
    ):
        with pytest.raises(ValueError):
            await run(cm, bad, BUDGET)


# -- the pure planner ---------------------------------------------------------------


def view_of(roles: str, size: int = 100, fixed: int = 10) -> View:
    """A view of messages of ``size`` tokens each; ``roles`` like "uauau"."""
    n = len(roles)
    suffix = [size * (n - k) for k in range(n + 1)]
    boundaries = [i for i, r in enumerate(roles) if r == "u" and i]
    keep_from = boundaries[-2] if len(boundaries) >= 2 else 0
    return View(suffix, boundaries, keep_from, fixed)


LIMITS = Limits(budget=1000, threshold=800, target=400, reserve=50, fold_input=600)


def test_plan_sends_everything_under_the_threshold() -> None:
    assert plan(view_of("uauau"), {}, LIMITS) == Use(0, None)  # 510 <= 800


def test_plan_folds_at_a_user_boundary_down_to_the_target() -> None:
    view = view_of("uauauauau")  # 910 > 800
    step = plan(view, {}, LIMITS)
    # smallest cut with 10 + 50 + suffix <= 400 is 6 (300 left); 6 <= keep_from (6)
    assert step == Fold(0, None, 6, capped=False)


def test_plan_uses_a_cached_summary_and_prefers_the_furthest() -> None:
    view = view_of("uauauauau")
    early, late = Summary("s2", 2, 20), Summary("s4", 4, 20)
    assert plan(view, {2: early, 4: late}, LIMITS) == Use(4, late)  # 10 + 20 + 500


def test_plan_bounds_one_summarizer_call_and_chains() -> None:
    view = view_of("ua" * 10 + "u")  # 2110
    step = plan(view, {}, LIMITS)
    assert isinstance(step, Fold) and step.capped and step.end == 6  # 600 tokens of input
    nxt = plan(view, {6: Summary("s", 6, 30)}, LIMITS)
    assert isinstance(nxt, Fold) and nxt.base == 6 and nxt.previous == Summary("s", 6, 30)


def test_plan_leaves_out_what_is_beyond_the_fold_span() -> None:
    view = view_of("ua" * 10 + "u")  # 2110; the fold wants messages :18 (1800 tokens)
    limits = replace(LIMITS, fold_span=1000)
    step = plan(view, {}, limits)
    # start at 8 (1000 tokens to 18), then one call of at most 600 tokens: 8:14
    assert step == Fold(0, None, 14, capped=True, dropped=8)
    assert step.start == 8


def test_plan_keeps_the_exchange_before_the_latest_message_unless_over_budget() -> None:
    # u a U A u: sizes 100 100 250 250 100; the exchange before the latest (U A) is big
    view = View([800, 700, 600, 350, 100, 0], [2, 4], keep_from=2, fixed=10)  # 810 > 800
    assert plan(view, {}, LIMITS) == Fold(0, None, 2, capped=False)
    s = Summary("s", 2, 20)
    assert plan(view, {2: s}, LIMITS) == Use(2, s)  # 630: over the target, but U A stay
    # sizes 100 100 500 400 100: even with a summary, 1030 > budget 1000, so U A fold too
    tight = View([1200, 1100, 1000, 500, 100, 0], [2, 4], keep_from=2, fixed=10)
    assert plan(tight, {2: s}, LIMITS) == Fold(2, s, 4, capped=False)
    # and when the summary cannot fit next to the latest message, it is left out
    huge = Summary("h", 4, 950)
    assert plan(tight, {2: s, 4: huge}, LIMITS) == Use(4, None)


def test_plan_trim_drops_the_fewest_turns_that_fit() -> None:
    view = view_of("uauauauau")  # 910
    assert plan_trim(view, 0, None, LIMITS) == Use(2, None)  # 10 + 700 <= 800
    kept = Summary("s", 2, 20)
    assert plan_trim(view, 2, kept, LIMITS) == Use(4, kept)  # 10 + 20 + 500
    assert Use(4, kept).dropped == 2


# -- threshold crossing and the shape of a folded request ------------------------------


async def test_below_threshold_no_fold_above_threshold_one_fold() -> None:
    cm, fake = manager()
    # 10 + 29 * 204 = 5926 <= 6000: verbatim
    _, prepared = await run(cm, conversation(14), BUDGET)
    assert fake.calls == [] and prepared.summary_turns == 0
    # 10 + 31 * 204 = 6334 > 6000: fold
    seen: list[object] = []
    cm, fake = manager(FakeSummarizer(seen))
    history = conversation(15)
    events: list[Event] = []
    async for item in cm.prepare(SYSTEM, history, BUDGET):
        seen.append(item)
        if not isinstance(item, PreparedContext):
            events.append(item)
    prepared = seen[-1]
    assert isinstance(prepared, PreparedContext)
    assert len(fake.calls) == 1
    covered = prepared.summary_turns
    assert [type(e) for e in events] == [Summarizing, SummaryInUse]
    assert events[0] == Summarizing(covered)
    assert events[1] == SummaryInUse(covered, "summary#1 of 20 turns")
    # system prompt, then the summary as a system message, then the recent turns verbatim
    assert prepared.messages[0] == Message("system", SYSTEM)
    assert prepared.messages[1] == Message("system", SUMMARY_HEADER + "summary#1 of 20 turns")
    assert prepared.messages[2:] == tuple(history[covered:])
    assert prepared.messages[2].role == "user"  # the cut falls before a user message
    assert prepared.messages[-1] == history[-1]
    # folded down to about half the threshold, so the next fold is a while away
    assert prepared.estimated_tokens <= 3000
    assert prepared.estimated_tokens == cm.counter.request(prepared.messages)
    assert prepared.summarized


async def test_cut_never_splits_an_exchange_and_keeps_the_one_before_latest() -> None:
    cm, fake = manager()
    # The exchange before the latest message is large; it must stay verbatim anyway.
    history = conversation(12, size=150)  # 10 + 23 * 154 + 2 * 1404 = 6360
    history[-3] = Message("user", words(1400, "prev_q"))
    history[-2] = Message("assistant", words(1400, "prev_a"))
    _, prepared = await run(cm, history, BUDGET)
    assert len(fake.calls) == 1
    assert prepared.summary_turns == len(history) - 3
    assert prepared.messages[2:] == tuple(history[-3:])
    assert all(m.role in ("user", "assistant") for m in fake.calls[0][1])
    assert fake.calls[0][1][-1].role == "assistant"


async def test_threshold_is_the_budget_when_the_budget_is_smaller() -> None:
    cm, fake = manager()
    history = conversation(6, size=200)  # 10 + 13 * 204 = 2662 tokens
    _, prepared = await run(cm, history, 8000)
    assert fake.calls == []
    _, prepared = await run(cm, history, 2000)
    assert len(fake.calls) == 1
    assert prepared.estimated_tokens <= 2000


# -- incremental folding and cache ------------------------------------------------------


async def test_folding_is_incremental_previous_summary_plus_new_turns_only() -> None:
    cm, fake = manager()
    history = conversation(15)
    _, first = await run(cm, history, BUDGET)
    covered = first.summary_turns
    # grow until the next crossing
    while len(fake.calls) == 1:
        history += [Message("assistant", words(200, "r")), Message("user", words(200, "q"))]
        history = resend(history)
        _, prepared = await run(cm, history, BUDGET)
    previous, turns = fake.calls[1]
    assert previous == "summary#1 of 20 turns"
    assert turns == tuple(history[covered : prepared.summary_turns])
    assert turns[0].role == "user"


async def test_resent_history_reuses_the_cached_summary_without_a_call() -> None:
    cm, fake = manager()
    history = conversation(15)
    _, first = await run(cm, history, BUDGET)
    assert len(fake.calls) == 1
    # the same history again, and with one more exchange, as new objects
    for extra in ([], [Message("assistant", "short reply"), Message("user", "and then?")]):
        events, prepared = await run(cm, resend(history + extra), BUDGET)
        assert len(fake.calls) == 1
        assert not prepared.summarized
        assert [type(e) for e in events] == [SummaryInUse]
        assert prepared.summary_turns == first.summary_turns
        assert prepared.messages[1] == first.messages[1]


async def test_cache_is_keyed_by_content_an_edited_old_message_refolds() -> None:
    cm, fake = manager()
    history = conversation(15)
    await run(cm, history, BUDGET)
    edited = resend(history)
    edited[3] = Message("assistant", edited[3].content + " (edited)")
    await run(cm, edited, BUDGET)
    assert len(fake.calls) == 2
    assert fake.calls[1][0] is None  # nothing cached covers the edited message


async def test_two_conversations_share_one_manager_concurrently() -> None:
    cm, fake = manager()
    a = conversation(15)
    b = [Message(m.role, m.content.replace("u", "x")) for m in conversation(15)]
    (_, pa), (_, pb) = await asyncio.gather(run(cm, a, BUDGET), run(cm, b, BUDGET))
    assert len(fake.calls) == 2
    assert pa.messages[-1] == a[-1] and pb.messages[-1] == b[-1]
    assert pa.messages[1] != pb.messages[1]


def test_one_manager_serves_several_threads_with_their_own_event_loops() -> None:
    from concurrent.futures import ThreadPoolExecutor

    cm, fake = manager()

    def user(n: int) -> int:
        history = [Message(m.role, f"{n} {m.content}") for m in conversation(15)]
        for _ in range(3):
            _, prepared = asyncio.run(run(cm, resend(history), BUDGET))
        return prepared.summary_turns

    with ThreadPoolExecutor(4) as pool:
        covered = list(pool.map(user, range(8)))
    assert covered == [20] * 8
    assert len(fake.calls) == 8  # one fold per conversation; the other turns hit the cache


@pytest.mark.parametrize("counter", ["words", "estimate"])
async def test_forty_turn_conversation_stays_in_budget_and_folds_only_at_crossings(counter: str) -> None:
    fake = FakeSummarizer()
    tokens = word_counter() if counter == "words" else TokenCounter()
    cm = ContextManager(settings(), fake, tokens)
    threshold = 6000
    rng = random.Random(5)
    history: list[Message] = []
    previous_estimate = tokens.request([Message("system", SYSTEM)])
    fold_turns = []
    for turn in range(40):
        user = Message("user", words(rng.randint(150, 450), f"q{turn}_"))
        history = resend(history + [user])  # the UI resends everything each turn
        calls = len(fake.calls)
        _, prepared = await run(cm, history, BUDGET)
        sent = tokens.request(prepared.messages)
        assert sent == prepared.estimated_tokens <= BUDGET
        assert prepared.messages[0] == Message("system", SYSTEM)
        assert prepared.messages[-1] == user
        # the request would have crossed the threshold iff a fold happened
        grown = previous_estimate + tokens.message(user) + (tokens.message(history[-2]) if turn else 0)
        if len(fake.calls) > calls:
            assert grown > threshold, f"turn {turn} folded below the threshold"
            assert len(fake.calls) == calls + 1  # one call per crossing
            fold_turns.append(turn)
        else:
            assert grown <= threshold, f"turn {turn} crossed the threshold without folding"
        previous_estimate = sent
        history.append(Message("assistant", words(rng.randint(150, 450), f"r{turn}_")))
    assert 3 <= len(fake.calls) <= 8
    assert all(b - a >= 4 for a, b in zip(fold_turns, fold_turns[1:])), fold_turns
    # each fold got the previous summary and only turns it had not seen
    covered = 0
    for index, (previous, turns) in enumerate(fake.calls):
        expected = f"summary#{index} of {len(fake.calls[index - 1][1])} turns" if index else None
        assert previous == expected
        assert turns[0].role == "user"
        covered += len(turns)
    assert covered == prepared.summary_turns


async def test_tiny_caches_evict_safely_and_folding_stays_incremental() -> None:
    fake = FakeSummarizer()
    cm = ContextManager(settings(), fake, word_counter(), max_summaries=1, max_cached_chars=5_000)
    history: list[Message] = []
    for turn in range(30):
        history = resend(history + [Message("user", words(300, f"q{turn}"))])
        _, prepared = await run(cm, history, BUDGET)
        assert prepared.estimated_tokens == cm.counter.request(prepared.messages) <= BUDGET
        history.append(Message("assistant", words(300, f"r{turn}")))
    assert len(fake.calls) >= 3
    for index in range(1, len(fake.calls)):
        assert fake.calls[index][0] == f"summary#{index} of {len(fake.calls[index - 1][1])} turns"


# -- switching models ---------------------------------------------------------------------


async def test_switching_models_replans_for_the_new_window() -> None:
    cm, fake = manager(max_context_tokens=100_000)
    history = conversation(6, size=200)  # 2662 tokens
    small = cm.budget_for([2048], 512)  # 1536
    large = cm.budget_for([128_000], 1024)
    _, on_small = await run(cm, history, small)
    assert len(fake.calls) == 1 and on_small.estimated_tokens <= small
    _, on_large = await run(cm, history, large)
    assert on_large.summary_turns == 0  # everything fits verbatim again
    assert on_large.messages[1:] == tuple(history)
    _, back = await run(cm, history, small)
    assert len(fake.calls) == 1  # the small window's summary is still cached
    assert back.messages == on_small.messages


# -- fail-safe ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        RateLimited("provider said: upstream quota exhausted"),
        AllModelsFailed([("openai:x", RateLimited("upstream quota exhausted"))]),
        RuntimeError("upstream quota exhausted"),
        "",
        "   \n",
    ],
)
async def test_failed_fold_drops_oldest_turns_with_a_notice_and_no_error_text(failure: object) -> None:
    cm, fake = manager()
    fake.fail = failure  # type: ignore[assignment]
    history = conversation(15)
    events, prepared = await run(cm, history, BUDGET)
    assert len(fake.calls) == 1
    trimmed = [e for e in events if isinstance(e, ContextTrimmed)]
    assert len(trimmed) == 1 and trimmed[0].turns == prepared.dropped_turns > 0
    assert "summarizing failed" in trimmed[0].reason
    assert not any(isinstance(e, SummaryInUse) for e in events)
    assert prepared.summary_turns == 0
    upstream = " ".join(m.content for m in prepared.messages)
    assert "quota" not in upstream and "summary" not in upstream.lower()
    assert prepared.messages[0] == Message("system", SYSTEM)
    assert prepared.messages[1:] == tuple(history[prepared.dropped_turns :])
    assert prepared.messages[1].role == "user"
    assert prepared.estimated_tokens <= 6000  # only as much as needed is dropped
    assert prepared.estimated_tokens + 204 * 2 > 6000


async def test_failed_fold_is_not_retried_every_turn_then_recovers_the_dropped_turns() -> None:
    now = [1000.0]
    fake = FakeSummarizer()
    cm = ContextManager(settings(), fake, word_counter(), retry_fold_after=60, clock=lambda: now[0])
    fake.fail = RateLimited()
    history = conversation(15)
    await run(cm, history, BUDGET)
    history += [Message("assistant", words(200, "r")), Message("user", words(200, "q"))]
    events, prepared = await run(cm, resend(history), BUDGET)
    assert len(fake.calls) == 1  # no new call within the retry window
    assert [type(e) for e in events] == [ContextTrimmed]
    now[0] += 61
    fake.fail = None
    events, prepared = await run(cm, resend(history), BUDGET)
    assert len(fake.calls) == 2
    previous, turns = fake.calls[1]
    assert previous is None and turns[0] == history[0]  # the dropped turns are summarized now
    assert prepared.dropped_turns == 0 and prepared.summary_turns > 0


async def test_failed_later_fold_keeps_the_previous_summary() -> None:
    cm, fake = manager()
    history = conversation(15)
    _, first = await run(cm, history, BUDGET)
    fake.fail = RateLimited()
    while len(fake.calls) == 1:
        history += [Message("assistant", words(200, "r")), Message("user", words(200, "q"))]
        events, prepared = await run(cm, resend(history), BUDGET)
    assert prepared.summary_turns == first.summary_turns
    assert prepared.messages[1] == first.messages[1]
    assert prepared.dropped_turns > 0
    assert [type(e) for e in events] == [Summarizing, ContextTrimmed, SummaryInUse]
    assert prepared.messages[2:] == tuple(history[first.summary_turns + prepared.dropped_turns :])


async def test_cancellation_propagates_and_caches_nothing() -> None:
    class Hanging(FakeSummarizer):
        async def summarize(self, previous: str | None, turns: Sequence[Message]) -> str:
            await asyncio.sleep(60)
            return "never"

    cm = ContextManager(settings(), Hanging(), word_counter())
    task = asyncio.create_task(run(cm, conversation(15), BUDGET))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_summarizer_timeout_counts_as_a_failure() -> None:
    class Slow(FakeSummarizer):
        async def summarize(self, previous: str | None, turns: Sequence[Message]) -> str:
            await asyncio.sleep(5)
            return "late"

    cm = ContextManager(settings(), Slow(), word_counter(), fold_timeout=0.01)
    events, prepared = await run(cm, conversation(15), BUDGET)
    assert any(isinstance(e, ContextTrimmed) and "timed out" in e.reason for e in events)
    assert prepared.summary_turns == 0


# -- sizes, unicode ---------------------------------------------------------------------------


async def test_single_message_larger_than_the_budget_is_refused_with_both_numbers() -> None:
    cm, fake = manager()
    history = conversation(3, size=50)
    history[-1] = Message("user", words(9000, "x"))
    with pytest.raises(InputError) as info:
        await run(cm, history, BUDGET)
    message = str(info.value)
    assert "9,004 tokens" in message  # 9000 words + overhead
    assert f"{BUDGET - 10:,}" in message  # the budget less the system prompt and priming
    assert "Shorten it or pick a model with a larger context window" in message
    assert fake.calls == []


async def test_message_that_fits_alone_is_sent_even_if_the_summary_cannot_be() -> None:
    cm, fake = manager()
    history = conversation(4, size=100)
    history[-1] = Message("user", words(BUDGET - 10 - 4, "x"))  # exactly the room left
    events, prepared = await run(cm, history, BUDGET)
    assert prepared.messages == (Message("system", SYSTEM), history[-1])
    assert prepared.estimated_tokens == BUDGET
    assert [type(e) for e in events][-1] is ContextTrimmed


async def test_long_old_span_is_folded_in_bounded_incremental_steps() -> None:
    fake = FakeSummarizer()
    s = settings(max_context_tokens=3000, summary_threshold=3000, summary_max_tokens=200)
    cm = ContextManager(s, fake, word_counter(), max_fold_calls=10)
    # fold_input is max(500, 3000 - 200 - 600) = 2200 tokens of history per call
    history = conversation(30, size=96)  # 100 tokens per message, 6100 in all
    _, prepared = await run(cm, history, 3000)
    assert len(fake.calls) >= 3
    for index, (previous, turns) in enumerate(fake.calls):
        assert (previous is None) == (index == 0)
        assert sum(len(m.content.split()) + 4 for m in turns) <= 2200
    for index in range(1, len(fake.calls)):  # each chunk carries the previous chunk's summary
        assert fake.calls[index][0] == f"summary#{index} of {len(fake.calls[index - 1][1])} turns"
    assert prepared.estimated_tokens <= 1500  # folded down to half the threshold
    assert sum(len(t) for _, t in fake.calls) == prepared.summary_turns


async def test_a_long_history_meeting_an_empty_cache_folds_only_the_newer_part() -> None:
    # e.g. after a restart: a stateless caller resends 200 exchanges (~82k tokens)
    cm, fake = manager()
    history = conversation(200)
    events, prepared = await run(cm, history, BUDGET)
    # at most max_fold_calls x fold_input (2 x 7000) tokens are summarized this turn
    assert 1 <= len(fake.calls) <= 3
    summarized = sum(len(turns) for _, turns in fake.calls)
    assert summarized * 204 <= 2 * 7000
    assert fake.calls[0][1][0].role == "user"
    trimmed = [e for e in events if isinstance(e, ContextTrimmed)]
    assert len(trimmed) == 1 and "too long to summarize at once" in trimmed[0].reason
    kinds = [type(e) for e in events]
    assert kinds == [Summarizing] * len(fake.calls) + [ContextTrimmed, SummaryInUse]
    assert prepared.dropped_turns == trimmed[0].turns == prepared.summary_turns - summarized
    assert prepared.estimated_tokens <= 3000
    assert prepared.messages[2:] == tuple(history[prepared.summary_turns :])
    # the next turn reuses that summary: no calls, no notice of dropping
    more = resend(history + [Message("assistant", "ok"), Message("user", "next")])
    events, again = await run(cm, more, BUDGET)
    assert len(fake.calls) <= 3 and [type(e) for e in events] == [SummaryInUse]
    assert again.summary_turns == prepared.summary_turns and again.dropped_turns == 0


async def test_a_failed_fold_that_would_have_skipped_counts_each_dropped_message_once() -> None:
    cm, fake = manager()
    fake.fail = RateLimited()
    history = conversation(200)
    events, prepared = await run(cm, history, BUDGET)
    trimmed = [e for e in events if isinstance(e, ContextTrimmed)]
    assert len(trimmed) == 1 and "summarizing failed" in trimmed[0].reason
    assert prepared.dropped_turns == trimmed[0].turns
    assert prepared.messages[1:] == tuple(history[prepared.dropped_turns :])


async def test_each_call_fits_the_summarizers_own_window() -> None:
    fake = FakeSummarizer()
    fake.context_window = 2000  # type: ignore[attr-defined]
    cm = ContextManager(settings(), fake, word_counter(), max_fold_calls=10)
    _, prepared = await run(cm, conversation(30, size=96), BUDGET)  # 6110 tokens
    # 2000 - 400 (answer) - 600 (instructions) = 1000 tokens of history per call
    assert len(fake.calls) >= 3
    for previous, turns in fake.calls:
        carried = len(SUMMARY_HEADER.split()) + len(previous.split()) + 4 if previous else 0
        assert carried + sum(len(m.content.split()) + 4 for m in turns) <= 1000
    assert prepared.estimated_tokens <= 3000


async def test_unicode_history_is_planned_with_the_real_estimate() -> None:
    fake = FakeSummarizer()
    cm = ContextManager(settings(summary_threshold=2000), fake, TokenCounter())
    history: list[Message] = []
    for i in range(30):
        history.append(Message("user", f"第{i}个问题：你好世界，这是一个很长的问题。" * 8 + "🎉👨‍👩‍👧"))
        history.append(Message("assistant", "Ответ: привет, мир! " * 10 + "café ñandú " * 5))
    history.append(Message("user", "最后一个问题 🙂"))
    _, prepared = await run(cm, history, BUDGET)
    assert prepared.estimated_tokens == cm.counter.request(prepared.messages) <= 1000
    assert fake.calls and fake.calls[0][0] is None
    assert sum(len(turns) for _, turns in fake.calls) == prepared.summary_turns
    assert prepared.messages[-1] == history[-1]
    assert prepared.messages[2:] == tuple(history[prepared.summary_turns :])


# -- recovery and calibration ------------------------------------------------------------------


async def test_harder_compaction_sends_at_most_half_of_the_normal_plan() -> None:
    cm, fake = manager()
    history = conversation(13)  # 10 + 27 * 204 = 5518: fits normally
    _, normal = await run(cm, history, BUDGET)
    assert fake.calls == []
    _, harder = await run(cm, history, BUDGET, harder=True)
    assert len(fake.calls) == 1
    assert harder.estimated_tokens <= normal.estimated_tokens // 2
    assert harder.budget_tokens == normal.estimated_tokens // 2
    assert harder.messages[-1] == history[-1]


async def test_harder_compacts_even_an_already_folded_request() -> None:
    # The normal plan is already small (folded); a provider refused it anyway.
    cm, fake = manager()
    history = conversation(15)
    _, normal = await run(cm, history, BUDGET)
    assert len(fake.calls) == 1 and normal.estimated_tokens < BUDGET // 2
    _, harder = await run(cm, history, BUDGET, harder=True)
    assert len(fake.calls) == 2
    assert fake.calls[1][0] == "summary#1 of 20 turns"  # incremental, from the cached fold
    assert harder.estimated_tokens <= normal.estimated_tokens // 2
    assert harder.messages[-1] == history[-1]


async def test_harder_never_refuses_a_message_that_fits_the_real_budget() -> None:
    cm, _ = manager()
    history = conversation(1, size=10)
    history[-1] = Message("user", words(5000, "x"))
    _, prepared = await run(cm, history, BUDGET, harder=True)
    assert prepared.messages == (Message("system", SYSTEM), history[-1])


async def test_calibration_shrinks_the_raw_budget_for_a_model_that_counts_more() -> None:
    cm, fake = manager()
    history = conversation(12)  # 10 + 25 * 204 = 5110
    _, plain = await run(cm, history, BUDGET, model_ids=["openai:x"])
    assert fake.calls == []
    for _ in range(5):
        cm.observe("openai:x", plain.estimated_tokens, int(plain.estimated_tokens * 1.5))
    assert cm.counter.scale("openai:x") > 1.4
    _, calibrated = await run(cm, history, BUDGET, model_ids=["local:smollm2", "openai:x"])
    assert len(fake.calls) == 1
    assert cm.counter.calibrated(calibrated.estimated_tokens, "openai:x") <= 6000


# -- the router summarizer ---------------------------------------------------------------------


class ScriptedRouter:
    """Records ``stream`` calls and replays scripted events (or raises)."""

    def __init__(self, *events: Event, error: Exception | None = None) -> None:
        self.events = events
        self.error = error
        self.calls: list[dict[str, object]] = []
        self.closed = False

    def stream(self, model_id: str, messages: Sequence[Message], **kw: object) -> AsyncIterator[Event]:
        self.calls.append({"model_id": model_id, "messages": tuple(messages), **kw})
        return self._gen()

    async def _gen(self) -> AsyncIterator[Event]:
        try:
            for event in self.events:
                yield event
            if self.error is not None:
                raise self.error
        finally:
            self.closed = True


TURNS = (
    Message("user", "My name is Ada and my budget is 4,200 euros."),
    Message("assistant", "Noted, Ada: 4,200 euros."),
)


async def test_router_summarizer_uses_the_fast_tier_and_collects_text() -> None:
    router = ScriptedRouter(
        ModelSelected("local:smollm2", "SmolLM2", tier="fast"),
        TextDelta("Ada; budget "),
        TextDelta("4,200 EUR. "),
        Usage(100, 10),
        Finish("stop"),
    )
    summarizer = RouterSummarizer(router, settings(summary_max_tokens=321))
    text = await summarizer.summarize("Earlier: trip to Lisbon.", TURNS)
    assert text == "Ada; budget 4,200 EUR."
    call = router.calls[0]
    assert call["model_id"] == "auto" and call["tier"] == "fast" and call["max_tokens"] == 321
    system, user = call["messages"]  # type: ignore[misc]
    assert system.role == "system"
    for kept in ("name", "number", "decision", "open question"):
        assert kept in system.content
    assert "Earlier: trip to Lisbon." in user.content
    assert "User: My name is Ada" in user.content and "Assistant: Noted, Ada" in user.content
    assert router.closed


def test_router_summarizer_knows_the_smallest_window_it_may_use() -> None:
    from chat.catalogue import Catalogue, ModelSpec

    router = ScriptedRouter()
    assert RouterSummarizer(router, settings()).context_window is None  # no catalogue
    router.catalogue = Catalogue(  # type: ignore[attr-defined]
        models=(
            ModelSpec("local:smollm2", "S", "fast", 8192),
            ModelSpec("ollama:tiny", "T", "fast", 4096),
            ModelSpec("openai:big", "B", "premium", 128_000),
        )
    )
    assert RouterSummarizer(router, settings()).context_window == 4096
    assert RouterSummarizer(router, settings(summary_model="openai:big")).context_window == 128_000
    assert RouterSummarizer(router, settings(summary_model="openai:gone")).context_window is None


async def test_router_summarizer_uses_the_configured_model() -> None:
    router = ScriptedRouter(TextDelta("s"), Finish())
    await RouterSummarizer(router, settings(summary_model="openai:gpt-4o-mini")).summarize(None, TURNS)
    assert router.calls[0]["model_id"] == "openai:gpt-4o-mini" and router.calls[0]["tier"] is None
    assert "(none yet)" in router.calls[0]["messages"][1].content  # type: ignore[index]


@pytest.mark.parametrize(
    "router",
    [
        ScriptedRouter(Finish()),  # nothing said
        ScriptedRouter(TextDelta("  \n"), Finish()),
        ScriptedRouter(TextDelta("half a summ")),  # no end marker
    ],
)
async def test_router_summarizer_refuses_empty_or_cut_results(router: ScriptedRouter) -> None:
    with pytest.raises(SummaryFailed):
        await RouterSummarizer(router, settings()).summarize(None, TURNS)


class SequencedRouter(ScriptedRouter):
    """One scripted reply per call."""

    def __init__(self, *replies: tuple[Event, ...]) -> None:
        super().__init__()
        self.replies = list(replies)

    def stream(self, model_id: str, messages: Sequence[Message], **kw: object) -> AsyncIterator[Event]:
        self.events = self.replies.pop(0)
        return super().stream(model_id, messages, **kw)


async def test_a_summary_cut_by_its_length_limit_is_redone_shorter() -> None:
    router = SequencedRouter((TextDelta("Ada; budget 4,200 EUR; wants a trip to"), Finish("length")),
                             (TextDelta("Ada, 4,200 EUR."), Finish("stop")))
    text = await RouterSummarizer(router, settings(summary_max_tokens=400)).summarize(None, TURNS)
    assert text == "Ada, 4,200 EUR."
    first, second = (call["messages"][0].content for call in router.calls)  # type: ignore[index]
    assert "at most about 240 words" in first and "at most about 120 words" in second


async def test_a_summary_cut_twice_is_not_cached_and_the_turns_are_dropped_with_a_notice() -> None:
    cut = (TextDelta("A summary that never ends and"), Finish("length"))
    router = SequencedRouter(*[cut] * 4)
    cm = ContextManager(settings(), RouterSummarizer(router, settings()), word_counter())
    events, prepared = await run(cm, conversation(15), BUDGET)
    [trimmed] = [e for e in events if isinstance(e, ContextTrimmed)]
    assert "cut off by its length limit" in trimmed.reason
    assert not any(isinstance(e, SummaryInUse) for e in events)
    assert "never ends" not in " ".join(m.content for m in prepared.messages)
    assert len(router.calls) == 2


async def test_router_summarizer_lets_router_errors_through_and_closes_the_stream() -> None:
    router = ScriptedRouter(TextDelta("partial"), error=RateLimited())
    with pytest.raises(RateLimited):
        await RouterSummarizer(router, settings()).summarize(None, TURNS)
    assert router.closed


async def test_router_summarizer_clips_very_long_messages() -> None:
    router = ScriptedRouter(TextDelta("s"), Finish())
    long = Message("user", "HEAD " + "x" * 50_000 + " TAIL")
    await RouterSummarizer(router, settings()).summarize(None, [long])
    body = router.calls[0]["messages"][1].content  # type: ignore[index]
    assert "HEAD" in body and "TAIL" in body and "characters omitted" in body
    assert len(body) < MAX_CHARS_PER_MESSAGE + 500


async def test_router_summarizer_failure_becomes_a_trim_end_to_end() -> None:
    router = ScriptedRouter(error=AllModelsFailed([("openai:x", RateLimited("secret detail"))]))
    cm = ContextManager(settings(), RouterSummarizer(router, settings()), word_counter())
    events, prepared = await run(cm, conversation(15), BUDGET)
    assert any(isinstance(e, ContextTrimmed) for e in events)
    assert "secret" not in " ".join(m.content for m in prepared.messages)
