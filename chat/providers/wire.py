"""Fast, tolerant decoding of the providers' streamed response bodies.

The SDKs build the request, authenticate and raise status errors; the body's
bytes are decoded here (``orjson``), because the SDKs' per-chunk decoding costs
more CPU than everything else on the path and a single garbage line ends their
streams. One decoder per response body; ``feed(data)`` returns the text of
every event that ``data`` completed, joined (``body.read_text`` feeds it what
one socket read brought, so one ``TextDelta`` per read, never one per token
when several are waiting).

- OpenAI-compatible SSE: ``data: {chat.completion.chunk}`` … ``data: [DONE]``.
- Anthropic SSE: ``event:`` + ``data:`` blocks, message_start … message_stop.
- Ollama NDJSON: one object per line, the last with ``done: true``.

A malformed line (not JSON, or not the shape of its event) is skipped and
counted in ``malformed`` (``body.read_text`` logs that once per stream). An error
event becomes ``error`` (a ``ProviderError``) and ends decoding: the reader
delivers the text before it, then raises it. ``finish`` is the end marker's
reason (None until the marker came: a stream without it is an interruption);
``done`` means nothing more is expected.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import ProviderError
from ..events import Usage
from .errors_map import make_error

__all__ = ["AnthropicDecoder", "Decoder", "OllamaDecoder", "OpenAIDecoder", "STOP_REASONS"]


# Anthropic's stop reasons in the words the other providers use.
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter"}


class _Malformed(Exception):
    """An event that does not parse or does not have its event's shape."""


class Decoder:
    """The shared state of a body decoder; subclasses split and read events."""

    def __init__(self, model_id: str, secret: str | None = None) -> None:
        self.model_id = model_id
        self._secret = secret
        self._tail = b""
        self.malformed = 0
        self.streamed = False  # any text at all
        self.usage: Usage | None = None
        self.finish: str | None = None
        self.done = False
        self.error: ProviderError | None = None

    def feed(self, data: bytes) -> str:
        """The text of every event completed by ``data``, joined ("" if none)."""
        return self._read(self._split(data))

    def close(self) -> str:
        """At the end of the body: an event left without its terminator still counts."""
        rest, self._tail = self._tail, b""
        return self._read(self._last(rest)) if rest.strip() else ""

    def _read(self, events: list[Any]) -> str:
        parts: list[str] = []
        for event in events:
            if self.done or self.error is not None:
                break  # nothing after the end marker or an error counts
            try:
                text = self._event(event)
            except (_Malformed, orjson.JSONDecodeError, AttributeError, TypeError, KeyError, IndexError):
                self.malformed += 1
                continue
            if text:
                parts.append(text)
        if not parts:
            return ""
        self.streamed = True
        return parts[0] if len(parts) == 1 else "".join(parts)

    def _fail(self, message: str, hint: str = "") -> None:
        self.error = make_error(None, message, hint=hint, model=self.model_id, secret=self._secret)

    # each format fills these in
    def _split(self, data: bytes) -> list[Any]: raise NotImplementedError
    def _last(self, rest: bytes) -> list[Any]: raise NotImplementedError
    def _event(self, event: Any) -> str | None: raise NotImplementedError


# -- framing ----------------------------------------------------------------------


class _SSE(Decoder):
    """Server-sent events: ``(event name, data)`` per block ending in a blank line."""

    def _split(self, data: bytes) -> list[tuple[bytes, bytes]]:
        if self._tail:
            data = self._tail + data
        held = b""
        if b"\r" in data:  # CRLF or CR line ends; a CR at the very end may be half a CRLF
            if data.endswith(b"\r"):
                data, held = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self._tail = data + held
            return []
        self._tail = data[end + 2:] + held
        return [event for block in data[:end].split(b"\n\n") if (event := _block(block)) is not None]

    def _last(self, rest: bytes) -> list[tuple[bytes, bytes]]:
        rest = rest.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return [event for block in rest.split(b"\n\n") if (event := _block(block)) is not None]


