"""Per-principal rate limits: token buckets, shared through Redis when the broker is Redis.

A principal is an API key, a signed-in user (access token) or session, or, for anonymous
callers, the client's address. Each has a bucket of `burst` tokens refilled at `rate` per second;
every GraphQL request, `POST /ingest` and websocket connection takes one. Identification reads
only the request's headers (an API key is known by a hash of its secret, an access token by its
verified subject): a refused request costs no database work.

With Redis, one Lua script per request takes the token atomically on the server's clock, so all
Lodge instances share each bucket. If Redis fails, the process falls back to its own buckets
(limits then hold per instance) and says so in the log and in `lodge_rate_limiter_fallbacks_total`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

import orjson
from redis import asyncio as aioredis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from app.accounts.credentials import SESSION_PREFIX
from app.accounts.security import decode_access_token
from app.api.errors import RATE_LIMITED
from app.observability import metrics
from app.settings import Settings

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


class RateLimiter:
    def __init__(self, settings: Settings, secret_key: str) -> None:
        self.limits = {
            "api_key": Limit(settings.rate_limit_api_key_per_second, settings.rate_limit_api_key_burst),
            "user": Limit(settings.rate_limit_user_per_second, settings.rate_limit_user_burst),
            "anonymous": Limit(settings.rate_limit_anonymous_per_second, settings.rate_limit_anonymous_burst),
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
        return any(limit.enabled for limit in self.limits.values())

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    def principal(self, scope: Scope) -> tuple[str, str]:
        """(kind, bucket key) of the caller, from headers alone."""
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"authorization", b"").decode("latin-1").strip()
        scheme, _, value = raw.partition(" ")
        value = value.strip()
        api_key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
        if scheme.lower() == "apikey" and value:
            api_key = value
        if api_key:
            return "api_key", "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:32]
        if scheme.lower() == "bearer" and value:
            if value.startswith(SESSION_PREFIX):
                return "user", "session:" + hashlib.sha256(value.encode()).hexdigest()[:32]
            claims = decode_access_token(value, secret=self.secret_key)
            if claims is not None:
                return "user", f"user:{claims.user_id}"
        client = scope.get("client")
        return "anonymous", f"ip:{client[0] if client else 'unknown'}"

    async def take(self, kind: str, key: str) -> float:
        limit = self.limits[kind]
        if not limit.enabled:
            return 0.0
        if self._script is not None:
            try:
                wait = float(await self._script(keys=[f"lodge:rate:{key}"], args=[limit.rate, limit.burst, 1]))
                if self._failing:
                    self._failing = False
                    log.info("rate limiter: Redis is back; buckets are shared again")
                return wait
            except (RedisError, OSError, ValueError) as exc:
                metrics.RATE_LIMITER_FALLBACKS.inc()
                if not self._failing:
                    self._failing = True
                    log.warning("rate limiter: Redis unavailable (%s); limiting per process meanwhile", exc)
        return self.local.take(key, limit)


LIMITED_PATHS = frozenset({"/graphql", "/ingest"})


class RateLimitMiddleware:
    """Refuse over-limit requests with 429, `Retry-After` and a RATE_LIMITED error, before any work."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") not in LIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope.get("method") not in ("POST", "GET"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope.get("method") == "GET" and _wants_html(scope):
            await self.app(scope, receive, send)  # GraphiQL's page
            return
        kind, key = self.limiter.principal(scope)
        wait = await self.limiter.take(kind, key)
        if wait <= 0:
            await self.app(scope, receive, send)
            return
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
    accept = dict(scope.get("headers") or []).get(b"accept", b"")
    return b"text/html" in accept
