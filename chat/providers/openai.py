"""OpenAI and any OpenAI-compatible server (vLLM, LM Studio, llama-server, Groq...).

An OpenAI-compatible provider is configuration, not code: the same class with
another name, base URL and key. The SDK client is built on the first stream
(building the app makes no network call), with the SDK's retries off (the
router is the only retry loop) and a connect timeout from settings.

Stream shape: ``chat.completion.chunk`` deltas, a chunk with ``finish_reason``
(the end marker: a stream without it is an interruption), then, with
``stream_options.include_usage``, a usage chunk with no choices, then ``[DONE]``.
The SDK sends the request and raises status errors; the body's bytes are
decoded by ``wire.OpenAIDecoder`` (fast, and a garbage line is skipped).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
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
from .wire import OpenAIDecoder

__all__ = ["DEFAULT_BASE_URL", "OpenAIProvider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Sent to keyless OpenAI-compatible servers: the SDK insists on some key, and
# falling back to OPENAI_API_KEY would hand the user's OpenAI key to a stranger.
_NO_KEY = "no-key-required"


_REASONING = re.compile(r"^(gpt-5|o\d)(\b|[-.])")


class OpenAIProvider:
    """``name:model`` ids for one OpenAI-style endpoint.

    ``api_key_env`` names the variable to set when the key is missing; with
    ``key_required=False`` (a compatible server declared without ``api_key_env``)
    no key is needed. ``reads`` paces socket reads under load (``body.ReadPacer``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        name: str = "openai",
        api_key: SecretStr | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        base_url: str | None = None,
        key_required: bool = True,
        reads: ReadPacer | None = None,
    ) -> None:
        self.name = name
        self._reads = reads or ReadPacer()  # shared by the process's adapters (build_providers)
        self._settings = settings
        self._api_key = api_key
        self._api_key_env = api_key_env
        self._base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._key_required = key_required
        self._clients = LoopClient(self._new_client, openai.AsyncOpenAI.close)

    def __repr__(self) -> str:
        return f"OpenAIProvider(name={self.name!r}, base_url={self._base_url!r})"

    def availability(self, model: str) -> Availability:
        if self._key_required and self._api_key is None:
            return Availability(State.MISSING_KEY, f"set {self._api_key_env}")
        return Availability.ok()

    async def discover(self) -> list[ModelSpec]:
        return []

    async def check(self) -> str:
        """A live authenticated call (list models), for /health; raises ``ProviderError``."""
        with self._errors(self.name):
            page = await (await self._clients.get()).models.list()
        return f"{len(page.data)} models listed"

    async def aclose(self) -> None:
        await self._clients.aclose()

    def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        return guard_stream(self._raw(request), f"{self.name}:{request.model}")

    def _new_client(self) -> openai.AsyncOpenAI:
        if self._api_key is None and self._key_required:
            raise NotConfigured(f"set {self._api_key_env}")
        key = self._api_key.get_secret_value() if self._api_key is not None else _NO_KEY
        s = self._settings
        return openai.AsyncOpenAI(
            api_key=key,
            base_url=self._base_url,
            max_retries=0,
            http_client=aio.client(openai.DefaultAsyncHttpxClient),  # on aiohttp (``aio`` says why)
            timeout=openai.Timeout(
                # The router enforces first-token and stall timeouts; the read
                # timeout is only a backstop that never fires before them.
                s.first_token_timeout + s.stall_timeout,
                connect=s.connect_timeout,
            ),
        )

    async def _raw(self, request: ChatRequest) -> AsyncIterator[Event]:
        model_id = f"{self.name}:{request.model}"
        params: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream_options": {"include_usage": True},
        }
        if request.temperature is not None and not _REASONING.match(request.model):
            # OpenAI's reasoning models (gpt-5, o1, o3, o4…) accept only their
            # default temperature and answer 400 to any other.
            params["temperature"] = request.temperature
        if request.max_tokens is not None:
            # OpenAI's reasoning models reject max_tokens; compatible servers
            # may not know max_completion_tokens yet.
            official = self._base_url == DEFAULT_BASE_URL
            params["max_completion_tokens" if official else "max_tokens"] = request.max_tokens
        decoder = OpenAIDecoder(model_id, self._secret())
        with self._errors(model_id), self._reads.opening() as opening:
            client = await self._clients.get()
            # The body is already in the wire's shape: given as extra_body it is
            # sent as it is, skipping the SDK's walk of its typed parameters
            # (~40% of the CPU of a request, which delays every first token).
            async with client.chat.completions.with_streaming_response.create(
                model=request.model, messages=[], stream=True, extra_body=params
            ) as response:
                reading = read_text(response.iter_bytes(), decoder, self._reads, response.http_response.extensions, opening)
                async with contextlib.aclosing(reading) as texts:
                    async for delta in texts:
                        yield delta
        for event in ending(decoder, model_id, "the provider filtered the answer"):  # usage and Finish (nothing if the end marker never came)
            yield event

    def _secret(self) -> str | None:
        return self._api_key.get_secret_value() if self._api_key is not None else None

    @contextlib.contextmanager
    def _errors(self, model_id: str) -> Iterator[None]:
        """The one place SDK and transport errors become taxonomy errors."""
        secret = self._secret()
        try:
            yield
        except ProviderError:
            raise
        except openai.APIStatusError as exc:
            raise make_error(
                exc.status_code, _detail(exc), hint=f"{exc.type or ''} {exc.code or ''}",
                headers=exc.response.headers, model=model_id, secret=secret,
            ) from exc
        except openai.APITimeoutError as exc:
            raise Timeout(f"no response in time ({public_url(self._base_url)})", model=model_id) from exc
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            error = transport_error(cause, where=public_url(self._base_url), model=model_id)
            raise error or ConnectionFailed(public_url(self._base_url), model=model_id) from exc
        except openai.APIError as exc:  # any other SDK error with an API body: no status
            raise make_error(
                None, _detail(exc), hint=f"{exc.type or ''} {exc.code or ''}", model=model_id, secret=secret,
            ) from exc
        except openai.OpenAIError as exc:  # misconfiguration caught by the SDK itself
            raise InvalidRequest(clean(exc, secret), model=model_id) from exc
        except Exception as exc:
            error = transport_error(exc, where=public_url(self._base_url), model=model_id)
            raise (error or unexpected_error(exc, where=public_url(self._base_url), model=model_id)) from exc


def _detail(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return exc.message
