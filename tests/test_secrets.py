"""A planted fake key never shows up in logs, error messages, tracebacks or reprs.

The key really is used (the wire server records it), so its absence everywhere
else is meaningful. Logging is captured at DEBUG from every logger, including
the SDKs' and httpx's own.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from chat.catalogue import Catalogue, ProviderSpec
from chat.config import Settings
from chat.errors import AuthenticationFailed, ConnectionFailed, Interrupted, ProviderError
from chat.messages import ChatRequest, Message
from chat.providers import build_providers
from chat.providers.anthropic import AnthropicProvider
from chat.providers.errors_map import clean
from chat.providers.openai import OpenAIProvider
from tests.wire import Script, WireServer
from tests.wire.fixtures import sdk_env, collect, free_port, make_settings, wire  # noqa: F401

PLANTED = "sk-test-PLANTED-SECRET-123"
REQUEST = ChatRequest("some-model", (Message("system", "s"), Message("user", "hello")))


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "anthropic", "httpx", "httpx2", "httpcore", "httpcore2", "ollama", "chat"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


def everything_about(error: BaseException) -> str:
    """Every way an error gets printed: str, repr, describe, the full chained traceback."""
    parts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    if isinstance(error, ProviderError):
        parts.append(error.describe())
    if isinstance(error, Interrupted) and error.cause is not None:
        parts += [str(error.cause), repr(error.cause), error.partial_text]
    return "\n".join(parts)


def providers_with_planted_key(wire: WireServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.setenv("GATEWAY_KEY", PLANTED)
    settings = make_settings(
        OPENAI_API_KEY=PLANTED, OPENAI_BASE_URL=wire.openai_base_url,
        ANTHROPIC_API_KEY=PLANTED, ANTHROPIC_BASE_URL=wire.url,
        local_model_enabled=False, ollama_enabled=False,
    )
    catalogue = Catalogue(models=(), providers=(ProviderSpec("gateway", wire.openai_base_url, "GATEWAY_KEY"),))
    return build_providers(settings, catalogue)  # type: ignore[return-value]


def test_settings_never_print_the_key(sdk_env: None) -> None:
    settings = make_settings(OPENAI_API_KEY=PLANTED, ANTHROPIC_API_KEY=PLANTED)
    assert isinstance(settings.openai_api_key, SecretStr)
    for text in (str(settings), repr(settings), settings.model_dump_json(), str(settings.model_dump())):
        assert PLANTED not in text


def test_settings_from_the_environment_never_print_the_key(monkeypatch: pytest.MonkeyPatch, sdk_env: None) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.openai_api_key is not None and settings.openai_api_key.get_secret_value() == PLANTED
    assert PLANTED not in repr(settings) and PLANTED not in str(settings)


@pytest.mark.parametrize("name", ["openai", "anthropic", "gateway"])
async def test_auth_failure_hides_the_key(
    wire: WireServer, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture, name: str
) -> None:
    providers = providers_with_planted_key(wire, monkeypatch)
    provider = providers[name]
    wire.enqueue(Script(status=401))
    _, error = await collect(provider.stream(REQUEST))  # type: ignore[attr-defined]
    assert isinstance(error, AuthenticationFailed)
    (sent,) = wire.chat_requests
    assert PLANTED in str(sent.headers)  # the key was really used...
    assert PLANTED not in everything_about(error)  # ...and shows nowhere else
    assert PLANTED not in logs.text
    assert all(PLANTED not in repr(p) for p in providers.values())
    await provider.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["openai", "anthropic"])
async def test_a_server_that_echoes_the_key_is_redacted(
    wire: WireServer, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture, name: str
) -> None:
    provider = providers_with_planted_key(wire, monkeypatch)[name]
    wire.enqueue(Script(status=401, error=f"Incorrect API key provided: {PLANTED}."))
    _, error = await collect(provider.stream(REQUEST))  # type: ignore[attr-defined]
    assert isinstance(error, AuthenticationFailed)
    # Our error is clean; the SDK's own exception (kept as __cause__) quotes the
    # server verbatim, which is why we never log the raw cause's message.
    for text in (str(error), repr(error), error.describe(), error.message):
        assert PLANTED not in text
    assert "[redacted]" in error.message
    await provider.aclose()  # type: ignore[attr-defined]


async def test_interruption_hides_the_key(
    wire: WireServer, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    provider = providers_with_planted_key(wire, monkeypatch)["openai"]
    wire.enqueue(Script(tokens=["a", "b", "c"], cut_after=2))
    _, error = await collect(provider.stream(REQUEST))  # type: ignore[attr-defined]
    assert isinstance(error, Interrupted) and error.partial_text == "ab"
    assert PLANTED not in everything_about(error)
    assert PLANTED not in logs.text
    await provider.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", [OpenAIProvider, AnthropicProvider])
async def test_connection_failure_hides_the_key(sdk_env: None, logs: pytest.LogCaptureFixture, cls: type) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    provider = cls(make_settings(), api_key=SecretStr(PLANTED), base_url=url)
    _, error = await collect(provider.stream(REQUEST))
    assert isinstance(error, ConnectionFailed)
    assert PLANTED not in everything_about(error)
    assert PLANTED not in logs.text
    assert PLANTED not in repr(provider)
    await provider.aclose()


def test_credentials_in_a_base_url_stay_out_of_messages(sdk_env: None) -> None:
    from chat.providers.errors_map import public_url

    assert public_url(f"http://user:{PLANTED}@gateway.local/v1") == "http://gateway.local/v1"


def test_clean_masks_key_shaped_text() -> None:
    assert PLANTED not in clean(f"bad key {PLANTED}")
    assert "sk-ant-" not in clean("key sk-ant-api03-abcdefghijk was rejected").replace("sk-[redacted]", "")
    assert clean("x" * 1000).endswith("…") and len(clean("x" * 1000)) <= 300
