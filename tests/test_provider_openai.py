"""The OpenAI adapter against a local server speaking OpenAI's SSE wire format.

The real ``openai`` SDK parses real bytes; nothing in it is patched.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from chat.catalogue import Catalogue, ProviderSpec
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
from chat.providers.errors_map import classify, retry_after
from chat.providers.body import ReadPacer
from chat.providers.openai import OpenAIProvider
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

KEY = "sk-test-openai-key"
TOKENS = ["Hel", "lo", ",", " wor", "ld", "!"]


def request(text: str = "hi", **kw: object) -> ChatRequest:
    return ChatRequest("gpt-4o-mini", (Message("system", "Be brief."), Message("user", text)), **kw)  # type: ignore[arg-type]


@pytest.fixture
async def provider(wire: WireServer) -> AsyncIterator[OpenAIProvider]:
    adapter = OpenAIProvider(make_settings(), api_key=SecretStr(KEY), base_url=wire.openai_base_url)
    yield adapter
    await adapter.aclose()


# -- streaming -----------------------------------------------------------------


async def test_text_streams_in_order_then_usage_then_finish(wire: WireServer, provider: OpenAIProvider) -> None:
    wire.enqueue(Script(tokens=TOKENS, usage=(21, 6)))
    events, error = await collect(provider.stream(request()))
    assert error is None
    assert merged(events) == [TextDelta("".join(TOKENS)), Usage(21, 6), Finish("stop")]


async def test_request_carries_messages_options_and_key(wire: WireServer, provider: OpenAIProvider) -> None:
    await collect(provider.stream(request("hello", temperature=0.3, max_tokens=50)))
    (sent,) = wire.chat_requests
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["temperature"] == 0.3
    assert sent.body["max_tokens"] == 50  # a non-OpenAI base URL gets the widely known name
    assert sent.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("model", ["gpt-5", "gpt-5-mini", "o3-mini", "o1"])
async def test_reasoning_models_get_no_temperature(wire: WireServer, provider: OpenAIProvider, model: str) -> None:
    # They answer 400 "unsupported_value" to any temperature but their default.
    await collect(provider.stream(ChatRequest(model, (Message("user", "hi"),), temperature=0.7)))
    (sent,) = wire.chat_requests
    assert sent.body["model"] == model and "temperature" not in sent.body


async def test_finish_reason_is_passed_on(wire: WireServer, provider: OpenAIProvider) -> None:
    wire.enqueue(Script(tokens=["a"], finish_reason="length"))
    events, error = await collect(provider.stream(request()))
    assert error is None and events[-1] == Finish("length")


async def test_content_filter_without_text_is_content_filtered(wire: WireServer, provider: OpenAIProvider) -> None:
    wire.enqueue(Script(tokens=[], finish_reason="content_filter"))
    _, error = await collect(provider.stream(request()))
    assert isinstance(error, ContentFiltered)


# -- HTTP errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (429, None, RateLimited),
        (500, None, Unavailable),
        (503, None, Unavailable),
        (401, None, AuthenticationFailed),
        (403, None, AuthenticationFailed),
        (404, None, ModelNotFound),
        (400, "context", ContextLengthExceeded),
        (400, "content_filter", ContentFiltered),
        (400, None, InvalidRequest),
        (422, None, InvalidRequest),
    ],
)
async def test_http_status_maps_to_its_class(
    wire: WireServer, provider: OpenAIProvider, status: int, kind: str | None, expected: type
) -> None:
    wire.enqueue(Script(status=status, error_kind=kind))
    events, error = await collect(provider.stream(request()))
    assert events == []
    assert type(error) is expected
    assert error.status_code == status
    assert error.model == "openai:gpt-4o-mini"
    assert isinstance(error.__cause__, Exception)  # raise ... from exc


async def test_rate_limit_carries_retry_after(wire: WireServer, provider: OpenAIProvider) -> None:
    wire.enqueue(Script(status=429, headers={"Retry-After": "7"}))
    _, error = await collect(provider.stream(request()))
    assert isinstance(error, RateLimited) and error.retry_after == 7.0


async def test_a_500_that_mentions_policy_is_an_outage(wire: WireServer, provider: OpenAIProvider) -> None:
    wire.enqueue(Script(status=500, error="content policy service is down"))
    _, error = await collect(provider.stream(request()))
    assert type(error) is Unavailable


@pytest.mark.parametrize("status", [503, 429, 500])
async def test_sdk_does_not_retry(wire: WireServer, provider: OpenAIProvider, status: int) -> None:
    wire.enqueue(Script(status=status, headers={"Retry-After": "0"}))
    _, error = await collect(provider.stream(request()))
    assert error is not None
    assert len(wire.chat_requests) == 1


async def test_unreachable_server_is_connection_failed(sdk_env: None) -> None:
    provider = OpenAIProvider(make_settings(), api_key=SecretStr(KEY), base_url=f"http://127.0.0.1:{free_port()}/v1")
    events, error = await collect(provider.stream(request()))
    assert events == [] and type(error) is ConnectionFailed


async def test_silent_server_times_out(wire: WireServer) -> None:
    settings = make_settings(first_token_timeout=0.2, stall_timeout=0.2)
    provider = OpenAIProvider(settings, api_key=SecretStr(KEY), base_url=wire.openai_base_url)
    wire.enqueue(Script(tokens=["a"], stall=3.0))
    _, error = await collect(provider.stream(request()))
    assert type(error) is Timeout


# -- failures after text: Interrupted with exactly the text delivered -----------


@pytest.mark.parametrize(
    ("script", "cause"),
    [
        (Script(tokens=TOKENS, error_after=3), Unavailable),  # an error chunk in the stream
        (Script(tokens=TOKENS, cut_after=3), ConnectionFailed),  # socket closed mid-body
        (Script(tokens=TOKENS[:3], end_marker=False), type(None)),  # no finish_reason, no [DONE]
    ],
    ids=["error-chunk", "cut", "no-end-marker"],
)
async def test_failure_after_n_tokens_is_interrupted_with_exact_text(
    wire: WireServer, provider: OpenAIProvider, script: Script, cause: type
) -> None:
    wire.enqueue(script)
    events, error = await collect(provider.stream(request()))
    assert isinstance(error, Interrupted)
    assert error.partial_text == "Hel" + "lo" + "," == text_of(events)
    assert type(error.cause) is cause
    assert error.model == "openai:gpt-4o-mini"


async def test_a_cut_after_finish_reason_still_finishes(wire: WireServer, provider: OpenAIProvider) -> None:
    wire.enqueue(Script(tokens=TOKENS[:2], cut_at_end=True, usage=(5, 2)))
    events, error = await collect(provider.stream(request()))
    assert error is None
    assert merged(events) == [TextDelta("Hello"), Usage(5, 2), Finish("stop")]


async def test_error_chunk_before_any_text_is_not_interrupted(wire: WireServer, provider: OpenAIProvider) -> None:
    wire.enqueue(Script(tokens=TOKENS, error_after=0))
    events, error = await collect(provider.stream(request()))
    assert events == [] and type(error) is Unavailable


@malformed_cases
async def test_malformed_lines_are_skipped_and_the_same_model_finishes(
    wire: WireServer, provider: OpenAIProvider, script: Script, skipped: int, caplog: pytest.LogCaptureFixture
) -> None:
    await check_malformed_lines_skipped(wire, lambda text: provider.stream(request(text)), script, skipped, caplog,
                                        "openai:gpt-4o-mini", KEY)


async def test_a_fast_upstream_is_read_in_paced_batches(wire: WireServer, provider: OpenAIProvider) -> None:
    await check_fast_upstream_read_in_batches(wire, lambda: provider.stream(request()))


async def test_chunks_already_waiting_arrive_as_fewer_text_events(wire: WireServer, provider: OpenAIProvider) -> None:
    await check_waiting_chunks_batched(wire, lambda: provider.stream(request()))


async def test_answers_reuse_one_upstream_connection(kept_alive: WireServer, closing) -> None:
    provider = closing(OpenAIProvider(make_settings(), api_key=SecretStr(KEY), base_url=kept_alive.openai_base_url))
    await check_connection_reused(kept_alive, lambda text: provider.stream(request(text)))


async def test_a_fast_burst_is_not_held_back_by_read_pacing(wire: WireServer, closing) -> None:
    pacer = ReadPacer()
    provider = closing(OpenAIProvider(make_settings(), api_key=SecretStr(KEY), base_url=wire.openai_base_url,
                                      reads=pacer))
    await check_fast_burst_not_held_back(wire, lambda: provider.stream(request()), pacer)


async def test_an_answer_waiting_for_its_first_token_goes_first(wire: WireServer, closing) -> None:
    pacer = ReadPacer()
    provider = closing(OpenAIProvider(make_settings(), api_key=SecretStr(KEY), base_url=wire.openai_base_url,
                                      reads=pacer))
    await check_opening_answer_goes_first(wire, lambda: provider.stream(request()), pacer)


async def test_over_https_a_fast_answer_arrives_whole_and_on_time(tls_wire: WireServer, closing) -> None:
    provider = closing(OpenAIProvider(make_settings(), api_key=SecretStr(KEY), base_url=tls_wire.openai_base_url))
    await check_https_stream_keeps_pace(tls_wire, lambda: provider.stream(request()))


async def test_closing_early_disconnects_within_a_second(wire: WireServer, provider: OpenAIProvider) -> None:
    wire.enqueue(Script(tokens=[f"t{i} " for i in range(200)], delay=0.02))
    stream = provider.stream(request())
    assert (await first_text(stream, 9)).startswith("t0 t1 t2 ")
    closed_at = time.monotonic()
    await stream.aclose()
    record = await wire.wait_disconnect(1.0)
    assert record is not None, "the server never saw the client go away"
    assert record.disconnected - closed_at < 1.0
    assert record.finished is None  # it was still streaming


# -- configuration, laziness, availability -----------------------------------------


async def test_build_is_lazy_and_makes_no_request(wire: WireServer) -> None:
    settings = make_settings(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=wire.openai_base_url, local_model_enabled=False)
    providers = build_providers(settings, Catalogue(models=()))
    openai_provider = providers["openai"]
    assert openai_provider.availability("gpt-4o-mini").ready
    assert openai_provider._clients.client is None  # no SDK client yet
    assert wire.requests == []
    await collect(openai_provider.stream(request()))
    assert openai_provider._clients.client is not None
    assert len(wire.chat_requests) == 1
    await openai_provider.aclose()


async def test_missing_key_is_a_state_and_not_configured_at_request_time(wire: WireServer) -> None:
    provider = OpenAIProvider(make_settings(), api_key=None, base_url=wire.openai_base_url)
    availability = provider.availability("gpt-4o-mini")
    assert availability.state is State.MISSING_KEY
    assert "OPENAI_API_KEY" in availability.detail
    _, error = await collect(provider.stream(request()))
    assert isinstance(error, NotConfigured) and "OPENAI_API_KEY" in str(error)
    assert wire.requests == []


async def test_openai_compatible_providers_from_the_catalogue(
    wire: WireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-must-not-travel")
    monkeypatch.setenv("GATEWAY_KEY", "gw-secret-1")
    catalogue = Catalogue(
        models=(),
        providers=(
            ProviderSpec("vllm", wire.openai_base_url),  # no key needed
            ProviderSpec("gateway", wire.openai_base_url, "GATEWAY_KEY"),
            ProviderSpec("groq", wire.openai_base_url, "GROQ_API_KEY"),  # not set
        ),
    )
    providers = build_providers(make_settings(local_model_enabled=False), catalogue)
    assert providers["vllm"].availability("m").ready
    assert providers["gateway"].availability("m").ready
    groq = providers["groq"].availability("m")
    assert groq.state is State.MISSING_KEY and groq.detail == "set GROQ_API_KEY"

    events, error = await collect(providers["vllm"].stream(ChatRequest("meta/llama", (Message("user", "a b"),))))
    assert error is None and text_of(events) == "Echo: a b"
    await collect(providers["gateway"].stream(ChatRequest("m", (Message("user", "x"),))))
    vllm_sent, gateway_sent = wire.chat_requests
    assert vllm_sent.body["model"] == "meta/llama"
    assert "sk-openai" not in vllm_sent.headers["authorization"]  # the user's OpenAI key stays home
    assert gateway_sent.headers["authorization"] == "Bearer gw-secret-1"
    _, error = await collect(providers["groq"].stream(ChatRequest("m", (Message("user", "x"),))))
    assert isinstance(error, NotConfigured)
    for provider in providers.values():
        await provider.aclose()


async def test_openai_base_url_moves_the_openai_provider(wire: WireServer) -> None:
    settings = make_settings(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=wire.openai_base_url, local_model_enabled=False)
    provider = build_providers(settings, Catalogue(models=()))["openai"]
    events, error = await collect(provider.stream(request("over there")))
    assert error is None and text_of(events) == "Echo: over there"
    await provider.aclose()


async def test_magic_words_script_the_server_from_outside(wire: WireServer, provider: OpenAIProvider) -> None:
    _, error = await collect(provider.stream(request("one two three four [[cut:2]]")))
    assert isinstance(error, Interrupted) and error.partial_text == "Echo: one"
    _, error = await collect(provider.stream(request("[[fail:429]] [[retry-after:3]]")))
    assert isinstance(error, RateLimited) and error.retry_after == 3.0


# -- the shared mapping rules ---------------------------------------------------------


def test_classify_by_status_first_then_text_for_400_and_422() -> None:
    assert classify(500, "violates our content policy") is Unavailable
    assert classify(429, "context length") is RateLimited
    assert classify(529) is Unavailable
    # An in-stream rate limit that mentions tokens is not a context problem.
    assert classify(None, "Rate limit reached for requests. Too many tokens, please retry") is RateLimited
    assert classify(None, "This model's maximum context length is 8192 tokens") is ContextLengthExceeded
    assert classify(413) is ContextLengthExceeded
    assert classify(400, "prompt is too long: 210000 tokens") is ContextLengthExceeded
    assert classify(422, "flagged by content_filter") is ContentFiltered
    assert classify(400, "bad temperature") is InvalidRequest
    assert classify(None, "overloaded_error Overloaded") is Unavailable
    assert classify(None, "rate_limit_error") is RateLimited


def test_retry_after_parses_seconds_dates_and_milliseconds() -> None:
    assert retry_after({"retry-after": "12"}) == 12.0
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= (retry_after({"retry-after": later}) or 0) <= 31


def test_anything_unexpected_at_an_adapter_boundary_is_still_a_provider_error(caplog) -> None:
    # e.g. an SDK event of a shape it did not expect: AttributeError deep inside.
    from chat.providers.errors_map import unexpected_error

    error = unexpected_error(AttributeError("'NoneType' object has no attribute 'type'"), where="http://x", model="m:x")
    assert isinstance(error, ConnectionFailed) and error.fallback
    assert "unexpected response (AttributeError)" in error.describe()
    assert "AttributeError" in caplog.text  # logged with its traceback for the developers


async def test_proxy_variables_are_honoured(wire: WireServer, monkeypatch: pytest.MonkeyPatch, closing) -> None:
    """With HTTP_PROXY set the SDK's own transport serves (aiohttp's would not
    read the proxy settings): requests go through the proxy, hosts in NO_PROXY
    are reached directly, and both stream their answers, paced as usual."""
    monkeypatch.setenv("HTTP_PROXY", wire.url)
    monkeypatch.setenv("NO_PROXY", "localhost")
    provider = closing(OpenAIProvider(make_settings(), api_key=SecretStr(KEY), base_url="http://upstream.test/v1"))
    events, error = await collect(provider.stream(request("via the proxy")))
    assert error is None and text_of(events) == "Echo: via the proxy"
    assert wire.chat_requests[-1].proxied and wire.chat_requests[-1].path == "/v1/chat/completions"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    provider = closing(OpenAIProvider(make_settings(), api_key=SecretStr(KEY), base_url=wire.openai_base_url))
    await check_fast_upstream_read_in_batches(wire, lambda: provider.stream(request()))
    assert not wire.chat_requests[-1].proxied
