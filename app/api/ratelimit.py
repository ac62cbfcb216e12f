"""Per-principal rate limits: token buckets, shared through Redis when the broker is Redis.

A principal is an API key, a signed-in user (access token) or session, or, for anonymous
callers, the client's address. Each has a bucket of `burst` tokens refilled at `rate` per second;
every GraphQL request, `POST /ingest` and websocket connection takes one. Identification reads
only the request's headers (an API key is known by a hash of its secret, an access token by its
verified subject): a refused request costs no database work.

`login` and `register` are password guesses, whatever credential the request carries (an attacker
sends a made-up key, or a valid token of their own, to get a fresh bucket per guess). Each attempt
also takes a token from its address's sign-in bucket and from its email's, before any password is
hashed (`limit_sign_in`); these buckets are keyed by an HMAC of the address or of the normalised
email under the server's secret, so Redis holds neither.

With Redis, one Lua script per request takes the token atomically on the server's clock, so all
Lodge instances share each bucket. If Redis fails, the process falls back to its own buckets
(limits then hold per instance) and says so in the log and in `lodge_rate_limiter_fallbacks_total`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from redis import asyncio as aioredis
from redis.exceptions import RedisError
from starlette.types import Scope, Send
from starlette.websockets import WebSocket
from strawberry.extensions import SchemaExtension

from app.api.errors import RATE_LIMITED, LodgeError
from app.observability import metrics
from app.settings import Settings

if TYPE_CHECKING:
    from app.api.context import Context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens per second
    burst: int

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.burst > 0


class LocalBuckets:
    """Buckets in this process, the least recently used forgotten past `capacity` principals."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._capacity = capacity

    def take(self, key: str, limit: Limit, cost: float = 1.0) -> float:
        """0 if allowed, else the seconds until `cost` tokens will be there."""
        now = time.monotonic()
        tokens, stamp = self._buckets.pop(key, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - stamp) * limit.rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / limit.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._capacity:
            self._buckets.popitem(last=False)
        return wait


# KEYS[1] bucket; ARGV rate, burst, cost. Returns the wait in seconds as a string ("0" = allowed).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


VOUCH_SECONDS = 300.0
REDIS_BACKOFF_SECONDS = 5.0


class RateLimiter:
    """Credentials get a bucket of their own only once they have been seen to work (an API key or
    session token that authenticated in this process lately; an access token whose signature
    verifies): a made-up key is limited as its address, like anyone anonymous."""

    def __init__(self, settings: Settings, secret_key: str, bearer: Callable[[str], str | None]) -> None:
        """`bearer(token)`: what a bearer token is from itself alone: "session" for an opaque
        session token (a bucket of its own once vouched for), "user:<id>" for an access token
        whose signature verifies, None for anything else (app.accounts.authentication)."""
        self._bearer = bearer
        self._vouched: OrderedDict[str, float] = OrderedDict()
        self._redis_down_until = 0.0
        self.limits = {
            "api_key": Limit(settings.rate_limit_api_key_per_second, settings.rate_limit_api_key_burst),
            "user": Limit(settings.rate_limit_user_per_second, settings.rate_limit_user_burst),
            "anonymous": Limit(settings.rate_limit_anonymous_per_second, settings.rate_limit_anonymous_burst),
            # Sign-in attempts, configured per minute.
            "login_address": Limit(
                settings.rate_limit_login_address_per_minute / 60, settings.rate_limit_login_address_burst
            ),
            "login_email": Limit(
                settings.rate_limit_login_email_per_minute / 60, settings.rate_limit_login_email_burst
            ),
        }
        self.secret_key = secret_key
        self.local = LocalBuckets()
        self.redis: aioredis.Redis | None = None
        self._script = None
        url = settings.broadcast_url
        if url.startswith(("redis://", "rediss://")) and any(limit.enabled for limit in self.limits.values()):
            self.redis = aioredis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
            self._script = self.redis.register_script(_TAKE)
        self._failing = False

    @property
    def enabled(self) -> bool:
        """Whether requests are limited per principal (the sign-in limits are checked by their fields)."""
        return any(self.limits[kind].enabled for kind in REQUEST_KINDS)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    def vouch(self, secret: str) -> None:
        """`secret` (an API key or a session token) just authenticated."""
        digest = _digest(secret)
        self._vouched[digest] = time.monotonic() + VOUCH_SECONDS
        self._vouched.move_to_end(digest)
        while len(self._vouched) > 100_000:
            self._vouched.popitem(last=False)

    def _is_vouched(self, digest: str) -> bool:
        until = self._vouched.get(digest)
        return until is not None and until > time.monotonic()

    def principal(self, scope: Scope, authorization: str | None = None) -> tuple[str, str]:
        """(kind, bucket key) of the caller, from headers alone (or a websocket's connection_init
        `authorization`). Authorization wins over X-API-Key, as when the request is served."""
        headers = dict(scope.get("headers") or [])
        raw = authorization if authorization is not None else headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, value = raw.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if not raw.strip():
            scheme, value = "apikey", headers.get(b"x-api-key", b"").decode("latin-1").strip()
        if value and scheme == "apikey":
            digest = _digest(value)
            if self._is_vouched(digest):
                return "api_key", "key:" + digest
        elif value and scheme == "bearer":
            bucket = self._bearer(value)
            if bucket == "session":
                digest = _digest(value)
                if self._is_vouched(digest):
                    return "user", "session:" + digest
            elif bucket is not None:
                return "user", bucket
        return "anonymous", "ip:" + _address(scope.get("client"))

    async def take_sign_in(self, scope: Scope, email: str) -> tuple[str, float]:
        """One sign-in attempt from this client at this email: ("", 0) if allowed, else the bucket
        that refused and its wait. A refusal by the address spends nothing of the email's bucket."""
        buckets = (
            ("login_address", "signin:address:" + self._keyed("address", _address(scope.get("client")))),
            ("login_email", "signin:email:" + self._keyed("email", email.strip().lower())),
        )
        for kind, key in buckets:
            wait = await self.take(kind, key)
            if wait > 0:
                return kind, wait
        return "", 0.0

    def _keyed(self, purpose: str, value: str) -> str:
        # Keyed, not a bare hash: emails and addresses are few enough to recover from a plain digest.
        message = f"rate-limit:{purpose}:{value}".encode()
        return hmac.new(self.secret_key.encode(), message, hashlib.sha256).hexdigest()[:32]

    async def take(self, kind: str, key: str) -> float:
        limit = self.limits[kind]
        if not limit.enabled:
            return 0.0
        if self._script is not None and time.monotonic() >= self._redis_down_until:
            try:
                wait = float(await self._script(keys=[f"lodge:rate:{key}"], args=[limit.rate, limit.burst, 1]))
                if self._failing:
                    self._failing = False
                    log.info("rate limiter: Redis is back; buckets are shared again")
                return wait
            except (RedisError, OSError, ValueError) as exc:
                # Not again for a few seconds: every request would wait for Redis's timeout.
                self._redis_down_until = time.monotonic() + REDIS_BACKOFF_SECONDS
                if not self._failing:
                    self._failing = True
                    log.warning("rate limiter: Redis unavailable (%s); limiting per process meanwhile", exc)
        if self._script is not None:
            metrics.RATE_LIMITER_FALLBACKS.inc()
        return self.local.take(key, limit)


