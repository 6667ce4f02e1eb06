"""Pytest fixtures shared by the adapter tests (import them into a test module)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from chat.config import Settings

from tests.servers import free_port  # noqa: F401 - the adapter tests import it from here
from tests.servers import tls_files

from .dialects import Script
from .server import WireServer

# Variables the SDKs read on their own; a developer's real values must not leak in.
_SDK_ENV = (
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_ADMIN_KEY",
    "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_PROFILE",
    "OLLAMA_HOST", "OLLAMA_API_KEY", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
    "http_proxy", "https_proxy", "all_proxy",
)


@pytest.fixture
def sdk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No provider or CHAT_ variables, nor the ones the SDKs read on their own."""
    import os

    for name in list(os.environ):
        if name in _SDK_ENV or (name.startswith("CHAT_") and name != "CHAT_ENV_FILE"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("CHAT_ENV_FILE", "")


@pytest.fixture
def wire(sdk_env: None) -> Iterator[WireServer]:
    with WireServer() as server:
        yield server


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Any], Any]]:
    """Adapters a test builds for itself, closed after it: ``provider = closing(OpenAIProvider(...))``."""
    opened: list[Any] = []

    def keep(provider: Any) -> Any:
        opened.append(provider)
        return provider

    yield keep
    for provider in opened:
        await provider.aclose()


