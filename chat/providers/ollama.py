"""Ollama: models discovered live from ``OLLAMA_HOST``.

``discover()`` lists ``/api/tags``; an unreachable server is a state recorded
for ``availability()`` (no network there), never an exception. Ids are
``ollama:<name as Ollama lists it>``; ``ollama:llama3.2`` also works and is sent
as ``llama3.2:latest`` when that is what the server lists.

The SDK client (host parsing, headers, ``OLLAMA_API_KEY``) lists the models;
a chat streams through that client's own ``httpx`` connection pool, and its
NDJSON body is decoded by ``wire.OllamaDecoder`` (the SDK builds a pydantic
object per line and gives up on a garbage line). The last part has
``done: true``, ``done_reason`` and the token counts (the end marker: a stream
without it is an interruption).
Errors that surprise (ollama 0.6.3): everything is ``ResponseError`` (an error
line mid-stream has no status); a dead host while streaming is a raw
``httpx.ConnectError``; listing an unreachable host raises the builtin
``ConnectionError``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import ollama

from ..catalogue import ModelSpec
from ..config import Settings
from ..errors import ProviderError
from ..events import Event
from ..messages import ChatRequest
from .base import Availability, LoopClient, State, guard_stream
from .body import ReadPacer, ending, read_text
from .errors_map import clean, make_error, public_url, transport_error, unexpected_error
from .wire import OllamaDecoder

__all__ = ["OllamaProvider"]


class OllamaProvider:
    name = "ollama"

    def __init__(self, settings: Settings, *, reads: ReadPacer | None = None) -> None:
        self._settings = settings
        self._reads = reads or ReadPacer()  # shared by the process's adapters (build_providers)
        self._host = settings.ollama_host
        self._clients = LoopClient(self._new_client, ollama.AsyncClient.close)
        self._models: list[str] = []  # names from the last successful discovery
        self._state = Availability.ok()

    def __repr__(self) -> str:
        return f"OllamaProvider(host={public_url(self._host)!r})"

    def availability(self, model: str) -> Availability:
        """From the last discovery: unreachable if it failed, ready otherwise."""
        return self._state

    async def discover(self) -> list[ModelSpec]:
        """The models the server lists now; [] (and UNREACHABLE recorded) if it cannot be reached."""
        s = self._settings
        try:
            # A small bound of our own: the client's read timeout is sized for generation.
            async with asyncio.timeout(s.connect_timeout * 2):
                listing = await (await self._clients.get()).list()
        except (OSError, TimeoutError, httpx.HTTPError, ollama.ResponseError, ValueError) as exc:
            # OSError covers the SDK's ConnectionError; ValueError a garbled body.
            detail = f"{public_url(self._host)}: {_why(exc)}"
            self._state = Availability(State.UNREACHABLE, detail)
            self._models = []
            return []
        self._state = Availability.ok()
        self._models = [m.model for m in listing.models if m.model]
        return [
            ModelSpec(
                id=f"ollama:{name}",
                label=f"{name} (Ollama)",
                tier=s.ollama_tier,
                context_window=s.ollama_context_window,
                input_cost_per_mtok=0.0,
                output_cost_per_mtok=0.0,
            )
            for name in self._models
        ]

    async def check(self) -> str:
        """The server's version (a live call), for /health; raises ``ProviderError``."""
        with self._errors(self.name):
            # ollama 0.6 has no call for /api/version; its client is httpx underneath.
            response = await (await self._clients.get())._client.get("/api/version")
            if response.status_code != 200:
                raise make_error(response.status_code, clean(response.text[:200]), model=self.name)
            version = response.json().get("version", "?")
        return f"version {version}"

    async def aclose(self) -> None:
        await self._clients.aclose()

    def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        return guard_stream(self._raw(request), f"{self.name}:{request.model}")

    def _new_client(self) -> ollama.AsyncClient:
        s = self._settings
        return ollama.AsyncClient(
            host=self._host,
            # The router enforces first-token and stall timeouts; the read
            # timeout is only a backstop (the SDK's default is none at all).
            timeout=httpx.Timeout(s.first_token_timeout + s.stall_timeout, connect=s.connect_timeout),
        )

    def _model_name(self, model: str) -> str:
        if model not in self._models and f"{model}:latest" in self._models:
            return f"{model}:latest"
        return model

    async def _raw(self, request: ChatRequest) -> AsyncIterator[Event]:
        model_id = f"{self.name}:{request.model}"
        options: dict[str, Any] = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        # Ollama's default context (2k–4k) would silently cut what we planned
        # for CHAT_OLLAMA_CONTEXT_WINDOW.
        options["num_ctx"] = self._settings.ollama_context_window
        body = {
            "model": self._model_name(request.model),
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "options": options,
        }
        decoder = OllamaDecoder(model_id)
        with self._errors(model_id), self._reads.opening() as opening:
            client = await self._clients.get()
            # The SDK's own httpx client: its base URL, headers and key.
            async with client._client.stream("POST", "/api/chat", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise ollama.ResponseError(response.text, response.status_code)
                reading = read_text(response.aiter_bytes(), decoder, self._reads, response.extensions, opening)
                async with contextlib.aclosing(reading) as texts:
                    async for delta in texts:
                        yield delta
        for event in ending(decoder, model_id):  # usage and Finish (nothing if the end marker never came)
            yield event

    @contextlib.contextmanager
    def _errors(self, model_id: str) -> Iterator[None]:
        """The one place SDK and transport errors become taxonomy errors."""
        where = public_url(self._host)
        try:
            yield
        except ProviderError:
            raise
        except ollama.ResponseError as exc:
            status = exc.status_code if exc.status_code > 0 else None
            raise make_error(status, clean(exc.error), model=model_id) from exc
        except Exception as exc:
            error = transport_error(exc, where=where, model=model_id)
            raise (error or unexpected_error(exc, where=where, model=model_id)) from exc


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, OSError | httpx.TransportError):
        return "cannot connect"
    if isinstance(exc, ollama.ResponseError):
        return f"HTTP {exc.status_code}: {clean(exc.error)}"
    return "unexpected reply"
