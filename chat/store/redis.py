"""The Redis store: every replica pointing at the same Redis shares its state.

Uses ``redis.asyncio`` directly (the server's event loop; never the sync client
there). Leases are a sorted set per bucket scored by expiry on Redis's own
clock (``TIME`` inside Lua, so replicas' clocks do not matter), acquired and
renewed atomically by scripts; counters are ``INCRBYFLOAT`` with an expiry set
once; maps are hashes; event buffers are Redis Streams whose entry ids are the
events' sequence numbers (``0-N``; the end marker is ``1-0``), read with
``XRANGE`` and ``XREAD BLOCK``. Rate limits use the ``limits`` library's async
Redis storage over the same connection pool (``implementation="redispy"``).

Outages. Any connection failure marks the store unreachable: a warning is
logged once, calls fail fast with ``StoreUnavailable`` for a second (so a dead
Redis does not add a connect timeout to every request), then the next call
tries again — redis-py reconnects by itself — and the first success logs that
Redis is back. Callers fail open.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from limits.aio.storage import RedisStorage, Storage
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ConnectionError, RedisError, ResponseError, TimeoutError
from redis.retry import Retry

from .base import Store, StoreConfigError, StoreHealth, StoreUnavailable, StreamRead

__all__ = ["RedisStore", "redacted"]

log = logging.getLogger(__name__)

PREFIX = "relay:"
RETRY_AFTER = 1.0  # seconds a failed store is not asked again
END_ID = "1-0"  # after every event id "0-N"
MAX_BLOCK = 2.0  # seconds one XREAD may block (below the socket timeout)

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if held >= tonumber(ARGV[2]) then return {0, held} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000) + 1000)
return {1, held + 1}
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not score) or tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
return 1
"""

_INCR = """
local value = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
"""


