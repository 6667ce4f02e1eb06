"""What each provider's wire format looks like, and the scripts that bend it.

A ``Script`` says how one chat response should go; each dialect turns it into
that provider's real bytes (OpenAI SSE, Anthropic SSE with ``event:`` lines,
Ollama NDJSON). The token loop is shared: ``_play`` walks the tokens and fires
the scripted failure before token N.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import Exchange

__all__ = ["DIALECTS", "Script", "continuation_parts", "continuation_tokens", "default_tokens", "parse_magic", "tags_body"]


@dataclass
class Script:
    """How one chat response goes. Indices count tokens: ``cut_after=3`` sends
    exactly three tokens, then closes the socket.

    tokens          the reply (None: an echo of the user's message, see ``default_tokens``)
    status          HTTP status; not 200 → an error body in the dialect's shape
    error           message for the error body / in-stream error event
    error_kind      "context" or "content_filter" for 400s; otherwise the dialect's
                    own error type/code (e.g. "overloaded_error") if given
    headers         extra response headers (e.g. {"Retry-After": "7"})
    error_after     in-stream error event after N tokens, then a clean end of body
    cut_after       close the socket after N tokens (no terminating chunk)
    end_marker      False: end the body cleanly but without [DONE] / message_stop / done:true
                    (OpenAI also omits finish_reason)
    cut_at_end      send the end marker, then close the socket without the terminating
                    chunk (OpenAI: after finish_reason and usage, before ``[DONE]``)
    malformed_after insert one malformed data line after N tokens, then go on
    stall, stall_after  silence of ``stall`` seconds after ``stall_after`` tokens
    delay           seconds before each token
    finish_reason   the dialect's own stop reason (default: its usual "stop")
    usage           (input_tokens, output_tokens); default (words in prompt, len(tokens))
    malformed_every one malformed line after every N tokens (several garbage lines)
    rate            tokens per second, paced against the clock from the first token
                    (a late token does not delay the next ones)
    burst           the whole body in one write: the client finds every chunk waiting
    error_status    the kind of the in-stream error event: 429 (rate limit; its message
                    says "try again in Ns" when a Retry-After header is scripted), or a
                    5xx / 529 (overloaded, the default)
    hang            never send the status line (the client must time out)
    headers_delay   seconds of silence before the status line
    window          the model's real context window, in prompt words: a longer
                    request gets the dialect's 400 context-length error
    continuation    how the default reply answers a router's continuation request
                    (see ``continuation_tokens``): "restate" (a compliant model, the
                    default), "plain", "sentence", "whole" or "echo"
    """

    tokens: list[str] | None = None
    status: int = 200
    error: str | None = None
    error_kind: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    error_after: int | None = None
    cut_after: int | None = None
    end_marker: bool = True
    cut_at_end: bool = False
    malformed_after: int | None = None
    stall: float = 0.0
    stall_after: int = 0
    delay: float = 0.0
    finish_reason: str | None = None
    usage: tuple[int, int] | None = None
    malformed_every: int | None = None
    rate: float = 0.0
    burst: bool = False
    error_status: int | None = None
    hang: bool = False
    headers_delay: float = 0.0
    window: int | None = None
    continuation: str = "restate"


# ``[[name]]``, ``[[name:args]]``, and either scoped to one model: ``[[name:args@model]]``.
_MAGIC = re.compile(r"\[\[([a-z-]+)(?::([^\]@]*))?(?:@([^\]]+))?\]\]")


def default_tokens(text: str) -> list[str]:
    """``"hello big world"`` → ``["Echo:", " hello", " big", " world"]`` (magic words removed)."""
    words = _MAGIC.sub(" ", text).split()
    return ["Echo:"] + [f" {w}" for w in words] if words else ["Echo", "."]


def _same_model(scope: str, model: str) -> bool:
    return model in (scope, f"{scope}:latest") or scope == f"{model}:latest"


def parse_magic(text: str, model: str | None = None, conversation: tuple[str, ...] = ()) -> Script:
    """A script from magic words in the user's message (see the package docstring).

    Unscoped words come from ``text`` (the last user message). Words scoped to a
    model (``[[fail:503@gpt-x]]``) apply only when ``model`` matches, and are read
    from every user message in ``conversation`` (default: ``text``), so they also
    reach the continuation requests a router sends after a failure.
    """
    script = Script(tokens=default_tokens(text))
    words = [(name, arg) for name, arg, scope in _MAGIC.findall(text) if not scope]
    if model is not None:
        for part in conversation or (text,):
            words += [(name, arg) for name, arg, scope in _MAGIC.findall(part)
                      if scope and _same_model(scope, model)]
    for name, arg in words:
        args = arg.split(":") if arg else []
        if name == "fail":
            script.status = int(args[0])
            script.error_kind = args[1] if len(args) > 1 else None
        elif name == "retry-after":
            script.headers["Retry-After"] = args[0]
        elif name == "error-event":
            script.error_after = int(args[0]) if args else 0
            script.error_status = int(args[1]) if len(args) > 1 else None
        elif name == "cut":
            script.cut_after = int(args[0]) if args else 0
        elif name == "no-end":
            script.end_marker = False
        elif name == "cut-at-end":
            script.cut_at_end = True
        elif name == "malformed":
            script.malformed_after = int(args[0]) if args else 0
        elif name == "stall":
            script.stall = float(args[0])
            script.stall_after = int(args[1]) if len(args) > 1 else 0
        elif name == "delay":
            script.delay = float(args[0])
        elif name == "tokens":
            script.tokens = [f"w{i} " for i in range(int(args[0]))]
        elif name == "finish":
            script.finish_reason = args[0]
        # -- pacing and bulk (streaming hot path) --
        elif name == "malformed-every":
            script.malformed_every = int(args[0])
        elif name == "rate":
            script.rate = float(args[0])
        elif name == "burst":
            script.burst = True
        # -- faults of issue 11 (hangs, windows, in-stream rate limits, continuations) --
        elif name == "hang":
            script.hang = True
        elif name == "slow-headers":
            script.headers_delay = float(args[0])
        elif name == "window":
            script.window = int(args[0])
        elif name == "continue":
            script.continuation = args[0]
    return script


# -- continuation requests (a router asking to continue a cut answer) ----------------

_TAIL = re.compile(r"<tail>(.*?)</tail>", re.S)
_PIECE = re.compile(r"\S+\s*|\s+")


def continuation_parts(messages: list[Any]) -> tuple[str, str, str] | None:
    """``(original user text, partial answer, tail to restate)`` when the request
    asks to continue a cut answer: an assistant message followed by a last user
    message that quotes the tail between ``<tail>`` tags. None otherwise."""
    texts = [(m.get("role"), _text_of(m.get("content"))) for m in messages if isinstance(m, dict)]
    texts = [(role, text) for role, text in texts if role in ("user", "assistant")]
    if len(texts) < 3 or texts[-1][0] != "user" or texts[-2][0] != "assistant" or texts[-3][0] != "user":
        return None
    found = _TAIL.findall(texts[-1][1])  # the last pair: the instruction may name the tags first
    if not found:
        return None
    return texts[-3][1], texts[-2][1], found[-1]


def continuation_tokens(style: str, answer: str, partial: str, tail: str) -> list[str] | None:
    """How a model continues ``partial``, the cut start of its own ``answer``.

    restate   begins with ``tail`` as the router asks, then carries straight on
    plain     a fresh message that just goes on (no leading whitespace)
    sentence  repeats the current sentence (or line), then goes on
    whole     starts the whole answer again
    None when ``partial`` is not the start of ``answer`` (or style "echo").
    """
    if style == "echo" or not answer.startswith(partial):
        return None
    shown = partial.rstrip()
    if style == "restate" and tail and shown.endswith(tail):
        text = answer[len(shown) - len(tail):]
    elif style == "plain":
        text = answer[len(partial):].lstrip()
    elif style == "sentence":
        starts = [0] + [m.end() for m in re.finditer(r"[.!?。]\s*|\n", shown)]
        text = answer[max(i for i in starts if i < len(shown)) if shown else 0:]
    elif style == "whole":
        text = answer
    else:
        return None
    pieces = []
    for piece in _PIECE.findall(text):
        pieces += [piece[i:i + 4] for i in range(0, len(piece), 4)] if len(piece.strip()) > 6 else [piece]
    return pieces or ["."]


def tags_body(models: list[str]) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": name,
                "model": name,
                "modified_at": "2026-11-01T00:00:00Z",
                "size": 2_000_000_000,
                "digest": "sha256:" + hashlib.sha256(name.encode()).hexdigest(),
                "details": {"parent_model": "", "format": "gguf", "family": "llama",
                            "families": ["llama"], "parameter_size": "3.2B",
                            "quantization_level": "Q4_K_M"},
            }
            for name in models
        ]
    }


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _again(script: Script) -> str:
    seconds = script.headers.get("Retry-After")
    return f" Please try again in {seconds}s." if seconds else ""


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()


async def _play(ex: Exchange, script: Script, tokens: list[str], dialect: Dialect, body: dict[str, Any]) -> None:
    """Stream ``tokens`` in the dialect, firing the scripted failure before token N."""
    ex = _Burst(ex) if script.burst else ex  # type: ignore[assignment]
    first: float | None = None
    for index in range(len(tokens) + 1):
        if script.stall and index == script.stall_after:
            await ex.pause(script.stall)
        if index == script.error_after:
            await ex.chunk(dialect.error_event(script))
            await ex.end()
            return
        if index == script.cut_after:
            await ex.cut()
            return
        if index == script.malformed_after or (script.malformed_every and index and index % script.malformed_every == 0):
            await ex.chunk(dialect.malformed())
        if index == len(tokens):
            break
        if script.delay:
            await ex.pause(script.delay)
        if script.rate:
            if first is None:
                first = time.monotonic()
            if (wait := first + index / script.rate - time.monotonic()) > 0:
                await ex.pause(wait)
        await ex.chunk(dialect.token(tokens[index], body))
    usage = script.usage or (dialect.prompt_words(body), len(tokens))
    await ex.chunk(dialect.end(script, body, usage))
    if script.cut_at_end:
        await ex.cut()
    else:
        await ex.end()


class _Burst:
    """An ``Exchange`` that holds the body's chunks and writes them all with one socket write."""

    def __init__(self, ex: Exchange) -> None:
        self._ex = ex
        self._held: list[bytes] = []

    async def chunk(self, data: bytes) -> None:
        self._held.append(data)

    async def pause(self, seconds: float) -> None:
        await self._ex.pause(seconds)

    async def _flush(self) -> None:
        held, self._held = self._held, []
        await self._ex.chunks(held)

    async def end(self) -> None:
        await self._flush()
        await self._ex.end()

    async def cut(self) -> None:
        await self._flush()
        await self._ex.cut()


class Dialect:
    paths: tuple[str, ...] = ()
    content_type = "text/event-stream"

    def last_user_text(self, body: dict[str, Any]) -> str:
        for message in reversed(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""

    def user_texts(self, body: dict[str, Any]) -> tuple[str, ...]:
        return tuple(_text_of(m.get("content")) for m in body.get("messages") or []
                     if isinstance(m, dict) and m.get("role") == "user")

    def prompt_words(self, body: dict[str, Any]) -> int:
        texts = [_text_of(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict)]
        system = body.get("system")
        texts.append(_text_of(system))
        return sum(len(t.split()) for t in texts)

    def streaming(self, body: dict[str, Any]) -> bool:
        return bool(body.get("stream"))

    async def respond(self, ex: Exchange, script: Script, body: dict[str, Any]) -> None:
        if script.hang:
            await ex.pause(3600)  # until the client gives up (ClientGone) or the server stops
        if script.headers_delay:
            await ex.pause(script.headers_delay)
        if script.window is not None and self.prompt_words(body) > script.window:
            script = Script(status=400, error_kind="context")
        if script.status != 200:
            await ex.json(script.status, self.error_body(script), script.headers)
            return
        tokens = script.tokens if script.tokens is not None else default_tokens(self.last_user_text(body))
        if not self.streaming(body):
            usage = script.usage or (self.prompt_words(body), len(tokens))
            await ex.json(200, self.whole(script, body, "".join(tokens), usage), script.headers)
            return
        await ex.head(200, self.content_type, script.headers)
        await ex.chunk(self.start(script, body))
        await _play(ex, script, tokens, self, body)

    # each dialect fills these in
    def error_body(self, script: Script) -> Any: raise NotImplementedError
    def start(self, script: Script, body: dict[str, Any]) -> bytes: return b""
    def token(self, text: str, body: dict[str, Any]) -> bytes: raise NotImplementedError
    def error_event(self, script: Script) -> bytes: raise NotImplementedError
    def malformed(self) -> bytes: raise NotImplementedError
    def end(self, script: Script, body: dict[str, Any], usage: tuple[int, int]) -> bytes: raise NotImplementedError
    def whole(self, script: Script, body: dict[str, Any], text: str, usage: tuple[int, int]) -> Any:
        raise NotImplementedError


class OpenAI(Dialect):
    paths = ("/v1/chat/completions", "/chat/completions")
    _ERRORS = {
        400: ("invalid_request_error", None, "Invalid value for 'temperature': must be at most 2."),
        401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
        403: ("invalid_request_error", "unsupported_country_region_territory", "Country not supported."),
        404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
        429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
        500: ("server_error", None, "The server had an error while processing your request."),
        503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    }

    def _chunk(self, body: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({
            "id": "chatcmpl-wire", "object": "chat.completion.chunk", "created": 1_763_769_600,
            "model": body.get("model", ""), "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        })

    def error_body(self, script: Script) -> Any:
        kind, code, message = self._ERRORS.get(
            script.status, ("server_error" if script.status >= 500 else "invalid_request_error", None, "Error."))
        if script.error_kind == "context":
            kind, code = "invalid_request_error", "context_length_exceeded"
            message = ("This model's maximum context length is 128000 tokens. However, your messages "
                       "resulted in 250000 tokens. Please reduce the length of the messages.")
        elif script.error_kind == "content_filter":
            kind, code = "invalid_request_error", "content_filter"
            message = "The response was filtered due to the prompt triggering the content management policy."
        elif script.error_kind:
            code = script.error_kind
        return {"error": {"message": script.error or message, "type": kind, "param": None, "code": code}}

    def start(self, script: Script, body: dict[str, Any]) -> bytes:
        return self._chunk(body, {"role": "assistant", "content": ""})

    def token(self, text: str, body: dict[str, Any]) -> bytes:
        return self._chunk(body, {"content": text})

    def error_event(self, script: Script) -> bytes:
        if script.error_status == 429:
            return _sse({"error": {"message": script.error or "Rate limit reached for requests." + _again(script),
                                   "type": "requests", "param": None, "code": "rate_limit_exceeded"}})
        return _sse({"error": {"message": script.error or "The server had an error while processing your request.",
                               "type": script.error_kind or "server_error", "param": None, "code": None}})

    def malformed(self) -> bytes:
        return b'data: {"id": "chatcmpl-wire", "choices": [\n\n'

    def end(self, script: Script, body: dict[str, Any], usage: tuple[int, int]) -> bytes:
        if not script.end_marker:
            return b""
        out = self._chunk(body, {}, script.finish_reason or "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            out += _sse({"id": "chatcmpl-wire", "object": "chat.completion.chunk", "created": 1_763_769_600,
                         "model": body.get("model", ""), "choices": [],
                         "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                   "total_tokens": usage[0] + usage[1]}})
        return out if script.cut_at_end else out + b"data: [DONE]\n\n"

    def whole(self, script: Script, body: dict[str, Any], text: str, usage: tuple[int, int]) -> Any:
        return {
            "id": "chatcmpl-wire", "object": "chat.completion", "created": 1_763_769_600,
            "model": body.get("model", ""),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": script.finish_reason or "stop"}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
        }


class Anthropic(Dialect):
    paths = ("/v1/messages",)
    _ERRORS = {
        400: ("invalid_request_error", "max_tokens: Field required"),
        401: ("authentication_error", "invalid x-api-key"),
        403: ("permission_error", "Your API key does not have permission to use the specified resource."),
        404: ("not_found_error", "model: not found"),
        413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
        500: ("api_error", "Internal server error"),
        529: ("overloaded_error", "Overloaded"),
    }

    def error_body(self, script: Script) -> Any:
        kind, message = self._ERRORS.get(
            script.status, ("api_error" if script.status >= 500 else "invalid_request_error", "Error"))
        if script.error_kind == "context":
            kind, message = "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"
        elif script.error_kind == "content_filter":
            kind, message = "invalid_request_error", "Output blocked by content filtering policy"
        elif script.error_kind:
            kind = script.error_kind
        return {"type": "error", "error": {"type": kind, "message": script.error or message}}

    def start(self, script: Script, body: dict[str, Any]) -> bytes:
        message = {"id": "msg_wire", "type": "message", "role": "assistant", "model": body.get("model", ""),
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": (script.usage or (self.prompt_words(body), 0))[0], "output_tokens": 1}}
        return (_sse({"type": "message_start", "message": message}, "message_start")
                + _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                       "content_block_start")
                + _sse({"type": "ping"}, "ping"))

    def token(self, text: str, body: dict[str, Any]) -> bytes:
        return _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
                    "content_block_delta")

    def error_event(self, script: Script) -> bytes:
        if script.error_status == 429:
            return _sse({"type": "error", "error": {"type": "rate_limit_error", "message": script.error or (
                "Number of request tokens has exceeded your per-minute rate limit." + _again(script))}}, "error")
        return _sse({"type": "error", "error": {"type": script.error_kind or "overloaded_error",
                                                "message": script.error or "Overloaded"}}, "error")

    def malformed(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {\n\n'

    def end(self, script: Script, body: dict[str, Any], usage: tuple[int, int]) -> bytes:
        out = _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        if not script.end_marker:
            return out
        return (out
                + _sse({"type": "message_delta",
                        "delta": {"stop_reason": script.finish_reason or "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": usage[1]}}, "message_delta")
                + _sse({"type": "message_stop"}, "message_stop"))

    def whole(self, script: Script, body: dict[str, Any], text: str, usage: tuple[int, int]) -> Any:
        return {"id": "msg_wire", "type": "message", "role": "assistant", "model": body.get("model", ""),
                "content": [{"type": "text", "text": text}], "stop_reason": script.finish_reason or "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}


class Ollama(Dialect):
    paths = ("/api/chat",)
    content_type = "application/x-ndjson"
    _ERRORS = {
        400: "invalid options",
        401: "unauthorized",
        404: 'model "unknown" not found, try pulling it first',
        429: "too many requests",
        500: "llama runner process has terminated: exit status 2",
        503: "server busy, please try again. maximum pending requests exceeded",
    }

    def streaming(self, body: dict[str, Any]) -> bool:
        return body.get("stream", True) is not False  # Ollama streams unless told not to

    def _line(self, obj: dict[str, Any]) -> bytes:
        return json.dumps(obj).encode() + b"\n"

    def _part(self, body: dict[str, Any], text: str, **extra: Any) -> dict[str, Any]:
        return {"model": body.get("model", ""), "created_at": "2026-11-22T00:00:00.000000Z",
                "message": {"role": "assistant", "content": text}, **extra}

    def error_body(self, script: Script) -> Any:
        message = self._ERRORS.get(script.status, "error")
        if script.error_kind == "context":
            message = "the input length exceeds the context length"
        return {"error": script.error or message}

    def token(self, text: str, body: dict[str, Any]) -> bytes:
        return self._line(self._part(body, text, done=False))

    def error_event(self, script: Script) -> bytes:
        if script.error_status == 429:
            return self._line({"error": script.error or "too many requests" + _again(script)})
        return self._line({"error": script.error or "an error was encountered while running the model: unexpected EOF"})

    def malformed(self) -> bytes:
        return b'{"model": "x", "message": {"role": "assistant", "content": \n'

    def end(self, script: Script, body: dict[str, Any], usage: tuple[int, int]) -> bytes:
        if not script.end_marker:
            return b""
        return self._line(self._part(body, "", done=True, done_reason=script.finish_reason or "stop",
                                     total_duration=1_000_000, load_duration=1_000, prompt_eval_count=usage[0],
                                     prompt_eval_duration=1_000, eval_count=usage[1], eval_duration=1_000))

    def whole(self, script: Script, body: dict[str, Any], text: str, usage: tuple[int, int]) -> Any:
        return self._part(body, text, done=True, done_reason=script.finish_reason or "stop",
                          prompt_eval_count=usage[0], eval_count=usage[1])


DIALECTS: dict[str, Dialect] = {"openai": OpenAI(), "anthropic": Anthropic(), "ollama": Ollama()}
