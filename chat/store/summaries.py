"""The summary cache shared by replicas: a summary written by one is found by
the others (no second summarizer call).

``chat.context.ContextManager`` keeps its in-process LRU; with a shared store
it also asks the store for the cuts it does not hold (one ``get_many`` per
turn) and writes every new summary through. Keys are the context manager's
own (the hash of exactly the messages a summary covers); values are JSON.
Failures of the store are misses.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from .base import Store, StoreUnavailable

__all__ = ["SharedSummaries"]

TTL = 7 * 86_400.0  # a week: long conversations come back


class SharedSummaries:
    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def _key(key: bytes) -> str:
        return "summary:" + key.hex()

    async def load(self, keys: Mapping[int, bytes]) -> dict[int, tuple[str, int, int]]:
        """The shared summaries among ``keys`` (cut → key): cut → (text, covers, tokens)."""
        cuts = list(keys)
        try:
            values = await self.store.get_many([self._key(keys[k]) for k in cuts])
        except StoreUnavailable:
            return {}
        found: dict[int, tuple[str, int, int]] = {}
        for k, raw in zip(cuts, values):
            if raw:
                try:
                    doc = orjson.loads(raw)
                    found[k] = (str(doc["text"]), int(doc["covers"]), int(doc["tokens"]))
                except (ValueError, KeyError, TypeError):
                    continue
        return found

    async def save(self, key: bytes, text: str, covers: int, tokens: int) -> None:
        try:
            await self.store.set(self._key(key), orjson.dumps({"text": text, "covers": covers, "tokens": tokens}), TTL)
        except StoreUnavailable:
            pass
