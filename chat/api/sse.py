"""The streamed part of an answer: a ``StreamingResponse`` fed by an ``EventPump``.

Chosen over sse-starlette's ``EventSourceResponse`` after measuring both on
this path (``bench/api_path.py``'s in-process layer figure): the plain
response added ~3 µs per event, ``EventSourceResponse`` ~7.7 µs (a cancel
scope per send, its own ping task); the heartbeat and the disconnect handling
it offers are done here already (``EventPump``).

Each write is everything that arrived since the last one (``EventPump.get``),
so a slow client gets fewer, larger writes and nothing waits to be batched.
Ends with the finish/usage chunks and ``[DONE]``, or an error event and
``[DONE]``. A disconnect ends the body: the pump watches for it (``GONE``),
so the response sends its body itself, without the task group and second
listener Starlette's ``StreamingResponse`` would start for every answer.
However the response ends — even if the client left before the body
started — the pump is closed (closing the provider stream) and ``on_end``
runs once with the outcome: "ok", "failed_midstream" (an error event was
sent), "client_closed" or "internal_error".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .chunks import PING as PING_BYTES
from .chunks import Answer
from .errors import INTERNAL_STREAM_ERROR
from .pump import END, GONE, PING, EventPump, Failed

__all__ = ["SSE_HEADERS", "AnswerStream", "encode_batch"]

# An event stream nothing between here and the client may cache or buffer.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

log = logging.getLogger(__name__)


def encode_batch(answer: Answer, batch: list[Any],
                 describe: Callable[[BaseException], dict[str, Any]]) -> tuple[bytes, str | None]:
    """The bytes for one batch of the pump, and the outcome if the answer ended
    in it ("ok" or "failed_midstream")."""
    out: list[bytes] = []
    events: list[Any] = []
    for item in batch:
        if item is PING:
            out += (answer.encode(events), PING_BYTES)
            events = []
        elif item is END:
            return b"".join(out) + answer.encode(events) + answer.end(), "ok"
        elif isinstance(item, Failed):
            return b"".join(out) + answer.encode(events) + answer.error(describe(item.error)), "failed_midstream"
        elif item is not GONE:
            events.append(item)
    if events:
        out.append(answer.encode(events))
    return b"".join(out), None


class AnswerStream(StreamingResponse):
    counts_itself = True  # the endpoint leaves counting and releasing to ``on_end``

    def __init__(
        self,
        pump: EventPump,
        answer: Answer,
        opening: bytes,
        *,
        outcome: str | None = None,
        describe: Callable[[BaseException], dict[str, Any]],
        on_end: Callable[[str], Awaitable[None]],
        headers: Mapping[str, str],
    ) -> None:
        """``opening``: the bytes due at once (a ping, the first chunks; with
        ``outcome`` set, the answer's end too: it ended before the headers went
        out). ``describe`` gives the error body for an exception."""
        self._pump = pump
        self._answer = answer
        self._describe = describe
        self._on_end = on_end
        self._outcome: str | None = None  # set once the answer's end was sent
        self._body_now = self._body(opening, outcome)
        super().__init__(self._body_now, headers=headers, media_type="text/event-stream")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self._body_now
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # servers on ASGI 2.4 raise on a send to a client that left
            pass
        finally:
            await body.aclose()
            self._pump.close()
            await self._on_end(self._outcome or "client_closed")

    async def _body(self, opening: bytes, outcome: str | None) -> AsyncIterator[bytes]:
        answer, pump = self._answer, self._pump
        try:
            if outcome is not None:
                self._outcome = outcome
                yield opening
                return
            yield opening
            pump.sent()
            while self._outcome is None:
                batch = await pump.get()
                if any(item is GONE for item in batch):
                    return  # the client left: "client_closed"
                payload = self._encode(batch)
                if payload:
                    yield payload
                    pump.sent()
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception:  # a bug here must still end the stream properly
            log.exception("streaming an answer failed")
            self._outcome = "internal_error"
            yield answer.error(INTERNAL_STREAM_ERROR)

    def _encode(self, batch: list[Any]) -> bytes:
        payload, outcome = encode_batch(self._answer, batch, self._describe)
        if outcome is not None:
            self._outcome = outcome
        return payload
