"""A tiny HTTP/1.1 server on its own thread and event loop.

Raw ``asyncio.start_server`` rather than a framework, so a script can do what a
misbehaving upstream does: stall, cut the socket mid-body, omit the terminating
chunk. One request per connection (``Connection: close``), chunked bodies; with
``keep_alive=True`` a connection serves one request after another, as real
providers' servers do (benchmarks use it, so the app reuses its upstream
connections as it would in production).
The wire dialects live in ``dialects.py``; this module only moves bytes,
records requests and notices client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .dialects import DIALECTS, Script, continuation_parts, continuation_tokens, parse_magic, tags_body

__all__ = ["ClientGone", "Exchange", "Recorded", "WireServer"]

_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
    403: "Forbidden", 404: "Not Found", 408: "Request Timeout", 409: "Conflict",
    413: "Payload Too Large", 422: "Unprocessable Entity", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 529: "Overloaded",
}


class ClientGone(Exception):
    """The client closed the connection while we were still responding."""


@dataclass
class Recorded:
    """One request as the server saw it. Times are ``time.monotonic()``."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    protocol: str | None = None
    peer: tuple[str, int] | None = None  # the client's address and port: one per connection
    proxied: bool = False  # the request came as to a forward proxy (an absolute URL as its target)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    disconnected: float | None = None  # client closed before the response ended


