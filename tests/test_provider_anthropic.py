"""The Anthropic adapter against a local server speaking Anthropic's SSE wire format
(``event:`` lines, message_start … message_stop). The real SDK; nothing patched."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from chat.catalogue import Catalogue
from chat.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    ContentFiltered,
    ContextLengthExceeded,
    Interrupted,
    InvalidRequest,
    ModelNotFound,
    NotConfigured,
    RateLimited,
    Timeout,
    Unavailable,
)
from chat.events import Finish, TextDelta, Usage
from chat.messages import ChatRequest, Message
from chat.providers import State, build_providers
from chat.providers.body import ReadPacer
from chat.providers.anthropic import AnthropicProvider
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

KEY = "sk-ant-test-key"
TOKENS = ["Hel", "lo", ",", " wor", "ld", "!"]
MODEL = "claude-haiku-4-5"


def request(text: str = "hi", **kw: object) -> ChatRequest:
    return ChatRequest(MODEL, (Message("system", "Be brief."), Message("user", text)), **kw)  # type: ignore[arg-type]


@pytest.fixture
async def provider(wire: WireServer) -> AsyncIterator[AnthropicProvider]:
    adapter = AnthropicProvider(make_settings(max_output_tokens=321), api_key=SecretStr(KEY), base_url=wire.url)
    yield adapter
    await adapter.aclose()


# -- streaming -----------------------------------------------------------------


async def test_text_streams_in_order_then_usage_then_finish(wire: WireServer, provider: AnthropicProvider) -> None:
    wire.enqueue(Script(tokens=TOKENS, usage=(42, 6)))
    events, error = await collect(provider.stream(request()))
    assert error is None
    # input tokens from message_start, output tokens from message_delta
    assert merged(events) == [TextDelta("".join(TOKENS)), Usage(42, 6), Finish("stop")]


async def test_system_messages_become_the_system_parameter(wire: WireServer, provider: AnthropicProvider) -> None:
    messages = (
        Message("system", "You are terse."),
        Message("system", "Summary of earlier turns: none."),
        Message("user", "one"),
        Message("assistant", "two"),
        Message("user", "three"),
    )
    await collect(provider.stream(ChatRequest(MODEL, messages, max_tokens=77)))
    (sent,) = wire.chat_requests
    assert sent.path == "/v1/messages"
    assert sent.body["system"] == "You are terse.\n\nSummary of earlier turns: none."
    assert sent.body["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    assert sent.body["model"] == MODEL
    assert sent.body["max_tokens"] == 77
    assert sent.body["stream"] is True


async def test_max_tokens_defaults_to_settings(wire: WireServer, provider: AnthropicProvider) -> None:
    await collect(provider.stream(ChatRequest(MODEL, (Message("user", "x"),))))
    (sent,) = wire.chat_requests
    assert sent.body["max_tokens"] == 321
    assert "system" not in sent.body


@pytest.mark.parametrize(("stop_reason", "finish"), [("end_turn", "stop"), ("max_tokens", "length")])
async def test_stop_reason_becomes_finish(
    wire: WireServer, provider: AnthropicProvider, stop_reason: str, finish: str
) -> None:
    wire.enqueue(Script(tokens=["a"], finish_reason=stop_reason))
    events, error = await collect(provider.stream(request()))
    assert error is None and events[-1] == Finish(finish)


async def test_refusal_without_text_is_content_filtered(wire: WireServer, provider: AnthropicProvider) -> None:
    wire.enqueue(Script(tokens=[], finish_reason="refusal"))
    _, error = await collect(provider.stream(request()))
    assert isinstance(error, ContentFiltered)


# -- HTTP errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (429, None, RateLimited),
        (500, None, Unavailable),
        (503, None, Unavailable),
        (529, None, Unavailable),  # overloaded_error
        (401, None, AuthenticationFailed),
        (403, None, AuthenticationFailed),
        (404, None, ModelNotFound),
        (400, "context", ContextLengthExceeded),  # "prompt is too long: …"
        (413, None, ContextLengthExceeded),  # request_too_large
        (400, None, InvalidRequest),
    ],
)
async def test_http_status_maps_to_its_class(
    wire: WireServer, provider: AnthropicProvider, status: int, kind: str | None, expected: type
) -> None:
    wire.enqueue(Script(status=status, error_kind=kind))
    events, error = await collect(provider.stream(request()))
    assert events == []
    assert type(error) is expected
    assert error.status_code == status
    assert error.model == f"anthropic:{MODEL}"
    assert isinstance(error.__cause__, Exception)


async def test_rate_limit_carries_retry_after(wire: WireServer, provider: AnthropicProvider) -> None:
    wire.enqueue(Script(status=429, headers={"Retry-After": "11"}))
    _, error = await collect(provider.stream(request()))
    assert isinstance(error, RateLimited) and error.retry_after == 11.0


@pytest.mark.parametrize("status", [503, 529, 429])
async def test_sdk_does_not_retry(wire: WireServer, provider: AnthropicProvider, status: int) -> None:
    wire.enqueue(Script(status=status, headers={"Retry-After": "0"}))
    _, error = await collect(provider.stream(request()))
    assert error is not None
    assert len(wire.chat_requests) == 1


async def test_unreachable_server_is_connection_failed(sdk_env: None) -> None:
    provider = AnthropicProvider(make_settings(), api_key=SecretStr(KEY), base_url=f"http://127.0.0.1:{free_port()}")
    events, error = await collect(provider.stream(request()))
    assert events == [] and type(error) is ConnectionFailed
    await provider.aclose()


async def test_stall_mid_stream_times_out_as_interrupted(wire: WireServer) -> None:
    settings = make_settings(first_token_timeout=0.2, stall_timeout=0.2)
    provider = AnthropicProvider(settings, api_key=SecretStr(KEY), base_url=wire.url)
    wire.enqueue(Script(tokens=TOKENS, stall=3.0, stall_after=2))
    _, error = await collect(provider.stream(request()))
    # the SDK leaks a raw httpx2.ReadTimeout here; the boundary maps it
    assert isinstance(error, Interrupted) and error.partial_text == "Hello"
    assert type(error.cause) is Timeout
    await provider.aclose()


# -- failures after text: Interrupted with exactly the text delivered -----------


@pytest.mark.parametrize(
    ("script", "cause"),
    [
        (Script(tokens=TOKENS, error_after=3), Unavailable),  # event: error, overloaded_error
        (Script(tokens=TOKENS, error_after=3, error_kind="rate_limit_error"), RateLimited),
        (Script(tokens=TOKENS, cut_after=3), ConnectionFailed),  # raw httpx2 RemoteProtocolError
        (Script(tokens=TOKENS[:3], end_marker=False), type(None)),  # no message_stop
    ],
    ids=["overloaded-event", "rate-limit-event", "cut", "no-message-stop"],
)
async def test_failure_after_n_tokens_is_interrupted_with_exact_text(
    wire: WireServer, provider: AnthropicProvider, script: Script, cause: type
) -> None:
    wire.enqueue(script)
    events, error = await collect(provider.stream(request()))
    assert isinstance(error, Interrupted)
    assert error.partial_text == "Hel" + "lo" + "," == text_of(events)
    assert type(error.cause) is cause


async def test_overloaded_event_before_text_is_unavailable(wire: WireServer, provider: AnthropicProvider) -> None:
    wire.enqueue(Script(tokens=TOKENS, error_after=0))
    events, error = await collect(provider.stream(request()))
    assert events == [] and type(error) is Unavailable


async def test_a_cut_after_the_end_marker_still_finishes(wire: WireServer, provider: AnthropicProvider) -> None:
    wire.enqueue(Script(tokens=TOKENS[:2], cut_at_end=True, usage=(5, 2)))
    events, error = await collect(provider.stream(request()))
    assert error is None
    assert merged(events) == [TextDelta("Hello"), Usage(5, 2), Finish("stop")]


@malformed_cases
async def test_malformed_lines_are_skipped_and_the_same_model_finishes(
    wire: WireServer, provider: AnthropicProvider, script: Script, skipped: int, caplog: pytest.LogCaptureFixture
) -> None:
    await check_malformed_lines_skipped(wire, lambda text: provider.stream(request(text)), script, skipped, caplog,
                                        f"anthropic:{MODEL}", KEY)


async def test_a_fast_upstream_is_read_in_paced_batches(wire: WireServer, provider: AnthropicProvider) -> None:
    await check_fast_upstream_read_in_batches(wire, lambda: provider.stream(request()))


async def test_chunks_already_waiting_arrive_as_fewer_text_events(wire: WireServer, provider: AnthropicProvider) -> None:
    await check_waiting_chunks_batched(wire, lambda: provider.stream(request()))


async def test_answers_reuse_one_upstream_connection(kept_alive: WireServer, closing) -> None:
    provider = closing(AnthropicProvider(make_settings(), api_key=SecretStr(KEY), base_url=kept_alive.url))
    await check_connection_reused(kept_alive, lambda text: provider.stream(request(text)))


async def test_a_fast_burst_is_not_held_back_by_read_pacing(wire: WireServer, closing) -> None:
    pacer = ReadPacer()
    provider = closing(AnthropicProvider(make_settings(), api_key=SecretStr(KEY), base_url=wire.url, reads=pacer))
    await check_fast_burst_not_held_back(wire, lambda: provider.stream(request()), pacer)


async def test_an_answer_waiting_for_its_first_token_goes_first(wire: WireServer, closing) -> None:
    pacer = ReadPacer()
    provider = closing(AnthropicProvider(make_settings(), api_key=SecretStr(KEY), base_url=wire.url, reads=pacer))
    await check_opening_answer_goes_first(wire, lambda: provider.stream(request()), pacer)


async def test_over_https_a_fast_answer_arrives_whole_and_on_time(tls_wire: WireServer, closing) -> None:
    provider = closing(AnthropicProvider(make_settings(), api_key=SecretStr(KEY), base_url=tls_wire.url))
    await check_https_stream_keeps_pace(tls_wire, lambda: provider.stream(request()))


async def test_closing_early_disconnects_within_a_second(wire: WireServer, provider: AnthropicProvider) -> None:
    wire.enqueue(Script(tokens=[f"t{i} " for i in range(200)], delay=0.02))
    stream = provider.stream(request())
    assert (await first_text(stream, 9)).startswith("t0 t1 t2 ")
    closed_at = time.monotonic()
    await stream.aclose()
    record = await wire.wait_disconnect(1.0)
    assert record is not None, "the server never saw the client go away"
    assert record.disconnected - closed_at < 1.0
    assert record.finished is None


# -- configuration, laziness, availability -----------------------------------------


async def test_build_is_lazy_and_makes_no_request(wire: WireServer) -> None:
    settings = make_settings(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=wire.url, local_model_enabled=False)
    provider = build_providers(settings, Catalogue(models=()))["anthropic"]
    assert provider.availability(MODEL).ready
    assert provider._clients.client is None
    assert wire.requests == []
    events, error = await collect(provider.stream(request("via base url")))
    assert error is None and text_of(events) == "Echo: via base url"
    assert provider._clients.client is not None
    await provider.aclose()


async def test_missing_key_is_a_state_and_not_configured_at_request_time(wire: WireServer) -> None:
    provider = AnthropicProvider(make_settings(), api_key=None, base_url=wire.url)
    availability = provider.availability(MODEL)
    assert availability.state is State.MISSING_KEY
    assert availability.detail == "set ANTHROPIC_API_KEY"
    _, error = await collect(provider.stream(request()))
    assert isinstance(error, NotConfigured) and "ANTHROPIC_API_KEY" in str(error)
    assert wire.requests == []


async def test_key_is_sent(wire: WireServer, provider: AnthropicProvider) -> None:
    await collect(provider.stream(request()))
    (sent,) = wire.chat_requests
    assert KEY in (sent.headers.get("x-api-key", "") + sent.headers.get("authorization", ""))
