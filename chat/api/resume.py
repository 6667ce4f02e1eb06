"""Resumable streams: an answer that outlives its connection.

A streaming request with ``X-Resumable: true`` is answered by a ``StreamRun``
that consumes the answer's ``EventPump`` on its own task, numbers every event
(``chunks.Answer``: ``id: N``) and keeps them: in this process for readers
here, and — with a shared store — in the store's event buffer
(``stream:{id}:events``) for readers on other replicas, with the owner and the
model headers beside it (``stream:{id}:meta``). The HTTP response is just the
first reader. When the client goes away the answer goes on; it reconnects to
any replica with ``GET /v1/streams/{id}`` and ``Last-Event-ID`` and receives
every event after that id, then the rest live, each exactly once, in order.

The run's watchdog (every ``WATCH`` seconds) stops it when no reader has been
attached for ``CHAT_RESUME_GRACE`` seconds — readers on other replicas say
they are there by refreshing ``stream:{id}:reader`` — or when
``DELETE /v1/streams/{id}`` (on any replica: ``stream:{id}:cancel``) asks.
Stopping closes the provider stream; the buffer then ends with an error event
saying why, and ``[DONE]``. Buffers are kept ``CHAT_RESUME_GRACE`` seconds
after the answer ended. Only the identity that started a stream may read or
delete it.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..store import Store, StoreUnavailable
from .chunks import PING as PING_BYTES
from .chunks import Answer
from .errors import INTERNAL_STREAM_ERROR, ApiError, error_body
from .pump import EventPump
from .sse import SSE_HEADERS, encode_batch

if TYPE_CHECKING:
    from .edge import Admission
    from .endpoint import Api, Call

__all__ = ["FollowStream", "StreamRun", "Streams", "delete_stream", "resume_stream"]

log = logging.getLogger(__name__)

WATCH = 0.2  # seconds between the watchdog's looks at readers and cancel requests
PRESENCE = 1.0  # seconds between a remote reader's "still here"
RUNNING_TTL = 3600.0  # a buffer's life while its answer runs (refreshed by each append)
_MAX_ID = 10**15


def split_events(payload: bytes) -> list[tuple[int, bytes]]:
    """``(id, bytes)`` of each numbered event in ``payload`` (pings dropped)."""
    out: list[tuple[int, bytes]] = []
    for block in payload.split(b"\n\n"):
        while block.startswith(b":"):  # heartbeat comments before an event
            block = block.partition(b"\n")[2]
        if block.startswith(b"id: "):
            out.append((int(block[4:block.index(b"\n")]), block + b"\n\n"))
    return out


class FollowStream(StreamingResponse):
    """A reader of a stream's events (``counts_itself``: the run counts the request)."""

    def __init__(self, body: AsyncIterator[bytes], headers: Mapping[str, str], *, counts_itself: bool = False) -> None:
        self.counts_itself = counts_itself
        super().__init__(body, headers=headers, media_type="text/event-stream")


@dataclass
class StreamRun:
    id: str
    owner: str
    headers: dict[str, str]
    entries: list[tuple[int, bytes]] = field(default_factory=list)
    ended: bool = False
    readers: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    stop_reason: str | None = None

    @property
    def meta(self) -> dict[str, Any]:
        """What a reader needs to know of the stream (in the store for other replicas)."""
        return {"owner": self.owner, "headers": self.headers}

    def add(self, entries: list[tuple[int, bytes]], *, end: bool = False) -> None:
        self.entries.extend(entries)
        self.ended = self.ended or end
        self.changed.set()
        self.changed = asyncio.Event()

    def after(self, seq: int) -> list[tuple[int, bytes]]:
        return self.entries[bisect.bisect_right(self.entries, (seq, b"\xff" * 8)):] if self.entries else []

    def stop(self, reason: str) -> None:
        if self.task is not None and not self.task.done():
            self.stop_reason = reason
            self.task.cancel()


