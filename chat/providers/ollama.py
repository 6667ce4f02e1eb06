"""Ollama: models discovered live from ``OLLAMA_HOST``.

``discover()`` lists ``/api/tags``; an unreachable server is a state recorded
for ``availability()`` (no network there), never an exception. Ids are
``ollama:<name as Ollama lists it>``; ``ollama:llama3.2`` also works and is sent
as ``llama3.2:latest`` when that is what the server lists.

Stream shape: NDJSON parts, the last with ``done: true``, ``done_reason`` and
the token counts (the end marker: the SDK raises nothing when it never comes).
Errors that surprise (ollama 0.6.3): everything is ``ResponseError`` (an error
line mid-stream has ``status_code == -1``); a dead host while streaming is a
raw ``httpx.ConnectError``; listing an unreachable host raises the builtin
``ConnectionError``; a malformed line is ``json.JSONDecodeError``.
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
from ..events import Event, Finish, TextDelta, Usage
from ..messages import ChatRequest
from .base import Availability, State, guard_stream
from .errors_map import clean, make_error, public_url, transport_error, unexpected_error

__all__ = ["OllamaProvider"]


class OllamaProvider:
    name = "ollama"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._host = settings.ollama_host
        self._client: ollama.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
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
                listing = await self._get_client().list()
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
            response = await self._get_client()._client.get("/api/version")
            if response.status_code != 200:
                raise make_error(response.status_code, clean(response.text[:200]), model=self.name)
            version = response.json().get("version", "?")
        return f"version {version}"

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        return guard_stream(self._raw(request), f"{self.name}:{request.model}")

    def _get_client(self) -> ollama.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # Pooled connections belong to the event loop that opened them: a
            # caller on another loop (a test, a start-up refresh) gets its own client.
            s = self._settings
            self._client = ollama.AsyncClient(
                host=self._host,
                # The router enforces first-token and stall timeouts; the read
                # timeout is only a backstop (the SDK's default is none at all).
                timeout=httpx.Timeout(s.first_token_timeout + s.stall_timeout, connect=s.connect_timeout),
            )
            self._client_loop = loop
        return self._client

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
        usage: Usage | None = None
        reason: str | None = None
        with self._errors(model_id):
            parts = await self._get_client().chat(
                model=self._model_name(request.model),
                messages=[{"role": m.role, "content": m.content} for m in request.messages],
                stream=True,
                options=options or None,
            )
            async with contextlib.aclosing(parts):
                try:
                    async for part in parts:
                        if part.message is not None and part.message.content:
                            yield TextDelta(part.message.content)
                        if part.done:
                            reason = part.done_reason or "stop"
                            usage = Usage(part.prompt_eval_count, part.eval_count)
                except Exception:
                    # After done:true the answer is complete: a connection dropped
                    # before the body's last byte changes nothing.
                    if reason is None:
                        raise
        if reason is None:
            return  # no end marker: guard_stream reports the interruption
        if usage is not None:
            yield usage
        yield Finish(reason)

    @contextlib.contextmanager
    def _errors(self, model_id: str) -> Iterator[None]:
        """The one place SDK and transport errors become taxonomy errors."""
        where = public_url(self._host)
        try:
            yield
        except ProviderError:
            raise
        except ollama.ResponseError as exc:
            status = exc.status_code if exc.status_code > 0 else None  # -1: an error line mid-stream
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
