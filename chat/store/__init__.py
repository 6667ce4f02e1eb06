"""Shared state behind one interface (see ``base``): in-process or Redis."""

from __future__ import annotations

from ..config import Settings
from .base import Store, StoreConfigError, StoreError, StoreHealth, StoreUnavailable, StreamRead
from .memory import MemoryStore

__all__ = [
    "MemoryStore", "Store", "StoreConfigError", "StoreError", "StoreHealth", "StoreUnavailable", "StreamRead",
    "build_store",
]


def build_store(settings: Settings, *, quiet: bool = False) -> Store:
    """``RedisStore`` when ``REDIS_URL`` is set, else ``MemoryStore``. No I/O.
    ``quiet``: a second connection of this replica, whose outages are not logged."""
    if settings.redis_url is None:
        return MemoryStore()
    from .redis import RedisStore

    return RedisStore(settings.redis_url.get_secret_value(), start_wait=settings.redis_start_wait, quiet=quiet)
