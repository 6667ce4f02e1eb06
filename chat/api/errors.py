"""HTTP errors of the API, in OpenAI's shape, and how chat errors map to them.

Before the first byte an error is an HTTP status with the body
``{"error": {"message", "type", "param", "code"}}``; after it, the same object
goes out as one SSE event (see ``chat.api.chunks``). ``ApiError`` also names
the metrics outcome it counts as (a small fixed set, see ``OUTCOMES``).

    status  type                    code                      outcome
    400     invalid_request_error   invalid_json, invalid_value,
                                    content_filter, context_length_exceeded,
                                    upstream_invalid_request  bad_request / refused_upstream
    401     invalid_request_error   missing_api_key, invalid_api_key    refused
    403     invalid_request_error   stream_forbidden          refused
    404     invalid_request_error   model_not_found           unknown_model
            invalid_request_error   stream_not_found          bad_request
    408     invalid_request_error   request_timeout           bad_request
    429     rate_limit_error        rate_limit_exceeded, concurrency_limit_exceeded   refused
            insufficient_quota      insufficient_quota        refused   (Retry-After, retry-after-ms)
    413     invalid_request_error   request_too_large         too_large
    503     service_unavailable     all_models_failed         all_failed  (Retry-After)
    500     server_error            internal_error            internal_error
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import orjson
from starlette.responses import Response

from ..errors import (
    AllModelsFailed,
    ChatError,
    ContentFiltered,
    ContextLengthExceeded,
    InputError,
    ProviderError,
)

__all__ = ["INTERNAL_STREAM_ERROR", "OUTCOMES", "ApiError", "error_body", "from_chat_error"]

# Every value the ``outcome`` metrics label can take (bounded by design).
OUTCOMES = (
    "ok",  # answered completely
    "bad_request",  # 400 from our validation
    "unknown_model",  # 404
    "too_large",  # 413
    "refused",  # refused at the edge (issue #9: no key, rate limited)
    "refused_upstream",  # a provider refused it in a way no fallback can fix
    "all_failed",  # 503: every model failed before any text
    "failed_midstream",  # an error event after the stream started
    "client_closed",  # the client went away first (= Stop)
    "internal_error",  # a bug: 500
)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# The in-stream error event when a bug of ours ends a stream (the details go to the log).
INTERNAL_STREAM_ERROR = error_body("Internal error while streaming; the server log has the details.",
                                   "server_error", code="internal_error")


class ApiError(Exception):
    """An error answered with ``status`` before anything else was sent."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        outcome: str = "bad_request",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.outcome = outcome
        self.headers = dict(headers or {})

    def body(self) -> dict[str, object]:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> Response:
        return Response(
            orjson.dumps(self.body()), status_code=self.status, headers=self.headers,
            media_type="application/json",
        )


def from_chat_error(exc: ChatError, *, retry_after: float | None = None) -> ApiError:
    """The HTTP error for a chat error raised before any text was sent.

    ``retry_after``: seconds until a model is expected back (for 503).
    """
    if isinstance(exc, InputError):
        return ApiError(400, str(exc), code="invalid_value", param="messages")
    if isinstance(exc, AllModelsFailed):
        seconds = max(1, math.ceil(retry_after)) if retry_after is not None else 5
        return ApiError(
            503, str(exc), type_="service_unavailable", code="all_models_failed",
            outcome="all_failed", headers={"Retry-After": str(seconds)},
        )
    if isinstance(exc, ProviderError):
        who = f"{exc.model}: " if exc.model else ""
        if isinstance(exc, ContentFiltered):
            code = "content_filter"
        elif isinstance(exc, ContextLengthExceeded):
            code = "context_length_exceeded"
        else:
            code = "upstream_invalid_request"
        return ApiError(400, who + exc.describe(), code=code, outcome="refused_upstream")
    return ApiError(500, str(exc) or "internal error", type_="server_error", code="internal_error",
                    outcome="internal_error")
