"""Live provider checks behind ``GET /health``, cached and shared.

Per provider a live check (each adapter's ``check()``: OpenAI-compatible lists
models, Anthropic makes a cheap authenticated call, Ollama asks its version,
the embedded model says whether it is loaded) with its latency and detail.
Providers without a key are reported as "not configured" with no call. Checks
run concurrently, bounded by ``CHAT_CONNECT_TIMEOUT``, and are reused for
``CHAT_HEALTH_TTL`` seconds; concurrent requests share one round of checks,
so a load balancer polling every second does not hammer the providers.

``status``: ``down`` when no catalogue model can answer (ready, and its
provider's check passed) — HTTP 503; ``degraded`` when some can but a provider
serving catalogue models failed its check or a model is cooling down; else
``ok``. With a shared store (Redis) its state is reported too (``store``), and
an unreachable store makes the status ``degraded``: answers go on, but limits
fail open and state is not shared until it is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..catalogue import split_model_id
from ..errors import ProviderError
from ..providers.base import Provider, State

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["Check", "HealthMonitor", "utc"]


def utc(timestamp: float) -> str:
    """A wall-clock time as ISO 8601 UTC (``2026-11-29T10:00:00Z``)."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_NOT_CONFIGURED = (State.MISSING_KEY, State.DISABLED)


@dataclass(frozen=True, slots=True)
class Check:
    status: str  # "ok" | "error" | "not configured"
    detail: str
    latency_ms: float | None
    checked_at: float  # wall clock

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "latency_ms": self.latency_ms,
                "checked_at": utc(self.checked_at)}


class HealthMonitor:
    def __init__(self, runtime: Runtime, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.runtime = runtime
        self._clock = clock
        self._cached: tuple[float, dict[str, Check]] | None = None
        self._running: asyncio.Task[dict[str, Check]] | None = None

    async def checks(self) -> dict[str, Check]:
        """The providers' live checks, from the cache while it is fresh."""
        ttl = self.runtime.settings.health_ttl
        if self._cached is not None and self._clock() - self._cached[0] < ttl:
            return self._cached[1]
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._check_all())
        # Shielded: one caller going away must not cancel the round the others wait for.
        return await asyncio.shield(self._running)

    async def _check_all(self) -> dict[str, Check]:
        names = list(self.runtime.providers)
        results = await asyncio.gather(*(self._check(name) for name in names))
        checks = dict(zip(names, results))
        self._cached = (self._clock(), checks)
        return checks

    async def _check(self, name: str) -> Check:
        provider: Provider = self.runtime.providers[name]
        models = [spec.name for spec in self.runtime.router.catalogue.models if spec.provider == name]
        availability = provider.availability(models[0] if models else "")
        now = time.time()
        if availability.state in _NOT_CONFIGURED:
            return Check("not configured", availability.detail or availability.state.value, None, now)
        check = getattr(provider, "check", None)
        if check is None:  # a provider without a live check: trust its own state
            status = "ok" if availability.ready else "error"
            return Check(status, availability.detail or availability.state.value, None, now)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.runtime.settings.connect_timeout):
                detail = await check()
            status = "ok"
        except ProviderError as exc:
            status, detail = "error", exc.describe()
        except TimeoutError:
            status, detail = "error", f"no answer within {self.runtime.settings.connect_timeout:g} s"
        except Exception as exc:  # noqa: BLE001 - a health probe reports, it does not crash
            status, detail = "error", f"unexpected {type(exc).__name__}"
        latency = round((time.perf_counter() - started) * 1000, 1)
        return Check(status, detail, latency, now)

    async def report(self) -> tuple[int, dict[str, Any]]:
        """HTTP status and body of ``/health``."""
        checks = await self.checks()
        router = self.runtime.router
        in_use: dict[str, int] = {}
        answerable = 0
        cooling: list[dict[str, Any]] = []
        for option in router.options():
            provider = split_model_id(option.id)[0]
            in_use[provider] = in_use.get(provider, 0) + 1
            check = checks.get(provider)
            if option.availability.ready and (check is None or check.status == "ok"):
                answerable += 1
            if option.availability.state is State.COOLING_DOWN:
                until = option.availability.until
                cooling.append({"model": option.id, "until": utc(until) if until else None,
                                "reason": option.availability.detail})
        failing = [name for name, check in checks.items() if check.status == "error" and in_use.get(name)]
        store = await self.runtime.store.probe()
        if not answerable:
            status = "down"
        elif failing or cooling or not store.ok:
            status = "degraded"
        else:
            status = "ok"
        body = {
            "status": status,
            "models": {"total": sum(in_use.values()), "can_answer": answerable},
            "providers": {name: {**check.as_json(), "models": in_use.get(name, 0)}
                          for name, check in checks.items()},
            "cooling_down": cooling,
            "store": store.as_json(),
        }
        return (503 if status == "down" else 200), body
