"""``GET /v1/models`` and ``GET /v1/models/{id}``: OpenAI's list format, plus
each model's tier, context window and state.

Entries: ``auto`` first (owned by ``relay-chat``), then every catalogue model
(``owned_by`` = its provider) with ``tier``, ``context_window``,
``max_output_tokens``, ``state`` (ready, missing key, server unreachable,
cooling down, …), ``detail`` and, while cooling down, ``cooldown_until``
(ISO 8601, UTC). Standard clients read ``id`` and ignore the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..catalogue import AUTO
from .errors import ApiError
from .monitor import utc

if TYPE_CHECKING:
    from .edge import Admission
    from .endpoint import Api, Call

__all__ = ["list_models", "one_model", "utc"]


def _entries(api: Api) -> list[dict[str, Any]]:
    created = api.created
    entries: list[dict[str, Any]] = []
    ready = 0
    for option in api.runtime.router.options():
        spec, availability = option.spec, option.availability
        ready += availability.ready
        entry: dict[str, Any] = {
            "id": spec.id, "object": "model", "created": created, "owned_by": spec.provider,
            "label": spec.label, "tier": spec.tier, "context_window": spec.context_window,
            "max_output_tokens": spec.max_output_tokens, "state": availability.state.value,
            "detail": availability.detail or None,
        }
        if availability.until is not None:
            entry["cooldown_until"] = utc(availability.until)
        entries.append(entry)
    auto = {
        "id": AUTO, "object": "model", "created": created, "owned_by": "relay-chat", "label": "Auto",
        "tier": None, "context_window": None, "max_output_tokens": None,
        "state": "ready" if ready else "unavailable",
        "detail": "picks a model by the prompt (fast, standard or premium) and falls back when one fails",
    }
    return [auto, *entries]


async def list_models(api: Api, request: Request, admission: Admission, call: Call) -> Response:
    return Response(orjson.dumps({"object": "list", "data": _entries(api)}), media_type="application/json")


async def one_model(api: Api, request: Request, admission: Admission, call: Call) -> Response:
    model_id = request.path_params["model_id"]
    for entry in _entries(api):
        if entry["id"] == model_id:
            call.model = model_id
            return Response(orjson.dumps(entry), media_type="application/json")
    ids = ", ".join(entry["id"] for entry in _entries(api))
    raise ApiError(404, f"Unknown model {model_id!r}. Available: {ids}", param="model", code="model_not_found",
                   outcome="unknown_model")
