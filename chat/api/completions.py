"""``POST /v1/chat/completions``: HTTP in, ``Turn`` to the service, chunks out.

The request is validated (``schema``), its model resolved (404 for an unknown
id) and the turn checked by the service before anything starts. Then the
service's events run in an ``EventPump`` while the handler waits for the first
text, the first heartbeat, the end or an error — whichever comes first:

- an error (or the end with an error) before that: the HTTP status and
  OpenAI's error body (``errors.from_chat_error``);
- text or a heartbeat: the status and headers go out, with ``X-Model-Name`` /
  ``X-Model-Tier`` / ``X-Fallback-Used`` / ``X-Fallback-Chain`` describing the
  choice so far; what happens later is told inside the stream
  (``chunks.Answer``), and an error after that is an error event + ``[DONE]``.

A client that disconnects stops the answer: before the headers the pump's
watcher notices; after, Starlette's ``StreamingResponse`` cancels the body and
``sse.AnswerStream`` closes the pump, and with it the provider stream — unless
the request said ``X-Resumable: true``: then, once the headers are out, the
answer runs on in a ``resume.StreamRun`` and the response is only its first
reader (``GET /v1/streams/{id}`` resumes it; ``X-Stream-Id`` names it).
The answer's cost is booked for the caller when it ends (``Gate.metered``).
``stream: false`` collects the same events into one ``chat.completion``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..errors import AllModelsFailed, ChatError, InputError
from ..events import TextDelta
from ..router import Route, Router
from ..service import Turn
from .chunks import PING as PING_BYTES
from .chunks import Answer
from .errors import ApiError, from_chat_error
from .pump import END, GONE, PING, EventPump, Failed
from .resume import FollowStream
from .schema import CompletionRequest, parse_completion
from .sse import SSE_HEADERS, AnswerStream, encode_batch

if TYPE_CHECKING:
    from .edge import Admission
    from .endpoint import Api, Call

__all__ = ["ROUTE", "chat_completions"]

log = logging.getLogger(__name__)

ROUTE = "/v1/chat/completions"


async def chat_completions(api: Api, request: Request, admission: Admission, call: Call) -> Response:
    settings = api.runtime.settings
    try:
        async with asyncio.timeout(settings.body_timeout):
            raw = await read_body(request, settings.max_request_bytes)
    except TimeoutError:
        raise ApiError(408, f"The request body did not arrive within {settings.body_timeout:g} s "
                       "(CHAT_BODY_TIMEOUT). Send it in one go.", code="request_timeout",
                       outcome="bad_request") from None
    req = parse_completion(raw, default_model=settings.default_model)
    preview = api.runtime.preview
    if (locked := preview.model_problem(req.model)) is not None:
        raise ApiError(403, locked, type_="permission_error", param="model", code="settings_locked",
                       outcome="refused")
    if preview.locked:  # the configured model, system prompt, temperature and max tokens (issue 12)
        req = dataclasses.replace(req, model=preview.model_id)
    router = api.runtime.router
    route = _resolve(router, req)
    call.model = route.primary.id
    turn = Turn(
        message=req.message,
        history=req.history,
        model_id=req.model,
        system_prompt=settings.system_prompt if req.system_prompt is None else req.system_prompt,
        temperature=req.temperature,
        max_tokens=req.max_tokens,
        answer_so_far=req.answer_so_far,
    )
    turn = preview.apply(turn)
    try:
        api.runtime.service.validate(turn)
    except InputError as exc:
        raise from_chat_error(exc) from None

    planned = route.chain[0] if route.chain else route.primary
    answer = Answer(router.catalogue, model=planned.id, include_usage=req.include_usage, keep_text=not req.stream)
    chain = ",".join(dict.fromkeys([route.primary.id, *(spec.id for spec in route.chain)]))
    events = api.runtime.service.respond(turn, route)
    if admission.identity is not None:
        events = api.runtime.gate.metered(admission.identity, events)
    pump = EventPump(events, settings.sse_heartbeat)
    pump.watch(request.receive)
    resumable = request.headers.get("x-resumable", "").strip().lower() == "true"
    try:
        if req.stream:
            return await _stream(api, pump, answer, chain, admission, call, resumable=resumable)
        return await _collect(api, pump, answer, chain, call)
    except BaseException:
        pump.close()
        raise


def _resolve(router: Router, req: CompletionRequest) -> Route:
    try:
        return router.resolve(req.model, req.message)
    except InputError as exc:
        raise ApiError(404, f"{exc} (GET /v1/models lists them with their state.)", param="model",
                       code="model_not_found", outcome="unknown_model") from None
    except AllModelsFailed as exc:
        raise from_chat_error(exc) from None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(size, limit)
        parts.append(part)
    return b"".join(parts)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, f"The request body is over {limit:,} bytes (at least {size:,} were sent). Send a "
                    "shorter conversation (older turns can be left out: Relay Chat summarizes long ones), "
                    "or raise CHAT_MAX_REQUEST_BYTES on the server.",
                    code="request_too_large", outcome="too_large")


def _failure(api: Api, exc: BaseException) -> ApiError:
    if isinstance(exc, ChatError):
        retry = _retry_after(api.runtime.router, exc) if isinstance(exc, AllModelsFailed) else None
        return from_chat_error(exc, retry_after=retry)
    log.error("the answer failed unexpectedly", exc_info=exc)
    return ApiError(500, "Internal error while answering; the server log has the details.", type_="server_error",
                    code="internal_error", outcome="internal_error")


def _retry_after(router: Router, exc: AllModelsFailed) -> float | None:
    """Seconds until a model that failed is expected back (its Retry-After or cooldown)."""
    waits = [err.retry_after for _, err in exc.attempts if err.retry_after]
    now = time.time()
    for model_id, _ in exc.attempts:
        until = router.availability(model_id).until
        if until is not None:
            waits.append(until - now)
    return min(waits) if waits else None


def _headers(answer: Answer, chain: str) -> dict[str, str]:
    return {**answer.headers(), "X-Fallback-Chain": chain}


async def _collect(api: Api, pump: EventPump, answer: Answer, chain: str, call: Call) -> Response:
    try:
        while True:
            batch = await pump.get()
            events: list[Any] = []
            for item in batch:
                if item is PING:
                    continue
                if item is GONE:
                    call.outcome = "client_closed"
                    return Response(status_code=499)
                if item is END:
                    answer.follow(events)
                    call.model = answer.first_model or answer.model
                    _observe(api, answer, call)
                    body = orjson.dumps(answer.completion())
                    return Response(body, headers=_headers(answer, chain), media_type="application/json")
                if isinstance(item, Failed):
                    answer.follow(events)
                    error = _failure(api, item.error)
                    error.headers.update(_headers(answer, chain))
                    _observe(api, answer, call)
                    raise error
                events.append(item)
            answer.follow(events)
    finally:
        pump.close()


async def _stream(api: Api, pump: EventPump, answer: Answer, chain: str, admission: Admission,
                  call: Call, *, resumable: bool = False) -> Response:
    """Wait for the first text or heartbeat, then commit the headers and stream."""
    first: list[Any] = []
    pinged = texted = ended = False
    failure: Failed | None = None
    while not (pinged or texted or ended):
        for item in await pump.get():
            if item is GONE:
                pump.close()
                call.outcome = "client_closed"
                return Response(status_code=499)
            if isinstance(item, Failed) and texted:
                failure, ended = item, True  # text arrived with it: send the text, then the error event
                break
            if isinstance(item, Failed):
                pump.close()
                answer.follow(first)
                error = _failure(api, item.error)
                error.headers.update(_headers(answer, chain))
                _observe(api, answer, call)
                raise error
            if item is PING:
                pinged = True
            elif item is END:
                ended = True
            else:
                first.append(item)
                # The first text commits the headers (with the rest of this batch).
                texted = texted or type(item) is TextDelta

    def describe(exc: BaseException) -> dict[str, Any]:
        return _failure(api, exc).body()

    # An answer that already ended (or failed after its first text) ends in the opening bytes.
    tail = [failure] if failure is not None else [END] if ended else []
    payload, outcome = encode_batch(answer, [*first, *tail], describe)
    opening = (PING_BYTES if pinged else b"") + payload

    async def on_end(outcome: str) -> None:
        api.metrics.active_streams.dec()
        call.outcome = outcome
        call.model = answer.first_model or answer.model
        _observe(api, answer, call)
        await admission.release()

    api.metrics.active_streams.inc()
    call.streaming = True
    headers = {**SSE_HEADERS, **_headers(answer, chain), "X-Stream-Id": answer.id}
    if resumable and admission.identity is not None:
        pump.unwatch()  # the answer runs on without its client; FollowStream watches the reader
        run = api.streams.start(pump, answer, opening, outcome=outcome, describe=describe, on_end=on_end,
                                owner=admission.identity.key, headers=_headers(answer, chain))
        return FollowStream(api.streams.follow_local(run, 0), {**headers, "X-Resumable": "true"},
                            counts_itself=True)
    return AnswerStream(pump, answer, opening, outcome=outcome, describe=describe, on_end=on_end, headers=headers)


def _observe(api: Api, answer: Answer, call: Call) -> None:
    """Per-answer metrics (the request itself is counted by the route wrapper)."""
    stats = answer.stats
    ttft = None if stats.first_text_at is None else stats.first_text_at - call.started
    api.metrics.api.observe(answer.first_model, ttft, stats.reported_tokens(), stats.fallbacks)
    if call.streaming:
        call.finish(api)
