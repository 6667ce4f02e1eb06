"""Typed events of one answer → ``chat.completion.chunk`` SSE bytes (or one
``chat.completion`` object).

``Answer`` follows the events: who answers now (each chunk's ``model``), whose
text started the answer (``X-Model-Name``), whether a fallback happened, usage,
the finish reason, and notices the stream reports. ``Answer.encode(batch)``
turns a batch of events into bytes: the text deltas between two model switches
become one chunk (a batch holds whatever arrived while the client was being
written to, so nothing waits for batching). Fallbacks, retries, summaries and
model switches ride along in an extra chunk field, ``relay``, that standard
clients ignore::

    data: {"id": "chatcmpl-…", "object": "chat.completion.chunk", "created": …,
           "model": "anthropic:claude-…", "choices": [{"index": 0, "delta": {"content": "…"},
           "finish_reason": null}], "relay": {"notices": [{"type": "fallback", …}]}}

A plain text chunk is spliced from cached bytes and ``orjson.dumps(text)``:
no per-token dict or model object. SSE framing lives in ``frame`` alone.

Every event carries an ``id:``, numbered 1, 2, … per answer (``[DONE]``
included; ``: ping`` comments have none), so a client that lost the
connection can name the last event it got (``Last-Event-ID``) and resume a
resumable stream from the next one (``chat.api.resume``).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..answer_stats import AnswerStats
from ..catalogue import Catalogue
from ..events import (
    Cached,
    ContextTrimmed,
    Event,
    FallingBack,
    Finish,
    ModelSelected,
    Retrying,
    SummaryInUse,
    Summarizing,
    TextDelta,
    Usage,
)

__all__ = ["DONE", "PING", "Answer", "frame"]

# A comment line with no blank line after it: once events carry ids, a blank
# line would end an empty event that repeats the last id, and the openai SDK
# (unlike the SSE spec) hands such an event on and fails to parse its data.
PING = b": ping\n"
DONE = b"data: [DONE]\n\n"  # the protocol's end marker, not an event of the answer
# OpenAI's finish reasons; a provider's other words for "it ended" mean stop.
_FINISH = {"stop": "stop", "length": "length", "max_tokens": "length", "content_filter": "content_filter"}


def frame(data: bytes, event_id: int | None = None) -> bytes:
    """One SSE event carrying ``data`` (a JSON document on one line, so a
    blank line only ever ends an event), with its ``id:`` when given."""
    if event_id is None:
        return b"data: " + data + b"\n\n"
    return b"id: " + str(event_id).encode() + b"\ndata: " + data + b"\n\n"


def notice(event: Event) -> dict[str, Any] | None:
    """What a non-text event tells the client, or None if nothing."""
    match event:
        case ModelSelected(model_id=model_id, tier=tier, reason=reason):
            return {"type": "model", "model": model_id, "tier": tier, "reason": reason}
        case FallingBack(failed_model=failed, reason=reason, next_model=nxt, continuing=continuing):
            return {"type": "fallback", "failed_model": failed, "reason": reason, "next_model": nxt,
                    "continuing": continuing}
        case Retrying(model_id=model_id, attempt=attempt, delay=delay, reason=reason):
            return {"type": "retry", "model": model_id, "attempt": attempt, "delay": round(delay, 3),
                    "reason": reason}
        case Summarizing(turns=turns):
            return {"type": "summarizing", "messages": turns}
        case SummaryInUse(turns=turns, text=text):
            return {"type": "summary", "messages": turns, "text": text}
        case ContextTrimmed(turns=turns, reason=reason):
            return {"type": "trimmed", "messages": turns, "reason": reason}
        case Cached(age=age):
            return {"type": "cached", "age_s": round(age, 3)}
    return None


@dataclass
class Answer:
    """The state of one answer as the client sees it."""

    catalogue: Catalogue
    model: str  # answering now (before the first ModelSelected: the planned model)
    include_usage: bool = False
    id: str = field(default_factory=lambda: "chatcmpl-" + secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))
    first_model: str | None = None  # the model whose text starts the answer
    notices: list[dict[str, Any]] = field(default_factory=list)  # not yet sent
    text: list[str] = field(default_factory=list)  # kept for non-streaming answers only
    keep_text: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = "stop"
    seq: int = 0  # the id of the last event framed
    stats: AnswerStats = field(init=False)  # the live figures (usage.relay)
    _role_sent: bool = False
    _head: bytes = b""
    _head_model: str = ""

    def _frame(self, data: bytes) -> bytes:
        self.seq += 1
        return frame(data, self.seq)

    def __post_init__(self) -> None:
        # On the clock of Call.started: stats.first_text_at gives the API's TTFT metric too.
        self.stats = AnswerStats(self.catalogue, clock=time.perf_counter)

    @property
    def fallback_used(self) -> bool:
        return bool(self.stats.fallbacks)

    # -- following events --------------------------------------------------------

    def tier(self, model_id: str | None) -> str:
        spec = self.catalogue.get(model_id or "")
        return spec.tier if spec else ""

    def _apply(self, event: Event) -> str | None:
        """Book-keeping for one event; returns its text, if it is text."""
        self.stats.apply(event)
        if type(event) is TextDelta:
            if self.first_model is None:
                self.first_model = self.model
            return event.text
        match event:
            case ModelSelected(model_id=model_id):
                self.model = model_id
            case Usage(input_tokens=tokens_in, output_tokens=tokens_out):
                self.input_tokens += tokens_in or 0
                self.output_tokens += tokens_out or 0
            case Finish(reason=reason):
                self.finish_reason = _FINISH.get(reason, "stop")
            case Cached(input_tokens=tokens_in, output_tokens=tokens_out):
                # The original answer's counts (no model was called: not in the metrics' tokens).
                self.input_tokens += tokens_in or 0
                self.output_tokens += tokens_out or 0
        said = notice(event)
        if said is not None:
            self.notices.append(said)
        return None

    def follow(self, events: list[Event]) -> None:
        """Apply ``events`` without producing bytes (non-streaming answers)."""
        for event in events:
            text = self._apply(event)
            if text is not None and self.keep_text:
                self.text.append(text)

    # -- streaming -----------------------------------------------------------------

    def encode(self, events: list[Event]) -> bytes:
        """The SSE bytes for ``events`` (empty if they carry nothing to send)."""
        out: list[bytes] = []
        run: list[str] = []
        for event in events:
            if type(event) is TextDelta:
                run.append(self._apply(event))  # type: ignore[arg-type]
                continue
            if run and type(event) is ModelSelected:
                # Text before a switch goes out under the model that wrote it.
                out.append(self._text_chunk("".join(run)))
                run = []
            self._apply(event)
        if run or self.notices:
            out.append(self._text_chunk("".join(run)))
        return b"".join(out)

    def _text_chunk(self, text: str) -> bytes:
        if self._role_sent and not self.notices and text:
            if self._head_model != self.model:
                self._head = (
                    b'{"id":"' + self.id.encode() + b'","object":"chat.completion.chunk","created":'
                    + str(self.created).encode() + b',"model":' + orjson.dumps(self.model)
                    + b',"choices":[{"index":0,"delta":{"content":'
                )
                self._head_model = self.model
            return self._frame(self._head + orjson.dumps(text) + b'},"finish_reason":null}]}')
        delta: dict[str, Any] = {}
        if not self._role_sent:
            delta["role"] = "assistant"
            self._role_sent = True
        delta["content"] = text
        return self._frame(orjson.dumps(self._chunk(delta, None)))

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if self.notices:
            chunk["relay"] = {"notices": self.notices}
            self.notices = []
        return chunk

    def end(self) -> bytes:
        """The last chunk (finish reason), the usage chunk if asked for, ``[DONE]``."""
        delta: dict[str, Any] = {} if self._role_sent else {"role": "assistant", "content": ""}
        self._role_sent = True
        out = [self._frame(orjson.dumps(self._chunk(delta, self.finish_reason)))]
        if self.include_usage:
            out.append(self._frame(orjson.dumps({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": self.usage(),
            })))
        out.append(self._frame(b"[DONE]"))
        return b"".join(out)

    def error(self, body: dict[str, Any]) -> bytes:
        """An error after the stream started: the error event, then ``[DONE]``
        (notices not sent yet go first, in a chunk of their own)."""
        out = [self._text_chunk("")] if self.notices else []
        out.append(self._frame(orjson.dumps(body)))
        out.append(self._frame(b"[DONE]"))
        return b"".join(out)

    # -- whole answers ------------------------------------------------------------------

    def usage(self) -> dict[str, Any]:
        """OpenAI's usage, and the answer's figures in ``relay`` (time to first
        token, tokens/s, cost, models, cached; see ``chat.answer_stats``)."""
        self.stats.end()
        return {"prompt_tokens": self.input_tokens, "completion_tokens": self.output_tokens,
                "total_tokens": self.input_tokens + self.output_tokens,
                "relay": self.stats.figures().as_json()}

    def completion(self) -> dict[str, Any]:
        """The ``chat.completion`` object of a finished non-streaming answer."""
        body: dict[str, Any] = {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(self.text)},
                         "finish_reason": self.finish_reason, "logprobs": None}],
            "usage": self.usage(),
        }
        if self.notices:
            body["relay"] = {"notices": self.notices}
        return body

    def headers(self) -> dict[str, str]:
        """The model headers, describing the choice made so far."""
        model = self.first_model or self.model
        return {"X-Model-Name": model, "X-Model-Tier": self.tier(model),
                "X-Fallback-Used": "true" if self.fallback_used else "false"}
