"""A pool of instances lent one at a time, first come first served.

The embedded model runs a few ``Llama`` instances, each serving one generation
at a time. Requests that find none free wait in one queue, in arrival order:
a returned instance is handed straight to the request at the head of the line,
so a newcomer can never take it first and nobody starves. A waiting request
can learn its place (``places``) and leave the line at any time (``leave``);
an instance already on its way to a request that left goes on to the next.

Waiters may sit on different event loops (tests, a worker thread's loop):
instances are returned from any thread, and handed over with
``call_soon_threadsafe`` on the waiter's own loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["FairPool", "PoolClosed", "Waiter"]

T = TypeVar("T", bound=Hashable)


class PoolClosed(Exception):
    """The pool was retired (the app reloaded); nothing more is lent."""


@dataclass(eq=False)
class Waiter(Generic[T]):
    """A request in the line; its future gets the instance handed over."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]


class FairPool(Generic[T]):
    def __init__(self, items: list[T]) -> None:
        self.items = list(items)
        self._busy: set[T] = set()
        self._last_used: dict[T, float] = {item: 0.0 for item in self.items}
        self._queue: deque[Waiter[T]] = deque()
        self._lock = threading.Lock()
        self._closed = False

    def running(self) -> int:
        """How many instances are lent out now."""
        with self._lock:
            return len(self._busy)

    def try_acquire(self, preference: Callable[[T], Any] = lambda item: 0) -> T | None:
        """A free instance right now, unless others are already waiting for one.

        Among free instances the one with the highest ``preference`` wins; on
        a tie, the least recently used (a valuable cache is not evicted).
        """
        with self._lock:
            if self._closed:
                raise PoolClosed
            free = [item for item in self.items if item not in self._busy]
            if not free or self._queue:
                return None
            item = max(free, key=lambda i: (preference(i), -self._last_used[i]))
            self._lend(item)
            return item

    def enqueue(self) -> Waiter[T]:
        """Join the line (on the running loop). The future may already be done:
        an instance was returned meanwhile."""
        loop = asyncio.get_running_loop()
        waiter: Waiter[T] = Waiter(loop, loop.create_future())
        with self._lock:
            if self._closed:
                raise PoolClosed
            free = next((item for item in self.items if item not in self._busy), None)
            if free is not None and not self._queue:
                self._lend(free)
                waiter.future.set_result(free)
            else:
                self._queue.append(waiter)
        return waiter

    def ahead(self, waiter: Waiter[T]) -> int:
        """How many requests are ahead of ``waiter`` in the line."""
        with self._lock:
            try:
                return self._queue.index(waiter)
            except ValueError:
                return 0  # being handed an instance right now

    async def places(self, waiter: Waiter[T], heartbeat: float, poll: float = 0.25) -> AsyncIterator[int]:
        """``waiter``'s place in the line: at once, whenever it changes, and every
        ``heartbeat`` seconds, until an instance is handed over (then
        ``waiter.future.result()`` is it; it raises ``PoolClosed`` if retired)."""
        told: tuple[int, float] | None = None
        while not (await asyncio.wait({waiter.future}, timeout=min(poll, heartbeat)))[0]:
            ahead, now = self.ahead(waiter), time.monotonic()
            if told is None or ahead != told[0] or now - told[1] >= heartbeat:
                told = (ahead, now)
                yield ahead

    def leave(self, waiter: Waiter[T]) -> None:
        """``waiter`` stopped waiting (Stop, timed out): out of the line; an
        instance already handed to it goes on to the next."""
        with self._lock:
            try:
                self._queue.remove(waiter)
            except ValueError:
                pass
        future = waiter.future
        if future.done():
            if not future.cancelled() and future.exception() is None:
                self.release(future.result())
        else:
            future.cancel()  # a hand-over on its way sees this and passes the instance on

    def release(self, item: T) -> None:
        """Return ``item``: to the first request in line, else to the free ones.
        Safe from any thread."""
        while True:
            with self._lock:
                waiter = self._queue.popleft() if self._queue and not self._closed else None
                if waiter is None:
                    self._busy.discard(item)
                    return
                self._last_used[item] = time.monotonic()
            # A closed loop has nobody left waiting: the instance goes to the next.
            if _call_soon(waiter.loop, self._deliver, waiter, item):
                return

    def close(self, error: BaseException) -> None:
        """Lend nothing more; every request in line fails with ``error``."""
        with self._lock:
            self._closed = True
            waiters, self._queue = list(self._queue), deque()
        for waiter in waiters:
            _call_soon(waiter.loop, _fail, waiter.future, error)

    def _lend(self, item: T) -> None:
        self._busy.add(item)
        self._last_used[item] = time.monotonic()

    def _deliver(self, waiter: Waiter[T], item: T) -> None:
        """On the waiter's loop: hand ``item`` over, or pass it on if it left."""
        if waiter.future.done():
            self.release(item)
        else:
            waiter.future.set_result(item)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object) -> bool:
    try:
        loop.call_soon_threadsafe(callback, *args)
        return True
    except RuntimeError:  # the loop is closed
        return False


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
