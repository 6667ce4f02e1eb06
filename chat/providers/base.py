"""The provider contract.

A provider streams one model call as an async generator of events
(``TextDelta``… ``Usage``? ``Finish``) and raises ``chat.errors.ProviderError``
subclasses only. Callers close the generator (``contextlib.aclosing``) when they
stop early; closing must close the HTTP response or stop local generation.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

from ..catalogue import ModelSpec
from ..errors import Interrupted, ProviderError
from ..events import Event, Finish, TextDelta
from ..messages import ChatRequest

__all__ = ["Availability", "LoopClient", "Provider", "State", "guard_stream"]

log = logging.getLogger(__name__)
C = TypeVar("C")


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


class LoopClient(Generic[C]):
    """One SDK client per event loop, closed when it is replaced.

    Pooled connections belong to the event loop that opened them, so a caller
    on another loop (the start-up discovery thread, a test) gets a client of
    its own, and the one it replaces is closed:

    - on its own loop, if that loop still runs (another thread's);
    - if that loop is closed, nothing can be awaited there any more. So each
      client parks a tiny async generator on its loop: ``asyncio.run`` (and
      pytest's loops) close parked generators before closing the loop
      (``shutdown_asyncgens``), and that generator closes the client there,
      while its sockets can still be closed cleanly.

    ``make`` builds a client (and may raise, e.g. ``NotConfigured``);
    ``close`` closes one.
    """

    def __init__(self, make: Callable[[], C], close: Callable[[C], Awaitable[object]]) -> None:
        self._make = make
        self._close = close
        self._slot: _Slot[C] | None = None

    @property
    def client(self) -> C | None:
        """The current client, if one was built (for tests and diagnostics)."""
        slot = self._slot
        return slot.client if slot is not None and not slot.closed else None

    async def get(self) -> C:
        """The client for the running loop, built on first use."""
        loop = asyncio.get_running_loop()
        slot = self._slot
        if slot is not None and slot.loop is loop and not slot.closed:
            return slot.client
        client = self._make()
        self._slot = _Slot(client, loop, self._closer)
        if slot is not None:
            slot.retire()
        await anext(self._slot.keeper)  # parked on this loop until closed
        return client

    async def aclose(self) -> None:
        """Close the client (on this loop if it belongs to it)."""
        slot, self._slot = self._slot, None
        if slot is None:
            return
        if slot.loop is asyncio.get_running_loop():
            await slot.keeper.aclose()
        else:
            slot.retire()

    async def _closer(self, slot: _Slot[C]) -> AsyncIterator[None]:
        try:
            yield
        finally:
            slot.closed = True
            try:
                await self._close(slot.client)
            except Exception as exc:  # noqa: BLE001 - closing must not fail a shutdown
                log.debug("closing an SDK client failed: %s", type(exc).__name__)


class _Slot(Generic[C]):
    __slots__ = ("client", "closed", "keeper", "loop")

    def __init__(self, client: C, loop: asyncio.AbstractEventLoop,
                 closer: Callable[[_Slot[C]], AsyncIterator[None]]) -> None:
        self.client = client
        self.loop = loop
        self.closed = False
        self.keeper = closer(self)

    def retire(self) -> None:
        """Close this client on its own loop, if that loop still runs."""
        if self.closed or self.loop.is_closed():
            return  # closed already, or its loop's shutdown closed it
        try:
            # A plain callback (no coroutine object) so nothing is left
            # un-awaited if that loop closes before running it.
            self.loop.call_soon_threadsafe(lambda: self.loop.create_task(_aclose(self.keeper)))
        except RuntimeError:  # closed in the meantime
            pass


async def _aclose(generator: AsyncIterator[None]) -> None:
    await generator.aclose()  # type: ignore[attr-defined]