@pytest.fixture
def tls_wire(sdk_env: None, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[WireServer]:
    """A wire server on HTTPS, its throwaway CA trusted as a provider's would be."""
    ca, cert, key = tls_files(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    with WireServer(keep_alive=True, tls=(cert, key)) as server:
        yield server


@pytest.fixture
def kept_alive(sdk_env: None) -> Iterator[WireServer]:
    """A wire server that keeps connections open between requests, as providers' do."""
    with WireServer(keep_alive=True) as server:
        yield server


def make_settings(**values: Any) -> Settings:
    """Settings from explicit values only: no dotenv file, no provider keys unless given."""
    base: dict[str, Any] = {
        "OPENAI_API_KEY": None, "OPENAI_BASE_URL": None,
        "ANTHROPIC_API_KEY": None, "ANTHROPIC_BASE_URL": None,
        "OLLAMA_HOST": "http://127.0.0.1:9", "connect_timeout": 2.0,
        "first_token_timeout": 5.0, "stall_timeout": 5.0,
    }
    base.update(values)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


async def collect(stream: Any) -> tuple[list[Any], BaseException | None]:
    """All events of a provider stream, and the error that ended it (if any)."""
    events: list[Any] = []
    try:
        async for event in stream:
            events.append(event)
    except Exception as exc:  # the tests inspect it
        return events, exc
    return events, None


def text_of(events: list[Any]) -> str:
    from chat.events import TextDelta

    return "".join(e.text for e in events if isinstance(e, TextDelta))


def merged(events: list[Any]) -> list[Any]:
    """``events`` with adjacent text deltas joined: what a stream says,
    whatever network reads its text arrived in (adapters yield one delta per read)."""
    from chat.events import TextDelta

    out: list[Any] = []
    for event in events:
        if isinstance(event, TextDelta) and out and isinstance(out[-1], TextDelta):
            out[-1] = TextDelta(out[-1].text + event.text)
        else:
            out.append(event)
    return out


async def first_text(stream: Any, length: int) -> str:
    """Read ``stream`` until at least ``length`` characters of text came."""
    from chat.events import TextDelta

    text = ""
    while len(text) < length:
        event = await anext(stream)
        if isinstance(event, TextDelta):
            text += event.text
    return text


# -- what every adapter must do with the same stream (each adapter test module calls these) --

TOKENS = ["Hel", "lo", ",", " wor", "ld", "!"]
# A garbage line among valid ones, or after every one: (script, lines skipped).
malformed_cases = pytest.mark.parametrize(
    ("script", "skipped"),
    [(Script(tokens=TOKENS, malformed_after=2), 1), (Script(tokens=TOKENS, malformed_every=1), len(TOKENS))],
    ids=["one-garbage-line", "garbage-after-every-token"],
)


async def check_malformed_lines_skipped(wire: WireServer, stream: Callable[[str], AsyncIterator[Any]],
                                        script: Script, skipped: int, caplog: pytest.LogCaptureFixture,
                                        model_id: str, secret: str) -> None:
    """The SDK's own parser gives up on a garbage line; ours skips it, so the
    model that was answering completes its answer (no fallback needed), with
    one warning per stream that names neither the request nor the key."""
    from chat.events import Finish, TextDelta

    wire.enqueue(script)
    with caplog.at_level(logging.WARNING):
        events, error = await collect(stream("private question text"))
    assert error is None
    assert merged(events)[0] == TextDelta("".join(script.tokens or [])) and events[-1] == Finish("stop")
    (warning,) = [r for r in caplog.records if "malformed" in r.getMessage()]  # once per stream
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == f"{model_id}: skipped {skipped} malformed line(s) in the stream"
    assert "private question" not in caplog.text and secret not in caplog.text


async def check_fast_upstream_read_in_batches(wire: WireServer, stream: Callable[[], AsyncIterator[Any]]) -> None:
    """Every token written on its own, 2,000 a second: reads are spaced
    (READ_GAP), so what arrived meanwhile comes up as one text event."""
    from chat.events import TextDelta

    tokens = [f"w{i} " for i in range(400)]
    wire.enqueue(Script(tokens=tokens, rate=2000))
    events, error = await collect(stream())
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert error is None and text_of(events) == "".join(tokens)
    assert len(deltas) <= len(tokens) // 4, f"{len(deltas)} text events for {len(tokens)} chunks"


async def check_waiting_chunks_batched(wire: WireServer, stream: Callable[[], AsyncIterator[Any]]) -> None:
    """Every chunk already waiting when the client reads: far fewer text events than chunks."""
    from chat.events import TextDelta

    tokens = [f"w{i} " for i in range(300)]
    wire.enqueue(Script(tokens=tokens, burst=True))
    events, error = await collect(stream())
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert error is None and text_of(events) == "".join(tokens)
    assert len(deltas) <= len(tokens) // 10, f"{len(deltas)} text events for {len(tokens)} chunks"


async def check_connection_reused(wire: WireServer, stream: Callable[[str], AsyncIterator[Any]]) -> None:
    """Answers one after another, each read to its end, travel over one upstream
    connection (no new TCP or TLS handshake per answer); one stopped early is
    closed, and the next answer gets a fresh connection."""
    from chat.events import Finish

    for i in range(3):
        events, error = await collect(stream(f"answer {i} [[tokens:40]]"))
        assert error is None and events[-1] == Finish("stop")
    peers = [r.peer for r in wire.chat_requests]
    assert len(set(peers)) == 1, f"{peers}: a connection per answer"

    cut = stream("a long one [[tokens:400]] [[delay:0.01]]")
    async for _ in cut:
        break
    await cut.aclose()
    assert await wire.wait_disconnect(1.0) is not None, "the stopped answer's connection was closed"
    events, error = await collect(stream("after [[tokens:5]]"))
    assert error is None and events[-1] == Finish("stop")
    assert wire.chat_requests[-1].peer not in peers


async def check_fast_burst_not_held_back(wire: WireServer, stream: Callable[[], AsyncIterator[Any]],
                                         pacer: Any) -> None:
    """Under the heaviest load (the pacer's longest gap between reads) a body
    that arrives faster than one read per gap can carry is still read as fast
    as it comes: a full read is followed by the next at once."""
    from chat.providers.body import MAX_READ_GAP

    pacer.streams = 10_000  # every read gap at its longest, as with many streams at once
    try:
        tokens = [f"token-{i:05d} " for i in range(6000)]  # ~1 MB of SSE
        wire.enqueue(Script(tokens=tokens, burst=True))
        started = time.monotonic()
        events, error = await collect(stream())
        elapsed = time.monotonic() - started
    finally:
        pacer.streams = 0
    assert error is None and text_of(events) == "".join(tokens)
    held_back = 1_000_000 / (16 * 1024) * MAX_READ_GAP  # one 16 KB read per gap: ~3 s
    assert elapsed < held_back / 3, f"{elapsed:.2f} s for a burst (one read per gap would take {held_back:.1f} s)"


async def check_https_stream_keeps_pace(wire: WireServer, stream: Callable[[], AsyncIterator[Any]]) -> None:
    """Over HTTPS, as providers serve, a fast answer arrives whole and on time:
    every token is a TLS record of its own, and however reads are spaced, the
    stream is never held to one record per read."""
    from chat.providers.body import READ_GAP

    tokens = [f"w{i} " for i in range(400)]
    wire.enqueue(Script(tokens=tokens, rate=2000))  # 0.2 s at the source
    started = time.monotonic()
    events, error = await collect(stream())
    elapsed = time.monotonic() - started
    assert error is None and text_of(events) == "".join(tokens)
    held = len(tokens) * READ_GAP  # one token per read gap: 4 s
    assert elapsed < held / 4, f"{elapsed:.2f} s for a 0.2 s answer (one token per read gap would take {held:.0f} s)"


async def check_opening_answer_goes_first(wire: WireServer, stream: Callable[[], AsyncIterator[Any]],
                                          pacer: Any) -> None:
    """While one answer waits for its first token, an answer already streaming
    reads every MAX_READ_GAP (its text whole, in fewer pieces): the new
    request gets the CPU. Once no answer is opening — it got its text, or it
    failed, or it was stopped before any — nothing is held back any more."""
    import asyncio

    from chat.events import TextDelta
    from chat.providers.body import MAX_READ_GAP

    tokens = [f"w{i} " for i in range(300)]

    async def flowing() -> tuple[list[Any], BaseException | None]:
        wire.enqueue(Script(tokens=tokens, rate=600))  # 0.5 s
        return await collect(stream())

    alone, error = await flowing()
    assert error is None and text_of(alone) == "".join(tokens)
    pieces_alone = sum(isinstance(e, TextDelta) for e in alone)

    # The next request waits 0.8 s for its first token; its answer goes on after it.
    wire.enqueue(Script(tokens=["late", " more"], headers_delay=0.8, stall=0.3, stall_after=1))
    late = stream()
    late_first = asyncio.ensure_future(first_text(late, 4))
    while len(wire.chat_requests) < 2:
        await asyncio.sleep(0.005)
    assert pacer.opening_now == 1
    beside, error = await flowing()
    assert error is None and text_of(beside) == "".join(tokens)
    pieces_beside = sum(isinstance(e, TextDelta) for e in beside)
    assert pieces_beside < pieces_alone, f"{pieces_beside} pieces beside an opening answer, {pieces_alone} alone"
    assert pieces_beside <= 0.5 / MAX_READ_GAP + 3, f"{pieces_beside} pieces in 0.5 s: not {MAX_READ_GAP} s apart"
    assert await late_first == "late"
    assert pacer.opening_now == 0, "its first text came: no longer opening, though its answer goes on"
    events, error = await collect(late)
    assert error is None and text_of(events) == " more"

    wire.enqueue(Script(status=500, error="upstream broke"))  # failed before any text
    _, error = await collect(stream())
    assert error is not None and pacer.opening_now == 0
    wire.enqueue(Script(tokens=["never"], headers_delay=5))  # stopped while waiting
    waiting = stream()
    pending = asyncio.ensure_future(anext(waiting))
    while pacer.opening_now == 0:
        await asyncio.sleep(0.005)
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
        await pending
    await waiting.aclose()
    assert pacer.opening_now == 0
