"""Pytest fixtures shared by the adapter tests (import them into a test module)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chat.config import Settings

from tests.servers import free_port  # noqa: F401 - the adapter tests import it from here

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
