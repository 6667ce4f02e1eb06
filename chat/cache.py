"""The response cache: a complete answer, replayed for the same request.

Opt-in (``CHAT_RESPONSE_CACHE_TTL`` seconds; 0 = off). The service asks it, so
the page and the API share it.

- **Key**: the canonical request — the model choice (``auto`` or the
  catalogue id it resolves to), the system prompt, the conversation (role and
  text of every message), the temperature and the max output tokens —
  serialized with sorted keys and hashed (SHA-256).
- **What is stored**: only complete answers (ended with the provider's normal
  stop), never one cut by its length limit or a loop guard, stopped, failed, or
  a continuation of a cut answer. The text, the model that wrote its first text, the
  tier Auto chose, the token counts and when it was stored.
- **A hit** is replayed as a fast stream: ``ModelSelected`` (the original
  model), ``Cached``, the text in pieces, ``Finish``. No model is called; no
  ``Usage`` is replayed (nothing was spent on this answer; ``Cached`` carries
  the original counts for display).

Storage is any object with the store seam's TTL key-value pair
(``async get(key) -> bytes | None``, ``async set(key, value, ttl)``);
``MemoryKeyValue`` is the in-process one. A store that fails is a miss (and a
warning in the log), never an error of the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from .events import Cached, Event, Finish, ModelSelected, TextDelta, Usage
from .messages import Message

__all__ = ["KeyValue", "MemoryKeyValue", "Recording", "ResponseCache", "StoredAnswer"]

log = logging.getLogger(__name__)

VERSION = 2  # bump when the stored format changes: old entries are then misses
PIECE = 48  # characters per replayed text delta
COMPLETE = frozenset({"stop", "end_turn", "stop_sequence"})


class KeyValue(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...


class MemoryKeyValue:
    """In-process TTL key-value pairs, at most ``max_entries`` (the oldest
    written go first)."""

    def __init__(self, max_entries: int = 2048, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            del self._items[key]
            return None
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._items.pop(key, None)
        self._items[key] = (self._clock() + ttl, value)
        while len(self._items) > self._max:
            self._items.popitem(last=False)


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    text: str
    model_id: str
    label: str
    tier: str | None
    input_tokens: int | None
    output_tokens: int | None
    stored_at: float  # time.time()

    def encode(self) -> bytes:
        return orjson.dumps({
            "v": VERSION, "text": self.text, "model": self.model_id, "label": self.label, "tier": self.tier,
            "usage": [self.input_tokens, self.output_tokens],
            "stored_at": self.stored_at,
        })

    @classmethod
    def decode(cls, raw: bytes) -> StoredAnswer | None:
        """None for anything that is not a stored answer of this version."""
        try:
            data = orjson.loads(raw)
            if data.get("v") != VERSION:
                return None
            tokens_in, tokens_out = data["usage"]
            return cls(str(data["text"]), str(data["model"]), str(data["label"]), data.get("tier"),
                       tokens_in, tokens_out, float(data["stored_at"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None

    async def replay(self, *, now: float | None = None) -> AsyncIterator[Event]:
        """The answer as a fast stream (a piece of text per step, no waiting)."""
        age = max(0.0, (time.time() if now is None else now) - self.stored_at)
        yield ModelSelected(self.model_id, self.label, self.tier,
                            f"a cached answer: the same request was answered {_ago(age)}")
        yield Cached(age, self.input_tokens, self.output_tokens)
        text = self.text
        for start in range(0, len(text), PIECE):
            yield TextDelta(text[start:start + PIECE])
            await asyncio.sleep(0)  # let the consumer take each piece: a stream, not one block
        yield Finish("stop")


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


@dataclass
class Recording:
    """What one answer streamed, to be stored if it ends complete."""

    parts: list[str] = field(default_factory=list)
    model_id: str = ""
    tier: str | None = None
    first: str = ""  # the model that wrote the first text
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def add(self, event: Event) -> None:
        if type(event) is TextDelta:
            self.parts.append(event.text)
            if not self.first:
                self.first = self.model_id
            return
        match event:
            case ModelSelected(model_id=model_id, label=label, tier=tier):
                if not self.model_id:
                    self.tier = tier
                self.model_id = model_id
                self.labels[model_id] = label
                self.finish = None  # a new call: only its own end counts
            case Usage(input_tokens=tokens_in, output_tokens=tokens_out):
                if tokens_in is not None:
                    self.input_tokens = (self.input_tokens or 0) + tokens_in
                if tokens_out is not None:
                    self.output_tokens = (self.output_tokens or 0) + tokens_out
            case Finish(reason=reason):
                self.finish = reason

    def complete(self) -> StoredAnswer | None:
        """The answer to store, or None when it is not a complete one."""
        text = "".join(self.parts)
        if self.finish not in COMPLETE or not text.strip():
            return None
        first = self.first or self.model_id
        return StoredAnswer(text, first, self.labels.get(first, first), self.tier,
                            self.input_tokens, self.output_tokens, time.time())


class ResponseCache:
    def __init__(self, store: KeyValue, ttl: float) -> None:
        self.store = store
        self.ttl = ttl

    @staticmethod
    def key(*, model: str, system_prompt: str, messages: tuple[Message, ...] | list[Message],
            temperature: float | None, max_tokens: int) -> str:
        """The canonical request's key (see the module docstring)."""
        canonical = orjson.dumps({
            "model": model, "system": system_prompt,
            "messages": [[m.role, m.content] for m in messages],
            "temperature": temperature, "max_tokens": max_tokens,
        }, option=orjson.OPT_SORT_KEYS)
        return f"answer:v{VERSION}:" + hashlib.sha256(canonical).hexdigest()

    async def get(self, key: str) -> StoredAnswer | None:
        try:
            raw = await self.store.get(key)
        except Exception as exc:  # noqa: BLE001 - a cache that fails is a miss
            log.warning("response cache unavailable (a miss): %s", type(exc).__name__)
            return None
        return StoredAnswer.decode(raw) if raw is not None else None

    async def put(self, key: str, recording: Recording) -> bool:
        """Store the recorded answer if it is complete; whether it was stored."""
        answer = recording.complete()
        if answer is None:
            return False
        try:
            await self.store.set(key, answer.encode(), self.ttl)
        except Exception as exc:  # noqa: BLE001 - an answer is never lost to a cache
            log.warning("response cache unavailable (not stored): %s", type(exc).__name__)
            return False
        return True
