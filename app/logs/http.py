"""`POST /ingest`: newline-delimited JSON from log shippers, same key and limits as `ingestLogs`.

Each line is `{"log": "...", "level": "INFO", "attributes": {...}, "idempotencyKey": "..."}`.
The batch is stored all or nothing; the answer is a JSON summary or a JSON error with its code.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.api.errors import INTERNAL, BadUserInput, LodgeError, Unauthenticated
from app.api.extensions import database_unavailable
from app.api.scalars import contains_nul
from app.api.validation import MAX_JSON_DEPTH, nested_too_deep
from app.deps import Deps
from app.logs import events, service
from app.observability import metrics

_STATUS = {"BAD_USER_INPUT": 400, "UNAUTHENTICATED": 401, "FORBIDDEN": 403}

log = logging.getLogger("lodge.api")


def _secret(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "apikey" and value.strip():
        return value.strip()
    if key := request.headers.get("x-api-key"):
        return key.strip()
    raise Unauthenticated("an API key is required: send `Authorization: ApiKey <secret>` or `X-API-Key`")


def _parse(body: bytes) -> list[service.LogItem]:
    items = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise BadUserInput(f"line {number} is not valid JSON", line=number) from None
        if contains_nul(data):
            raise BadUserInput(f"line {number}: text may not contain the NUL character (U+0000)", line=number)
        if not isinstance(data, dict) or not isinstance(data.get("log"), str):
            raise BadUserInput(f"line {number} needs a string `log`", line=number)
        if nested_too_deep(data.get("attributes")):
            message = f"line {number}: attributes may nest at most {MAX_JSON_DEPTH} levels"
            raise BadUserInput(message, line=number, maxDepth=MAX_JSON_DEPTH)
        level = data.get("level", "INFO")
        key = data.get("idempotencyKey")
        if not isinstance(level, str) or (key is not None and not isinstance(key, str)):
            raise BadUserInput(f"line {number}: `level` and `idempotencyKey` must be strings", line=number)
        items.append(
            service.LogItem(
                log=data["log"], level=level.upper(), attributes=data.get("attributes"), idempotency_key=key
            )
        )
    return items


async def ingest_endpoint(request: Request) -> JSONResponse:
    deps: Deps = request.app.state.deps
    settings = deps.settings
    request_id = getattr(request.state, "request_id", "")
    try:
        secret = _secret(request)
        body = await request.body()
        async with deps.db.autocommit() as conn:
            key = await service.authenticate_api_key(conn, secret=secret)
            request.scope.setdefault("state", {})["lodge_caller"] = {"api_key_id": str(key.id)}
            deps.limiter.vouch(secret)
            items = _parse(body)
            batch = service.prepare_batch(items, max_batch=settings.max_batch_size, max_bytes=settings.max_log_bytes)
            outcome = await service.ingest(conn, api_key=key, batch=batch)
    except LodgeError as exc:
        return JSONResponse(
            {"error": {"message": exc.message, **exc.extensions, "requestId": request_id}},
            status_code=_STATUS.get(exc.code, 400),
        )
    except Exception as exc:
        if database_unavailable(exc):
            log.warning("database unavailable for /ingest (request %s): %r", request_id, exc)
            message = "the database is unavailable; nothing was saved: retry shortly"
            extensions = {"code": INTERNAL, "retryable": True, "reason": "database_unavailable"}
            status, headers = 503, {"retry-after": "1"}
        else:
            log.exception("unexpected error in /ingest (request %s)", request_id)
            message, extensions, status, headers = "Internal server error", {"code": INTERNAL}, 500, {}
        return JSONResponse(
            {"error": {"message": message, **extensions, "requestId": request_id}}, status_code=status, headers=headers
        )
    metrics.logs_ingested("http", new=len(outcome.inserted), duplicates=outcome.duplicates)
    if (event := outcome.event()) is not None:
        await deps.hub.publish(events.project_channel(key.project_id), event)
    return JSONResponse(
        {"accepted": len(outcome.inserted), "duplicates": outcome.duplicates, "ids": [str(i) for i in outcome.ids]}
    )
