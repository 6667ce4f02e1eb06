"""The one wrapper every API route goes through.

``Api.endpoint`` wraps a handler and, in order: admits the request at the edge
(before the body is read), runs the handler, turns an ``ApiError`` into its
JSON response, adds the admission's headers to whatever goes out (errors
included) and counts the request in the metrics. A streaming response counts
itself when its last byte is sent. A browser's request (it has an ``Origin``)
also gets the list of headers its page may read (CORS hides the rest).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..metrics import Metrics
from ..runtime import Runtime
from .edge import ANONYMOUS, Admission, Edge
from .errors import ApiError
from .monitor import HealthMonitor

__all__ = ["Api", "Call", "Handler"]

log = logging.getLogger(__name__)

# The response headers a page on another origin may read (CORS hides all but
# a few by default): which model answered, the stream's id, the limits.
EXPOSED_HEADERS = ", ".join([
    "X-Model-Name", "X-Model-Tier", "X-Fallback-Used", "X-Fallback-Chain", "X-Stream-Id", "X-Resumable",
    "Retry-After", "retry-after-ms", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
])


@dataclass
class Call:
    """One API request as the metrics count it."""

    route: str
    caller: str = ANONYMOUS
    started: float = field(default_factory=time.perf_counter)
    model: str = "none"  # a catalogue id once known
    outcome: str = "ok"
    streaming: bool = False  # the response body counts the request when it ends
    counted: bool = False

    def finish(self, api: Api) -> None:
        if not self.counted:
            self.counted = True
            api.metrics.request(self.route, self.model, self.outcome, self.caller,
                                time.perf_counter() - self.started)


Handler = Callable[["Api", Request, Admission, Call], Awaitable[Response]]


@dataclass
class Api:
    runtime: Runtime
    edge: Edge
    metrics: Metrics
    health: HealthMonitor
    created: int = field(default_factory=lambda: int(time.time()))
    streams: Any = None  # ``chat.api.resume.Streams``, set by ``build_routes``

    def endpoint(self, route: str, handler: Handler, methods: tuple[str, ...]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            response = await serve(request)
            if "origin" in request.headers:  # a browser: on an allowed origin (CHAT_CORS_ORIGINS) it may read these
                response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            return response

        async def serve(request: Request) -> Response:
            call = Call(route)
            if request.method not in methods:
                error = ApiError(405, f"{route} accepts {' or '.join(methods)}, not {request.method}.",
                                 code="method_not_allowed", headers={"Allow": ", ".join(methods)})
                call.outcome = error.outcome
                call.finish(self)
                return error.response()
            try:
                admission = await self.edge.admit(request, route)
            except ApiError as exc:
                call.outcome = "refused"
                call.finish(self)
                return exc.response()
            call.caller = admission.caller
            try:
                response = await handler(self, request, admission, call)
            except ApiError as exc:
                call.outcome = exc.outcome
                response = exc.response()
            except Exception:
                log.exception("%s failed", route)
                call.outcome = "internal_error"
                response = ApiError(500, "Internal error; the server log has the details.", type_="server_error",
                                    code="internal_error", outcome="internal_error").response()
            response.headers.update(admission.headers)
            if not getattr(response, "counts_itself", False):  # a stream counts and releases itself at its end
                call.finish(self)
                await admission.release()
            return response

        return run
