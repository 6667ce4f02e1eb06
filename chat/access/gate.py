"""Limits per identity, the same for the page and the API: requests per
window (``CHAT_RATE_LIMIT``), answers streaming at once
(``CHAT_MAX_CONCURRENT_STREAMS``) and spend per UTC day
(``CHAT_DAILY_BUDGET_USD`` from the catalogue's prices; models without prices
count tokens against ``CHAT_DAILY_TOKEN_LIMIT``).

``Gate.admit(identity)`` checks them in that order and returns a ``Pass`` (the
``X-RateLimit-*`` headers, and a concurrency lease renewed in the background
until ``release()``), or raises ``Refused`` saying which limit, when to try
again and the headers to send. ``Gate.metered(identity, events)`` passes an
answer's events through and books its cost when it ends, however it ends.

Everything lives in the store (``chat.store``): with Redis, every replica
counts the same requests, leases and spend. Rate limits are the ``limits``
library's moving window over the store's ``limits`` storage. Leases expire
unless renewed, so a replica that dies leaves no stuck count. If the store is
unreachable, the gate fails open: it admits (the store logs the outage once).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter

from ..catalogue import Catalogue
from ..config import Settings
from ..events import Event, ModelSelected, TextDelta, Usage
from ..store import Store, StoreUnavailable
from .identity import Identity

__all__ = ["Gate", "Pass", "Refused", "parse_rate_limit"]

log = logging.getLogger(__name__)

DAY = 86_400.0
CHARS_PER_TOKEN = 4  # an answer cut before the provider reported usage is estimated


def parse_rate_limit(spec: str) -> list[RateLimitItem]:
    """``CHAT_RATE_LIMIT`` as ``limits`` items ("" → none); ``ValueError`` saying what is allowed."""
    if not spec.strip():
        return []
    try:
        return parse_many(spec)
    except ValueError:
        raise ValueError(f"CHAT_RATE_LIMIT {spec!r} is not a rate limit: use e.g. '30/minute' or "
                         "'30/minute;500/day' (units: second, minute, hour, day)") from None


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S UTC")


def _span(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{math.ceil(seconds / 60)} min"
    return f"{seconds // 3600} h {math.ceil(seconds % 3600 / 60)} min"


class Refused(Exception):
    """A limit refuses this request. ``limit``: "rate" | "streams" | "budget"."""

    def __init__(self, limit: str, message: str, retry_after: float, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message
        self.retry_after = max(retry_after, 0.0)
        self.headers = dict(headers or {})
        self.headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        self.headers["retry-after-ms"] = str(max(1, math.ceil(self.retry_after * 1000)))


@dataclass
class Pass:
    """An admitted request: headers to send, and its lease (if any) until ``release()``."""

    identity: Identity
    headers: dict[str, str] = field(default_factory=dict)
    _release: Callable[[], object] | None = None

    async def release(self) -> None:
        """The answer is over (idempotent)."""
        hook, self._release = self._release, None
        if hook is not None:
            result = hook()
            if asyncio.iscoroutine(result):
                await result


class Gate:
    def __init__(self, settings: Settings, store: Store, catalogue: Callable[[], Catalogue],
                 *, wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self._catalogue = catalogue
        self._wall = wall
        self.rates = parse_rate_limit(settings.rate_limit)
        self._limiter = MovingWindowRateLimiter(store.limits_storage)
        self._renewals: set[asyncio.Task[None]] = set()

    @property
    def meters_spend(self) -> bool:
        """Whether answers are booked: a daily budget or token limit is set."""
        return self.settings.daily_budget_usd is not None or self.settings.daily_token_limit is not None

    # -- admission -----------------------------------------------------------------------

    async def admit(self, identity: Identity, *, lease: bool = True) -> Pass:
        """Count one request of ``identity`` and take a stream lease, or raise ``Refused``."""
        headers = await self._hit_rate(identity)
        await self._check_spend(identity, headers)
        release = await self._take_lease(identity, headers) if lease else None
        return Pass(identity, headers, release)

    async def peek(self, identity: Identity) -> dict[str, str]:
        """The ``X-RateLimit-*`` headers of ``identity`` now, without counting a request."""
        if not self.rates:
            return {}
        try:
            async with self.store.guard():
                return await self._tightest(identity)
        except StoreUnavailable:
            return {}

    async def _tightest(self, identity: Identity) -> dict[str, str]:
        """The headers of the window with the fewest requests left (inside ``store.guard()``)."""
        stats = [(item, await self._limiter.get_window_stats(item, identity.key)) for item in self.rates]
        item, stat = min(stats, key=lambda pair: pair[1].remaining)
        return self._rate_headers(item, stat.remaining, stat.reset_time)

    @staticmethod
    def _rate_headers(item: RateLimitItem, remaining: int, reset: float) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(item.amount), "X-RateLimit-Remaining": str(max(0, remaining)),
                "X-RateLimit-Reset": str(math.ceil(reset))}

    async def _hit_rate(self, identity: Identity) -> dict[str, str]:
        if not self.rates:
            return {}
        try:
            async with self.store.guard():
                for item in self.rates:
                    if not await self._limiter.hit(item, identity.key):
                        stat = await self._limiter.get_window_stats(item, identity.key)
                        headers = self._rate_headers(item, 0, stat.reset_time)
                        wait = max(stat.reset_time - self._wall(), 0.0)
                        raise Refused("rate", (
                            f"Rate limit reached for {identity}: at most {item.amount} requests per "
                            f"{_per(item)} (CHAT_RATE_LIMIT). Try again in {_span(wait)} "
                            f"(at {_utc(self._wall() + wait)})."), wait, headers)
                return await self._tightest(identity)
        except StoreUnavailable:
            return {}

    async def _take_lease(self, identity: Identity, headers: dict[str, str]) -> Callable[[], object] | None:
        cap = self.settings.max_concurrent_streams
        if not cap:
            return None
        ttl = self.settings.stream_lease_ttl
        bucket, lease = f"streams:{identity.key}", secrets.token_hex(8)
        try:
            taken, held = await self.store.lease_acquire(bucket, lease, cap, ttl)
        except StoreUnavailable:
            return None
        if not taken:
            raise Refused("streams", (
                f"{identity} already has {held} answers streaming; at most {cap} may stream at once "
                "(CHAT_MAX_CONCURRENT_STREAMS). Try again when one of them ends."), 1.0, headers)

        async def renew() -> None:
            while True:
                await asyncio.sleep(ttl / 3)
                try:
                    await self.store.lease_renew(bucket, lease, ttl)
                except StoreUnavailable:
                    pass

        task = asyncio.get_running_loop().create_task(renew())
        self._renewals.add(task)
        task.add_done_callback(self._renewals.discard)

        async def release() -> None:
            task.cancel()
            try:
                await self.store.lease_release(bucket, lease)
            except StoreUnavailable:
                pass  # it expires by itself

        return release

    # -- spend ------------------------------------------------------------------------------

    def _day(self) -> tuple[str, float]:
        """Today's UTC date and the seconds until it ends."""
        now = datetime.fromtimestamp(self._wall(), UTC)
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return now.strftime("%Y-%m-%d"), (midnight - now).total_seconds()

    async def spent(self, identity: Identity) -> tuple[float, float]:
        """(USD, unpriced tokens) ``identity`` spent today."""
        day, _ = self._day()
        usd, tokens = await self.store.get_many([f"spend:usd:{identity.key}:{day}",
                                                 f"spend:tokens:{identity.key}:{day}"])
        return float(usd or 0), float(tokens or 0)

    async def _check_spend(self, identity: Identity, headers: dict[str, str]) -> None:
        budget, token_limit = self.settings.daily_budget_usd, self.settings.daily_token_limit
        if budget is None and token_limit is None:
            return
        try:
            usd, tokens = await self.spent(identity)
        except StoreUnavailable:
            return
        _, left = self._day()
        resets = f"It resets at 00:00 UTC, in {_span(left)}."
        if budget is not None and usd >= budget:
            raise Refused("budget", f"{identity} has spent today's budget: ${usd:.4f} of ${budget:.2f} "
                          f"(CHAT_DAILY_BUDGET_USD). {resets}", left, headers)
        if token_limit is not None and tokens >= token_limit:
            raise Refused("budget", f"{identity} has used today's tokens on models without prices: "
                          f"{int(tokens):,} of {token_limit:,} (CHAT_DAILY_TOKEN_LIMIT). {resets}", left, headers)

    async def book(self, identity: Identity, usage: dict[str, list[int]]) -> None:
        """Add an answer's ``{model id: [input tokens, output tokens]}`` to today's spend."""
        catalogue = self._catalogue()
        usd = tokens = 0.0
        for model_id, (tokens_in, tokens_out) in usage.items():
            spec = catalogue.get(model_id)
            price_in = spec.input_cost_per_mtok if spec else None
            price_out = spec.output_cost_per_mtok if spec else None
            if price_in is None and price_out is None:
                tokens += tokens_in + tokens_out
            else:
                usd += (tokens_in * (price_in or 0) + tokens_out * (price_out or 0)) / 1_000_000
        day, _ = self._day()
        try:
            if usd:
                await self.store.incr(f"spend:usd:{identity.key}:{day}", usd, 2 * DAY)
            if tokens:
                await self.store.incr(f"spend:tokens:{identity.key}:{day}", tokens, 2 * DAY)
        except StoreUnavailable:
            log.info("spend of %s not recorded: the store is unreachable", identity)

    def metered(self, identity: Identity, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """``events`` unchanged; their cost is booked when they end (a model
        that reported no usage — the answer was cut — is estimated from its text).
        With no spend limit, nothing is counted: ``events`` itself is returned."""
        return self._metered(identity, events) if self.meters_spend else events

    async def _metered(self, identity: Identity, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        usage: dict[str, list[int]] = {}
        model = ""
        try:
            async with aclosing(events):  # type: ignore[type-var]
                async for event in events:
                    if type(event) is TextDelta:
                        usage.setdefault(model, [0, 0, 0, 0])[2] += len(event.text)
                    elif isinstance(event, ModelSelected):
                        model = event.model_id
                    elif isinstance(event, Usage):
                        counts = usage.setdefault(model, [0, 0, 0, 0])
                        counts[0] += event.input_tokens or 0
                        counts[1] += event.output_tokens or 0
                        counts[3] = 1
                    yield event
        finally:
            booked = {m: [c[0], c[1] if c[3] else math.ceil(c[2] / CHARS_PER_TOKEN)]
                      for m, c in usage.items() if m}
            if booked:
                task = asyncio.get_running_loop().create_task(self.book(identity, booked))
                self._renewals.add(task)  # held until done
                task.add_done_callback(self._renewals.discard)


def _per(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"