def _block(block: bytes) -> tuple[bytes, bytes] | None:
    if block.startswith(b"data: ") and b"\n" not in block:  # the common one-line block
        return b"", block[6:]
    name, data = b"", []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip()
        # comments (":"), id:, retry: and blank lines carry nothing we use
    if not data and not name:
        return None
    return name, b"\n".join(data)


class _Lines(Decoder):
    """Newline-delimited JSON: one object per line."""

    def _split(self, data: bytes) -> list[bytes]:
        if self._tail:
            data = self._tail + data
        end = data.rfind(b"\n")
        if end < 0:
            self._tail = data
            return []
        self._tail = data[end + 1:]
        return [line for line in data[:end].split(b"\n") if line.strip()]

    def _last(self, rest: bytes) -> list[bytes]:
        return [rest]


# -- the three formats ------------------------------------------------------------------


class OpenAIDecoder(_SSE):
    """OpenAI-compatible chat completion chunks; usage from the include_usage chunk."""

    def _event(self, event: tuple[bytes, bytes]) -> str | None:
        data = event[1]
        if data.startswith(b"[DONE]"):
            self.done = True
            return None
        chunk = orjson.loads(data)
        if not isinstance(chunk, dict):
            raise _Malformed
        if error := chunk.get("error"):
            if isinstance(error, dict):
                message = error.get("message")
                hint = f"{error.get('type') or ''} {error.get('code') or ''}"
            else:
                message, hint = error, ""
            self._fail(message if isinstance(message, str) and message else "An error occurred during streaming", hint)
            return None
        if usage := chunk.get("usage"):
            self.usage = Usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
        choices = chunk.get("choices")
        if not choices:
            return None
        choice = choices[0]
        if reason := choice.get("finish_reason"):
            self.finish = reason
        delta = choice.get("delta")
        text = delta.get("content") if delta else None
        return text if isinstance(text, str) else None


class AnthropicDecoder(_SSE):
    """Anthropic Messages events; like the SDK, blocks without an ``event:`` line are ignored."""

    def __init__(self, model_id: str, secret: str | None = None) -> None:
        super().__init__(model_id, secret)
        self._input: int | None = None
        self._output: int | None = None
        self._stop: str | None = None

    def _event(self, event: tuple[bytes, bytes]) -> str | None:
        name, data = event
        if not name or name == b"ping":
            return None
        if name == b"error":
            try:
                body = orjson.loads(data)
                error = body["error"]
                self._fail(str(error.get("message") or body), str(error.get("type") or ""))
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                self._fail(data.decode("utf-8", "replace") or "error event in the stream")
            return None
        body = orjson.loads(data)
        kind = body["type"]
        if kind == "content_block_delta":
            delta = body["delta"]
            if delta.get("type") == "text_delta":
                text = delta["text"]
                if not isinstance(text, str):
                    raise _Malformed
                return text
        elif kind == "message_start":
            usage = body["message"]["usage"]
            self._input, self._output = usage.get("input_tokens"), usage.get("output_tokens")
        elif kind == "message_delta":
            self._stop = body["delta"].get("stop_reason") or self._stop
            usage = body.get("usage") or {}
            # Output tokens are cumulative; input tokens may be revised.
            self._output = usage.get("output_tokens", self._output)
            if usage.get("input_tokens") is not None:
                self._input = usage["input_tokens"]
        elif kind == "message_stop":
            self.done = True
            stop = self._stop or "end_turn"
            self.finish = STOP_REASONS.get(stop, stop)
            self.usage = Usage(self._input, self._output)
        return None


class OllamaDecoder(_Lines):
    """Ollama ``/api/chat`` parts; the ``done`` line carries the reason and the counts."""

    def _event(self, line: bytes) -> str | None:
        part = orjson.loads(line)
        if not isinstance(part, dict):
            raise _Malformed
        if error := part.get("error"):
            self._fail(str(error))
            return None
        message = part.get("message")
        text = message.get("content") if message else None
        if part.get("done"):
            self.done = True
            self.finish = part.get("done_reason") or "stop"
            self.usage = Usage(part.get("prompt_eval_count"), part.get("eval_count"))
        return text if isinstance(text, str) else None
