"""The API's edge with identity and limits (``chat.access``).

- ``/health`` stays open (load balancers); every other route needs
  ``Authorization: Bearer <key>`` when ``CHAT_API_KEYS`` is set — 401 with an
  OpenAI-style body otherwise. A key anywhere else (the query string, another
  header) is ignored. Keys are never logged; refusals log the key's name only.
- Callers without keys are identified by address (``CHAT_TRUSTED_PROXIES``
  decides whether ``X-Forwarded-For`` is believed).
- ``POST /v1/chat/completions`` counts against the caller's limits (429 with
  ``Retry-After``, ``retry-after-ms`` and ``X-RateLimit-*``) and holds a stream
  lease until the answer ends; every other route carries the caller's
  ``X-RateLimit-*`` without counting.
"""

from __future__ import annotations

import logging

from starlette.requests import Request

from ..access import Access, Gate, Identity, Refused
from .edge import Admission
from .errors import ApiError

__all__ = ["GuardEdge"]

log = logging.getLogger(__name__)

COUNTED = "/v1/chat/completions"
OPEN = ("/health",)
_CODES = {"rate": "rate_limit_exceeded", "streams": "concurrency_limit_exceeded", "budget": "insufficient_quota"}


class GuardEdge:
    def __init__(self, access: Access, gate: Gate) -> None:
        self.gate = gate
        self.keys = access.keys
        self.proxies = access.proxies

    def identify(self, request: Request, route: str) -> Identity:
        """The caller, or ``ApiError(401)`` when keys are required and none fits."""
        address = self.proxies.client(request.client.host if request.client else None,
                                      request.headers.getlist("x-forwarded-for"))
        if not self.keys or route in OPEN:
            return Identity("ip", address)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            log.info("refused %s %s from %s: no API key", request.method, route, address)
            raise ApiError(401, "This server needs an API key: send the header 'Authorization: Bearer <key>' "
                           "(keys are set by CHAT_API_KEYS on the server; a key in the URL is ignored).",
                           code="missing_api_key", outcome="refused", headers={"WWW-Authenticate": "Bearer"})
        name = self.keys.match(token)
        if name is None:
            log.info("refused %s %s from %s: wrong API key", request.method, route, address)
            raise ApiError(401, "Incorrect API key. Check the key you send in 'Authorization: Bearer <key>' "
                           "against the ones the server's administrator gave you.", code="invalid_api_key",
                           outcome="refused", headers={"WWW-Authenticate": "Bearer"})
        return Identity("key", name)

    async def admit(self, request: Request, route: str) -> Admission:
        identity = self.identify(request, route)
        if route != COUNTED:
            return Admission(identity.label, await self.gate.peek(identity), identity=identity)
        try:
            ticket = await self.gate.admit(identity)
        except Refused as refused:
            log.info("refused %s: %s limit", identity, refused.limit)
            raise ApiError(429, refused.message, type_="rate_limit_error" if refused.limit != "budget"
                           else "insufficient_quota", code=_CODES[refused.limit], outcome="refused",
                           headers=refused.headers) from None
        return Admission(identity.label, ticket.headers, ticket.release, identity=identity)
