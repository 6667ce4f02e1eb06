"""The in-process store: one replica, nothing to run (the default).

Same semantics as ``RedisStore``, in dictionaries of this process. It is used
from the server's event loop only; expiry is checked on the monotonic clock
when a value is read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from limits.aio.storage import MemoryStorage, Storage

from .base import Store, StreamRead

__all__ = ["MemoryStore"]


@dataclass
class _Buffer:
    entries: list[tuple[int, bytes]] = field(default_factory=list)
    ended: bool = False
    expires: float = float("inf")
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryStore(Store):
    backend = "memory"
    shared = False

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[bytes, float]] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._maps: dict[str, dict[str, bytes]] = {}
        self._buffers: dict[str, _Buffer] = {}
        self._limits = MemoryStorage()

    @property
    def limits_storage(self) -> Storage:
        return self._limits

    async def get(self, key: str) -> bytes | None:
        item = self._values.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._values[key]
            return None
        return item[0]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._values[key] = (bytes(value), self._clock() + ttl)
        if len(self._values) % 1024 == 0:
            self._sweep()

    def _sweep(self) -> None:
        now = self._clock()
        for key in [k for k, (_, expires) in self._values.items() if expires <= now]:
            del self._values[key]
        for name in [n for n, b in self._buffers.items() if b.expires <= now]:
            del self._buffers[name]

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)
        self._buffers.pop(key, None)

    async def incr(self, key: str, amount: float, ttl: float) -> float:
        current = await self.get(key)
        if current is None:
            value, expires = amount, self._clock() + ttl
        else:
            value, expires = float(current) + amount, self._values[key][1]
        self._values[key] = (repr(value).encode(), expires)
        return value

    async def lease_acquire(self, bucket: str, lease: str, limit: int, ttl: float) -> tuple[bool, int]:
        now = self._clock()
        held = {k: v for k, v in self._leases.get(bucket, {}).items() if v > now}
        if len(held) >= limit:
            self._leases[bucket] = held
            return False, len(held)
        held[lease] = now + ttl
        self._leases[bucket] = held
        return True, len(held)

    async def lease_renew(self, bucket: str, lease: str, ttl: float) -> bool:
        held = self._leases.get(bucket, {})
        if held.get(lease, 0) <= self._clock():
            held.pop(lease, None)
            return False
        held[lease] = self._clock() + ttl
        return True

    async def lease_release(self, bucket: str, lease: str) -> None:
        held = self._leases.get(bucket)
        if held is not None:
            held.pop(lease, None)
            if not held:
                del self._leases[bucket]

    async def map_set(self, name: str, field: str, value: bytes) -> None:
        self._maps.setdefault(name, {})[field] = bytes(value)

    async def map_delete(self, name: str, field: str) -> None:
        self._maps.get(name, {}).pop(field, None)

    async def map_all(self, name: str) -> dict[str, bytes]:
        return dict(self._maps.get(name, {}))

    def _buffer(self, stream: str) -> _Buffer | None:
        buffer = self._buffers.get(stream)
        if buffer is not None and buffer.expires <= self._clock():
            del self._buffers[stream]
            return None
        return buffer

    async def stream_append(self, stream: str, entries: Sequence[tuple[int, bytes]], ttl: float) -> None:
        buffer = self._buffer(stream)
        if buffer is None:
            buffer = self._buffers[stream] = _Buffer()
        buffer.entries.extend(entries)
        buffer.expires = self._clock() + ttl
        buffer.changed.set()
        buffer.changed = asyncio.Event()

    async def stream_end(self, stream: str, ttl: float) -> None:
        buffer = self._buffer(stream)
        if buffer is None:
            buffer = self._buffers[stream] = _Buffer()
        buffer.ended = True
        buffer.expires = self._clock() + ttl
        buffer.changed.set()
        buffer.changed = asyncio.Event()

    async def stream_read(self, stream: str, after: int, timeout: float) -> StreamRead:
        buffer = self._buffer(stream)
        if buffer is None:
            return StreamRead([], False, exists=False)
        fresh = [entry for entry in buffer.entries if entry[0] > after]
        if not fresh and not buffer.ended and timeout > 0:
            try:
                await asyncio.wait_for(buffer.changed.wait(), timeout)
            except TimeoutError:
                pass
            fresh = [entry for entry in buffer.entries if entry[0] > after]
        return StreamRead(fresh, buffer.ended)
