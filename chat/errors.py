"""The error vocabulary of Relay Chat.

Every failure a provider can produce is translated, at one boundary per adapter,
into one of these classes (always ``raise ... from exc``). Each class carries its
own policy, so the router asks the error what to do instead of keeping an
``isinstance`` ladder::

    ChatError                       anything the user should read as a sentence
    ├── InputError                  bad input from the user (empty, too long, unknown model)
    ├── AllModelsFailed             the router ran out of models (lists each attempt)
    └── ProviderError               a model call failed        fallback retry cooldown
        ├── RateLimited             429 (carries retry_after)     yes     yes     yes
        ├── Unavailable             5xx, overloaded, 529          yes     yes     yes
        ├── ConnectionFailed        connect error, cut socket     yes     yes     no
        │   └── Timeout             read / first-token / stall    yes     no      no
        ├── AuthenticationFailed    401 / 403                     yes     no      yes
        │   └── NotConfigured       no API key set                yes     no      no
        ├── ModelNotFound           404 / unknown model           yes     no      yes
        ├── ContextLengthExceeded   prompt too long for model     no*     no      no
        ├── ContentFiltered         refused by a safety filter    no      no      no
        ├── InvalidRequest          other 400 / 422               no      no      no
        └── Interrupted             failed after text streamed    yes     no      per cause

    * context-length errors go to context management first (compact, retry once).

``Interrupted`` carries the text already streamed (``partial_text``) and the
underlying error (``cause``), so the router can ask another model to continue
the same answer.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AllModelsFailed",
    "AuthenticationFailed",
    "ChatError",
    "ConnectionFailed",
    "ContentFiltered",
    "ContextLengthExceeded",
    "InputError",
    "Interrupted",
    "InvalidRequest",
    "ModelNotFound",
    "NotConfigured",
    "ProviderError",
    "RateLimited",
    "Timeout",
    "Unavailable",
]


class ChatError(Exception):
    """An error whose message is written for the user."""


class InputError(ChatError):
    """The user's input cannot be sent (empty, too long, unknown model...)."""


class ProviderError(ChatError):
    """A model call failed.

    Class attributes state the policy:
    ``fallback``  another model may answer instead;
    ``retry``     the same model may be retried after a backoff;
    ``cooldown``  the model should be benched for a while.
    ``reason``    a few plain words for notices ("rate limited").
    """

    fallback: ClassVar[bool] = False
    retry: ClassVar[bool] = False
    cooldown: ClassVar[bool] = False
    reason: ClassVar[str] = "failed"

    def __init__(
        self,
        message: str = "",
        *,
        model: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message or self.reason)
        self.message = message or self.reason
        self.model = model
        self.status_code = status_code
        self.retry_after = retry_after

    def describe(self) -> str:
        """One line for the user: the reason in plain words, then the detail."""
        if self.message and self.message != self.reason:
            return f"{self.reason}: {self.message}"
        return self.reason


class RateLimited(ProviderError):
    fallback = True
    retry = True
    cooldown = True
    reason = "rate limited"


class Unavailable(ProviderError):
    fallback = True
    retry = True
    cooldown = True
    reason = "unavailable or overloaded"


class ConnectionFailed(ProviderError):
    fallback = True
    retry = True
    reason = "connection failed"


class Timeout(ConnectionFailed):
    retry = False
    reason = "timed out"


class AuthenticationFailed(ProviderError):
    fallback = True
    cooldown = True
    reason = "authentication failed"


class NotConfigured(AuthenticationFailed):
    cooldown = False
    reason = "not configured"


class ModelNotFound(ProviderError):
    fallback = True
    cooldown = True
    reason = "model not found"


class ContextLengthExceeded(ProviderError):
    reason = "conversation too long for this model"


class ContentFiltered(ProviderError):
    reason = "blocked by the provider's content filter"


class InvalidRequest(ProviderError):
    reason = "invalid request"


class Interrupted(ProviderError):
    """The stream failed after some text had been delivered.

    ``partial_text`` is exactly the text this stream delivered before failing;
    ``cause`` is the translated error that interrupted it, if any (a stream that
    simply ended without its end marker has none).
    """

    fallback = True
    reason = "stream interrupted"

    def __init__(
        self,
        message: str = "",
        *,
        partial_text: str,
        cause: ProviderError | None = None,
        model: str | None = None,
    ) -> None:
        # The cause's Retry-After (an in-stream 429/503) still decides its cooldown.
        super().__init__(message, model=model, retry_after=cause.retry_after if cause is not None else None)
        self.partial_text = partial_text
        self.cause = cause

    @property
    def cooldown(self) -> bool:  # type: ignore[override]
        return bool(self.cause and self.cause.cooldown)

    def describe(self) -> str:
        if self.cause is not None:
            return f"stream interrupted ({self.cause.describe()})"
        return super().describe()


class AllModelsFailed(ChatError):
    """Every model the router tried failed.

    ``attempts`` lists ``(model_id, error)`` in order; ``partial_text`` is the
    answer text already delivered to the user (kept on screen).
    """

    def __init__(self, attempts: list[tuple[str, ProviderError]], partial_text: str = "") -> None:
        self.attempts = attempts
        self.partial_text = partial_text
        tried = "; ".join(f"{model}: {err.describe()}" for model, err in attempts) or "no model was available"
        super().__init__(f"No model could answer. Tried {tried}.")
