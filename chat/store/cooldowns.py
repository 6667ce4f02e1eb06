"""Model cooldowns shared by replicas: a local mirror of one table in the store.

The router and every synchronous reader (the menu, ``/v1/models``,
``/health``) keep reading ``chat.cooldown.Cooldowns`` — now a mirror:

- write-through: this replica's benches and clears go to the store's map
  ``cooldowns`` (``{model: {"until": wall clock, "detail": …}}``) at once, on
  the event loop that made them;
- refresh: a thread with its own event loop and its own store connection reads
  the map every ``interval`` seconds and mirrors other replicas' benches (and
  their clears) into the local table, dropping entries that have expired.

With the store unreachable, benches stay local (the store logs the outage) and
the mirror catches up once it is back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import orjson

from ..cooldown import Cooldowns
from .base import Store, StoreUnavailable

__all__ = ["SharedCooldowns"]

log = logging.getLogger(__name__)

MAP = "cooldowns"


class SharedCooldowns:
    def __init__(self, cooldowns: Cooldowns, store: Store, open_store: Callable[[], Store],
                 *, interval: float = 0.5) -> None:
        """``store``: used on the server's loop for write-through; ``open_store``
        makes the refresh thread's own connection (Redis clients are per loop)."""
        self.cooldowns = cooldowns
        self.store = store
        self._open_store = open_store
        self.interval = interval
        self._mirrored: dict[str, float] = {}  # model → wall-clock end we mirrored
        self._pending: set[asyncio.Task[None]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        cooldowns.listener = self._changed

    # -- write-through -------------------------------------------------------------------

    def _changed(self, model_id: str, seconds: float | None, detail: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # benched outside any loop (a sync test): nothing to share with
        task = loop.create_task(self._write(model_id, seconds, detail))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, model_id: str, seconds: float | None, detail: str) -> None:
        try:
            if seconds is None:
                await self.store.map_delete(MAP, model_id)
            else:
                until = time.time() + seconds
                await self.store.map_set(MAP, model_id, orjson.dumps({"until": until, "detail": detail}))
        except StoreUnavailable:
            pass

    # -- refresh -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), name="cooldown-mirror",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()

    async def _run(self) -> None:
        store = self._open_store()
        try:
            while not self._stop.is_set():
                try:
                    await self.refresh(store)
                except StoreUnavailable:
                    pass
                except Exception:  # noqa: BLE001 - the mirror must keep running
                    log.exception("refreshing the shared cooldowns failed")
                await asyncio.sleep(self.interval)
        finally:
            await store.aclose()

    async def refresh(self, store: Store | None = None) -> None:
        """Mirror the shared table into the local one (one round trip)."""
        store = store or self.store
        table = await store.map_all(MAP)
        now = time.time()
        benched = self.cooldowns.snapshot()  # each model is changed below at most once, after it is read
        seen: set[str] = set()
        for model_id, raw in table.items():
            try:
                entry = orjson.loads(raw)
                until, detail = float(entry["until"]), str(entry.get("detail", ""))
            except (ValueError, KeyError, TypeError):
                continue
            if until <= now:
                await store.map_delete(MAP, model_id)
                continue
            seen.add(model_id)
            local = benched.get(model_id)
            if local is None or abs((now + local) - until) > 0.05:
                self.cooldowns.mirror(model_id, until - now, detail)
                self._mirrored[model_id] = until
        for model_id in [m for m in self._mirrored if m not in seen]:
            del self._mirrored[model_id]
            if model_id in benched:
                self.cooldowns.forget(model_id)  # cleared (or expired) on the replica that benched it