REQUEST_KINDS = ("api_key", "user", "anonymous")
LIMITED_PATHS = frozenset({"/graphql", "/ingest"})


def is_limited(scope: Scope) -> bool:
    """Whether the request takes a token: GraphQL and `/ingest`, by POST or GET (not GraphiQL's
    page), and every websocket handshake there."""
    if scope.get("path") not in LIMITED_PATHS:
        return False
    if scope["type"] == "websocket":
        return True
    method = scope.get("method")
    return method == "POST" or (method == "GET" and not _wants_html(scope))


async def refuse(scope: Scope, send: Send, kind: str, wait: float) -> None:
    """The answer to a request over its limit: 429 with `Retry-After` and RATE_LIMITED (in
    `/ingest`'s error shape there), or a websocket handshake closed with 4429."""
    metrics.RATE_LIMITED.labels(kind).inc()
    retry_after = max(1, math.ceil(wait))
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4429, "reason": "rate limited"})
        return
    message = f"too many requests: retry in {retry_after} s"
    extensions = {"code": RATE_LIMITED, "retryAfter": retry_after}
    if scope.get("path") == "/ingest":
        body = orjson.dumps({"error": {"message": message, **extensions}})
    else:
        body = orjson.dumps({"data": None, "errors": [{"message": message, "extensions": extensions}]})
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _wants_html(scope: Scope) -> bool:
    """GraphiQL's page: a browser's GET without a query or a persisted-query hash (with either,
    the view runs an operation: see `LodgeGraphQL.should_render_graphql_ide`)."""
    accept = dict(scope.get("headers") or []).get(b"accept", b"")
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return b"text/html" in accept and "query" not in query and "extensions" not in query


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


def _address(client: Any) -> str:
    """The client's address; IPv6 by its /64, which one subscriber usually holds whole."""
    host = client[0] if client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped or address) if isinstance(address, ipaddress.IPv6Address) else str(address)


class RateLimited(LodgeError):
    code = RATE_LIMITED


class RateLimitOperations(SchemaExtension):
    """Over a websocket, every operation takes a token too (the handshake took one)."""

    async def on_execute(self) -> AsyncIterator[None]:
        ctx: Any = self.execution_context.context
        request = getattr(ctx, "request", None)
        if isinstance(request, WebSocket) and ctx.deps.limiter.enabled:
            params = ctx.connection_params or {}
            authorization = params.get("authorization") or params.get("Authorization")
            limiter: RateLimiter = ctx.deps.limiter
            kind, key = limiter.principal(request.scope, authorization if isinstance(authorization, str) else "")
            wait = await limiter.take(kind, key)
            if wait > 0:
                metrics.RATE_LIMITED.labels(kind).inc()
                retry_after = max(1, math.ceil(wait))
                raise RateLimited(f"too many requests: retry in {retry_after} s", retryAfter=retry_after)
        yield


async def limit_sign_in(ctx: Context, *, email: str) -> None:
    """Called first by `login` and `register`, so every attempt counts however it arrives (HTTP,
    websocket, several aliases in one document) and a refused one hashes no password. A field-level
    refusal: RATE_LIMITED with `retryAfter`, other fields of the document are not affected."""
    limiter = ctx.deps.limiter
    kind, wait = await limiter.take_sign_in(ctx.request.scope, email)
    if wait > 0:
        metrics.RATE_LIMITED.labels(kind).inc()
        retry_after = max(1, math.ceil(wait))
        raise RateLimited(f"too many sign-in attempts: retry in {retry_after} s", retryAfter=retry_after)
