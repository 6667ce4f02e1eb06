"""An httpx2 transport on aiohttp, under the openai and anthropic SDKs.

Why: the SDKs' default transport (httpcore + h11, pure Python) parses every
chunk of a streamed body — one per token — at ~6 µs, and each request costs
more than over aiohttp, whose C parser decodes the chunked body and whose
stream hands back everything buffered in one pull. Both SDKs document aiohttp
"for improved concurrency performance" (``DefaultAioHttpClient``); this
transport is ours rather than theirs for two things the adapters need:

- the socket's reads can be paused: each response carries ``READS``, with
  ``pause()`` / ``resume()``, so ``providers.body`` can let a streamed body
  accumulate in the kernel between two pulls, over TLS too — one wake-up of
  the whole stack per pull, instead of one per token;
- aiohttp's errors become the httpx2 errors the SDKs map to their own (the
  vendored openai transport reports a refused connection as ``ConnectTimeout``).

The SDKs keep building and sending the requests: ``client()`` is the SDK's own
default client (``http_client``) with this transport — unless proxy variables
are set (``HTTPS_PROXY``, …): then it is the SDK's client as it comes, so
proxies and ``NO_PROXY`` work exactly as before.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from urllib.request import getproxies

import aiohttp
import httpx2

__all__ = ["READS", "AiohttpTransport", "Reads", "client"]

# The response extension holding the body's ``Reads``.
READS = "relay.reads"
# One pull of the body returns what is buffered, up to this much.
PULL_BYTES = 16 * 1024
# As the SDKs' own clients: at most 1,000 connections, an idle one closed
# after 5 s (before a server closes it under a request: uvicorn-based ones,
# vLLM's for one, close idle connections after 5 s), and TCP keep-alive
# probes after 60 s of silence (anthropic's; a long wait for a reasoning
# model's first token must survive NATs and load balancers).
_MAX_CONNECTIONS = 1000
_KEEPALIVE_EXPIRY = 5.0
_TCP_KEEPALIVE = [(name, value) for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 60), ("TCP_KEEPCNT", 5))
                  if hasattr(socket, name)]


def client(sdk_client: Callable[..., httpx2.AsyncClient]) -> httpx2.AsyncClient:
    """The SDK's default client (``openai.DefaultAsyncHttpxClient``, …) on
    aiohttp, or as it comes when the environment names a proxy."""
    if any(scheme in getproxies() for scheme in ("http", "https", "all")):
        return sdk_client()
    return sdk_client(transport=AiohttpTransport())


class Reads:
    """Pausing the socket a response body streams from (while the response still
    holds its connection: once the body ended it went back to the pool).

    Over TLS, pausing asyncio's SSL transport only stops its delivery: it goes
    on reading the socket into its own buffer, one wake-up per packet. Its
    read limit set to 0 for the pause (``set_read_buffer_limits``: "pause
    whenever the buffer becomes non-empty") stops that too, so the packets
    wait in the kernel as over plain TCP; the limits are restored on resume."""

    __slots__ = ("_limits", "_paused", "_response")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._paused: asyncio.ReadTransport | None = None
        self._limits: tuple[int, int] | None = None

    def pause(self) -> None:
        connection = self._response.connection
        transport = connection.transport if connection is not None else None
        if transport is not None and self._paused is None and transport.is_reading():
            transport.pause_reading()
            self._paused = transport
            limits = getattr(transport, "get_read_buffer_limits", None)  # the SSL transport's
            if limits is not None:
                self._limits = limits()
                transport.set_read_buffer_limits(high=0)  # type: ignore[attr-defined]

    def resume(self) -> None:
        transport, self._paused = self._paused, None
        limits, self._limits = self._limits, None
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
            if limits is not None:
                low, high = limits
                transport.set_read_buffer_limits(high=high, low=low)  # type: ignore[attr-defined]


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """httpx2 requests over one aiohttp session, made in the first request's event loop."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=_MAX_CONNECTIONS, keepalive_timeout=_KEEPALIVE_EXPIRY,
                                             ssl=httpx2.create_ssl_context(), socket_factory=_keepalive_socket)
            # httpx2 above keeps the cookies and decodes the content (gzip, …).
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        timeout = request.extensions.get("timeout", {})
        headers = request.headers.multi_items()
        try:
            data: bytes | httpx2.AsyncByteStream | None = request.content or None
        except httpx2.RequestNotRead:  # a streamed body: aiohttp does the framing
            data = request.stream  # type: ignore[assignment]
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        with _mapped(request):
            response = await self._session.request(
                request.method, str(request.url), headers=headers,
                data=data, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(sock_connect=timeout.get("connect"), sock_read=timeout.get("read"),
                                              connect=timeout.get("pool")),
                server_hostname=request.extensions.get("sni_hostname"),
            )
        extensions: dict[str, object] = {"http_version": b"HTTP/1.1", READS: Reads(response)}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx2.Response(response.status, headers=list(response.raw_headers),
                               stream=_Body(request, response), request=request, extensions=extensions)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Body(httpx2.AsyncByteStream):
    def __init__(self, request: httpx2.Request, response: aiohttp.ClientResponse) -> None:
        self._request = request
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._request):
            async for chunk in self._response.content.iter_chunked(PULL_BYTES):
                yield chunk

    async def aclose(self) -> None:
        # A body read to its end already gave its connection back to the pool
        # (aiohttp does at the end of the message); one left unfinished (Stop,
        # a fallback) is closed here: the upstream sees the disconnect at once.
        self._response.close()


def _keepalive_socket(addr_info: tuple) -> socket.socket:  # type: ignore[type-arg]
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in _TCP_KEEPALIVE:
        sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    return sock


@contextmanager
def _mapped(request: httpx2.Request) -> Iterator[None]:
    """aiohttp's errors as the httpx2 errors httpx's own transport raises for
    the same failure (aiohttp's kept as the cause); the SDKs map those."""
    try:
        yield
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx2.RemoteProtocolError("the server closed the connection", request=request) from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx2.RemoteProtocolError(f"incomplete response body: {exc}", request=request) from exc
    except aiohttp.ClientResponseError as exc:  # a response head that does not parse
        raise httpx2.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx2.ConnectTimeout(str(exc) or "connection timed out", request=request) from exc
    except (aiohttp.SocketTimeoutError, asyncio.TimeoutError) as exc:
        raise httpx2.ReadTimeout(str(exc) or "read timed out", request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, unreachable, DNS, TLS handshake
        raise httpx2.ConnectError(str(exc), request=request) from exc
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
        raise httpx2.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:  # a reset or other failure once connected
        raise httpx2.ReadError(str(exc) or type(exc).__name__, request=request) from exc