class Streams:
    """The resumable streams of this replica, and access to the others' (through the store)."""

    def __init__(self, store: Store, grace: float, heartbeat: float) -> None:
        self.store = store
        self.grace = grace
        self.heartbeat = heartbeat
        self.runs: dict[str, StreamRun] = {}

    # -- running ---------------------------------------------------------------------------

    def start(self, pump: EventPump, answer: Answer, opening: bytes, *, outcome: str | None,
              describe: Callable[[BaseException], dict[str, Any]], on_end: Callable[[str], Awaitable[None]],
              owner: str, headers: dict[str, str]) -> StreamRun:
        run = StreamRun(answer.id, owner, headers)
        self.runs[run.id] = run
        run.task = asyncio.get_running_loop().create_task(
            self._run(run, pump, answer, opening, outcome, describe, on_end))
        return run

    async def _run(self, run: StreamRun, pump: EventPump, answer: Answer, opening: bytes, outcome: str | None,
                   describe: Callable[[BaseException], dict[str, Any]],
                   on_end: Callable[[str], Awaitable[None]]) -> None:
        """``opening``: the bytes due at once; with ``outcome`` set, the answer's end too."""
        shared = self.store.shared
        watchdog = asyncio.get_running_loop().create_task(self._watch(run))
        try:
            if shared:
                await self._quietly(self.store.set(f"stream:{run.id}:meta", orjson.dumps(run.meta), RUNNING_TTL))
            await self._publish(run, opening, end=outcome is not None)
            while outcome is None:
                payload, outcome = encode_batch(answer, await pump.get(), describe)
                await self._publish(run, payload, end=outcome is not None)
                if run.stop_reason is not None and outcome is None:
                    # A cancellation that landed inside a store call may have been
                    # turned into a store error there: stop all the same.
                    raise asyncio.CancelledError
        except asyncio.CancelledError:
            reason = run.stop_reason or "the server is shutting down"
            outcome = "client_closed"
            body = error_body(f"The answer was stopped: {reason}.", "stream_stopped", code="stream_stopped")
            await self._publish(run, answer.error(body), end=True)
        except Exception:  # a bug here must still end the stream properly
            log.exception("running a resumable answer failed")
            outcome = "internal_error"
            await self._publish(run, answer.error(INTERNAL_STREAM_ERROR), end=True)
        finally:
            watchdog.cancel()
            pump.close()
            if not run.ended:
                run.add([], end=True)
            if shared:
                await self._quietly(self.store.stream_end(f"stream:{run.id}:events", self.grace))
                await self._quietly(self.store.set(f"stream:{run.id}:meta", orjson.dumps(run.meta), self.grace))
            asyncio.get_running_loop().call_later(self.grace, self.runs.pop, run.id, None)
            await on_end(outcome or "client_closed")

    async def _publish(self, run: StreamRun, payload: bytes, *, end: bool) -> None:
        entries = split_events(payload)
        run.add(entries, end=end)
        if self.store.shared and entries:
            await self._quietly(self.store.stream_append(f"stream:{run.id}:events", entries, RUNNING_TTL))

    @staticmethod
    async def _quietly(call: Awaitable[Any]) -> Any:
        try:
            return await call
        except StoreUnavailable:
            return None  # the answer goes on; resuming elsewhere needs the store back

    async def _watch(self, run: StreamRun) -> None:
        """Stop ``run`` on a DELETE seen anywhere, or after the grace period with no reader."""
        while True:
            await asyncio.sleep(WATCH)
            now = time.monotonic()
            if run.readers:
                run.last_seen = now
            if self.store.shared:
                try:
                    cancel, present = await self.store.get_many(
                        [f"stream:{run.id}:cancel", f"stream:{run.id}:reader"])
                except StoreUnavailable:
                    cancel = present = None
                if cancel and run.stop_reason is None:
                    log.info("stream %s: stopped by DELETE", run.id)
                    run.stop("DELETE /v1/streams/" + run.id)
                if present:
                    run.last_seen = now
            if run.stop_reason is None and now - run.last_seen > self.grace:
                log.info("stream %s: no client for %g s, stopping it", run.id, self.grace)
                run.stop(f"no client reconnected within {self.grace:g} s (CHAT_RESUME_GRACE)")
            elif run.stop_reason is not None:
                run.stop(run.stop_reason)  # again, until the run is over

    # -- reading ---------------------------------------------------------------------------

    async def follow_local(self, run: StreamRun, after: int) -> AsyncIterator[bytes]:
        run.readers += 1
        run.last_seen = time.monotonic()
        try:
            while True:
                fresh = run.after(after)
                if fresh:
                    after = fresh[-1][0]
                    yield b"".join(data for _, data in fresh)
                    continue
                if run.ended:
                    return
                try:
                    await asyncio.wait_for(run.changed.wait(), self.heartbeat)
                except TimeoutError:
                    yield PING_BYTES
        finally:
            run.readers -= 1
            run.last_seen = time.monotonic()

    async def follow_remote(self, stream_id: str, after: int) -> AsyncIterator[bytes]:
        key = f"stream:{stream_id}:events"
        quiet_since = time.monotonic()
        next_presence = 0.0
        while True:
            now = time.monotonic()
            if now >= next_presence:
                await self._quietly(self.store.set(f"stream:{stream_id}:reader", b"1", PRESENCE * 3))
                next_presence = now + PRESENCE
            try:
                read = await self.store.stream_read(key, after, min(PRESENCE, self.heartbeat))
            except StoreUnavailable:
                read = None
                await asyncio.sleep(PRESENCE)
            if read is not None and read.entries:
                after = read.entries[-1][0]
                quiet_since = time.monotonic()
                yield b"".join(data for _, data in read.entries)
            if read is not None and (read.ended or not read.exists):
                return
            if time.monotonic() - quiet_since >= self.heartbeat:
                quiet_since = time.monotonic()
                yield PING_BYTES

    async def find(self, stream_id: str) -> tuple[StreamRun | None, dict[str, Any] | None]:
        """This replica's run of ``stream_id``, else its meta from the store (owner, headers)."""
        run = self.runs.get(stream_id)
        if run is not None:
            return run, run.meta
        if not self.store.shared:
            return None, None
        try:
            raw = await self.store.get(f"stream:{stream_id}:meta")
        except StoreUnavailable:
            raise ApiError(503, "Resuming needs the shared store, which is unreachable right now. Try again "
                           "shortly.", type_="service_unavailable", code="store_unavailable",
                           outcome="all_failed", headers={"Retry-After": "2"}) from None
        return None, (orjson.loads(raw) if raw else None)

    async def cancel(self, stream_id: str) -> None:
        run = self.runs.get(stream_id)
        if run is not None:
            run.stop("DELETE /v1/streams/" + stream_id)
        if self.store.shared:
            await self._quietly(self.store.set(f"stream:{stream_id}:cancel", b"1", self.grace + 60))


