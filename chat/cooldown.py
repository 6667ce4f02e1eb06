"""Which models are benched, until when, and why.

A model that failed with an error whose ``cooldown`` policy is set is benched
for the error's ``retry_after`` or the default number of seconds. A provider's
Retry-After is clamped to ``[MIN_SECONDS, max_seconds]`` (``CHAT_MAX_COOLDOWN``):
``inf``, NaN, a date years ahead or a negative value can neither bench a model
for ever nor not at all. A bench ends by itself: entries are compared with the
injected monotonic ``clock`` and forgotten once past. Wall-clock ``until`` is
derived only for display.

The table is shared by every request (Gradio worker threads, several event
loops), so each method holds a lock. ``bench`` / ``get`` / ``remaining`` /
``clear`` are the whole interface the router uses. With several replicas the
table is a local mirror of a shared one (``chat.store.cooldowns``): a
``listener`` hears this replica's benches and clears (write-through), and
``mirror`` / ``forget`` apply other replicas' without telling the listener.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ProviderError

__all__ = ["MIN_SECONDS", "Bench", "Benched", "Cooldowns", "clamp_retry_after"]

MIN_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Bench:
    until: float  # on the monotonic clock
    error: ProviderError


class Benched(ProviderError):
    """A bench learned from another replica: only its description travels."""

    reason = "cooling down"

    def describe(self) -> str:
        return self.message


Listener = Callable[[str, "float | None", str], None]  # (model id, seconds benched or None: cleared, why)


def clamp_retry_after(seconds: float, max_seconds: float) -> float:
    """A provider's Retry-After as a sane bench: within ``[MIN_SECONDS, max_seconds]``.

    NaN (no meaning) counts as the longest bench, like ``inf``: the provider
    asked us to wait, we just cannot tell how long.
    """
    if math.isnan(seconds):
        return max_seconds
    return min(max(seconds, MIN_SECONDS), max(max_seconds, MIN_SECONDS))


class Cooldowns:
    def __init__(
        self,
        default_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_seconds: float = 600.0,
    ) -> None:
        self.default_seconds = default_seconds
        self.max_seconds = max_seconds
        self.clock = clock
        self._benched: dict[str, Bench] = {}
        self._lock = threading.Lock()
        self.listener: Listener | None = None

    def seconds_for(self, error: ProviderError) -> float:
        """How long ``error`` benches its model: its clamped Retry-After, else the default."""
        if error.retry_after is None:
            return max(0.0, min(self.default_seconds, self.max_seconds))
        return clamp_retry_after(float(error.retry_after), self.max_seconds)

    def bench(self, model_id: str, error: ProviderError) -> Bench:
        """Bench ``model_id`` for ``seconds_for(error)``."""
        seconds = self.seconds_for(error)
        with self._lock:
            entry = Bench(self.clock() + seconds, error)
            self._benched[model_id] = entry
        if self.listener is not None:
            self.listener(model_id, seconds, error.describe())
        return entry

    def get(self, model_id: str) -> Bench | None:
        """The active bench of ``model_id``, or None (an expired one is forgotten)."""
        with self._lock:
            entry = self._benched.get(model_id)
            if entry is not None and entry.until <= self.clock():
                del self._benched[model_id]
                return None
            return entry

    def remaining(self, entry: Bench) -> float:
        return max(0.0, entry.until - self.clock())

    def clear(self, model_id: str) -> None:
        with self._lock:
            cleared = self._benched.pop(model_id, None)
        if cleared is not None and self.listener is not None:
            self.listener(model_id, None, "")

    # -- the mirror of a shared table -----------------------------------------------

    def mirror(self, model_id: str, seconds: float, description: str) -> None:
        """Bench ``model_id`` for ``seconds`` as another replica did (the listener is not told)."""
        with self._lock:
            self._benched[model_id] = Bench(self.clock() + seconds, Benched(description, model=model_id))

    def forget(self, model_id: str) -> None:
        """Drop a bench another replica cleared (the listener is not told)."""
        with self._lock:
            self._benched.pop(model_id, None)

    def snapshot(self) -> dict[str, float]:
        """Seconds left of every active bench, by model."""
        now = self.clock()
        with self._lock:
            return {model: entry.until - now for model, entry in self._benched.items() if entry.until > now}
