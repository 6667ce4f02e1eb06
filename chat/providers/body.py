"""Reading a streamed response body: one text event per read.

The adapters hand ``read_text`` the body's bytes as their HTTP client yields
them, a ``wire`` decoder for the format and how to pace the reads; it yields
the answer's text. Two clients, two ways to pace:

- openai and anthropic run on aiohttp (``aio``): each pull of the body
  returns everything buffered, so ``read_text`` paces the pulls and pauses
  the socket in between (``_paced_pulls``);
- ollama's httpx yields one piece per HTTP chunk, so its socket reads are
  paced instead (``_PacedReads``, on the connection's network stream).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import aclosing, contextmanager, suppress
from typing import Any

from ..errors import ContentFiltered
from ..events import Event, Finish, TextDelta
from ..streaming import LoadShare, coalesce
from . import aio
from .wire import Decoder

__all__ = ["MAX_READ_GAP", "READ_GAP", "Opening", "ReadPacer", "ending", "read_text"]

log = logging.getLogger(__name__)

# Once text flows, a socket read starts at least this long after the previous
# one returned (see _PacedReads). The first text is never held back; later text
# is at most this much later, far below what the page shows (it updates every
# CHAT_STREAM_INTERVAL_MS at best).
READ_GAP = 0.01
# Under load the gap grows (see ReadPacer), up to this.
MAX_READ_GAP = 0.05
# A read this large suggests more is waiting (one pull of aiohttp's returns
# up to aio.PULL_BYTES): the next one is not held back, so a fast upstream is
# read as fast as it sends.
_FULL_PULL = 8 * 1024
# After the end marker, how long the rest of a body may take (the terminating
# chunk, usually already here) so an HTTP/1.1 connection can be reused.
_DRAIN_SECONDS = 0.1


class ReadPacer(LoadShare):
    """How far apart the socket reads of one streaming body are, given the load.

    Shared by every adapter of the process (``build_providers``): alone, a
    stream reads every ``READ_GAP``; when many stream at once they share
    ``reads_per_s`` socket reads a second (each read and the events it starts
    cost CPU up the whole stack), so under load each read brings more text
    and the app slows its reads instead of falling behind — never to more
    than ``MAX_READ_GAP`` between reads. The first text is never held back.

    First text first: while an answer is opening (``opening()``: from the
    request being built until its first text), the answers already streaming
    read every ``MAX_READ_GAP``. The CPU that would have gone to their extra
    reads goes to the new request instead: when many arrive at once, the last
    of them gets its first token sooner, and the others' text comes in
    larger pieces, at most ``MAX_READ_GAP`` apart.
    """

    def __init__(self, reads_per_s: float = 400.0) -> None:
        self.reads_per_s = reads_per_s
        self.opening_now = 0

    def gap(self) -> float:
        if self.opening_now:
            return MAX_READ_GAP
        return min(MAX_READ_GAP, max(READ_GAP, self.streams / self.reads_per_s))

    @contextmanager
    def opening(self) -> Iterator[Opening]:
        """One answer opens, for as long as the block runs or until its
        ``Opening.first_text()``, whichever comes first."""
        opening = Opening(self)
        self.opening_now += 1
        try:
            yield opening
        finally:
            opening.first_text()


class Opening:
    """One answer waiting for its first text (``ReadPacer.opening``)."""

    __slots__ = ("_pacer",)

    def __init__(self, pacer: ReadPacer) -> None:
        self._pacer: ReadPacer | None = pacer

    def first_text(self) -> None:
        """The first text arrived (or the answer ended without any): no longer opening. Idempotent."""
        pacer, self._pacer = self._pacer, None
        if pacer is not None:
            pacer.opening_now -= 1


async def read_text(
    chunks: AsyncIterator[bytes], decoder: Decoder, pacer: ReadPacer, extensions: Mapping[str, Any],
    opening: Opening | None = None,
) -> AsyncIterator[TextDelta]:
    """The text of a response body: one ``TextDelta`` per read.

    ``chunks`` (the body) is read in a task of its own (``coalesce``): what one
    read brought (or what arrived while the consumer was busy) is decoded at
    once and passed up as one delta. Reads are paced by ``pacer`` (the
    process's shared one), as the response's ``extensions`` allow: with
    ``aio.READS`` (aiohttp) the pulls of ``chunks`` (``_paced_pulls``); with
    httpcore's ``network_stream`` its socket reads (``_PacedReads``); else
    none. Raises the decoder's in-stream error after the text that
    preceded it. Once the end marker came the answer is complete: a failure
    reading the rest of the body changes nothing. Skipped malformed lines are
    logged once, at the end (model id and count only: no request content, no key).
    ``opening`` (the answer's ``ReadPacer.opening``) is told the first text.
    """
    spacing = _Spacing(decoder, pacer)
    network = extensions.get("network_stream")
    if (reads := extensions.get(aio.READS)) is not None:
        chunks, network = _paced_pulls(chunks, spacing, reads), None
    try:
        with pacer.streaming(), _PacedReads(network, spacing):
            async with aclosing(coalesce(chunks, 0.0)) as batches:
                try:
                    async for batch in batches:
                        if text := decoder.feed(batch[0] if len(batch) == 1 else b"".join(batch)):
                            if opening is not None:
                                opening.first_text()
                            yield TextDelta(text)
                        if decoder.error is not None:
                            raise decoder.error
                        if decoder.done:
                            break
                    else:
                        if text := decoder.close():
                            yield TextDelta(text)
                        if decoder.error is not None:
                            raise decoder.error
                except Exception:
                    if decoder.finish is None:
                        raise
                    return
                if decoder.done:
                    with suppress(Exception):
                        async with asyncio.timeout(_DRAIN_SECONDS):
                            async for _ in batches:
                                pass
    finally:
        if decoder.malformed:
            log.warning("%s: skipped %d malformed line(s) in the stream", decoder.model_id, decoder.malformed)


def ending(decoder: Decoder, model_id: str, filtered: str | None = None) -> list[Event]:
    """What follows the text once the body was read: nothing when its end marker
    never came (``guard_stream`` reports the interruption); ``ContentFiltered``
    (raised, with the ``filtered`` message) when the provider filtered the
    answer before any text; else the usage it reported, if any, and ``Finish``."""
    if decoder.finish is None:
        return []
    if filtered is not None and decoder.finish == "content_filter" and not decoder.streamed:
        raise ContentFiltered(filtered, model=model_id)
    return [decoder.usage, Finish(decoder.finish)] if decoder.usage is not None else [Finish(decoder.finish)]


class _Spacing:
    """When the next read of one body may start: once text has arrived (the
    first text is never held back), the pacer's gap after the previous read
    returned — unless that one brought ``_FULL_PULL`` bytes or more (more is
    likely waiting), or the end marker came."""

    __slots__ = ("_decoder", "_full", "_last", "_pacer")

    def __init__(self, decoder: Decoder, pacer: ReadPacer) -> None:
        self._decoder = decoder
        self._pacer = pacer
        self._last = 0.0
        self._full = False

    def wait(self, now: float) -> float:
        """Seconds to wait before the next read (0 or less: none)."""
        decoder = self._decoder
        if not decoder.streamed or decoder.done or self._full:
            return 0.0
        return self._last + self._pacer.gap() - now

    def read(self, data: bytes, now: float) -> None:
        """A read returned ``data`` at ``now``."""
        self._last, self._full = now, len(data) >= _FULL_PULL


async def _paced_pulls(chunks: AsyncIterator[bytes], spacing: _Spacing, reads: aio.Reads) -> AsyncIterator[bytes]:
    """``chunks``, each pull started as ``spacing`` says, with the socket's
    reads paused while it waits: what the upstream sends waits in the kernel
    and comes back in one piece — one wake-up of the whole stack instead of
    one per token."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            if (wait := spacing.wait(loop.time())) > 0:
                reads.pause()
                try:
                    await asyncio.sleep(wait)
                finally:
                    reads.resume()
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            spacing.read(chunk, loop.time())
            yield chunk
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


class _PacedReads:
    """Spaces the socket reads of one HTTP/1.1 connection while its body streams.

    Each socket read costs ~40 µs in httpcore and anyio (a timeout scope,
    epoll registration, a task wake-up), and an upstream that writes every
    token on its own would cost one read per token. httpcore hands the
    connection's stream out as the response's ``network_stream`` extension
    (public, meant for upgraded connections); for the duration of one body its
    ``read`` is wrapped so that each read starts as ``_Spacing`` says (the
    pacer's gap, ``READ_GAP`` alone and more under load, after the previous
    one). What the upstream sends meanwhile waits in the socket buffer and
    comes back in one read. The wrapper is removed before the
    connection goes back to the pool. Without that extension (HTTP/2, a
    transport without sockets), or over TLS, reads are not paced.
    """

    def __init__(self, network: object | None, spacing: _Spacing) -> None:
        self._network = network
        self._spacing = spacing
        self._read = getattr(network, "read", None)

    def __enter__(self) -> None:
        if self._read is None or not inspect.iscoroutinefunction(self._read):
            self._network = None
            return
        if getattr(self._network, "get_extra_info", lambda _: None)("ssl_object") is not None:
            # Over TLS a read returns one TLS record (one token, as providers
            # write them), however much has arrived: paced, a stream would be
            # held to one token per gap. Unpaced: one event per record.
            self._network = None
            return
        try:
            self._network.read = self._paced  # type: ignore[union-attr]
        except AttributeError:  # a stream that does not allow it: unpaced
            self._network = None

    def __exit__(self, *exc: object) -> None:
        if self._network is not None and vars(self._network).get("read") == self._paced:
            del self._network.read  # type: ignore[attr-defined]

    async def _paced(self, max_bytes: int, timeout: float | None = None) -> bytes:
        loop = asyncio.get_running_loop()
        if (wait := self._spacing.wait(loop.time())) > 0:
            await asyncio.sleep(wait)
        data = b""
        try:
            data = await self._read(max_bytes, timeout)  # type: ignore[misc]
            return data
        finally:
            self._spacing.read(data, loop.time())
