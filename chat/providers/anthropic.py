"""Anthropic Messages API.

Uses ``messages.create(stream=True)`` inside ``async with`` (the raw events,
without the SDK's message accumulation, which costs CPU per chunk). Events:
``message_start`` (input tokens), ``content_block_delta`` / ``text_delta``,
``message_delta`` (stop reason, cumulative output tokens), ``message_stop``
(the end marker: the SDK raises nothing when it never comes).

Errors that surprise (checked against anthropic 2.12): an ``event: error`` in
the stream is a plain ``APIStatusError`` with ``status_code == 200`` and
``.type == "overloaded_error"``; a cut or timed-out connection mid-stream is a
raw ``httpx2`` exception; 529 is ``OverloadedError``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
from pydantic import SecretStr

from ..catalogue import ModelSpec
from ..config import Settings
from ..errors import (
    ConnectionFailed,
    ContentFiltered,
    InvalidRequest,
    NotConfigured,
    ProviderError,
    Timeout,
)
from ..events import Event, Finish, TextDelta, Usage
from ..messages import ChatRequest
from .base import Availability, State, guard_stream
from .errors_map import clean, make_error, public_url, transport_error, unexpected_error

__all__ = ["AnthropicProvider", "DEFAULT_BASE_URL"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_KEY_ENV = "ANTHROPIC_API_KEY"

# Anthropic's stop reasons in the words the other providers use.
_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter"}


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, settings: Settings, *, api_key: SecretStr | None = None, base_url: str | None = None) -> None:
        self._settings = settings
        self._api_key = api_key
        self._base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._client: anthropic.AsyncAnthropic | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"AnthropicProvider(base_url={self._base_url!r})"

    def availability(self, model: str) -> Availability:
        if self._api_key is None:
            return Availability(State.MISSING_KEY, f"set {API_KEY_ENV}")
        return Availability.ok()

    async def discover(self) -> list[ModelSpec]:
        return []

    async def check(self) -> str:
        """A cheap live authenticated call (one page of models), for /health;
        raises ``ProviderError``."""
        with self._errors(self.name):
            await self._get_client().models.list(limit=1)
        return "key accepted"

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        return guard_stream(self._raw(request), f"{self.name}:{request.model}")

    def _get_client(self) -> anthropic.AsyncAnthropic:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # Pooled connections belong to the event loop that opened them: a
            # caller on another loop (a test, a start-up refresh) gets its own client.
            if self._api_key is None:
                # The SDK would only fail later, with a TypeError.
                raise NotConfigured(f"set {API_KEY_ENV}")
            s = self._settings
            self._client = anthropic.AsyncAnthropic(
                api_key=self._api_key.get_secret_value(),
                base_url=self._base_url,
                max_retries=0,
                # The router enforces first-token and stall timeouts; the read
                # timeout is only a backstop that never fires before them.
                timeout=anthropic.Timeout(s.first_token_timeout + s.stall_timeout, connect=s.connect_timeout),
            )
            self._client_loop = loop
        return self._client

    async def _raw(self, request: ChatRequest) -> AsyncIterator[Event]:
        model_id = f"{self.name}:{request.model}"
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        params: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages if m.role != "system"],
            "max_tokens": request.max_tokens or self._settings.max_output_tokens,
            "stream": True,
        }
        if system:
            params["system"] = system
        # No temperature: anthropic 2.12 dropped the parameter from messages.create
        # (current models reject it), so request.temperature is not sent.
        input_tokens: int | None = None
        output_tokens: int | None = None
        stop_reason: str | None = None
        stopped = False
        streamed = False
        with self._errors(model_id):
            stream = await self._get_client().messages.create(**params)
            async with stream:
                try:
                    async for event in stream:
                        if event.type == "content_block_delta":
                            if event.delta.type == "text_delta" and event.delta.text:
                                streamed = True
                                yield TextDelta(event.delta.text)
                        elif event.type == "message_start":
                            input_tokens = event.message.usage.input_tokens
                            output_tokens = event.message.usage.output_tokens
                        elif event.type == "message_delta":
                            stop_reason = event.delta.stop_reason or stop_reason
                            # Output tokens are cumulative; input tokens may be revised.
                            output_tokens = event.usage.output_tokens
                            if getattr(event.usage, "input_tokens", None) is not None:
                                input_tokens = event.usage.input_tokens
                        elif event.type == "message_stop":
                            stopped = True
                except Exception:
                    # After message_stop the answer is complete: a connection
                    # dropped before the body's last byte changes nothing.
                    if not stopped:
                        raise
        if not stopped:
            return  # no end marker: guard_stream reports the interruption
        reason = _STOP_REASONS.get(stop_reason or "end_turn", stop_reason or "stop")
        if reason == "content_filter" and not streamed:
            raise ContentFiltered("the model declined to answer", model=model_id)
        yield Usage(input_tokens, output_tokens)
        yield Finish(reason)

    @contextlib.contextmanager
    def _errors(self, model_id: str) -> Iterator[None]:
        """The one place SDK and transport errors become taxonomy errors."""
        secret = self._api_key.get_secret_value() if self._api_key is not None else None
        where = public_url(self._base_url)
        try:
            yield
        except ProviderError:
            raise
        except anthropic.APIStatusError as exc:
            # An in-stream `event: error` arrives with the stream's status (200):
            # make_error then classifies by the error type and text.
            raise make_error(
                exc.status_code, _detail(exc), hint=exc.type or "",
                headers=exc.response.headers, model=model_id, secret=secret,
            ) from exc
        except anthropic.APITimeoutError as exc:
            raise Timeout(f"no response in time ({where})", model=model_id) from exc
        except anthropic.APIConnectionError as exc:
            error = transport_error(exc.__cause__ or exc, where=where, model=model_id)
            raise error or ConnectionFailed(where, model=model_id) from exc
        except anthropic.AnthropicError as exc:
            raise InvalidRequest(clean(exc, secret), model=model_id) from exc
        except Exception as exc:
            error = transport_error(exc, where=where, model=model_id)
            raise (error or unexpected_error(exc, where=where, model=model_id)) from exc


def _detail(exc: anthropic.APIStatusError) -> str:
    return exc.api_message or exc.message
