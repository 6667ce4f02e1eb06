"""Which models are benched, until when, and why.

A model that failed with an error whose ``cooldown`` policy is set is benched
for the error's ``retry_after`` or the default number of seconds. A bench ends
by itself: entries are compared with the injected monotonic ``clock`` and
forgotten once past. Wall-clock ``until`` is derived only for display.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ProviderError

__all__ = ["Bench", "Cooldowns"]


@dataclass(frozen=True, slots=True)
class Bench:
    until: float  # on the monotonic clock
    error: ProviderError


class Cooldowns:
    def __init__(self, default_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.default_seconds = default_seconds
        self.clock = clock
        self._benched: dict[str, Bench] = {}

    def bench(self, model_id: str, error: ProviderError) -> Bench:
        """Bench ``model_id`` for ``error.retry_after`` or the default seconds."""
        seconds = error.retry_after if error.retry_after is not None else self.default_seconds
        entry = Bench(self.clock() + max(0.0, seconds), error)
        self._benched[model_id] = entry
        return entry

    def get(self, model_id: str) -> Bench | None:
        """The active bench of ``model_id``, or None (an expired one is forgotten)."""
        entry = self._benched.get(model_id)
        if entry is not None and entry.until <= self.clock():
            del self._benched[model_id]
            return None
        return entry

    def remaining(self, entry: Bench) -> float:
        return max(0.0, entry.until - self.clock())

    def clear(self, model_id: str) -> None:
        self._benched.pop(model_id, None)
