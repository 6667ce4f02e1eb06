"""The shared-state seam: one small interface, two backends.

Shaped like the ``limits`` library's storage/strategy split: a ``Store`` holds
primitives (a TTL key-value pair, float counters, expiring leases, small maps,
append-only event buffers) and the code that needs shared state — rate limits,
concurrency leases, spend, cooldowns, the summary cache, resumable streams —
is written once over them (``chat.access``, ``chat.store.cooldowns``,
``chat.store.summaries``, ``chat.api.resume``) and never knows which backend
answers.

Backends: ``MemoryStore`` (the default: one replica, nothing to run) and
``RedisStore`` (``REDIS_URL``; every replica pointing at the same Redis shares
it). ``build_store(settings)`` picks one; ``chat.runtime`` calls it.

Errors::

    StoreError                 anything the store says
    ├── StoreUnavailable       the backend cannot be reached now: callers fail
    │                          open (limits admit, caches miss), the backend
    │                          reconnects by itself
    └── StoreConfigError       a wrong REDIS_URL at start (refused, not Redis,
                               bad password): the app does not start

Keys are plain strings; backends add their own prefix. TTLs are seconds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass

from limits.aio.storage import Storage

__all__ = ["Store", "StoreConfigError", "StoreError", "StoreHealth", "StoreUnavailable", "StreamRead"]


class StoreError(Exception):
    """A failure of the shared store."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (callers fail open)."""


class StoreConfigError(StoreError):
    """The store cannot be used as configured (reported at start-up)."""


@dataclass(frozen=True, slots=True)
class StoreHealth:
    backend: str  # "memory" | "redis"
    state: str  # "ok" | "unreachable"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def as_json(self) -> dict[str, str]:
        return {"backend": self.backend, "state": self.state, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class StreamRead:
    """Entries of a buffer after some sequence number, and whether it has ended."""

    entries: list[tuple[int, bytes]]
    ended: bool
    exists: bool = True


class Store(ABC):
    backend: str = "?"
    shared: bool = False  # True: other replicas see the same state

    # -- the generic TTL key-value pair (also issue #12's response cache) -------

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None (absent or expired)."""

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    # -- counters ------------------------------------------------------------------

    @abstractmethod
    async def incr(self, key: str, amount: float, ttl: float) -> float:
        """Add ``amount`` to the counter at ``key`` (created at 0, living ``ttl``
        seconds from its creation); the new value."""

    async def read_counter(self, key: str) -> float:
        value = await self.get(key)
        return float(value) if value else 0.0

    # -- leases: at most ``limit`` holders per bucket, each expiring unless renewed --

    @abstractmethod
    async def lease_acquire(self, bucket: str, lease: str, limit: int, ttl: float) -> tuple[bool, int]:
        """Take a lease in ``bucket`` if fewer than ``limit`` live ones are held
        (expired ones are dropped first; atomic). Returns (taken, held after)."""

    @abstractmethod
    async def lease_renew(self, bucket: str, lease: str, ttl: float) -> bool:
        """Push the lease's expiry ``ttl`` seconds ahead; False if it was gone."""

    @abstractmethod
    async def lease_release(self, bucket: str, lease: str) -> None: ...

    # -- small maps (the cooldown table) ----------------------------------------------

    @abstractmethod
    async def map_set(self, name: str, field: str, value: bytes) -> None: ...

    @abstractmethod
    async def map_delete(self, name: str, field: str) -> None: ...

    @abstractmethod
    async def map_all(self, name: str) -> dict[str, bytes]: ...

    # -- append-only event buffers (resumable streams) ----------------------------------

    @abstractmethod
    async def stream_append(self, stream: str, entries: Sequence[tuple[int, bytes]], ttl: float) -> None:
        """Append ``(sequence number, payload)`` entries (numbers increase)."""

    @abstractmethod
    async def stream_end(self, stream: str, ttl: float) -> None:
        """Mark the buffer complete; it is kept ``ttl`` more seconds."""

    @abstractmethod
    async def stream_read(self, stream: str, after: int, timeout: float) -> StreamRead:
        """Entries numbered above ``after``, waiting up to ``timeout`` seconds
        for one when there is none yet (``ended`` set once the end was marked
        and everything was read; ``exists`` False for an unknown buffer)."""

    # -- life --------------------------------------------------------------------------------

    @property
    @abstractmethod
    def limits_storage(self) -> Storage:
        """The ``limits`` storage over the same backend (rate-limit counters)."""

    def guard(self) -> AbstractAsyncContextManager[None]:
        """Wrap direct use of ``limits_storage``: backend failures become
        ``StoreUnavailable`` (and count as an outage)."""
        return nullcontext()

    def health(self) -> StoreHealth:
        """The state seen by the last operation (no I/O)."""
        return StoreHealth(self.backend, "ok")

    async def probe(self) -> StoreHealth:
        """The state now (one round trip for a remote backend)."""
        return self.health()

    def check_at_start(self) -> None:
        """Raise ``StoreConfigError`` if the store cannot be used (called once,
        before the server's event loop starts)."""

    async def aclose(self) -> None:
        return None
