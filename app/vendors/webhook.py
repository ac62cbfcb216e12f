"""POST /webhooks/billing: the billing provider's word on a subscription, signed as Stripe signs.

The request carries `Lodge-Signature: t=<unix seconds>,v1=<hex>` where the hex is the
HMAC-SHA256, under LODGE_BILLING_WEBHOOK_SECRET, of `<t>.` followed by the raw body (several
`v1=` are allowed while a secret is rotated). A signature older or newer than
LODGE_BILLING_WEBHOOK_TOLERANCE_SECONDS is refused, so a captured request cannot be replayed later.

The body is one event:

    {"id": "evt_123", "type": "subscription.updated", "created": 1765000000,
     "data": {"provider": "stripe", "externalId": "sub_123", "userId": "<Lodge user id>" | "clerkId": "...",
              "productId": "pro", "status": "active" | "cancelled" | "expired",
              "startDate": "2026-12-01T00:00:00Z", "endDate": null}}

Each event id is applied once (a repeat answers 200 with `duplicate: true`); the subscription
named by (provider, externalId) is created or updated in the same transaction, unless it already
holds a newer event's word (`created`): providers do not promise order.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from app.api.errors import BAD_USER_INPUT, INTERNAL, NOT_FOUND, UNAUTHENTICATED
from app.audit import recorder
from app.audit.recorder import AuditEntry
from app.deps import Deps
from app.vendors import models

log = logging.getLogger(__name__)

HEADER = "lodge-signature"
MAX_BODY = 256 * 1024
MAX_TEXT = 255


class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header value for `body` at `timestamp` (what a provider, or a test, sends)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(header: str, body: bytes, *, secret: str, tolerance: int, now: float | None = None) -> None:
    parts = [part.partition("=") for part in header.split(",")]
    stamps = [value.strip() for key, _, value in parts if key.strip() == "t"]
    signatures = [value.strip() for key, _, value in parts if key.strip() == "v1"]
    # ASCII digits only (str.isdigit takes "²"), and a sane length.
    if len(stamps) != 1 or not re.fullmatch(r"[0-9]{1,12}", stamps[0]) or not signatures:
        raise Refusal(401, UNAUTHENTICATED, f"a {HEADER} header of the form t=<seconds>,v1=<hex> is required")
    timestamp = int(stamps[0])
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise Refusal(401, UNAUTHENTICATED, "the signature's timestamp is outside the tolerance")
    expected = sign(secret, body, timestamp).partition("v1=")[2]
    if not any(hmac.compare_digest(expected, given) for given in signatures):
        raise Refusal(401, UNAUTHENTICATED, "the signature does not match the body")


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    created: datetime
    provider: str
    external_id: str
    user_id: uuid.UUID | None
    clerk_id: str | None
    product_id: str
    status: str
    start_date: datetime
    end_date: datetime | None


def _text(data: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT or "\x00" in value:
        raise Refusal(400, BAD_USER_INPUT, f"`{key}` must be a non-empty string of at most {MAX_TEXT} characters")
    return value.strip()


def _time(data: dict[str, Any], key: str, *, required: bool = True) -> datetime | None:
    value = data.get(key)
    if value is None and not required:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise Refusal(400, BAD_USER_INPUT, f"`{key}` must carry its UTC offset")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise Refusal(400, BAD_USER_INPUT, f"`{key}` must be an ISO 8601 date-time") from None


def parse(body: bytes) -> Event:
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refusal(400, BAD_USER_INPUT, "the body is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        raise Refusal(400, BAD_USER_INPUT, "an event is an object with `id`, `type`, `created` and `data`")
    data = event["data"]
    kind = _text(event, "type")
    assert kind is not None
    if not kind.startswith("subscription."):
        raise Refusal(400, BAD_USER_INPUT, f"unknown event type {kind!r}: subscription.* events only")
    created = event.get("created")
    # Up to the year 9999 (a datetime's range).
    if not isinstance(created, int) or isinstance(created, bool) or not 0 < created < 253_402_300_800:
        raise Refusal(400, BAD_USER_INPUT, "`created` must be the event's time in Unix seconds")
    status = (_text(data, "status") or "").lower()
    if status not in models.SUBSCRIPTION_STATUSES:
        raise Refusal(400, BAD_USER_INPUT, f"`status` must be one of {', '.join(models.SUBSCRIPTION_STATUSES)}")
    user_id = None
    if data.get("userId") is not None:
        try:
            user_id = uuid.UUID(str(data["userId"]))
        except ValueError:
            raise Refusal(400, BAD_USER_INPUT, "`userId` is not a valid id") from None
    clerk_id = _text(data, "clerkId", required=False)
    start = _time(data, "startDate")
    end = _time(data, "endDate", required=False)
    assert start is not None
    if end is not None and end < start:
        raise Refusal(400, BAD_USER_INPUT, "`endDate` is before `startDate`")
    return Event(
        id=_text(event, "id") or "",
        type=kind,
        created=datetime.fromtimestamp(created, UTC),
        provider=_text(data, "provider") or "",
        external_id=_text(data, "externalId") or "",
        user_id=user_id,
        clerk_id=clerk_id,
        product_id=_text(data, "productId") or "",
        status=status,
        start_date=start,
        end_date=end,
    )


_SEEN = text("INSERT INTO billing_events (id, type) VALUES (:id, :type) ON CONFLICT (id) DO NOTHING RETURNING id")
_USER = text(
    """
    SELECT id FROM users
    WHERE deleted_at IS NULL
      AND (id = CAST(:user_id AS uuid) OR (CAST(:user_id AS uuid) IS NULL AND clerk_id = :clerk_id))
    """
)
_APPLY = text(
    """
    INSERT INTO subscriptions
        (user_id, provider, product_id, status, start_date, end_date, external_id, provider_updated_at)
    VALUES (:user_id, :provider, :product_id, :status, :start_date, :end_date, :external_id, :created)
    ON CONFLICT (provider, external_id) WHERE external_id IS NOT NULL DO UPDATE SET
        product_id = EXCLUDED.product_id, status = EXCLUDED.status, start_date = EXCLUDED.start_date,
        end_date = EXCLUDED.end_date, provider_updated_at = EXCLUDED.provider_updated_at
    WHERE subscriptions.provider_updated_at IS NULL OR subscriptions.provider_updated_at <= EXCLUDED.provider_updated_at
    RETURNING id
    """
)
_EXISTING = text("SELECT id, user_id FROM subscriptions WHERE provider = :provider AND external_id = :external_id")


async def billing_webhook_endpoint(request: Request) -> JSONResponse:
    deps: Deps = request.app.state.deps
    settings = deps.settings
    request_id = getattr(request.state, "request_id", "")
    secret = settings.billing_webhook_secret
    try:
        if not secret:
            raise Refusal(404, NOT_FOUND, "no billing webhook is configured (LODGE_BILLING_WEBHOOK_SECRET)")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            raise Refusal(413, BAD_USER_INPUT, f"an event is at most {MAX_BODY} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise Refusal(413, BAD_USER_INPUT, f"an event is at most {MAX_BODY} bytes")
        verify(
            request.headers.get(HEADER, ""), body, secret=secret, tolerance=settings.billing_webhook_tolerance_seconds
        )
        event = parse(body)
        async with deps.db.session() as session:
            if await session.scalar(_SEEN, {"id": event.id, "type": event.type}) is None:
                return JSONResponse({"received": True, "duplicate": True})
            found = (
                await session.execute(_EXISTING, {"provider": event.provider, "external_id": event.external_id})
            ).first()
            existing, user_id = (found[0], found[1]) if found is not None else (None, None)
            if existing is None:
                if event.user_id is None and event.clerk_id is None:
                    raise Refusal(400, BAD_USER_INPUT, "a new subscription needs `userId` or `clerkId`")
                user_id = await session.scalar(_USER, {"user_id": event.user_id, "clerk_id": event.clerk_id})
                if user_id is None:
                    raise Refusal(400, BAD_USER_INPUT, "no live user has this `userId` or `clerkId`")
            params = {
                "user_id": user_id,
                "provider": event.provider,
                "product_id": event.product_id,
                "status": event.status,
                "start_date": event.start_date,
                "end_date": event.end_date,
                "external_id": event.external_id,
                "created": event.created,
            }
            try:
                applied = await session.scalar(_APPLY, params)
            except IntegrityError:  # created meanwhile by a concurrent event, for a user not given here
                raise Refusal(409, "CONFLICT", "the subscription changed meanwhile; send the event again") from None
            details = {"event": event.id, "type": event.type, "status": event.status, "applied": applied is not None}
            resource = str(applied or existing or "")
            entry = AuditEntry("subscription.webhook", "subscription", resource or None, details)
            await recorder.write_for_request(
                session, viewer=None, request=request, request_id=request_id, entries=[entry]
            )
            await session.commit()
    except Refusal as exc:
        return JSONResponse(
            {"error": {"message": exc.message, "code": exc.code, "requestId": request_id}}, status_code=exc.status
        )
    except ClientDisconnect:
        return JSONResponse(
            {"error": {"message": "the body did not arrive", "code": BAD_USER_INPUT, "requestId": request_id}},
            status_code=400,
        )
    except Exception:
        log.exception("billing webhook failed (request %s)", request_id)
        return JSONResponse(
            {
                "error": {
                    "message": "Internal server error; nothing was applied",
                    "code": INTERNAL,
                    "requestId": request_id,
                }
            },
            status_code=500,
        )
    # Applied, or older than what the subscription holds (then it changed nothing, and says so).
    return JSONResponse({"received": True, "applied": applied is not None, "subscriptionId": resource or None})
