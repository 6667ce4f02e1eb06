"""The OpenAI-compatible HTTP API, served next to the UI on the same port.

A sibling of ``chat.ui``: it translates HTTP into ``Turn`` and the service's
typed events into Chat Completions chunks; routing, fallback and context
management stay in ``chat.service`` and below.

    routes       the route table (and GET /metrics: the service's ``chat.metrics``)
    endpoint     the wrapper every route goes through (edge, errors, headers, metrics)
    edge         who may call (the hook for keys and limits)
    schema       request body → ``CompletionRequest`` (400s that say what to change)
    completions  POST /v1/chat/completions (streaming and not)
    pump         the answer's events in a task of their own: heartbeat, disconnect
    sse          the streamed part of an answer (a StreamingResponse that sends its own body)
    chunks       events → chat.completion.chunk SSE bytes / chat.completion
    errors       ApiError and OpenAI's error body
    models       GET /v1/models
    health       GET /health
    monitor      the live provider checks behind /health, cached
"""

from .edge import Admission, Edge, OpenEdge
from .routes import build_routes

__all__ = ["Admission", "Edge", "OpenEdge", "build_routes"]
