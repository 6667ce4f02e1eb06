"""One SDK client per event loop (``chat.providers.base.LoopClient``), and what
happens to the connections of the clients it replaces.

The wire server closes every connection after one response, so these tests
use a small keep-alive HTTP/1.1 server of their own (``http.server``), where a
pooled connection stays open until the client closes it.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from chat.events import Finish
from chat.messages import ChatRequest, Message
from chat.providers.base import LoopClient
from chat.providers.openai import OpenAIProvider
from tests.wire import Script
from tests.wire.dialects import DIALECTS
from tests.wire.fixtures import collect, make_settings, sdk_env, text_of  # noqa: F401

TOKENS = [f"t{i} " for i in range(40)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self) -> None:
        super().setup()
        self.server.opened += 1  # type: ignore[attr-defined]

    def finish(self) -> None:
        super().finish()
        self.server.closed += 1  # type: ignore[attr-defined]

    def do_POST(self) -> None:  # an OpenAI stream, one chunk per token, a little apart
        self.rfile.read(int(self.headers["Content-Length"]))
        wire, body, script = DIALECTS["openai"], {"stream_options": {"include_usage": True}}, Script(tokens=TOKENS)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        parts = [wire.start(script, body), *(wire.token(t, body) for t in TOKENS), wire.end(script, body, (3, 40))]
        for part in parts:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.flush()
            time.sleep(0.002)
        time.sleep(0.03)  # the end of the body comes a little after [DONE]
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def keepalive(sdk_env: None) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.opened = server.closed = 0  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def provider_for(server: ThreadingHTTPServer) -> OpenAIProvider:
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    return OpenAIProvider(make_settings(), api_key=SecretStr("sk-test"), base_url=url)


REQUEST = ChatRequest("m", (Message("user", "hi"),))


def wait_until(predicate, timeout: float = 2.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


async def test_streamed_answers_reuse_one_keepalive_connection(keepalive: ThreadingHTTPServer) -> None:
    # The body is read to its end after [DONE] and the paced reads are undone,
    # so the connection goes back to the pool in a usable state.
    provider = provider_for(keepalive)
    for _ in range(3):
        events, error = await collect(provider.stream(REQUEST))
        assert error is None and text_of(events) == "".join(TOKENS) and events[-1] == Finish("stop")
    assert keepalive.opened == 1  # type: ignore[attr-defined]
    await provider.aclose()
    assert wait_until(lambda: keepalive.closed == 1)  # type: ignore[attr-defined]


def test_a_client_left_on_a_finished_loop_is_closed_with_that_loop(keepalive: ThreadingHTTPServer) -> None:
    # e.g. the start-up discovery thread's asyncio.run, then the server's loop.
    provider = provider_for(keepalive)
    gc.collect()  # garbage left by earlier tests (e.g. their event loops) is not this test's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        events, error = asyncio.run(collect(provider.stream(REQUEST)))
        assert error is None and text_of(events) == "".join(TOKENS)
        # asyncio.run closed the pooled connection before closing its loop.
        assert wait_until(lambda: keepalive.closed == 1), "the first loop's connection stayed open"
        assert provider._clients.client is None
        events, error = asyncio.run(collect(provider.stream(REQUEST)))  # a new loop: a new client
        assert error is None and text_of(events) == "".join(TOKENS)
        assert wait_until(lambda: keepalive.closed == 2)
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, (ResourceWarning, RuntimeWarning))]
    assert leaks == [], [str(w.message) for w in leaks]


async def test_same_loop_same_client_and_aclose_closes_it() -> None:
    closed: list[object] = []

    async def close(client: object) -> None:
        closed.append(client)

    clients = LoopClient(object, close)
    first = await clients.get()
    assert await clients.get() is first and clients.client is first
    await clients.aclose()
    assert closed == [first] and clients.client is None
    assert await clients.get() is not first


async def test_a_client_replaced_while_its_loop_runs_elsewhere_is_closed_on_that_loop() -> None:
    closed_on: list[tuple[object, int]] = []

    async def close(client: object) -> None:
        closed_on.append((client, threading.get_ident()))

    clients = LoopClient(object, close)
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        theirs = asyncio.run_coroutine_threadsafe(clients.get(), other).result(5)
        ours = await clients.get()
        assert ours is not theirs
        assert await asyncio.to_thread(wait_until, lambda: bool(closed_on))
        assert closed_on == [(theirs, thread.ident)]
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(5)
        other.close()
    await clients.aclose()