def redacted(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: safe to print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisStore(Store):
    backend = "redis"
    shared = True

    def __init__(self, url: str, *, start_wait: float = 10.0, quiet: bool = False) -> None:
        """No I/O: connections open on first use, on the loop that uses them.
        ``quiet``: log no outages (a second connection of the same replica)."""
        self.url = url
        self.quiet = quiet
        self.safe_url = redacted(url)
        self.start_wait = start_wait
        try:
            self._pool = aioredis.ConnectionPool.from_url(
                url, socket_connect_timeout=1.0, socket_timeout=MAX_BLOCK + 3.0,
                retry=Retry(NoBackoff(), 0), health_check_interval=10,
            )
        except ValueError as exc:
            raise StoreConfigError(f"REDIS_URL {self.safe_url} is not a Redis URL: {exc}") from None
        self._client = aioredis.Redis(connection_pool=self._pool)
        self._acquire = self._client.register_script(_ACQUIRE)
        self._renew = self._client.register_script(_RENEW)
        self._incr = self._client.register_script(_INCR)
        self._limits = RedisStorage(
            "async+" + url, implementation="redispy", key_prefix=PREFIX + "limits",
            connection_pool=self._pool,
        )
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._detail = ""

    @property
    def limits_storage(self) -> Storage:
        return self._limits

    # -- outage handling ---------------------------------------------------------------

    @asynccontextmanager
    async def guard(self, *, probe: bool = False) -> AsyncIterator[None]:
        """Translate Redis failures into ``StoreUnavailable`` (and track the outage)."""
        if not probe and self._down_since is not None and time.monotonic() < self._retry_at:
            raise StoreUnavailable(self._detail)
        try:
            yield
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            if isinstance(exc, ResponseError) and not isinstance(exc, AuthenticationError):
                raise  # a command we got wrong: a bug, not an outage
            self._failed(exc)
            raise StoreUnavailable(self._detail) from exc
        else:
            self._recovered()

    def _failed(self, exc: BaseException) -> None:
        self._detail = f"Redis at {self.safe_url} is unreachable ({type(exc).__name__}: {exc})".replace(
            self.url, self.safe_url)
        self._retry_at = time.monotonic() + RETRY_AFTER
        if self._down_since is None:
            self._down_since = time.monotonic()
            if not self.quiet:
                log.warning("%s: limits fail open and state stays local until it is back", self._detail)

    def _recovered(self) -> None:
        if self._down_since is not None:
            if not self.quiet:
                log.warning("Redis at %s is reachable again after %.1f s", self.safe_url,
                            time.monotonic() - self._down_since)
            self._down_since = None
            self._detail = ""

    def health(self) -> StoreHealth:
        if self._down_since is not None:
            return StoreHealth(self.backend, "unreachable", self._detail)
        return StoreHealth(self.backend, "ok", self.safe_url)

    async def probe(self) -> StoreHealth:
        try:
            async with self.guard(probe=True):
                await self._client.ping()
        except StoreUnavailable:
            pass
        return self.health()

    def check_at_start(self) -> None:
        asyncio.run(self._check_at_start())

    async def _check_at_start(self) -> None:
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=1.0, socket_timeout=3.0,
                                         retry=Retry(NoBackoff(), 0))
        deadline = time.monotonic() + self.start_wait
        hint = "Check REDIS_URL (redis://[:password@]host:port/db), or leave it empty for one replica."
        try:
            while True:
                try:
                    await client.ping()
                    return
                except AuthenticationError as exc:
                    raise StoreConfigError(f"Redis at {self.safe_url} refused the password: {exc}. {hint}") from None
                except (ConnectionError, TimeoutError, OSError) as exc:
                    if time.monotonic() >= deadline:
                        raise StoreConfigError(
                            f"Redis at {self.safe_url} did not answer within {self.start_wait:g} s "
                            f"({type(exc).__name__}: {str(exc).replace(self.url, self.safe_url)}). {hint}"
                        ) from None
                    await asyncio.sleep(0.2)
                except RedisError as exc:
                    raise StoreConfigError(
                        f"{self.safe_url} did not answer as Redis does ({type(exc).__name__}: {exc}). {hint}"
                    ) from None
        finally:
            await client.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._pool.disconnect()

    # -- key-value ------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        async with self.guard():
            return await self._client.get(PREFIX + key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        async with self.guard():
            await self._client.set(PREFIX + key, value, px=_ms(ttl))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        async with self.guard():
            return await self._client.mget([PREFIX + key for key in keys])

    async def delete(self, key: str) -> None:
        async with self.guard():
            await self._client.delete(PREFIX + key)

    async def incr(self, key: str, amount: float, ttl: float) -> float:
        async with self.guard():
            return float(await self._incr(keys=[PREFIX + key], args=[repr(float(amount)), _ms(ttl)]))

    # -- leases ----------------------------------------------------------------------------

    async def lease_acquire(self, bucket: str, lease: str, limit: int, ttl: float) -> tuple[bool, int]:
        async with self.guard():
            taken, held = await self._acquire(keys=[PREFIX + bucket], args=[lease, limit, repr(float(ttl))])
        return bool(taken), int(held)

    async def lease_renew(self, bucket: str, lease: str, ttl: float) -> bool:
        async with self.guard():
            return bool(await self._renew(keys=[PREFIX + bucket], args=[lease, repr(float(ttl))]))

    async def lease_release(self, bucket: str, lease: str) -> None:
        async with self.guard():
            await self._client.zrem(PREFIX + bucket, lease)

    # -- maps --------------------------------------------------------------------------------

    async def map_set(self, name: str, field: str, value: bytes) -> None:
        async with self.guard():
            await self._client.hset(PREFIX + name, field, value)

    async def map_delete(self, name: str, field: str) -> None:
        async with self.guard():
            await self._client.hdel(PREFIX + name, field)

    async def map_all(self, name: str) -> dict[str, bytes]:
        async with self.guard():
            raw = await self._client.hgetall(PREFIX + name)
        return {k.decode(): v for k, v in raw.items()}

    # -- event buffers ------------------------------------------------------------------------

    async def stream_append(self, stream: str, entries: Sequence[tuple[int, bytes]], ttl: float) -> None:
        key = PREFIX + stream
        async with self.guard():
            async with self._client.pipeline(transaction=False) as pipe:
                for seq, payload in entries:
                    pipe.xadd(key, {"d": payload}, id=f"0-{seq}")
                pipe.pexpire(key, _ms(ttl))
                await pipe.execute()

    async def stream_end(self, stream: str, ttl: float) -> None:
        key = PREFIX + stream
        async with self.guard():
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xadd(key, {"end": b"1"}, id=END_ID)
                pipe.pexpire(key, _ms(ttl))
                await pipe.execute()

    async def stream_read(self, stream: str, after: int, timeout: float) -> StreamRead:
        key = PREFIX + stream
        async with self.guard():
            raw = await self._client.xrange(key, min=f"(0-{after}", max="+")
            if not raw:
                if not await self._client.exists(key):
                    return StreamRead([], False, exists=False)
                if timeout > 0:
                    block = _ms(min(timeout, MAX_BLOCK))
                    found = await self._client.xread({key: f"0-{after}"}, block=block)
                    raw = found[0][1] if found else []
        entries: list[tuple[int, bytes]] = []
        ended = False
        for entry_id, fields in raw:
            major, _, minor = entry_id.decode().partition("-")
            if major != "0":
                ended = True
                continue
            entries.append((int(minor), fields[b"d"]))
        return StreamRead(entries, ended)
