"""Context management: what part of a conversation goes upstream, and in what form.

Each turn the chat service hands the whole history (past turns plus the latest
user message) to ``ContextManager.prepare``, which yields notices and then one
``PreparedContext``. What goes upstream, in order: the system prompt, the
rolling summary as a second system message (``SUMMARY_HEADER`` + text) when
older turns have been folded, then the recent turns verbatim, ending with the
latest user message.

Budget. ``budget_for`` gives the request's input budget in provider tokens:
``min(CHAT_MAX_CONTEXT_TOKENS, smallest candidate window) - reserved output``.
Planning happens in raw estimate units (``chat.tokens``): the budget and the
threshold are divided by the worst calibration scale among the candidate models.

Planning (``plan``, a pure function of the history, the limits and the cached
summaries found for this history):

1. If the request — system prompt, summary, verbatim turns — fits under the
   threshold (``min(CHAT_SUMMARY_THRESHOLD, budget)``), send it: the whole
   history verbatim when it fits (so switching to a model with a larger window
   brings turns back), else with the furthest cached summary.
2. Otherwise fold: the furthest cached summary plus the next turns become a new
   summary. The cut falls before a user message; the latest user message and the
   exchange before it stay verbatim; enough turns are folded to bring the
   request down to half the threshold, so the next fold is a threshold crossing
   away. One summarizer call takes at most ``fold_input`` tokens of history
   (sized to the summarizer's own window); a longer span is folded in several
   incremental calls. One turn summarizes at most ``max_fold_calls * fold_input``
   tokens (about that many calls); should more be waiting (a long history
   meeting an empty cache, e.g. after a restart), the oldest of it is dropped
   with a ``ContextTrimmed`` notice rather than stalling the turn for minutes.
3. If that cannot get under the threshold, the budget is the hard limit: the
   exchange before the latest message may be folded too, and as a last resort
   the summary is left out (reported as ``ContextTrimmed``).

Caching. A summary is stored under the hash of exactly the messages it covers
(a running BLAKE2b over each message's role and content digest), in a bounded
in-memory LRU shared by all conversations. A stateless caller that resends the
whole history each turn therefore finds its summary again, with no model call;
two conversations share a summary only if their covered messages are identical.
Per-message token counts and digests are cached by content (an LRU bounded by
characters), so a turn costs one dictionary lookup per message, not a recount.
With ``shared`` (several replicas, ``chat.store.summaries``), the cuts not held
here are looked up in the shared store once per turn and every new summary is
written through, so a summary made by one replica is reused by the others.

Failure. If a fold fails (the summarizer raises, times out or returns nothing),
the oldest turns after the last good summary are dropped instead, a
``ContextTrimmed`` notice says so, and that fold is not retried for
``retry_fold_after`` seconds (turns are trimmed meanwhile, without model calls);
a later successful fold covers the dropped turns again. Error text never goes
into a summary. A latest message that cannot fit even alone raises
``chat.errors.InputError`` with both numbers.

Recovery. ``prepare(..., harder=True)`` plans for at most half of what the
normal plan sends (but at least what the latest message needs): use it for the
one retry after a provider says ``ContextLengthExceeded``.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import TYPE_CHECKING, Generic, TypeVar

from .config import Settings
from .errors import ChatError, InputError, ProviderError
from .events import ContextTrimmed, Event, SummaryInUse, Summarizing
from .messages import Message
from .summarizer import Summarizer
from .tokens import TokenCounter

if TYPE_CHECKING:
    from .store.summaries import SharedSummaries

__all__ = [
    "SUMMARY_HEADER",
    "ContextManager",
    "Fold",
    "Limits",
    "PreparedContext",
    "Summary",
    "Use",
    "View",
    "plan",
    "plan_trim",
]

SUMMARY_HEADER = "Summary of the earlier conversation:\n"

_ROOT = b"relay-chat/summary/v1"
_ROLE_TAG = {"user": b"u", "assistant": b"a"}
_ROLES = frozenset(_ROLE_TAG)
# A summary message is bounded by the summarizer's max_tokens; the estimate of
# the same text may disagree with the model's tokenizer, so leave 25% slack.
_SUMMARY_SLACK = 1.25
# Instructions and framing of a summarizer request, on top of the turns.
_FOLD_PROMPT_TOKENS = 600
# Even a tiny summarizer window gets a turn or two per call.
_MIN_FOLD_INPUT = 500


# -- results -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreparedContext:
    """The request to send, and what planning did.

    ``messages``         system prompt, summary (if any), recent turns, latest user message
    ``estimated_tokens`` raw estimate of the whole request; pass it to ``observe``
    ``budget_tokens``    the input budget planned for (provider tokens; smaller when harder)
    ``summary_turns``    how many of the oldest messages the summary covers (0: none)
    ``dropped_turns``    how many messages were left out without a summary
    ``summarized``       a summarizer call succeeded during this ``prepare``
    """

    messages: tuple[Message, ...]
    estimated_tokens: int
    budget_tokens: int
    summary_turns: int = 0
    dropped_turns: int = 0
    summarized: bool = False


@dataclass(frozen=True, slots=True)
class Summary:
    """A cached summary of the first ``covers`` messages of a conversation."""

    text: str
    covers: int
    tokens: int  # raw tokens of the summary system message


# -- the pure planner --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """Raw-token limits for one plan."""

    budget: int  # the request may not exceed this
    threshold: int  # above this, older turns are folded
    target: int  # a fold aims to bring the request down to this
    reserve: int  # room set aside for a new summary message
    fold_input: int  # history tokens one summarizer call may take
    fold_span: int = 2**62  # history tokens summarized in one plan; older ones are dropped


@dataclass(frozen=True, slots=True)
class View:
    """What the planner needs to know about a history, computed once per turn.

    ``suffix[k]`` is the raw tokens of messages ``k:`` (overhead included);
    ``boundaries`` the indices ``k >= 1`` of user messages (valid cuts), ascending;
    ``keep_from`` the latest cut that keeps the exchange before the latest user
    message verbatim (0 when there is none); ``fixed`` the system prompt plus
    reply priming.
    """

    suffix: Sequence[int]
    boundaries: Sequence[int]
    keep_from: int
    fixed: int

    @property
    def last(self) -> int:
        return len(self.suffix) - 2


@dataclass(frozen=True, slots=True)
class Use:
    """Send messages ``start:`` verbatim, after ``summary`` (which covers ``:summary.covers``)."""

    start: int
    summary: Summary | None

    @property
    def dropped(self) -> int:
        return self.start - (self.summary.covers if self.summary else 0)


@dataclass(frozen=True, slots=True)
class Fold:
    """Summarize ``previous`` (covering ``:base``) plus messages ``base + dropped:end``.

    ``capped``: the fold stops short of where it should, to bound one summarizer
    call; plan the next step against ``target`` so the next chunk follows at once.
    ``dropped``: messages after ``base`` left out unsummarized, because more than
    ``Limits.fold_span`` tokens were waiting (a long history met an empty cache).
    """

    base: int
    previous: Summary | None
    end: int
    capped: bool = False
    dropped: int = 0

    @property
    def start(self) -> int:
        """The first message this fold summarizes."""
        return self.base + self.dropped


def _total(view: View, start: int, summary: Summary | None) -> int:
    return view.fixed + (summary.tokens if summary else 0) + view.suffix[start]


def plan(view: View, found: Mapping[int, Summary], limits: Limits) -> Use | Fold:
    """The next step for a history, given the cached summaries ``found`` (by ``covers``).

    Call again after each ``Fold`` (with its result cached) until it returns ``Use``.
    Each ``Fold`` ends further than any summary in ``found``, so this terminates.
    The caller has checked that the latest message fits the budget alone.
    """

    def summary_at(k: int) -> Summary | None:
        return found.get(k) if k else None

    def fits(k: int, goal: int) -> bool:
        return _total(view, k, summary_at(k)) <= goal

    covered = sorted(found)
    kept = [k for k in covered if k <= view.keep_from]
    head = kept[-1] if kept else 0  # the furthest summary that keeps the last exchange verbatim

    # 1. Under the threshold with the exchange before the latest message verbatim:
    #    the whole history if it fits (a larger window brings turns back), else the
    #    furthest summary, else fold on from it.
    for k in dict.fromkeys((0, head)):
        if fits(k, limits.threshold):
            return Use(k, summary_at(k))
    fold = _fold(view, head, summary_at(head), view.keep_from, limits.target, limits)
    if fold is not None:
        return fold

    # 2. Under the budget, folding into the kept exchange only if nothing else fits.
    beyond = [k for k in covered if k > view.keep_from]
    for k in (head, *beyond):
        if fits(k, limits.budget):
            return Use(k, summary_at(k))
    base = beyond[-1] if beyond else head
    fold = _fold(view, base, summary_at(base), view.last, limits.budget, limits)
    if fold is not None:
        return fold

    # 3. The summary itself does not fit next to the latest message.
    return Use(view.last, None)


def _fold(
    view: View, base: int, previous: Summary | None, upper: int, goal: int, limits: Limits
) -> Fold | None:
    """A fold from ``base`` ending at a boundary in ``(base, upper]``, or None if there is none."""
    lo = bisect.bisect_right(view.boundaries, base)
    hi = bisect.bisect_right(view.boundaries, upper)
    if lo >= hi:
        return None
    room = goal - view.fixed - limits.reserve
    wanted = view.boundaries[hi - 1]
    for b in view.boundaries[lo:hi]:
        if view.suffix[b] <= room:
            wanted = b
            break
    # Summarize at most fold_span tokens in one plan: start later, dropping the
    # oldest turns, when more is waiting (but always summarize one exchange).
    start = base
    if view.suffix[base] - view.suffix[wanted] > limits.fold_span:
        for b in view.boundaries[lo:hi]:
            if b >= wanted:
                break
            start = b
            if view.suffix[b] - view.suffix[wanted] <= limits.fold_span:
                break
    # Bound one summarizer call; always fold at least one turn.
    carried = previous.tokens if previous else 0
    first = bisect.bisect_right(view.boundaries, start)
    end = view.boundaries[first]
    for b in view.boundaries[first + 1 : hi]:
        if b > wanted or carried + view.suffix[start] - view.suffix[b] > limits.fold_input:
            break
        end = b
    return Fold(base, previous, end, capped=end < wanted, dropped=start - base)


def plan_trim(view: View, base: int, previous: Summary | None, limits: Limits) -> Use:
    """Drop the fewest turns after ``base`` (keeping ``previous``) that fit; for failed folds."""
    for upper, goal in ((view.keep_from, limits.threshold), (view.last, limits.budget)):
        lo = bisect.bisect_right(view.boundaries, base)
        hi = bisect.bisect_right(view.boundaries, upper)
        for b in view.boundaries[lo:hi]:
            if _total(view, b, previous) <= goal:
                return Use(b, previous)
    return Use(view.last, None)


# -- caches ------------------------------------------------------------------------

K = TypeVar("K")
V = TypeVar("V")


class _LRU(Generic[K, V]):
    """A thread-safe LRU bounded by total weight (entries by default)."""

    def __init__(
        self,
        max_weight: int,
        weigh: Callable[[K, V], int] = lambda k, v: 1,
        on_remove: Callable[[K, V], None] = lambda k, v: None,
    ) -> None:
        self.max_weight = max_weight
        self._weigh = weigh
        self._on_remove = on_remove  # called under the lock
        self.items: OrderedDict[K, V] = OrderedDict()
        self._weight = 0
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.items)

    def get(self, key: K) -> V | None:
        with self.lock:
            return self.get_locked(key)

    def get_locked(self, key: K) -> V | None:
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        with self.lock:
            self.put_locked(key, value)

    def put_locked(self, key: K, value: V) -> None:
        self._remove_locked(key)
        self.items[key] = value
        self._weight += self._weigh(key, value)
        while self._weight > self.max_weight and len(self.items) > 1:
            self._remove_locked(next(iter(self.items)))

    def pop(self, key: K) -> None:
        with self.lock:
            self._remove_locked(key)

    def _remove_locked(self, key: K) -> None:
        old = self.items.pop(key, None)
        if old is not None:
            self._weight -= self._weigh(key, old)
            self._on_remove(key, old)


class _SummaryCache:
    """Summaries by the key of exactly the messages they cover.

    It also counts how many cached summaries end at each position (``covers``),
    so planning hashes and looks up only the cuts where a summary may exist.
    """

    def __init__(self, max_entries: int) -> None:
        self._lru: _LRU[bytes, Summary] = _LRU(max_entries, on_remove=self._removed)
        self._positions: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._lru)

    def _removed(self, key: bytes, summary: Summary) -> None:
        left = self._positions[summary.covers] - 1
        if left:
            self._positions[summary.covers] = left
        else:
            del self._positions[summary.covers]

    def positions(self) -> set[int]:
        with self._lru.lock:
            return set(self._positions)

    def put(self, key: bytes, summary: Summary) -> None:
        with self._lru.lock:
            self._lru.put_locked(key, summary)
            self._positions[summary.covers] = self._positions.get(summary.covers, 0) + 1

    def find(self, keys: Mapping[int, bytes]) -> dict[int, Summary]:
        """The cached summaries among ``keys`` (cut -> key), by cut."""
        found: dict[int, Summary] = {}
        with self._lru.lock:
            for k, key in keys.items():
                summary = self._lru.get_locked(key)
                if summary is not None and summary.covers == k:
                    found[k] = summary
        return found


class _Index:
    """Per-turn hashing state: each message's role tag + digest, and computed cut keys.

    The key of cut ``k`` is BLAKE2b over ``_ROOT`` and the tagged digests of
    messages ``:k``: it names exactly the messages a summary ending there covers.
    """

    def __init__(self, tagged: list[bytes]) -> None:
        self.tagged = tagged
        self.keys: dict[int, bytes] = {}  # cuts where a cached summary may end
        self.others: dict[int, bytes] = {}  # the other cuts (hashed only for a shared store)

    def key(self, k: int) -> bytes:
        key = self.keys.get(k)
        if key is None:
            key = hashlib.blake2b(_ROOT + b"".join(self.tagged[:k]), digest_size=16).digest()
        return key

    def failure_key(self, base: int) -> bytes:
        """The conversation at ``base``: what a summary there covers plus the next message."""
        start = self.key(base) if base else _ROOT
        return hashlib.blake2b(start + self.tagged[base], digest_size=16).digest()


# -- the manager ---------------------------------------------------------------------


class ContextManager:
    """Plans each request's context; folds, caches and trims. One per app, shared.

    ``summarizer`` makes summaries (``chat.summarizer.RouterSummarizer`` in the
    app); ``counter`` estimates tokens and holds per-model calibration.
    """

    def __init__(
        self,
        settings: Settings,
        summarizer: Summarizer,
        counter: TokenCounter | None = None,
        *,
        max_summaries: int = 4096,
        max_cached_chars: int = 20_000_000,
        retry_fold_after: float = 60.0,
        fold_timeout: float | None = 90.0,
        max_fold_calls: int = 2,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedSummaries | None = None,
    ) -> None:
        self.settings = settings
        self.summarizer = summarizer
        self.shared = shared
        self.counter = counter or TokenCounter()
        self.retry_fold_after = retry_fold_after
        self.fold_timeout = fold_timeout
        self.max_fold_calls = max_fold_calls
        self._clock = clock
        # message content -> (raw tokens of the content, 16-byte BLAKE2b digest)
        self._records: _LRU[str, tuple[int, bytes]] = _LRU(
            max_cached_chars, lambda content, _: len(content) + 64
        )
        self._summaries = _SummaryCache(max_summaries)
        self._failed: _LRU[bytes, float] = _LRU(max_summaries)
        header = self.counter.message(Message("system", SUMMARY_HEADER))
        self._reserve = math.ceil(settings.summary_max_tokens * _SUMMARY_SLACK) + header

    # -- public API --------------------------------------------------------------

    def budget_for(self, windows: Sequence[int], reserve_output: int) -> int:
        """The input budget in provider tokens for a request that may go to any of ``windows``.

        ``min(CHAT_MAX_CONTEXT_TOKENS, *windows) - reserve_output``, where the
        reserve is capped at half that cap so a small window still takes a
        message (clamp the request's ``max_tokens`` accordingly). Pass the
        windows of every model the router may pick (Auto and fallbacks).
        """
        cap = min([self.settings.max_context_tokens, *windows])
        return cap - min(reserve_output, cap // 2)

    def observe(self, model_id: str, estimated_input_tokens: int, reported_input_tokens: int) -> float:
        """Calibrate ``model_id`` with a reported input count; see ``TokenCounter.observe``.

        ``estimated_input_tokens`` is ``PreparedContext.estimated_tokens`` of that request;
        ``model_id`` the model that actually answered. Returns the model's new scale.
        """
        return self.counter.observe(model_id, estimated_input_tokens, reported_input_tokens)

    async def prepare(
        self,
        system_prompt: str,
        history: Sequence[Message],
        budget_tokens: int,
        *,
        model_ids: Sequence[str] = (),
        harder: bool = False,
    ) -> AsyncIterator[Event | PreparedContext]:
        """Plan the request for ``history``; yield notices, then one ``PreparedContext``.

        ``history`` holds user and assistant messages only, ending with the latest
        user message (system prompt apart). ``budget_tokens`` comes from
        ``budget_for``; ``model_ids`` are the candidate models, whose worst
        calibration applies. ``harder=True`` sends at most half of what the normal
        plan sends (the retry after ``ContextLengthExceeded``).

        Yields ``Summarizing(turns)`` before each summarizer call,
        ``ContextTrimmed(turns, reason)`` when turns are dropped without a summary,
        ``SummaryInUse(turns, text)`` when the request carries a summary, and last
        the ``PreparedContext``. In these notices a turn is one message. Raises
        ``InputError`` when the latest message cannot fit the budget even alone,
        ``ValueError`` on a malformed history.
        """
        _check_history(history)
        scale = max((self.counter.scale(m) for m in model_ids), default=1.0)
        view, index = self._view(system_prompt, history)
        if self.shared is not None:
            await self._pull_shared(index)

        latest = view.suffix[view.last]
        room = budget_tokens - math.ceil(view.fixed * scale)
        if math.ceil(latest * scale) > room:
            raise InputError(
                f"Your message is about {math.ceil(latest * scale):,} tokens; the most this "
                f"model can take is {max(room, 0):,}. Shorten it or pick a model with a "
                "larger context window."
            )
        budget = budget_tokens
        limits = self._limits(budget, scale)
        if harder:
            # The provider refused what the normal plan sends (already cached, since
            # the service prepared it first): send at most half of that.
            step = plan(view, self._summaries.find(index.keys), limits)
            sent = limits.threshold
            if isinstance(step, Use):
                sent = _total(view, step.start, step.summary)
            cap = max(view.fixed + latest, sent // 2)
            limits = replace(limits, budget=cap, threshold=cap, target=cap // 2)
            budget = min(budget_tokens, math.ceil(cap * scale))

        summarized = False
        skipped = 0  # messages a successful fold left out (Fold.dropped)
        trimmed: Use | None = None
        step_limits = limits
        for _ in range(len(history) + 1):  # each fold ends further on; this is a safety bound
            found = self._summaries.find(index.keys)
            step = plan(view, found, step_limits)
            if isinstance(step, Use):
                break
            failure_key = index.failure_key(step.base)
            failed_at = self._failed.get(failure_key)
            if failed_at is not None and self._clock() - failed_at < self.retry_fold_after:
                trimmed = plan_trim(view, step.base, step.previous, limits)
                reason = "summarizing failed recently; older turns were left out"
                break
            yield Summarizing(step.end - step.start)
            try:
                text = await self._summarize(step.previous, history[step.start : step.end])
            except Exception as exc:  # any failure of the fold: trim instead (see module doc)
                self._failed.put(failure_key, self._clock())
                trimmed = plan_trim(view, step.base, step.previous, limits)
                reason = f"summarizing failed ({_describe(exc)}); older turns were left out"
                break
            self._failed.pop(failure_key)
            skipped += step.dropped
            tokens = self.counter.message(Message("system", SUMMARY_HEADER + text))
            key = index.key(step.end)
            self._summaries.put(key, Summary(text, step.end, tokens))
            index.keys[step.end] = key
            if self.shared is not None:
                await self.shared.save(key, text, step.end, tokens)
            summarized = True
            # After a chunk, keep folding down to the target, not just under the threshold.
            step_limits = replace(limits, threshold=limits.target) if step.capped else limits
        else:  # pragma: no cover - plan() guarantees progress
            raise RuntimeError("context planning did not converge")

        if skipped:
            yield ContextTrimmed(
                skipped,
                "the conversation was too long to summarize at once; the oldest messages were left out",
            )
        if trimmed is not None:
            step = trimmed
            if step.dropped:
                yield ContextTrimmed(step.dropped, reason)
        elif step.dropped:
            yield ContextTrimmed(
                step.dropped, "the summary did not fit next to your message; older turns were left out"
            )
        messages: list[Message] = []
        if system_prompt:
            messages.append(Message("system", system_prompt))
        if step.summary is not None:
            messages.append(Message("system", SUMMARY_HEADER + step.summary.text))
            yield SummaryInUse(step.summary.covers, step.summary.text)
        messages.extend(history[step.start :])
        yield PreparedContext(
            messages=tuple(messages),
            estimated_tokens=_total(view, step.start, step.summary),
            budget_tokens=budget,
            summary_turns=step.summary.covers if step.summary else 0,
            dropped_turns=step.dropped + skipped,
            summarized=summarized,
        )

    # -- internals ---------------------------------------------------------------

    def _limits(self, budget: int, scale: float) -> Limits:
        threshold = min(self.settings.summary_threshold, budget)
        raw_budget = int(budget / scale)
        raw_threshold = int(threshold / scale)
        fold_input = self._fold_input()
        return Limits(
            budget=raw_budget,
            threshold=raw_threshold,
            target=raw_threshold // 2,
            reserve=self._reserve,
            fold_input=fold_input,
            fold_span=fold_input * self.max_fold_calls,
        )

    def _fold_input(self) -> int:
        """History tokens one summarizer call may take: its window less answer and instructions."""
        window = self.settings.max_context_tokens
        summarizer_window = getattr(self.summarizer, "context_window", None)
        if summarizer_window:
            window = min(window, summarizer_window)
        return max(_MIN_FOLD_INPUT, window - self.settings.summary_max_tokens - _FOLD_PROMPT_TOKENS)

    def _view(self, system_prompt: str, history: Sequence[Message]) -> tuple[View, _Index]:
        """Token suffix sums, cut points, and the cache keys of cuts that may hold a summary.

        This runs every turn over the whole history, so it sticks to cached
        per-message records and C-level loops where it can.
        """
        roles = [m.role for m in history]
        if not _ROLES.issuperset(roles):
            bad = next(r for r in roles if r not in _ROLES)
            raise ValueError(f"history holds a {bad!r} message; pass the system prompt separately")
        tokens, digests = self._lookup(history)
        overhead = self.counter.message_overhead
        suffix = list(accumulate(t + overhead for t in reversed(tokens)))
        suffix.reverse()
        suffix.append(0)
        boundaries = [i for i, role in enumerate(roles) if role == "user" and i]
        index = _Index([_ROLE_TAG[role] + digest for role, digest in zip(roles, digests)])
        positions = self._summaries.positions()
        h = hashlib.blake2b(_ROOT, digest_size=16)
        previous = 0
        # With a shared store every cut is keyed (one pass), to look up the others there.
        for b in boundaries if self.shared is not None else sorted(positions.intersection(boundaries)):
            h.update(b"".join(index.tagged[previous:b]))
            previous = b
            (index.keys if b in positions else index.others)[b] = h.copy().digest()
        keep_from = boundaries[-2] if len(boundaries) >= 2 else 0
        fixed = self.counter.reply_priming
        if system_prompt:
            fixed += self.counter.message(Message("system", system_prompt))
        return View(suffix, boundaries, keep_from, fixed), index

    async def _pull_shared(self, index: _Index) -> None:
        """Bring the shared summaries of cuts not cached here into the local cache
        (a summary cached at a cut may be another conversation's)."""
        here = self._summaries.find(index.keys)
        wanted = {**index.others, **{b: key for b, key in index.keys.items() if b not in here}}
        if not wanted:
            return
        for k, (text, covers, tokens) in (await self.shared.load(wanted)).items():  # type: ignore[union-attr]
            if covers == k:
                self._summaries.put(wanted[k], Summary(text, covers, tokens))
                index.keys[k] = wanted[k]

    def _lookup(self, history: Sequence[Message]) -> tuple[list[int], list[bytes]]:
        """Raw text tokens and content digests per message, from the cache where possible."""
        n = len(history)
        tokens: list[int] = [0] * n
        digests: list[bytes] = [b""] * n
        missing: list[int] = []
        records = self._records
        get, touch = records.items.get, records.items.move_to_end
        with records.lock:
            for i, message in enumerate(history):
                content = message.content
                record = get(content)
                if record is None:
                    missing.append(i)
                else:
                    touch(content)
                    tokens[i], digests[i] = record
        if missing:
            fresh: dict[str, tuple[int, bytes]] = {}
            for i in missing:
                content = history[i].content
                record = fresh.get(content)
                if record is None:
                    digest = hashlib.blake2b(content.encode("utf-8", "surrogatepass"), digest_size=16)
                    record = fresh[content] = (self.counter.text(content), digest.digest())
                tokens[i], digests[i] = record
            with records.lock:
                for content, record in fresh.items():
                    records.put_locked(content, record)
        return tokens, digests

    async def _summarize(self, previous: Summary | None, turns: Sequence[Message]) -> str:
        call = self.summarizer.summarize(previous.text if previous else None, turns)
        if self.fold_timeout is None:
            text = await call
        else:
            async with asyncio.timeout(self.fold_timeout):
                text = await call
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the summary was empty")
        return text.strip()


def _check_history(history: Sequence[Message]) -> None:
    # Roles are checked while the view is built, in the same pass.
    if not history:
        raise ValueError("history is empty: it must end with the latest user message")
    if history[-1].role != "user":
        raise ValueError("history must end with the latest user message")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        return exc.describe()
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ChatError) and str(exc):
        return str(exc)
    return type(exc).__name__
