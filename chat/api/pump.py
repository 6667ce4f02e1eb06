"""Running one answer's events beside the HTTP response.

``EventPump`` runs the service's event stream in its own task and hands the
HTTP side everything that has arrived as one batch (``get``). Running apart is
what lets the response wait with a heartbeat and notice a disconnect without
ever interrupting the provider stream mid-read. Besides events, a batch may
hold markers:

- ``PING``: nothing was sent for ``heartbeat`` seconds (one timer per
  heartbeat period, not one per event);
- ``END``: the stream finished; ``Failed(exc)``: it raised;
- ``GONE``: the client disconnected (only while ``watch`` is on).

``close()`` cancels the task: the service's generator gets ``CancelledError``
at its current ``await`` and the provider stream is closed on the way out
(``aclosing`` all the way down), so the upstream server sees the disconnect.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive

__all__ = ["END", "GONE", "PING", "EventPump", "Failed"]


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


PING = _Marker("PING")
END = _Marker("END")
GONE = _Marker("GONE")


@dataclass(frozen=True, slots=True)
class Failed:
    error: BaseException


class EventPump:
    def __init__(self, source: AsyncIterator[Any], heartbeat: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._heartbeat = heartbeat
        self._quiet_since = self._loop.time()
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(self._quiet_since + heartbeat, self._tick)
        self._watcher: asyncio.Task[None] | None = None
        self._task = self._loop.create_task(self._run(source))

    async def _run(self, source: AsyncIterator[Any]) -> None:
        try:
            async with aclosing(source):  # type: ignore[type-var]
                async for item in source:
                    self._push(item)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, in order
            self._push(Failed(exc))
        else:
            self._push(END)

    def _push(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _tick(self) -> None:
        now = self._loop.time()
        due = self._quiet_since + self._heartbeat
        if now >= due:
            self._push(PING)
            self._quiet_since = now
            due = now + self._heartbeat
        self._timer = self._loop.call_at(due, self._tick)

    def sent(self) -> None:
        """The client was just sent something: the heartbeat period starts again."""
        self._quiet_since = self._loop.time()

    def watch(self, receive: Receive) -> None:
        """Push ``GONE`` when the client disconnects (the request body must be read)."""

        async def wait() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self._push(GONE)

        self._watcher = self._loop.create_task(wait())

    def unwatch(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def get(self) -> list[Any]:
        """Everything that arrived since the last call (waits for at least one item)."""
        if not self._items:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = list(self._items)
        self._items.clear()
        return items

    def close(self) -> None:
        """Stop: cancel the stream (closing the provider's) and the timers. Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.unwatch()
        if not self._task.done():
            self._task.cancel()
