"""The Ollama adapter against a local server speaking Ollama's NDJSON ``/api/chat``
and ``/api/tags``. The real ``ollama`` SDK; nothing patched."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from chat.catalogue import Catalogue
from chat.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    ContextLengthExceeded,
    Interrupted,
    InvalidRequest,
    ModelNotFound,
    RateLimited,
    Timeout,
    Unavailable,
)
from chat.events import Finish, TextDelta, Usage
from chat.messages import ChatRequest, Message
from chat.providers import State, build_providers
from chat.providers.body import ReadPacer
from chat.providers.ollama import OllamaProvider
from tests.wire import Script, WireServer
from tests.wire.fixtures import closing, kept_alive, sdk_env, tls_wire, collect, first_text, free_port, make_settings, merged, text_of, wire  # noqa: F401
from tests.wire.fixtures import (
    check_connection_reused,
    check_fast_burst_not_held_back,
    check_opening_answer_goes_first,
    check_fast_upstream_read_in_batches,
    check_https_stream_keeps_pace,
    check_malformed_lines_skipped,
    check_waiting_chunks_batched,
    malformed_cases,
)

TOKENS = ["Hel", "lo", ",", " wor", "ld", "!"]


def request(text: str = "hi", model: str = "llama3.2:latest", **kw: object) -> ChatRequest:
    return ChatRequest(model, (Message("system", "Be brief."), Message("user", text)), **kw)  # type: ignore[arg-type]


@pytest.fixture
async def provider(wire: WireServer) -> AsyncIterator[OllamaProvider]:
    adapter = OllamaProvider(make_settings(OLLAMA_HOST=wire.url, ollama_tier="standard", ollama_context_window=4096))
    yield adapter
    await adapter.aclose()


# -- discovery and availability ------------------------------------------------------


async def test_discover_lists_models_with_configured_tier_and_window(
    wire: WireServer, provider: OllamaProvider
) -> None:
    specs = await provider.discover()
    assert [s.id for s in specs] == ["ollama:llama3.2:latest", "ollama:qwen2.5:0.5b"]
    assert {s.tier for s in specs} == {"standard"}
    assert {s.context_window for s in specs} == {4096}
    assert provider.availability("llama3.2:latest").ready
    (listed,) = wire.requests
    assert (listed.method, listed.path) == ("GET", "/api/tags")


async def test_refresh_picks_up_newly_pulled_models(wire: WireServer, provider: OllamaProvider) -> None:
    assert len(await provider.discover()) == 2
    wire.ollama_models.append("mistral:7b")
    assert "ollama:mistral:7b" in [s.id for s in await provider.discover()]


async def test_unreachable_server_is_a_state_not_a_crash(sdk_env: None) -> None:
    port = free_port()
    provider = OllamaProvider(make_settings(OLLAMA_HOST=f"http://127.0.0.1:{port}"))
    assert await provider.discover() == []
    availability = provider.availability("llama3.2:latest")
    assert availability.state is State.UNREACHABLE
    assert f"127.0.0.1:{port}" in availability.detail
    # the server comes up: the next discovery finds it
    with WireServer(port=port):
        assert len(await provider.discover()) == 2
    assert provider.availability("llama3.2:latest").ready
    await provider.aclose()


async def test_build_is_lazy_and_makes_no_request(wire: WireServer) -> None:
    settings = make_settings(OLLAMA_HOST=wire.url, local_model_enabled=False)
    provider = build_providers(settings, Catalogue(models=()))["ollama"]
    assert provider.availability("llama3.2").ready  # no discovery yet: nothing known against it
    assert provider._clients.client is None
    assert wire.requests == []
    events, error = await collect(provider.stream(request()))
    assert error is None and provider._clients.client is not None
    await provider.aclose()


def test_ollama_can_be_switched_off(sdk_env: None) -> None:
    providers = build_providers(make_settings(ollama_enabled=False, local_model_enabled=False), Catalogue(models=()))
    assert "ollama" not in providers


# -- streaming -----------------------------------------------------------------


async def test_text_streams_in_order_then_usage_then_finish(wire: WireServer, provider: OllamaProvider) -> None:
    wire.enqueue(Script(tokens=TOKENS, usage=(13, 6)))
    events, error = await collect(provider.stream(request()))
    assert error is None
    # prompt_eval_count / eval_count from the final done line
    assert merged(events) == [TextDelta("".join(TOKENS)), Usage(13, 6), Finish("stop")]


async def test_request_carries_messages_and_options(wire: WireServer, provider: OllamaProvider) -> None:
    await collect(provider.stream(request("hello", temperature=0.2, max_tokens=64)))
    (sent,) = wire.chat_requests
    assert sent.path == "/api/chat"
    assert sent.body["model"] == "llama3.2:latest"
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
    assert sent.body["stream"] is True
    # num_ctx: Ollama's own default context would silently cut the planned history.
    assert sent.body["options"] == {"temperature": 0.2, "num_predict": 64, "num_ctx": 4096}  # the test settings' window


async def test_id_without_latest_tag_maps_to_the_listed_name(wire: WireServer, provider: OllamaProvider) -> None:
    await provider.discover()
    events, error = await collect(provider.stream(request(model="llama3.2")))
    assert error is None and text_of(events) == "Echo: hi"
    assert wire.chat_requests[-1].body["model"] == "llama3.2:latest"


async def test_unknown_model_is_model_not_found(wire: WireServer, provider: OllamaProvider) -> None:
    _, error = await collect(provider.stream(request(model="nope:1b")))
    assert type(error) is ModelNotFound and error.status_code == 404


async def test_done_reason_is_passed_on(wire: WireServer, provider: OllamaProvider) -> None:
    wire.enqueue(Script(tokens=["a"], finish_reason="length"))
    events, error = await collect(provider.stream(request()))
    assert error is None and events[-1] == Finish("length")


# -- HTTP errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (429, None, RateLimited),
        (500, None, Unavailable),
        (503, None, Unavailable),
        (401, None, AuthenticationFailed),
        (404, None, ModelNotFound),
        (400, "context", ContextLengthExceeded),
        (400, None, InvalidRequest),
    ],
)
async def test_http_status_maps_to_its_class(
    wire: WireServer, provider: OllamaProvider, status: int, kind: str | None, expected: type
) -> None:
    wire.enqueue(Script(status=status, error_kind=kind))
    events, error = await collect(provider.stream(request()))
    assert events == []
    assert type(error) is expected
    assert error.status_code == status
    assert error.model == "ollama:llama3.2:latest"
    assert isinstance(error.__cause__, Exception)


async def test_one_request_per_call(wire: WireServer, provider: OllamaProvider) -> None:
    wire.enqueue(Script(status=503))
    _, error = await collect(provider.stream(request()))
    assert type(error) is Unavailable
    assert len(wire.chat_requests) == 1


async def test_dead_host_while_streaming_is_connection_failed(sdk_env: None) -> None:
    provider = OllamaProvider(make_settings(OLLAMA_HOST=f"http://127.0.0.1:{free_port()}"))
    events, error = await collect(provider.stream(request()))
    assert events == [] and type(error) is ConnectionFailed  # raw httpx.ConnectError, mapped
    await provider.aclose()


# -- failures after text: Interrupted with exactly the text delivered -----------


@pytest.mark.parametrize(
    ("script", "cause"),
    [
        (Script(tokens=TOKENS, error_after=3), Unavailable),  # {"error": …} line, status -1
        (Script(tokens=TOKENS, cut_after=3), ConnectionFailed),
        (Script(tokens=TOKENS[:3], end_marker=False), type(None)),  # no done:true
    ],
    ids=["error-line", "cut", "no-done"],
)
async def test_failure_after_n_tokens_is_interrupted_with_exact_text(
    wire: WireServer, provider: OllamaProvider, script: Script, cause: type
) -> None:
    wire.enqueue(script)
    events, error = await collect(provider.stream(request()))
    assert isinstance(error, Interrupted)
    assert error.partial_text == "Hel" + "lo" + "," == text_of(events)
    assert type(error.cause) is cause


async def test_stall_mid_stream_times_out_as_interrupted(wire: WireServer) -> None:
    provider = OllamaProvider(make_settings(OLLAMA_HOST=wire.url, first_token_timeout=0.2, stall_timeout=0.2))
    wire.enqueue(Script(tokens=TOKENS, stall=3.0, stall_after=2))
    _, error = await collect(provider.stream(request()))
    # the SDK leaks a raw httpx.ReadTimeout here; the boundary maps it
    assert isinstance(error, Interrupted) and error.partial_text == "Hello"
    assert type(error.cause) is Timeout
    await provider.aclose()


async def test_a_cut_after_the_end_marker_still_finishes(wire: WireServer, provider: OllamaProvider) -> None:
    wire.enqueue(Script(tokens=TOKENS[:2], cut_at_end=True, usage=(5, 2)))
    events, error = await collect(provider.stream(request()))
    assert error is None
    assert merged(events) == [TextDelta("Hello"), Usage(5, 2), Finish("stop")]


@malformed_cases
async def test_malformed_lines_are_skipped_and_the_same_model_finishes(
    wire: WireServer, provider: OllamaProvider, script: Script, skipped: int, caplog: pytest.LogCaptureFixture
) -> None:
    await check_malformed_lines_skipped(wire, lambda text: provider.stream(request(text)), script, skipped, caplog,
                                        "ollama:llama3.2:latest", "sk-")


async def test_a_fast_upstream_is_read_in_paced_batches(wire: WireServer, provider: OllamaProvider) -> None:
    await check_fast_upstream_read_in_batches(wire, lambda: provider.stream(request()))


async def test_chunks_already_waiting_arrive_as_fewer_text_events(wire: WireServer, provider: OllamaProvider) -> None:
    await check_waiting_chunks_batched(wire, lambda: provider.stream(request()))


async def test_answers_reuse_one_upstream_connection(kept_alive: WireServer, closing) -> None:
    provider = closing(OllamaProvider(make_settings(OLLAMA_HOST=kept_alive.url)))
    await check_connection_reused(kept_alive, lambda text: provider.stream(request(text)))


async def test_a_fast_burst_is_not_held_back_by_read_pacing(wire: WireServer, closing) -> None:
    pacer = ReadPacer()
    provider = closing(OllamaProvider(make_settings(OLLAMA_HOST=wire.url), reads=pacer))
    await check_fast_burst_not_held_back(wire, lambda: provider.stream(request()), pacer)


async def test_an_answer_waiting_for_its_first_token_goes_first(wire: WireServer, closing) -> None:
    pacer = ReadPacer()
    provider = closing(OllamaProvider(make_settings(OLLAMA_HOST=wire.url), reads=pacer))
    await check_opening_answer_goes_first(wire, lambda: provider.stream(request()), pacer)


async def test_over_https_a_fast_answer_arrives_whole_and_on_time(tls_wire: WireServer, closing) -> None:
    provider = closing(OllamaProvider(make_settings(OLLAMA_HOST=tls_wire.url)))
    await check_https_stream_keeps_pace(tls_wire, lambda: provider.stream(request()))


async def test_closing_early_disconnects_within_a_second(wire: WireServer, provider: OllamaProvider) -> None:
    wire.enqueue(Script(tokens=[f"t{i} " for i in range(200)], delay=0.02))
    stream = provider.stream(request())
    assert (await first_text(stream, 9)).startswith("t0 t1 t2 ")
    closed_at = time.monotonic()
    await stream.aclose()
    record = await wire.wait_disconnect(1.0)
    assert record is not None, "the server never saw the client go away"
    assert record.disconnected - closed_at < 1.0
    assert record.finished is None


def test_one_provider_serves_successive_event_loops(wire: WireServer) -> None:
    # e.g. a start-up refresh in one loop, the chat in the server's loop
    provider = OllamaProvider(make_settings(OLLAMA_HOST=wire.url))
    assert len(asyncio.run(provider.discover())) == 2
    events, error = asyncio.run(collect(provider.stream(request())))
    assert error is None and text_of(events) == "Echo: hi"
    asyncio.run(provider.aclose())
