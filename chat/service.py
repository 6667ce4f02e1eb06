"""The chat service: one user turn in, typed events out.

UI → **service** → context manager → router → provider. The service validates
the input, asks the router which models may answer (so the context manager can
plan for the smallest window among them), lets the context manager fold or trim
the history, and streams the router's events back.

A context-length error before any text means our estimate was off for that
model: the service compacts harder and retries it once (without announcing the
model again). If it still refuses, its real window is smaller than the
catalogue says: the next model whose window fits answers the normally planned
request instead, with a ``FallingBack`` notice saying why.

Before each request the service tells its estimate of the input tokens
(``InputEstimate``, for live figures). With a response cache (``chat.cache``),
a complete answer to the same request is replayed instead of asking a model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .cache import Recording, ResponseCache
from .catalogue import AUTO
from .config import Settings
from .context import ContextManager, PreparedContext
from .continuation import continuation_messages
from .errors import ContextLengthExceeded, InputError, ProviderError
from .events import Event, FallingBack, InputEstimate, ModelSelected, TextDelta, Usage
from .messages import Message
from .router import Route, Router

__all__ = ["ChatService", "Turn"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One user message with everything needed to answer it.

    ``history`` holds the earlier user/assistant turns only (no notes).
    ``answer_so_far``: the start of the answer to ``message`` that was cut (the
    caller holds it); the answer then continues it and carries only new text.
    """

    message: str
    history: tuple[Message, ...] = ()
    model_id: str = "auto"
    system_prompt: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    answer_so_far: str = field(default="", kw_only=True)


