"""Prometheus metrics (prometheus-client), in a registry of Lodge's own.

Every metric is created once per process; several apps in one process (the tests) share them, so
readers compare values before and after, never absolute ones. Gauges that describe live objects
(database pools, fan-out subscribers) are read when scraped, from the apps that are running.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from app.deps import Deps

REGISTRY = CollectorRegistry(auto_describe=True)

# Process metrics (RSS, CPU, open file descriptors) and the garbage collector's, under the usual names.
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

OPERATIONS = Counter(
    "lodge_graphql_operations_total",
    "GraphQL operations by type (query, mutation, subscription) and outcome (ok, the first error's code, "
    "cancelled when the client ended it first, shutdown when the server stopped under it).",
    ["type", "outcome"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "lodge_graphql_operation_duration_seconds",
    "Time to answer a query or mutation, by operation name (`_anonymous`, or `_other` past the name limit).",
    ["type", "name"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "lodge_http_requests_total", "HTTP requests by route and status.", ["route", "status"], registry=REGISTRY
)
WEBSOCKETS = Gauge("lodge_websocket_connections", "Open websocket connections.", registry=REGISTRY)
SUBSCRIPTIONS = Gauge(
    "lodge_graphql_subscriptions_active", "GraphQL subscriptions running, by field.", ["field"], registry=REGISTRY
)
COMPILED_ROOTS = Counter(
    "lodge_compiled_roots_total",
    "Root fields of queries by how they ran: `compiled` as one SQL statement, `hybrid` as one "
    "statement plus the resolvers of the fields that need Python, or on the resolver "
    "path after a bail (`bail_before` the statement: arguments or a caller the resolver refuses; "
    "`bail_after`: a value or guard the resolver reports as an error), or `failed` (the statement "
    "failed: its error is the answer).",
    ["outcome"],
)
SHARED_RENDERS = Counter(
    "lodge_subscription_shared_renders_total",
    "Shared subscription events by rendering: `executed` once per document, variables and (for "
    "viewer-dependent selections) principal, `reused` by every other subscriber of that key.",
    ["outcome"],
    registry=REGISTRY,
)
FANOUT_LAG = Histogram(
    "lodge_fanout_lag_seconds",
    "From publishing an event after its commit to handing it to this process's subscribers.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "lodge_fanout_deliveries_total",
    "Events handed to subscribers: `live` from the broker, `caught_up` read back from PostgreSQL.",
    ["path"],
    registry=REGISTRY,
)
OVERFLOWS = Counter(
    "lodge_fanout_overflows_total",
    "Subscriber queues that overflowed: their backlog was dropped and they catch up from PostgreSQL.",
    registry=REGISTRY,
)
CATCH_UPS = Counter(
    "lodge_live_tail_catch_ups_total",
    "Live tails that read PostgreSQL, by reason (resume, resync, gap, poll).",
    ["reason"],
    registry=REGISTRY,
)
BROKER_RECONNECTS = Counter(
    "lodge_broker_reconnects_total", "Times the Redis pub/sub connection was re-established.", registry=REGISTRY
)
PUBLISH_FAILURES = Counter(
    "lodge_broker_publish_failures_total",
    "Publishes the broker refused (subscribers catch up from PostgreSQL).",
    registry=REGISTRY,
)
LOGS_INGESTED = Counter(
    "lodge_logs_ingested_total",
    "Logs committed, by path (graphql, http) and kind (new, duplicate idempotency key).",
    ["path", "kind"],
    registry=REGISTRY,
)
RESERVATIONS = Counter(
    "lodge_reservations_total",
    "Gateway quota reservations by outcome (granted, quota_exhausted, completed, failed, expired).",
    ["outcome"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "lodge_rate_limited_total",
    "Requests and sign-in attempts refused by the rate limiter, by bucket kind "
    "(api_key, user, anonymous, login_address, login_email).",
    ["kind"],
    registry=REGISTRY,
)
PASSWORD_HASHES = Counter(
    "lodge_password_hashes_total",
    "argon2 computations, by purpose (hash: sign-up or a new password; verify: sign-in or a password check): "
    "the CPU that password guessing costs.",
    ["purpose"],
    registry=REGISTRY,
)
RATE_LIMITER_FALLBACKS = Counter(
    "lodge_rate_limiter_fallbacks_total",
    "Rate-limit checks answered by this process's buckets because Redis failed.",
    registry=REGISTRY,
)
REFUSED = Counter(
    "lodge_operations_refused_total",
    "Operations refused before execution, by reason (cost, persisted, timeout).",
    ["reason"],
    registry=REGISTRY,
)


def logs_ingested(path: str, *, new: int, duplicates: int) -> None:
    if new:
        LOGS_INGESTED.labels(path, "new").inc(new)
    if duplicates:
        LOGS_INGESTED.labels(path, "duplicate").inc(duplicates)


# Operation names come from clients: bounded, so that a client cannot grow the registry without end.
MAX_OPERATION_NAMES = 500
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_names: set[str] = set()
_names_lock = threading.Lock()


def operation_label(name: str | None) -> str:
    if not name:
        return "_anonymous"
    if name in _names:
        return name
    if not _NAME.match(name):
        return "_other"
    with _names_lock:
        if len(_names) >= MAX_OPERATION_NAMES:
            return "_other"
        _names.add(name)
    return name


class _LiveCollector(Collector):
    """Database pool use and fan-out subscribers of the apps running in this process."""

    def __init__(self) -> None:
        self.apps: weakref.WeakValueDictionary[int, Deps] = weakref.WeakValueDictionary()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = GaugeMetricFamily(
            "lodge_db_pool_connections", "Database pool connections by state (in_use, idle).", labels=["state"]
        )
        size = GaugeMetricFamily("lodge_db_pool_size", "Configured database pool size (without overflow).")
        subscribers = GaugeMetricFamily(
            "lodge_fanout_subscribers", "Local subscribers of broker channels, by channel kind.", labels=["kind"]
        )
        in_use = idle = configured = 0
        kinds: dict[str, int] = {}
        for deps in list(self.apps.values()):
            stats = _pool_stats(deps)
            in_use += stats[0]
            idle += stats[1]
            configured += stats[2]
            for kind, count in deps.hub.subscriber_counts().items():
                kinds[kind] = kinds.get(kind, 0) + count
        pool.add_metric(["in_use"], in_use)
        pool.add_metric(["idle"], idle)
        size.add_metric([], configured)
        for kind, count in sorted(kinds.items()):
            subscribers.add_metric([kind], count)
        yield pool
        yield size
        yield subscribers

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


def _pool_stats(deps: Deps) -> tuple[int, int, int]:
    pool: Any = deps.db.engine.sync_engine.pool
    try:
        return int(pool.checkedout()), int(pool.checkedin()), int(pool.size())
    except AttributeError:  # a pool without statistics (NullPool)
        return 0, 0, 0


LIVE = _LiveCollector()
REGISTRY.register(LIVE)


def track(deps: Deps) -> None:
    """Report this app's pool and subscribers while it runs."""
    LIVE.apps[id(deps)] = deps


def untrack(deps: Deps) -> None:
    LIVE.apps.pop(id(deps), None)


def exposition() -> bytes:
    return generate_latest(REGISTRY)


async def metrics_endpoint(request: Request) -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
