"""The model router: which model answers, and what happens when it cannot.

``Router.stream`` turns one request into one answer, told as typed events:

- **Choice.** ``auto`` classifies the prompt (``chat.tiering``) and picks the
  first ready model of that tier; any other id must be in the catalogue.
- **Chain.** Candidates in order: the chosen model, the other models of its
  tier, then the catalogue's ``[routing] fallback`` list (Auto then adds the
  other models, nearest tier first; when its tier has no ready model, Auto
  starts from the nearest tier that has one). Models that are not ready (no
  key, unreachable, cooling down) are skipped, with a notice when the user
  chose that model; at most ``fallback_depth`` models are called.
- **Errors decide.** An error whose ``fallback`` is false (invalid request,
  content filter) reaches the caller as it is; so does a context-length error
  before any text (context management compacts and retries, then asks again
  with ``skip`` naming the model that still refused). Others move on to
  the next ready candidate with a ``FallingBack`` notice. Only when no other
  model is ready may a ``retry`` error be retried on the same model, after an
  exponential backoff with jitter that honours ``retry_after`` (capped by
  ``max_retries`` and ``retry_max_delay``). A ``cooldown`` error benches the
  model for ``retry_after`` (clamped to [1 s, ``max_cooldown``]; an error in
  the middle of a stream keeps its cause's) or ``cooldown_seconds``.
- **Time limits.** No first text within ``first_token_timeout``, or no event for
  ``stall_timeout`` after that, is a ``Timeout`` of that model. A ``Progress``
  event (queued, reading a long prompt) restarts the first-token clock only
  when no other model is ready to answer instead: then the user waits, with
  progress; otherwise the wait is bounded like any first token.
- **Mid-stream recovery.** Text already yielded stays. The next model is asked
  to continue the answer (``chat.continuation``); a repeat at the seam is cut.
- **Stop.** Cancelling the consumer, or closing this generator, closes the
  provider stream at once and abandons any backoff or pending fallback.

When every candidate failed, ``AllModelsFailed`` lists each model and why,
with the partial text already shown.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from .catalogue import AUTO, TIERS, Catalogue, ModelSpec, split_model_id
from .config import Settings
from .continuation import Seam, continuation_messages
from .cooldown import Cooldowns
from .errors import (
    AllModelsFailed,
    ConnectionFailed,
    ContextLengthExceeded,
    InputError,
    Interrupted,
    NotConfigured,
    ProviderError,
    Timeout,
    Unavailable,
)
from .events import Event, FallingBack, ModelSelected, Progress, Retrying, TextDelta
from .messages import ChatRequest, Message
from .providers.base import Availability, Provider, State
from .tiering import classify

__all__ = ["ModelOption", "Route", "Router"]


@dataclass(frozen=True, slots=True)
class ModelOption:
    """One entry of the model menu."""

    spec: ModelSpec
    availability: Availability

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def label(self) -> str:
        return self.spec.label


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes.

    ``primary`` is the chosen model (Auto's pick, or the id asked for even when
    it is not ready); ``chain`` the ready models that may answer, in order,
    capped at ``fallback_depth``; ``candidates`` every candidate in order,
    ready or not (``stream`` re-checks readiness at each step). ``tier`` is
    set for Auto.
    """

    primary: ModelSpec
    tier: str | None
    reason: str
    chain: list[ModelSpec]
    candidates: list[ModelSpec]


# How a model that is not ready is reported, as the error it amounts to.
_NOT_READY: dict[State, type[ProviderError]] = {
    State.MISSING_KEY: NotConfigured,
    State.DISABLED: NotConfigured,
    State.UNREACHABLE: ConnectionFailed,
}