class ChatService:
    def __init__(self, settings: Settings, router: Router, context: ContextManager,
                 cache: ResponseCache | None = None) -> None:
        self.settings = settings
        self.router = router
        self.context = context
        self.cache = cache

    def message_problem(self, message: str) -> str | None:
        """What is wrong with ``message`` and what is allowed, or None if it can be sent."""
        if not message.strip():
            return "Your message is empty. Type a question or instruction, then send it."
        limit = self.settings.max_message_chars
        if len(message) > limit:
            return (
                f"Your message is {len(message):,} characters long; the limit is {limit:,} "
                "characters (CHAT_MAX_MESSAGE_CHARS). Shorten it or split it into several messages."
            )
        # No model gets more than CHAT_MAX_CONTEXT_TOKENS, so a message beyond
        # that is refused here, before the UI clears the textbox.
        tokens = self.context.counter.message(Message("user", message))
        most = self.context.budget_for([], self.settings.max_output_tokens)
        if tokens > most:
            return (
                f"Your message is about {tokens:,} tokens; one request can carry at most {most:,} "
                "(CHAT_MAX_CONTEXT_TOKENS minus the tokens reserved for the answer). "
                "Shorten it or split it into several messages."
            )
        return None

    def validate(self, turn: Turn) -> None:
        """Raise ``InputError`` naming what is wrong and what is allowed."""
        problem = self.message_problem(turn.message)
        if problem:
            raise InputError(problem)
        if turn.max_tokens is not None and turn.max_tokens < 1:
            raise InputError("Max output tokens must be at least 1.")
        if turn.temperature is not None and not 0 <= turn.temperature <= 2:
            raise InputError("Temperature must be between 0 and 2.")

    def _continuation_tokens(self, answer_so_far: str, budget: int) -> int:
        """Tokens a continuation adds to the request (the partial answer and the
        instruction to continue it); ``InputError`` when they leave no room."""
        if not answer_so_far.strip():
            return 0
        counter = self.context.counter  # the messages the router adds to continue it
        tokens = sum(counter.message(m) for m in continuation_messages((), answer_so_far))
        if tokens > budget // 2:
            raise InputError(
                f"The answer to continue is about {tokens:,} tokens; with this model at most "
                f"{budget // 2:,} fit next to the conversation. Send a shorter conversation, or "
                "ask for a new answer instead of continuing this one."
            )
        return tokens

    async def respond(self, turn: Turn, route: Route | None = None) -> AsyncIterator[Event]:
        """Stream the answer to ``turn`` as events; raises ``ChatError`` subclasses.

        ``route``: when the caller already validated ``turn`` and resolved its
        route (the API does, to refuse a bad request with its own status before
        the stream starts); else both happen here.

        With the response cache on, a complete answer to the same request is
        replayed (no model called), and a new complete answer is stored."""
        if route is None:
            self.validate(turn)
            route = self.router.resolve(turn.model_id, turn.message)
        cache = self.cache
        if cache is None or turn.answer_so_far:
            async for event in self._answer(turn, route):
                yield event
            return
        key = self._cache_key(turn, route)
        stored = await cache.get(key)
        if stored is not None:
            async for event in stored.replay():
                yield event
            return
        recording = Recording()
        async for event in self._answer(turn, route):
            recording.add(event)
            yield event
        # Reached only when the answer ran to its end: a stopped (closed) or
        # failed one never gets here.
        await cache.put(key, recording)

    def _cache_key(self, turn: Turn, route: Route) -> str:
        # A model by its resolved id ("ollama:x" is "ollama:x:latest"); Auto as such.
        model = turn.model_id if turn.model_id == AUTO else route.primary.id
        return ResponseCache.key(
            model=model, system_prompt=turn.system_prompt, messages=(*turn.history, Message("user", turn.message)),
            temperature=turn.temperature, max_tokens=turn.max_tokens or self.settings.max_output_tokens,
        )

    async def _answer(self, turn: Turn, route: Route) -> AsyncIterator[Event]:
        # Plan for the chosen model's window; fallbacks too small for the
        # planned request are skipped by the router (min_window below).
        windows = [route.primary.context_window]
        cap = min([self.settings.max_context_tokens, *windows])
        # The answer's reserve may take at most half the window (see budget_for).
        max_tokens = min(turn.max_tokens or self.settings.max_output_tokens, cap // 2)
        budget = self.context.budget_for(windows, max_tokens)
        continued = self._continuation_tokens(turn.answer_so_far, budget)
        budget -= continued
        model_ids = [spec.id for spec in route.chain]
        conversation = [*turn.history, Message("user", turn.message)]

        harder = False
        normal: PreparedContext | None = None
        refused: list[tuple[str, ProviderError]] = []  # models whose real window was too small
        seen: set[Event] = set()  # notices already yielded (a retry plans again)
        announced: str | None = None
        while True:
            prepared: PreparedContext | None = normal if refused else None
            if prepared is None:
                async for item in self.context.prepare(
                    turn.system_prompt, conversation, budget, model_ids=model_ids, harder=harder
                ):
                    if isinstance(item, PreparedContext):
                        prepared = item
                    elif item not in seen:
                        seen.add(item)
                        yield item
                assert prepared is not None
                normal = normal or prepared
            estimated = False
            streamed = False
            # A continuation request carries the partial answer too: its
            # reported size says nothing about our estimate.
            calibrate = not continued
            model_id = route.primary.id
            try:
                async for event in self.router.stream(
                    turn.model_id,
                    prepared.messages,
                    temperature=turn.temperature,
                    max_tokens=max_tokens,
                    min_window=prepared.estimated_tokens + max_tokens + continued,
                    answer_so_far=turn.answer_so_far,
                    skip=tuple(refused),
                ):
                    if isinstance(event, TextDelta):
                        streamed = True
                    elif isinstance(event, ModelSelected):
                        model_id = event.model_id
                        if model_id == announced:
                            continue  # the same model, retried after compacting harder
                        announced = model_id
                    elif isinstance(event, FallingBack):
                        announced = None
                        if event.continuing:
                            # A continuation request carries the partial answer too:
                            # its reported size says nothing about our estimate.
                            calibrate = False
                    elif isinstance(event, Usage) and event.input_tokens and calibrate:
                        self.context.observe(model_id, prepared.estimated_tokens, event.input_tokens)
                    yield event
                    if not estimated and isinstance(event, ModelSelected):
                        estimated = True
                        counter = self.context.counter
                        yield InputEstimate(counter.calibrated(prepared.estimated_tokens, model_id) + continued)
                return
            except ContextLengthExceeded as exc:
                if streamed:
                    raise
                if not harder:
                    # Our estimate was off for this model: compact harder, retry once.
                    harder = True
                    continue
                # Still refused: its real window is smaller than the catalogue
                # says. Another model whose window fits takes the normal plan.
                refused.append((exc.model or model_id, exc))
