"""The provider contract.

A provider streams one model call as an async generator of events
(``TextDelta``… ``Usage``? ``Finish``) and raises ``chat.errors.ProviderError``
subclasses only. Callers close the generator (``contextlib.aclosing``) when they
stop early; closing must close the HTTP response or stop local generation.
"""

from __future__ import annotations

import enum
from contextlib import aclosing
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..catalogue import ModelSpec
from ..errors import Interrupted, ProviderError
from ..events import Event, Finish, TextDelta
from ..messages import ChatRequest

__all__ = ["Availability", "Provider", "State", "guard_stream"]


class State(enum.StrEnum):
    READY = "ready"
    MISSING_KEY = "missing key"
    UNREACHABLE = "server unreachable"
    COOLING_DOWN = "cooling down"
    DISABLED = "disabled"
    LOADING = "loading"


@dataclass(frozen=True, slots=True)
class Availability:
    state: State
    detail: str = ""
    until: float | None = None  # wall-clock time a cooldown ends

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    @classmethod
    def ok(cls) -> Availability:
        return cls(State.READY)


@runtime_checkable
class Provider(Protocol):
    """One backend. ``name`` is the prefix of its model ids."""

    name: str

    def availability(self, model: str) -> Availability:
        """Whether ``model`` can be called now, without network I/O."""
        ...

    async def discover(self) -> list[ModelSpec]:
        """Models found live (Ollama); static providers return ``[]``."""
        ...

    def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        """Stream one call. Raises ``ProviderError`` subclasses only."""
        ...

    async def aclose(self) -> None: ...


async def guard_stream(events: AsyncIterator[Event], model_id: str) -> AsyncIterator[Event]:
    """Enforce the stream contract around an adapter's raw events.

    - a ``ProviderError`` raised after some text becomes ``Interrupted`` carrying
      exactly the text delivered so far (``raise ... from``);
    - a stream that ends without ``Finish`` (no end marker) is ``Interrupted``
      too, since the SDKs raise nothing then;
    - empty text deltas are dropped (some providers send them as keep-alives).
    """
    parts: list[str] = []
    finished = False
    try:
        async with aclosing(events):  # type: ignore[type-var]
            async for event in events:
                if isinstance(event, TextDelta):
                    if not event.text:
                        continue
                    parts.append(event.text)
                elif isinstance(event, Finish):
                    finished = True
                yield event
    except Interrupted:
        raise
    except ProviderError as exc:
        if exc.model is None:
            exc.model = model_id
        if parts:
            raise Interrupted(
                exc.describe(), partial_text="".join(parts), cause=exc, model=model_id
            ) from exc
        raise
    if not finished:
        raise Interrupted(
            "the stream ended without its end marker",
            partial_text="".join(parts),
            model=model_id,
        )
