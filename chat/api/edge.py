"""The edge: who may call the API, decided before a request reaches the service.

Every API route passes through ``Edge.admit`` before its body is read. An edge
refuses by raising ``ApiError`` (401 without a key, 429 over a limit — with
its own headers); otherwise it returns an ``Admission``: the caller's name (a
bounded metrics label: configured key names, never raw keys or addresses),
headers added to every response of that request, errors included (e.g.
``X-RateLimit-*``), and a hook run when the request is over — after the last
byte of a stream, or at the disconnect (e.g. releasing a concurrency lease).

``OpenEdge`` admits everyone; ``chat.api.guard.GuardEdge`` checks API keys
and the limits of ``chat.access`` (issue #9).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request

from ..access.identity import ANONYMOUS

__all__ = ["ANONYMOUS", "Admission", "Edge", "OpenEdge"]


@dataclass
class Admission:
    caller: str = ANONYMOUS
    headers: dict[str, str] = field(default_factory=dict)
    on_release: Callable[[], Awaitable[None]] | None = None
    identity: Any = None  # the caller's ``chat.access.Identity``, when the edge knows it

    async def release(self) -> None:
        """The request is over (idempotent)."""
        hook, self.on_release = self.on_release, None
        if hook is not None:
            await hook()


class Edge(Protocol):
    async def admit(self, request: Request, route: str) -> Admission:
        """Admit ``request`` for ``route`` (e.g. "/v1/chat/completions") or raise ``ApiError``."""
        ...


class OpenEdge:
    """No keys, no limits: everyone is admitted as ``anonymous``."""

    async def admit(self, request: Request, route: str) -> Admission:
        return Admission()
