"""The API's route table.

``build_routes(runtime)`` returns Starlette routes to hand to Gradio's FastAPI
app (``chat.serve``); each handler is wrapped by ``endpoint.Api.endpoint``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..metrics import CONTENT_TYPE_LATEST
from ..runtime import Runtime
from .completions import ROUTE as COMPLETIONS
from .completions import chat_completions
from .edge import Admission, Edge
from .endpoint import Api, Call, Handler
from .errors import ApiError
from .health import health
from .guard import GuardEdge
from .models import list_models, one_model
from .monitor import HealthMonitor
from .resume import Streams, delete_stream, resume_stream

__all__ = ["build_routes"]

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


async def metrics(api: Api, request: Request, admission: Admission, call: Call) -> Response:
    return Response(api.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def streams(api: Api, request: Request, admission: Admission, call: Call) -> Response:
    handler = delete_stream if request.method == "DELETE" else resume_stream
    return await handler(api, request, admission, call)


async def not_found(api: Api, request: Request, admission: Admission, call: Call) -> Response:
    raise ApiError(404, f"There is no {request.url.path}. The API serves POST {COMPLETIONS}, GET /v1/models, "
                   "GET /v1/models/{id}, GET and DELETE /v1/streams/{id}, GET /health and GET /metrics.", code="not_found")


def build_routes(runtime: Runtime, *, edge: Edge | None = None) -> list[BaseRoute]:
    """The API's routes, to be declared before Gradio's own (they must not be shadowed)."""
    if edge is None:
        edge = GuardEdge(runtime.access, runtime.gate)
    api = Api(runtime, edge, runtime.metrics, HealthMonitor(runtime))
    api.streams = Streams(runtime.store, runtime.settings.resume_grace, runtime.settings.sse_heartbeat)
    table: list[tuple[str, Handler, tuple[str, ...]]] = [
        (COMPLETIONS, chat_completions, ("POST",)),
        ("/v1/models", list_models, ("GET",)),
        ("/v1/models/{model_id:path}", one_model, ("GET",)),
        ("/v1/streams/{stream_id}", streams, ("GET", "DELETE")),
        ("/health", health, ("GET",)),
        ("/metrics", metrics, ("GET",)),
        ("/v1/{rest:path}", not_found, tuple(METHODS)),
    ]
    return [Route(path, api.endpoint(path, handler, allowed), methods=METHODS) for path, handler, allowed in table]