class Exchange:
    """Writing one response, watching for the client going away."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: Recorded,
                 on_disconnect: Any, *, keep_alive: bool = False) -> None:
        self.writer = writer
        self.record = record
        self.keep_alive = keep_alive
        self._done = False
        # The client sends nothing more while the response is under way (the
        # next request on a kept-alive connection only after it ended), so a
        # completed read means it closed its side: that is the disconnect.
        self._eof = asyncio.ensure_future(reader.read(1))
        self._eof.add_done_callback(lambda task: self._client_closed(task, on_disconnect))

    async def reusable(self) -> bytes | None:
        """After a complete response on a kept-alive connection: stop watching for
        the disconnect and return what the watch read of the next request (b"" or
        its first byte); None when the connection cannot serve another request."""
        if not (self.keep_alive and self._done) or self.gone or self.writer.is_closing():
            return None
        self._eof.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._eof  # the reader is free for the next request only once the watch is over
        if self._eof.cancelled():
            return b""
        return None if self._eof.exception() else self._eof.result() or None

    def _client_closed(self, task: asyncio.Future[bytes], on_disconnect: Any) -> None:
        if task.cancelled() or (task.exception() is None and task.result()):
            return  # we closed it, or the client sent bytes (not a close)
        if not self._done and self.record.disconnected is None:
            self.record.disconnected = time.monotonic()
            on_disconnect()

    @property
    def gone(self) -> bool:
        return self.record.disconnected is not None

    async def head(self, status: int, content_type: str, headers: dict[str, str] | None = None,
                   *, length: int | None = None) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
                 f"Content-Type: {content_type}", "Cache-Control: no-cache"]
        if not self.keep_alive:
            lines.append("Connection: close")
        lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        await self._write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        await self.head(status, "application/json", headers, length=len(data))
        await self._write(data)
        self.finish()

    async def chunk(self, data: bytes) -> None:
        if data:
            await self._write(b"%x\r\n%s\r\n" % (len(data), data))

    async def chunks(self, parts: list[bytes]) -> None:
        """Several chunks of the body in one socket write (the client finds them all waiting)."""
        await self._write(b"".join(b"%x\r\n%s\r\n" % (len(data), data) for data in parts if data))

    async def end(self) -> None:
        """Terminate the chunked body properly."""
        await self._write(b"0\r\n\r\n")
        self.finish()

    async def cut(self) -> None:
        """Close the socket without the terminating chunk."""
        self.finish()
        self.writer.close()

    async def pause(self, seconds: float) -> None:
        """Sleep, waking early (ClientGone) if the client disconnects."""
        if seconds <= 0:
            await asyncio.sleep(0)
        else:
            await asyncio.wait({self._eof}, timeout=seconds)
        if self.gone:
            raise ClientGone

    def finish(self) -> None:
        self._done = True
        self.record.finished = time.monotonic()

    async def _write(self, data: bytes) -> None:
        if self.gone:
            raise ClientGone
        try:
            self.writer.write(data)
            await self.writer.drain()
        except ConnectionError as exc:
            raise ClientGone from exc

    def close(self) -> None:
        self._done = True
        self._eof.cancel()
        self.writer.close()


class WireServer:
    """Speaks OpenAI, Anthropic and Ollama on one port (their paths do not clash).

    ``enqueue(Script(...))`` scripts the next chat requests in order; with an
    empty queue, magic words in the last user message decide (see the package
    docstring). Use as a context manager or ``start()`` / ``stop()``.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 ollama_models: tuple[str, ...] | list[str] = ("llama3.2:latest", "qwen2.5:0.5b"),
                 keep_alive: bool = False, tls: tuple[str, str] | None = None) -> None:
        """``tls``: (certificate file, key file) to serve HTTPS, as providers do."""
        self.host = host
        self.keep_alive = keep_alive
        self.tls = tls
        self.port = port
        self.ollama_models = list(ollama_models)
        self._scripts: deque[Script] = deque()
        self._requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._disconnects = 0

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> WireServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self.host, self.port, ssl=self._ssl_context()))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"wire-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = None

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await self._server.wait_closed()

    def __enter__(self) -> WireServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self.tls)
        return context

    # -- for tests ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    def enqueue(self, *scripts: Script) -> None:
        with self._lock:
            self._scripts.extend(scripts)

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.protocol]

    @property
    def disconnects(self) -> int:
        return self._disconnects

    async def wait_disconnect(self, timeout: float = 1.0) -> Recorded | None:
        """The first request whose client disconnected, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for record in self.requests:
                if record.disconnected is not None:
                    return record
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.005)

    # -- serving ----------------------------------------------------------------

    def _next_script(self) -> Script | None:
        with self._lock:
            return self._scripts.popleft() if self._scripts else None

    def _on_disconnect(self) -> None:
        self._disconnects += 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        exchange: Exchange | None = None
        try:
            first: bytes | None = b""
            while first is not None:
                record = await _read_request(reader, first)
                if record is None:
                    return
                record.peer = writer.get_extra_info("peername")
                with self._lock:
                    self._requests.append(record)
                exchange = Exchange(reader, writer, record, self._on_disconnect, keep_alive=self.keep_alive)
                await self._route(record, exchange)
                first = await exchange.reusable()
        except ClientGone:
            pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if exchange is not None:
                exchange.close()
            else:
                writer.close()
            self._tasks.discard(task)

    async def _route(self, record: Recorded, ex: Exchange) -> None:
        path = record.path.split("?", 1)[0].rstrip("/")
        if record.method == "GET" and path == "/api/tags":
            await ex.json(200, tags_body(self.ollama_models))
            return
        if record.method == "GET" and path == "/api/version":
            await ex.json(200, {"version": "0.6.3-wire"})
            return
        if record.method == "GET" and path in ("/v1/models", "/models"):
            await ex.json(200, {"object": "list", "data": []})
            return
        for name, dialect in DIALECTS.items():
            if record.method == "POST" and path in dialect.paths:
                record.protocol = name
                body = record.body if isinstance(record.body, dict) else {}
                script = self._next_script() or _default_script(dialect, body)
                if name == "ollama" and script.status == 200 and not self._ollama_knows(body.get("model", "")):
                    script = Script(status=404, error=f'model "{body.get("model")}" not found, try pulling it first')
                await dialect.respond(ex, script, body)
                return
        await ex.json(404, {"error": f"no route for {record.method} {path}"})

    def _ollama_knows(self, model: str) -> bool:
        return not self.ollama_models or model in self.ollama_models or f"{model}:latest" in self.ollama_models


def _default_script(dialect: Any, body: dict[str, Any]) -> Script:
    """What the magic words say; a continuation request (see ``continuation_parts``)
    is answered as the model would go on from the partial answer of the message
    before it, in the scripted ``continuation`` style (a compliant model by default)."""
    model = str(body.get("model", ""))
    conversation = dialect.user_texts(body)
    parts = continuation_parts(body.get("messages") or [])
    if parts is None:
        return parse_magic(dialect.last_user_text(body), model=model, conversation=conversation)
    original, partial, tail = parts
    script = parse_magic(original, model=model, conversation=conversation)
    # Only what shapes the reply carries over from the original message (its
    # tokens, the style): failures and faults come from words scoped to this model.
    scoped = parse_magic("", model=model, conversation=conversation)
    tokens = continuation_tokens(script.continuation, "".join(script.tokens or []), partial, tail)
    if tokens is None:
        return parse_magic(dialect.last_user_text(body), model=model, conversation=conversation)
    scoped.tokens = tokens
    return scoped


async def _read_request(reader: asyncio.StreamReader, first: bytes = b"") -> Recorded | None:
    """The next request on the connection (``first``: its first byte, if already read)."""
    try:
        head = first + await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    proxied = target.startswith(("http://", "https://"))  # absolute form: sent to us as a forward proxy
    if proxied:
        target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        raw = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            raw += data[:-2]
    else:
        length = int(headers.get("content-length", "0") or 0)
        raw = await reader.readexactly(length) if length else b""
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return Recorded(method=method, path=target, headers=headers, body=body, raw=raw, proxied=proxied)
