"""``GET /health``: can this replica answer, and what is wrong if not.

The report comes from ``monitor.HealthMonitor`` (live provider checks, cached
for ``CHAT_HEALTH_TTL`` seconds): HTTP 200 while at least one model can
answer, 503 when none can. ``GET /health?live=1`` answers 200 at once and
touches nothing (a liveness probe).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from .edge import Admission
    from .endpoint import Api, Call

__all__ = ["health"]


async def health(api: Api, request: Request, admission: Admission, call: Call) -> Response:
    headers = {"Cache-Control": "no-store"}
    if request.query_params.get("live") not in (None, "", "0", "false"):
        return Response(b'{"status":"alive"}', headers=headers, media_type="application/json")
    status, body = await api.health.report()
    call.outcome = "ok" if status == 200 else "all_failed"
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")
