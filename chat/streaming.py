"""Coalescing a fast stream into fewer batches.

Every Gradio yield is one network message and costs ~1.5–2 ms of server CPU,
so yielding per token wastes a core at 100+ tokens/s. ``coalesce`` passes the
first batch through at once (time to first token is not delayed) and then
groups whatever arrives within ``interval`` seconds into one batch; ``Pacer``
decides that interval for the page. The adapters use ``coalesce`` too, to read
a response body in a task of its own (``providers.body``).

The work per item is an append (and a wake-up only when the consumer is
waiting for one); timers are set per batch, never per item.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["LoadShare", "Pacer", "coalesce"]


class LoadShare:
    """Counts the streams running at once, for spacing their work by the load
    (``Pacer`` for page updates, ``providers.body.ReadPacer`` for socket reads)."""

    streams: int = 0

    @contextmanager
    def streaming(self) -> Iterator[None]:
        """Count one stream for as long as the block runs."""
        self.streams += 1
        try:
            yield
        finally:
            self.streams -= 1


class Pacer(LoadShare):
    """How often one streamed answer may update the page.

    - the first text at once, then every ``interval`` seconds at most
      (``CHAT_STREAM_INTERVAL_MS``);
    - less often as the answer grows: besides its new text, every update costs
      the browser a fixed envelope (~300 bytes of Gradio's protocol), so
      spacing updates in proportion to the text already shown (``PER_CHAR``,
      at most ``MAX_LENGTH_WAIT``) keeps that overhead a bounded share of the
      text, while the start of an answer stays smooth;
    - less often under load: the updates of all answers streaming at once
      share ``UPDATES_PER_S`` (each costs Gradio ~1–2 ms of CPU), so the app
      slows its updates instead of falling behind.
    """

    PER_CHAR = 0.00002  # 20 ms per 1,000 characters shown
    MAX_LENGTH_WAIT = 0.25
    UPDATES_PER_S = 100

    def __init__(self, interval: float) -> None:
        self.base = interval

    def interval(self, shown_chars: int) -> float:
        """Seconds between updates of an answer with ``shown_chars`` characters
        so far; 0 before any text (the first text goes out the moment it arrives)."""
        if not shown_chars:
            return 0.0
        by_length = min(shown_chars * self.PER_CHAR, self.MAX_LENGTH_WAIT)
        return max(self.base, by_length, self.streams / self.UPDATES_PER_S)


class _Buffer(Generic[T]):
    """What the source produced and the consumer has not taken yet."""

    __slots__ = ("ended", "error", "items", "waiter", "wake_on_item")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.ended = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.wake_on_item = True

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float | None, *, on_item: bool) -> None:
        """Until the source ends, ``timeout`` passes, or (``on_item``) an item arrives."""
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        self.wake_on_item = on_item
        timer = loop.call_later(timeout, _resolve, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def coalesce(
    source: AsyncIterator[T], interval: float | Callable[[], float], *, idle: float | None = None
) -> AsyncIterator[list[T]]:
    """Yield lists of items from ``source``, at most one list per ``interval``
    (seconds, or a function asked before each list).

    With ``idle``, an empty list is yielded whenever nothing arrived for that
    many seconds (a tick, so the consumer can publish what it held back).

    The source runs in its own task so a slow consumer never blocks it; if the
    consumer stops early (Stop, closed tab), the task is cancelled and the
    source closed, which closes the upstream connection. Exceptions from the
    source are re-raised after the items that preceded them.
    """
    loop = asyncio.get_running_loop()
    buffer: _Buffer[T] = _Buffer()

    async def pump() -> None:
        try:
            async with aclosing(source):  # type: ignore[type-var]
                async for item in source:
                    buffer.items.append(item)
                    if buffer.wake_on_item:
                        buffer.wake()
        except BaseException as exc:  # delivered to the consumer in order
            buffer.error = exc
            buffer.ended = True
            buffer.wake()
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            buffer.ended = True
            buffer.wake()

    task = asyncio.create_task(pump())
    spacing = interval if callable(interval) else lambda: interval
    last_flush = float("-inf")
    try:
        while True:
            if not buffer.items and not buffer.ended:
                await buffer.wait(idle, on_item=True)
                if not buffer.items and not buffer.ended:
                    yield []  # an idle tick
                    continue
            hold = last_flush + spacing() - loop.time()
            if hold > 0 and not buffer.ended:
                # Gather what arrives until the interval is up (or the end).
                await buffer.wait(hold, on_item=False)
            if buffer.items:
                batch, buffer.items = buffer.items, []
                last_flush = loop.time()
                yield batch
            if buffer.ended and not buffer.items:
                if buffer.error is not None:
                    raise buffer.error
                return
    finally:
        if not task.done():
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 - we are tearing down
                pass
