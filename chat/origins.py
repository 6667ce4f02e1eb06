"""Browsers on other sites may not use the page's session.

Gradio's CORS middleware answers any ``Origin`` with
``Access-Control-Allow-Origin: <that origin>`` and
``Access-Control-Allow-Credentials: true`` whenever the server's host is not
localhost, and its login cookie is ``SameSite=None``. Once the page has a login
(``CHAT_UI_PASSWORD`` / ``CHAT_UI_USERS``), any web site a logged-in user
visits could then call the queue with the user's cookie and read the answers —
spending that user's limits and budget. Without a login it would let any site
spread its use over its visitors' addresses.

``SameOriginMiddleware`` refuses (403, before the app runs) every request
whose ``Origin`` is neither the page's own host nor listed in
``CHAT_CORS_ORIGINS``; requests without ``Origin`` (curl, SDKs, same-origin
navigation) pass. Gradio's middleware sits outside ours and still answers
preflights, but the request that follows never reaches the app.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["SameOriginMiddleware"]

log = logging.getLogger(__name__)


def _host(value: str) -> str:
    """The host name of an origin or a Host header (no port, lower case)."""
    netloc = urlsplit(value).netloc if "://" in value else value
    if netloc.startswith("["):
        return netloc[1:].split("]")[0].lower()
    return netloc.rsplit(":", 1)[0].lower() if netloc.count(":") == 1 else netloc.lower()


class SameOriginMiddleware:
    def __init__(self, app: ASGIApp, allowed: str = "") -> None:
        self.app = app
        self.allowed = {o.strip().rstrip("/").lower() for o in allowed.split(",") if o.strip()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not self._allowed(origin, headers):
                log.info("refused a cross-origin %s %s from %s", scope["method"], scope["path"], origin[:80])
                response = JSONResponse({"error": {
                    "message": f"Requests from {origin[:80]!r} are not allowed: this server accepts browser "
                               "requests from its own pages only (CHAT_CORS_ORIGINS lists other allowed origins).",
                    "type": "invalid_request_error", "param": None, "code": "origin_not_allowed"}},
                    status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _allowed(self, origin: str, headers: Headers) -> bool:
        if origin.rstrip("/").lower() in self.allowed:
            return True
        if origin == "null":
            return False
        own = {_host(headers.get("host", ""))}
        forwarded = headers.get("x-forwarded-host")
        if forwarded:
            own.add(_host(forwarded.split(",")[0].strip()))
        return _host(origin) in own
