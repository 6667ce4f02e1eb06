"""Shared pieces of the adapters' error boundaries.

Each adapter keeps its own boundary (one context manager) because each SDK
fails differently; what they share lives here:

- ``classify``: HTTP status first; the message text only for 400 / 422 (and for
  in-stream errors, which have no status). A 500 that mentions "policy" is an
  outage, not a content filter (the any-llm rule).
- ``retry_after``: the ``Retry-After`` header (seconds or HTTP date) or
  ``retry-after-ms``.
- ``transport_error``: raw ``httpx`` / ``httpx2`` exceptions that the SDKs leak
  mid-stream, and malformed chunks, as ``Timeout`` / ``ConnectionFailed``.
- ``clean``: error text made safe to show: the API key redacted, key-like
  tokens masked, length capped.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import time
from collections.abc import Mapping

import anyio
import httpx
import httpx2
import pydantic

from ..errors import (
    AuthenticationFailed,
    ConnectionFailed,
    ContentFiltered,
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    ProviderError,
    RateLimited,
    Timeout,
    Unavailable,
)

__all__ = ["classify", "clean", "make_error", "public_url", "retry_after", "retry_after_in_text", "transport_error"]

_CONTEXT = (
    "context_length_exceeded", "context length", "context window", "maximum context",
    "prompt is too long", "too many tokens", "input length", "reduce the length",
)
_CONTENT = (
    "content_filter", "content filter", "content_policy", "content policy",
    "content management", "safety system", "responsible ai",
)
_RATE = ("rate_limit", "rate limit", "too many requests", "quota")
_AUTH = ("authentication", "permission", "api key", "api_key", "unauthorized")
_NOT_FOUND = ("not_found", "not found", "does not exist")

log = logging.getLogger(__name__)

# Key-shaped tokens (sk-..., sk-ant-..., long bearer-like strings after "key").
_KEYLIKE = re.compile(r"\b(sk|pk|rk|key)-[A-Za-z0-9_\-]{6,}")
_MAX_MESSAGE = 300


def classify(status: int | None, text: str = "") -> type[ProviderError]:
    """The taxonomy class for an HTTP ``status`` (None or < 400: an in-stream error)."""
    lowered = text.lower()
    if status is None or status < 400:
        return _classify_text(lowered, default=Unavailable)
    if status in (401, 402, 403):  # 402: billing; the key cannot be used
        return AuthenticationFailed
    if status == 404:
        return ModelNotFound
    if status == 408:
        return Timeout
    if status == 413:  # request too large: compacting the conversation is the cure
        return ContextLengthExceeded
    if status == 429:
        return RateLimited
    if status == 409 or status >= 500:  # 409 is a transient conflict; 529 is overloaded
        return Unavailable
    if status in (400, 422):
        if _has(lowered, _CONTEXT):
            return ContextLengthExceeded
        if _has(lowered, _CONTENT):
            return ContentFiltered
    return InvalidRequest


def _classify_text(text: str, *, default: type[ProviderError]) -> type[ProviderError]:
    # Rate limits first: "Rate limit reached ... too many tokens" is not a
    # context-length problem, and compacting the conversation would not help.
    if _has(text, _RATE):
        return RateLimited
    if _has(text, _CONTEXT):
        return ContextLengthExceeded
    if _has(text, _CONTENT):
        return ContentFiltered
    if _has(text, _AUTH):
        return AuthenticationFailed
    if _has(text, _NOT_FOUND):
        return ModelNotFound
    return default


def _has(text: str, needles: tuple[str, ...]) -> bool:
    return any(n in text for n in needles)


def make_error(
    status: int | None,
    detail: str,
    *,
    hint: str = "",
    headers: Mapping[str, str] | None = None,
    model: str | None = None,
    secret: str | None = None,
) -> ProviderError:
    """Build the translated error. ``hint`` (error type / code) only helps
    classification; ``detail`` is what the user reads."""
    cls = classify(status, f"{hint} {detail}")
    message = clean(detail, secret)
    if status is not None and status >= 400:
        message = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    return cls(
        message,
        model=model,
        status_code=status if status is not None and status >= 400 else None,
        retry_after=_retry_after(headers, detail) if cls is RateLimited or cls is Unavailable else None,
    )


def _retry_after(headers: Mapping[str, str] | None, detail: str) -> float | None:
    found = retry_after(headers)
    return found if found is not None else retry_after_in_text(detail)


# "Please try again in 20s." / "try again in 1m30s" / "retry after 250ms" (OpenAI's
# rate-limit messages): the only hint an in-stream error (no headers) carries.
_RETRY_IN_TEXT = re.compile(r"(?:try again|retry)\s+(?:in|after)\s+((?:\d+(?:\.\d+)?\s*(?:ms|s|m|h)(?![a-z])\s*)+)", re.I)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)(?![a-z])", re.I)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def retry_after_in_text(text: str) -> float | None:
    """Seconds to wait, when an error message says so ("try again in 7s")."""
    match = _RETRY_IN_TEXT.search(text or "")
    if match is None:
        return None
    return sum(float(n) * _UNIT_SECONDS[u.lower()] for n, u in _DURATION_PART.findall(match.group(1)))


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if not headers:
        return None
    # NaN means nothing; inf and other absurd values are clamped where they
    # are used (chat.cooldown), so a model is never benched for ever.
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            seconds = float(millis) / 1000
            if not math.isnan(seconds):
                return max(0.0, seconds)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
        return None if math.isnan(seconds) else max(0.0, seconds)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_TIMEOUTS = (httpx.TimeoutException, httpx2.TimeoutException, TimeoutError)
_TRANSPORT = (
    httpx.TransportError, httpx2.TransportError, httpx.DecodingError, httpx2.DecodingError,
    anyio.EndOfStream, anyio.BrokenResourceError, OSError,
)
# A chunk that does not parse (openai, ollama and anthropic raise JSONDecodeError)
# or does not fit the SDK's model (ollama builds pydantic objects per line).
_MALFORMED = (json.JSONDecodeError, pydantic.ValidationError)


def transport_error(exc: BaseException, *, where: str = "", model: str | None = None) -> ProviderError | None:
    """A raw transport failure (or a malformed chunk) as ``Timeout`` / ``ConnectionFailed``.

    ``where`` names the server (a URL without credentials). Returns None for
    anything else, so the caller's boundary decides.
    """
    suffix = f" ({where})" if where else ""
    if isinstance(exc, _TIMEOUTS):
        return Timeout(f"no response in time{suffix}", model=model)
    if isinstance(exc, _MALFORMED):
        # The SDKs crash on a malformed data line; the text so far survives
        # because guard_stream turns this into Interrupted.
        return ConnectionFailed(f"malformed chunk in the stream{suffix}", model=model)
    if isinstance(exc, _TRANSPORT):
        kind = type(exc).__name__
        if isinstance(exc, (httpx.RemoteProtocolError, httpx2.RemoteProtocolError)):
            return ConnectionFailed(f"the connection was cut{suffix}", model=model)
        return ConnectionFailed(f"{kind}{suffix}", model=model)
    return None


def unexpected_error(exc: BaseException, *, where: str = "", model: str | None = None) -> ProviderError:
    """Anything else that escaped an adapter (an event of a shape the SDK did
    not expect, a bug): still a ``ProviderError``, so text already streamed is
    kept and another model may continue. Logged with its traceback (its type
    and stack, no request data) so it can be fixed."""
    log.warning("unexpected %s from %s", type(exc).__name__, model or where, exc_info=exc)
    suffix = f" ({where})" if where else ""
    return ConnectionFailed(f"unexpected response ({type(exc).__name__}){suffix}", model=model)


def clean(text: object, secret: str | None = None) -> str:
    """Error text safe for users and logs: no key, nothing key-shaped, one short line."""
    out = str(text or "")
    if secret:
        out = out.replace(secret, "[redacted]")
    out = _KEYLIKE.sub(lambda m: f"{m.group(1)}-[redacted]", out)
    out = " ".join(out.split())
    if len(out) > _MAX_MESSAGE:
        out = out[: _MAX_MESSAGE - 1] + "…"
    return out


def public_url(url: str) -> str:
    """``url`` without any ``user:password@`` part, for messages."""
    return re.sub(r"//[^/@]*@", "//", url)
