"""A scripted provider: the seam we own for router, context and UI tests.

Replies are queued per model with ``enqueue`` and consumed one per call, so a
test reads like a story::

    fake = ScriptedProvider("fake")
    fake.enqueue("a", Reply(["Hel", "lo"]))
    fake.enqueue("a", Reply(error=RateLimited(retry_after=2)))

A model with an empty queue answers ``default`` (an echo of the last user
message when ``default`` is None). Every request is recorded in ``calls``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from chat.catalogue import Catalogue, ModelSpec
from chat.config import Settings
from chat.errors import ProviderError
from chat.events import Event, Finish, Progress, TextDelta, Usage
from chat.messages import ChatRequest
from chat.providers.base import Availability, guard_stream
from chat.runtime import Runtime
from chat.service import Turn


@dataclass
class Reply:
    """One scripted call.

    ``tokens`` stream with ``delay`` seconds before each; then ``error`` is
    raised if set (after the tokens: an interruption), else the stream finishes
    unless ``finish`` is False (a stream cut without its end marker).
    ``stall`` seconds of silence happen after ``stall_after`` tokens.
    """

    tokens: list[str] = field(default_factory=list)
    delay: float = 0.0
    error: ProviderError | None = None
    finish: bool = True
    stall: float = 0.0
    stall_after: int = 0
    usage: Usage | None = None
    progress: int = 0  # Progress events before the first token, ...
    progress_interval: float = 0.0  # ... each after this many seconds
    finish_reason: str = "stop"  # e.g. "length": cut off by the max output tokens


class ScriptedProvider:
    def __init__(self, name: str = "fake", default: Reply | None = None) -> None:
        self.name = name
        self.default = default
        self.calls: list[ChatRequest] = []
        self.scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self.states: dict[str, Availability] = {}
        self.active = 0
        self.closed_early = 0
        self.discovered: list[ModelSpec] = []

    def enqueue(self, model: str, *replies: Reply) -> None:
        self.scripts[model].extend(replies)

    def availability(self, model: str) -> Availability:
        return self.states.get(model, Availability.ok())

    async def discover(self) -> list[ModelSpec]:
        return list(self.discovered)

    async def aclose(self) -> None:
        return None

    def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        return guard_stream(self._raw(request), f"{self.name}:{request.model}")

    async def _raw(self, request: ChatRequest) -> AsyncIterator[Event]:
        self.calls.append(request)
        queue = self.scripts[request.model]
        if queue:
            reply = queue.popleft()
        elif self.default is not None:
            reply = self.default
        else:
            last = next(m.content for m in reversed(request.messages) if m.role == "user")
            reply = Reply([f"echo: {last}"])
        self.active += 1
        completed = False
        try:
            for _ in range(reply.progress):
                await asyncio.sleep(reply.progress_interval)
                yield Progress("working")
            for index, token in enumerate(reply.tokens):
                if reply.stall and index == reply.stall_after:
                    await asyncio.sleep(reply.stall)
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                yield TextDelta(token)
            if reply.stall and reply.stall_after >= len(reply.tokens):
                await asyncio.sleep(reply.stall)
            if reply.error is not None:
                completed = True
                raise reply.error
            if reply.usage is not None:
                yield reply.usage
            completed = True
            if reply.finish:
                yield Finish(reply.finish_reason)
        finally:
            self.active -= 1
            if not completed:
                self.closed_early += 1


def scripted_runtime(settings: Settings, catalogue: Catalogue) -> tuple[Runtime, ScriptedProvider]:
    """The real runtime (service, router, context) in front of one scripted provider, "fake"."""
    fake = ScriptedProvider("fake")
    return Runtime.build(settings, providers={"fake": fake}, catalogue=catalogue), fake


async def answer(runtime: Runtime, turn: Turn) -> tuple[str, list[Event]]:
    """The text of the service's answer to ``turn``, and all its events."""
    events = [e async for e in runtime.service.respond(turn)]
    return "".join(e.text for e in events if isinstance(e, TextDelta)), events