class Router:
    def __init__(
        self,
        settings: Settings,
        catalogue: Catalogue,
        providers: Mapping[str, Provider],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.providers = providers
        self.cooldowns = Cooldowns(settings.cooldown_seconds, clock, max_seconds=settings.max_cooldown)
        self._wall = wall
        self._sleep = sleep
        self._rand = rand

    # -- choice ----------------------------------------------------------------

    def availability(self, model_id: str) -> Availability:
        """Whether ``model_id`` can be called now (a cooldown overrides the provider)."""
        bench = self.cooldowns.get(model_id)
        if bench is not None:
            until = self._wall() + self.cooldowns.remaining(bench)
            return Availability(State.COOLING_DOWN, bench.error.describe(), until=until)
        provider_name, name = split_model_id(model_id)
        provider = self.providers.get(provider_name)
        if provider is None:
            return Availability(State.DISABLED, f"no {provider_name!r} provider is set up")
        return provider.availability(name)

    def options(self) -> list[ModelOption]:
        """Every catalogue model with its availability (Auto is not listed)."""
        return [ModelOption(spec, self.availability(spec.id)) for spec in self.catalogue.models]

    def resolve(self, model_id: str, prompt: str, *, tier: str | None = None) -> Route:
        """Choose the model for ``prompt``. ``tier`` forces Auto's tier.

        Raises ``InputError`` for an id that is neither ``auto`` nor in the catalogue.
        """
        if model_id == AUTO:
            return self._resolve_auto(prompt, tier)
        spec = self.catalogue.get(model_id)
        if spec is None and model_id.startswith("ollama:") and model_id.count(":") == 1:
            spec = self.catalogue.get(f"{model_id}:latest")  # Ollama's default tag may be omitted
        if spec is None:
            available = ", ".join([AUTO, *self.catalogue.ids()])
            raise InputError(f"Unknown model {model_id!r}. Available: {available}")
        same_tier = [m for m in self.catalogue.models if m.tier == spec.tier]
        candidates = _unique([spec, *same_tier, *self._fallback_list()])
        return Route(spec, None, "chosen in the model menu", self._chain(candidates), candidates)

    def _resolve_auto(self, prompt: str, tier: str | None) -> Route:
        if tier is None:
            tier, why = classify(prompt)
        elif tier in TIERS:
            why = f"{tier} tier requested"
        else:
            raise InputError(f"Unknown tier {tier!r}. Tiers: {', '.join(TIERS)}")
        # The first ready model of the tier, else of the nearest tier (the higher
        # one on a tie: quality over cost); then the usual chain after it.
        rank = TIERS.index(tier)
        tiers = sorted(TIERS, key=lambda t: (abs(TIERS.index(t) - rank), -TIERS.index(t)))
        by_tier = [m for t in tiers for m in self.catalogue.models if m.tier == t]
        if not by_tier:
            raise AllModelsFailed([])
        primary = next((m for m in by_tier if self.availability(m.id).ready), by_tier[0])
        same_tier = [m for m in self.catalogue.models if m.tier == primary.tier]
        candidates = _unique([primary, *same_tier, *self._fallback_list(), *by_tier])
        if primary.tier != tier and self.availability(primary.id).ready:
            why += f"; no {tier} model is ready"
        return Route(primary, tier, why, self._chain(candidates), candidates)

    def _fallback_list(self) -> list[ModelSpec]:
        specs = (self.catalogue.get(model_id) for model_id in self.catalogue.fallback)
        return [spec for spec in specs if spec is not None]

    def _chain(self, candidates: list[ModelSpec]) -> list[ModelSpec]:
        ready = [spec for spec in candidates if self.availability(spec.id).ready]
        return ready[: self.settings.fallback_depth]

    # -- streaming -------------------------------------------------------------

    async def stream(
        self,
        model_id: str,
        messages: Sequence[Message],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tier: str | None = None,
        min_window: int | None = None,
        answer_so_far: str = "",
        skip: Sequence[tuple[str, ProviderError]] = (),
    ) -> AsyncIterator[Event]:
        """Stream one answer; see the module docstring for the policy.

        ``min_window``: the tokens this request needs (prompt + answer); models
        with a smaller context window are skipped as fallbacks.
        ``answer_so_far``: the start of an answer that was cut (the caller
        already holds it). The first model continues it exactly as mid-stream
        recovery does (continuation request, seam); only new text is yielded.
        ``skip``: models the caller already tried for this answer, with the
        error each gave (e.g. a context-length refusal after compacting): they
        are not called, count towards ``fallback_depth``, and the first model
        called is announced as taking over from the last of them.
        """
        prompt = next((m.content for m in reversed(messages) if m.role == "user"), "")
        route = self.resolve(model_id, prompt, tier=tier)
        skipped = {failed for failed, _ in skip}
        pending = deque(spec for spec in route.candidates if spec.id not in skipped)
        attempts: list[tuple[str, ProviderError]] = list(skip)
        passed: list[tuple[str, ProviderError]] = []  # candidates skipped as not ready
        if min_window:
            for spec in [s for s in pending if s.context_window < min_window]:
                pending.remove(spec)
                passed.append((spec.id, ContextLengthExceeded(
                    f"this conversation needs ~{min_window:,} tokens; its window is {spec.context_window:,}",
                    model=spec.id,
                )))
        shown: list[str] = []

        spec = self._take_ready(pending, passed) if len(skip) < self.settings.fallback_depth else None
        if spec is None:
            raise AllModelsFailed(attempts + passed)
        if skip:
            failed_id, error = skip[-1]
            yield FallingBack(failed_id, error.describe(), spec.id, continuing=bool(answer_so_far.strip()))
            reason = f"taking over from {failed_id}"
        else:
            if spec is not route.primary and model_id != AUTO:
                attempts.append(passed.pop(0))
                yield FallingBack(route.primary.id, attempts[0][1].describe(), spec.id,
                                  continuing=bool(answer_so_far.strip()))
            reason = route.reason if spec is route.primary else f"{route.primary.id} is not ready"
        called, retries = 1 + len(skip), 0
        yield ModelSelected(spec.id, spec.label, route.tier, reason)

        while True:
            answer = answer_so_far + "".join(shown)
            # Whitespace alone is no answer to continue (and some APIs reject a
            # whitespace-only message): the next model then simply answers.
            continuing = bool(answer.strip())
            request = ChatRequest(
                model=spec.name,
                messages=continuation_messages(messages, answer) if continuing else tuple(messages),
                temperature=temperature,
                max_tokens=_cap(max_tokens, spec.max_output_tokens),
            )
            seam = Seam(answer) if continuing else None
            # Progress (queued, reading a long prompt) holds the first-token
            # clock only while no other model could answer instead.
            patient = not (called < self.settings.fallback_depth and self._peek_ready(pending))
            stream = self._provider(spec).stream(request)
            try:
                async with aclosing(self._timed(stream, spec.id, progress_restarts=patient)) as events:
                    async for event in events:
                        if isinstance(event, Progress):
                            yield event  # not text: the seam must not flush on it
                            continue
                        if isinstance(event, TextDelta):
                            text = seam.feed(event.text) if seam else event.text
                        else:
                            text = seam.flush() if seam else ""
                        if text:
                            shown.append(text)
                            yield TextDelta(text)
                        if not isinstance(event, TextDelta):
                            yield event
                self.cooldowns.clear(spec.id)
                return
            except ProviderError as exc:
                if seam is not None and (text := seam.flush()):
                    shown.append(text)
                    yield TextDelta(text)
                surfaced = _surfaced(exc, answer_started=bool(shown))
                if surfaced is not None:
                    raise surfaced
                attempts.append((spec.id, exc))
                if exc.cooldown:
                    self.cooldowns.bench(spec.id, exc)
                can_fall_back = called < self.settings.fallback_depth
                delay = None
                if not (can_fall_back and self._peek_ready(pending)):
                    delay = self._retry_delay(exc, retries)
                if delay is not None:
                    retries += 1
                    yield Retrying(spec.id, retries, delay, exc.describe())
                    await self._sleep(delay)
                    continue
                failed = spec
                spec = self._take_ready(pending, passed) if can_fall_back else None
                if spec is None:
                    raise AllModelsFailed(attempts + passed, "".join(shown)) from exc
                continues = bool((answer_so_far + "".join(shown)).strip())
                yield FallingBack(failed.id, exc.describe(), spec.id, continuing=continues)
                called, retries = called + 1, 0
                verb = "continuing the answer of" if continues else "taking over from"
                yield ModelSelected(spec.id, spec.label, route.tier, f"{verb} {failed.id}")

    def _provider(self, spec: ModelSpec) -> Provider:
        return self.providers[spec.provider]

    def _peek_ready(self, pending: deque[ModelSpec]) -> bool:
        return any(self.availability(spec.id).ready for spec in pending)

    def _take_ready(self, pending: deque[ModelSpec], passed: list[tuple[str, ProviderError]]) -> ModelSpec | None:
        """Pop candidates up to the first ready one, recording why the others were skipped."""
        while pending:
            spec = pending.popleft()
            availability = self.availability(spec.id)
            if availability.ready:
                return spec
            error_class = _NOT_READY.get(availability.state, Unavailable)
            detail = availability.detail or availability.state.value
            if availability.state is State.COOLING_DOWN:
                detail = f"cooling down after: {detail}"
            passed.append((spec.id, error_class(detail, model=spec.id)))
        return None

    def _retry_delay(self, error: ProviderError, retries: int) -> float | None:
        """Seconds to wait before retrying the same model, or None to give up on it."""
        s = self.settings
        if not error.retry or retries >= s.max_retries:
            return None
        backoff = min(s.retry_max_delay, s.retry_base_delay * 2**retries) * (0.5 + 0.5 * self._rand())
        delay = max(backoff, error.retry_after or 0.0)
        # Retry-After is a floor: when it is past the cap, retrying sooner is pointless.
        return delay if delay <= s.retry_max_delay else None

    async def _timed(
        self, events: AsyncIterator[Event], model_id: str, *, progress_restarts: bool = True
    ) -> AsyncIterator[Event]:
        """``events`` with the first-token and stall limits; always closes ``events``.

        ``progress_restarts``: a ``Progress`` event before the first text
        restarts the first-token clock (the model is the only one left, so it
        may take its time); otherwise the clock runs on and the model times
        out like any silent one.

        O(1) work per event: the deadline moves with every event, but the one
        timer of this stream is re-armed only when it fires before the deadline
        (or the deadline moves earlier), never created per token.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        first, stall = self.settings.first_token_timeout, self.settings.stall_timeout
        deadline = loop.time() + first
        parts: list[str] = []
        waiting = expired = False
        timer: asyncio.TimerHandle | None = None

        def check(when: float) -> None:
            nonlocal timer, expired
            timer = None
            if not waiting:
                return  # the consumer holds an event: re-armed when we wait again
            if deadline <= when:
                expired = True
                task.cancel()
            else:
                timer = loop.call_at(deadline, check, deadline)

        cancelling = task.cancelling()
        try:
            async with aclosing(events):  # type: ignore[type-var]
                while True:
                    if parts:
                        # Measured while we wait, so time the consumer spends on an
                        # event never counts as the provider's silence.
                        deadline = loop.time() + stall
                    if timer is None:
                        timer = loop.call_at(deadline, check, deadline)
                    elif deadline < timer.when():
                        timer.cancel()
                        timer = loop.call_at(deadline, check, deadline)
                    waiting = True
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        return
                    except asyncio.CancelledError:
                        if not expired or task.uncancel() > cancelling:
                            raise  # a real cancellation (Stop), not our limit
                        if not parts:
                            raise Timeout(f"no text within {first:g} s", model=model_id) from None
                        cause = Timeout(f"no text for {stall:g} s", model=model_id)
                        raise Interrupted(
                            cause.describe(), partial_text="".join(parts), cause=cause, model=model_id
                        ) from None
                    finally:
                        waiting = False
                    if isinstance(event, TextDelta):
                        parts.append(event.text)
                    elif isinstance(event, Progress) and not parts and progress_restarts:
                        # Queued behind other users or reading a long prompt: the
                        # provider is alive, so the first-token clock starts again.
                        deadline = loop.time() + first
                    yield event
        finally:
            if timer is not None:
                timer.cancel()

def _surfaced(error: ProviderError, *, answer_started: bool) -> ProviderError | None:
    """The error to raise to the caller instead of falling back, or None.

    After some text a context-length error is an ordinary failure (compacting
    and starting over would show the answer twice), and a stream interrupted
    by an error is judged by that error: a content filter stops the answer.
    """
    if isinstance(error, Interrupted):
        if error.cause is None:
            return None
        error, answer_started = error.cause, True
    if error.fallback or (answer_started and isinstance(error, ContextLengthExceeded)):
        return None
    return error


def _cap(requested: int | None, limit: int | None) -> int | None:
    """A fallback model may allow fewer output tokens than the one asked for."""
    if requested is None or limit is None:
        return requested
    return min(requested, limit)


def _unique(specs: list[ModelSpec]) -> list[ModelSpec]:
    unique: dict[str, ModelSpec] = {}
    for spec in specs:
        unique.setdefault(spec.id, spec)
    return list(unique.values())