# -- the routes -------------------------------------------------------------------------------


def last_event_id(request: Request) -> int:
    raw = request.headers.get("last-event-id")
    if raw is None or raw.strip() == "":
        return 0
    value = raw.strip()
    if not value.isascii() or not value.isdigit() or int(value) > _MAX_ID:
        shown = value[:40] + ("…" if len(value) > 40 else "")
        raise ApiError(400, f"Last-Event-ID must be the id of the last event you received, a whole number such as "
                       f"12 (or leave it out to receive the stream from its start); got {shown!r}.",
                       param="Last-Event-ID", code="invalid_last_event_id")
    return int(value)


async def _owned(api: Api, request: Request, admission: Admission) -> tuple[str, StreamRun | None, dict[str, Any]]:
    stream_id = request.path_params["stream_id"]
    run, meta = await api.streams.find(stream_id)
    if meta is None:
        raise ApiError(404, f"There is no resumable stream {stream_id!r} (it never existed, was not started with "
                       "X-Resumable: true, or ended more than CHAT_RESUME_GRACE seconds ago).",
                       code="stream_not_found")
    identity = admission.identity
    if identity is None or meta.get("owner") != identity.key:
        raise ApiError(403, f"Stream {stream_id!r} was started by another caller; only they can resume or stop it.",
                       code="stream_forbidden", outcome="refused")
    return stream_id, run, meta


async def resume_stream(api: Api, request: Request, admission: Admission, call: Call) -> Response:
    after = last_event_id(request)
    stream_id, run, meta = await _owned(api, request, admission)
    headers = {**SSE_HEADERS, **meta.get("headers", {}),
               "X-Stream-Id": stream_id, "X-Resumable": "true"}
    body = api.streams.follow_local(run, after) if run is not None else api.streams.follow_remote(stream_id, after)
    return FollowStream(body, headers)


async def delete_stream(api: Api, request: Request, admission: Admission, call: Call) -> Response:
    stream_id, _, _ = await _owned(api, request, admission)
    await api.streams.cancel(stream_id)
    return Response(orjson.dumps({"id": stream_id, "object": "stream.deleted", "deleted": True}),
                    media_type="application/json")
