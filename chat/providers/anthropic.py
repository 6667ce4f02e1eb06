"""Anthropic Messages API.

The SDK sends ``messages.create(stream=True)`` (through
``with_streaming_response``) and raises status errors; the body's events are
decoded by ``wire.AnthropicDecoder``: ``message_start`` (input tokens),
``content_block_delta`` / ``text_delta``, ``message_delta`` (stop reason,
cumulative output tokens), ``message_stop`` (the end marker: a stream without
it is an interruption).

Errors that surprise (checked against anthropic 2.12): an ``event: error`` in
the stream carries the error type (``overloaded_error``, ``rate_limit_error``)
and is classified by it; a cut or timed-out connection mid-stream is a raw
``httpx2`` exception; 529 is ``OverloadedError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
from pydantic import SecretStr

from ..catalogue import ModelSpec
from ..config import Settings
from ..errors import (
    ConnectionFailed,
    InvalidRequest,
    NotConfigured,
    ProviderError,
    Timeout,
)
from ..events import Event
from ..messages import ChatRequest
from .base import Availability, LoopClient, State, guard_stream
from . import aio
from .body import ReadPacer, ending, read_text
from .errors_map import clean, make_error, public_url, transport_error, unexpected_error
from .wire import AnthropicDecoder

__all__ = ["AnthropicProvider", "DEFAULT_BASE_URL"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_KEY_ENV = "ANTHROPIC_API_KEY"


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, settings: Settings, *, api_key: SecretStr | None = None, base_url: str | None = None,
                 reads: ReadPacer | None = None) -> None:
        self._settings = settings
        self._reads = reads or ReadPacer()  # shared by the process's adapters (build_providers)
        self._api_key = api_key
        self._base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._clients = LoopClient(self._new_client, anthropic.AsyncAnthropic.close)

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
            await (await self._clients.get()).models.list(limit=1)
        return "key accepted"

    async def aclose(self) -> None:
        await self._clients.aclose()

    def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        return guard_stream(self._raw(request), f"{self.name}:{request.model}")

    def _new_client(self) -> anthropic.AsyncAnthropic:
        if self._api_key is None:
            # The SDK would only fail later, with a TypeError.
            raise NotConfigured(f"set {API_KEY_ENV}")
        s = self._settings
        return anthropic.AsyncAnthropic(
            api_key=self._api_key.get_secret_value(),
            base_url=self._base_url,
            max_retries=0,
            http_client=aio.client(anthropic.DefaultAsyncHttpxClient),  # on aiohttp (``aio`` says why)
            # The router enforces first-token and stall timeouts; the read
            # timeout is only a backstop that never fires before them.
            timeout=anthropic.Timeout(s.first_token_timeout + s.stall_timeout, connect=s.connect_timeout),
        )

    async def _raw(self, request: ChatRequest) -> AsyncIterator[Event]:
        model_id = f"{self.name}:{request.model}"
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        body: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages if m.role != "system"],
        }
        if system:
            body["system"] = system
        # No temperature: anthropic 2.12 dropped the parameter from messages.create
        # (current models reject it), so request.temperature is not sent.
        decoder = AnthropicDecoder(model_id, self._secret())
        with self._errors(model_id), self._reads.opening() as opening:
            client = await self._clients.get()
            # The body is already in the wire's shape: given as extra_body it is
            # sent as it is, skipping the SDK's walk of its typed parameters.
            async with client.messages.with_streaming_response.create(
                model=request.model, messages=[], stream=True, extra_body=body,
                max_tokens=request.max_tokens or self._settings.max_output_tokens,
            ) as response:
                reading = read_text(response.iter_bytes(), decoder, self._reads, response.http_response.extensions, opening)
                async with contextlib.aclosing(reading) as texts:
                    async for delta in texts:
                        yield delta
        for event in ending(decoder, model_id, "the model declined to answer"):  # usage and Finish (nothing if the end marker never came)
            yield event

    def _secret(self) -> str | None:
        return self._api_key.get_secret_value() if self._api_key is not None else None

    @contextlib.contextmanager
    def _errors(self, model_id: str) -> Iterator[None]:
        """The one place SDK and transport errors become taxonomy errors."""
        secret = self._secret()
        where = public_url(self._base_url)
        try:
            yield
        except ProviderError:
            raise
        except anthropic.APIStatusError as exc:
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
