"""Schema-driven fuzzing of the GraphQL API: random documents and variables from hypothesis-graphql.

Run by hand: `uv run python -m bench.fuzz [--examples 10000] [--seed N] [--rev HEAD|worktree]`. CI runs 300 documents
with seed 1 (tests/test_fuzz_smoke.py).

What it does. Exports `--rev` (default HEAD, with `git archive`: the checkout may be mid-edit) and runs it as
`lodge serve` (LODGE_ENV=production, Redis bus at `--redis`, JSON logs) on a throwaway database on the PostgreSQL
at BENCH_DATABASE_URL, dropped at the end. It seeds real rows through the API (an admin holding a role with `*`, a
plain user, a victim user; a project with a project-wide key and an environment key, client, service, environment
with quota, a flow, logs, a guild with members, an analysis, a conversation and message, workflows with nodes, an
edge, a published version, an execution and its log, files, vendors with a location, billing subscriptions, an
integration, a role, a session) and reseeds every 500 documents or when the fuzzing killed its own credentials.
Then it sends `--examples` documents over HTTP, one at a time: 75% single-field mutations (every mutation field of
the introspected schema the same number of times), 15% queries, 5% documents of several mutation fields, 5%
documents with one schema violation (hypothesis-graphql's negative mode). `ID`, `String`, `DateTime` and `JSON`
have custom strategies (real ids of any type, random uuids, junk; real strings and cursors; valid ISO dates and
junk; small JSON values); a second pass swaps half the values by argument name for plausible ones (an id of the
right type, an existing service, email, node key or cursor, a mutated cursor, an in-range coordinate or page size)
and hoists every argument into variables in half the documents (a tenth of those with one variable of the wrong
shape). Callers: the admin 70%, the plain user 15%, anonymous or a junk token 10%, an API key 5% (70% for the
API-key mutations). Checks per document: no HTTP 5xx, no non-JSON body, no error without `extensions.code`, no
`INTERNAL` (with the server's traceback, found by request id), no hang (60 s); for every mutation answered with
errors: per-table row counts and `sum(hashtext(row::text))` equal before and after except `audit_logs` (and what
the README says is written anyway: logs and api_keys for ingestion, refresh_tokens for a reused refresh token,
request_logs for a gateway's refused request),
`data` null, and every audit row of the request `success = false` (and one at least if a field ran). At the end
`/healthz` and `/readyz`. The sweepers are slowed to once a day so that their writes are not taken for partial
writes. Output: a summary (also in bench/.results/fuzz-<time>/summary.txt) and, next to it, problems.json and
the server's log.

Results of the long runs, with their dates and machines: docs/fuzz.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import re
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import asyncpg
import graphql
import httpx
import hypothesis_graphql
from graphql import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    ListTypeNode,
    NamedTypeNode,
    NameNode,
    NonNullTypeNode,
    ObjectFieldNode,
    OperationDefinitionNode,
    TypeInfo,
    TypeInfoVisitor,
    TypeNode,
    ValueNode,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis_graphql import nodes

from bench.common import machine
from bench.launch import ROOT, LodgeProcess, bench_database, export, free_port, git, plain_dsn, server_env

PASSWORD = "fuzzing passphrase 42"
REQUEST_TIMEOUT = 60.0
# Mutations that need `Authorization: ApiKey`: mostly fuzzed with a key.
API_KEY_FIELDS = frozenset({"ingestLog", "ingestLogs", "recordRequest", "startFlow", "completeFlow"})
# Tables a failed mutation may change, by design (README): every failed mutation records its audit row;
# ingestion commits on its own (logs, and the key's lastUsedAt on the same autocommit connection); a reused
# refresh token revokes its whole login; a gateway's refused request is logged (a request_logs row, refused).
ALWAYS_WRITTEN = frozenset({"audit_logs"})
WRITTEN_ON_FAILURE = {
    "ingestLog": frozenset({"logs", "api_keys"}),
    "ingestLogs": frozenset({"logs", "api_keys"}),
    "refresh": frozenset({"refresh_tokens"}),
    "recordRequest": frozenset({"request_logs"}),
    "startFlow": frozenset({"request_logs"}),
}
# Table -> GraphQL type, for typed pools of real ids.
TABLE_TYPES = {
    "users": "User",
    "roles": "Role",
    "sessions": "Session",
    "projects": "Project",
    "api_keys": "ApiKey",
    "logs": "Log",
    "clients": "Client",
    "services": "Service",
    "environments": "Environment",
    "request_logs": "RequestLog",
    "reservations": "Reservation",
    "guilds": "Guild",
    "club_analyses": "ClubAnalysis",
    "chat_conversations": "ChatConversation",
    "chat_messages": "ChatMessage",
    "workflows": "Workflow",
    "workflow_nodes": "WorkflowNode",
    "workflow_edges": "WorkflowEdge",
    "executions": "Execution",
    "execution_logs": "ExecutionLog",
    "files": "File",
    "vendors": "Vendor",
    "locations": "Location",
    "subscriptions": "BillingSubscription",
    "integrations": "Integration",
}
# ID arguments and input fields whose name says what they point at.
ID_NAMES = {
    "userId": "User",
    "ownerId": "User",
    "roleId": "Role",
    "projectId": "Project",
    "apiKeyId": "ApiKey",
    "clientId": "Client",
    "serviceId": "Service",
    "environmentId": "Environment",
    "reservationId": "Reservation",
    "startPoint": "RequestLog",
    "guildId": "Guild",
    "conversationId": "ChatConversation",
    "workflowId": "Workflow",
    "executionId": "Execution",
    "vendorId": "Vendor",
}
VERBS = re.compile(r"^(create|update|delete|remove|revoke|restore|publish|archive|cancel|register|record|add|upsert)")
JUNK_IDS = [
    "",
    " ",
    "0",
    "-1",
    "null",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "not-an-id",
    "{12345678-1234-5678-1234-567812345678}",
    "urn:uuid:12345678-1234-5678-1234-567812345678",
    "12345678123456781234567812345678",
    "12345678-1234-5678-1234-56781234567",
    "' OR 1=1 --",
    "x" * 300,
]
SPECIAL_STRINGS = [
    "",
    " ",
    "a",
    "*",
    "users:admin",
    "gateway:admin",
    "owner",
    "admin",
    "member",
    "active",
    "cancelled",
    "expired",
    "stripe",
    "revenuecat",
    "https://example.com/a.png",
    "text/plain",
    "%",
    "_",
    "\\",
    "'",
    '"',
    "null",
    "é",
    "\u202e",
    "😀",
    "\U0001d518\U0001d52b",  # outside the BMP
    "\ud7ff",
    "\x00",
    "a\x00b",
    "' OR 1=1 --",
    "<script>",
    "2026-01-01T00:00:00Z",
    "x" * 256,
    "x" * 5000,
    "x" * 300_000,
]
DATETIME_JUNK = [
    "",
    "now",
    "2026-13-01T00:00:00Z",
    "2026-02-30",
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59-05:00",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59.999999+00:00",
    "2026-01-01",
    "2026-01-01T00:00:00+24:00",
    "1970-01-01T00:00:00Z",
    "+002026-01-01T00:00:00",
    "2026-W01",
]
SMART_NUMBERS: dict[str, list[Any]] = {
    "first": [0, 1, 2, 5, 50, 500, 501, -1],
    "last": [0, 1, 2, 5, 50, 500, 501, -1],
    "ttlSeconds": [1, 60, 3600, 0, -1, 2**31 - 1],
    "amount": [1, 2, 0, -1, 1_000_001],
    "availableRequests": [0, 1, 100, -1, 2**31 - 1],
    "delta": [0, 1, -1, 100, -(2**31), 2**31 - 1],
    "confidence": [0, 0.5, 1, 1.0001, -0.1],
    "minConfidence": [0, 0.5, 1, 2],
    "size": [0, 1, 1.5, 2**40, -1],
    "fileSize": [0, 100, -1, 2**31 - 1],
    "radiusKm": [0, 0.001, 1, 100, 20_000, 1e9, -1],
    "value": [0, 1.5, -1e308, 1e308],
}
COORDINATES = {"lat": 90.0, "long": 180.0, "minLat": 90.0, "maxLat": 90.0, "minLong": 180.0, "maxLong": 180.0}
SMART_LISTS: dict[str, list[list[str]]] = {
    "roles": [["owner"], ["admin"], ["member"], [], ["owner", "admin"]],
    "permissions": [["*"], ["users:admin"], ["audit:read", "gateway:admin"], [], ["nope"]],
    "tags": [["a"], ["a", "b"], [], ["x" * 300]],
}
STRING_HARVEST = {"refreshToken", "cursor", "endCursor", "startCursor", "accessToken"}


# -- values -------------------------------------------------------------------------------------


def value_node(value: Any) -> ValueNode:
    """A Python JSON value as a GraphQL literal."""
    if value is None:
        return nodes.Null
    if isinstance(value, bool):
        return nodes.Boolean(value)
    if isinstance(value, int):
        return nodes.Int(value)
    if isinstance(value, float):
        return nodes.Float(value)
    if isinstance(value, str):
        return nodes.String(value)
    if isinstance(value, list):
        return nodes.List([value_node(v) for v in value])
    if isinstance(value, dict):
        return nodes.Object([ObjectFieldNode(name=NameNode(value=k), value=value_node(v)) for k, v in value.items()])
    raise TypeError(type(value))


def type_node(type_: GraphQLInputType) -> TypeNode:
    if isinstance(type_, GraphQLNonNull):
        inner = type_node(type_.of_type)
        assert isinstance(inner, NamedTypeNode | ListTypeNode)
        return NonNullTypeNode(type=inner)
    if isinstance(type_, GraphQLList):
        return ListTypeNode(type=type_node(type_.of_type))
    return NamedTypeNode(name=NameNode(value=type_.name))


def named(type_: Any) -> str:
    return str(graphql.get_named_type(type_).name)


@dataclass
class Pools:
    """Real values the fuzzer mixes into generated documents; refreshed from the database and responses."""

    ids: dict[str, list[str]] = field(default_factory=dict)  # GraphQL type -> ids
    all_ids: list[str] = field(default_factory=list)
    strings: dict[str, list[str]] = field(default_factory=dict)  # purpose -> strings
    seen: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=2000))
    harvested: dict[str, collections.deque[str]] = field(
        default_factory=lambda: collections.defaultdict(lambda: collections.deque(maxlen=200))
    )

    def any_id(self, index: int) -> str:
        total = len(self.all_ids) + len(self.seen)
        if total == 0:
            return "00000000-0000-0000-0000-000000000000"
        index %= total
        return self.all_ids[index] if index < len(self.all_ids) else self.seen[index - len(self.all_ids)]

    def any_string(self, index: int) -> str:
        flat = [s for values in self.strings.values() for s in values]
        for values in self.harvested.values():
            flat.extend(values)
        flat.extend(SPECIAL_STRINGS)
        return flat[index % len(flat)]

    def harvest(self, value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                self.harvest(v, k)
        elif isinstance(value, list):
            for v in value:
                self.harvest(v, key)
        elif isinstance(value, str):
            if key == "id" or key.endswith("Id"):
                self.seen.append(value)
            elif key in STRING_HARVEST:
                self.harvested["cursor" if "ursor" in key else key].append(value)


def scalar_strategies(pools: Pools) -> dict[str, st.SearchStrategy[ValueNode]]:
    """Custom scalars (and the built-in String and ID, overridden to mix in real values)."""
    alphabet = st.characters(codec="utf-8", min_codepoint=0, max_codepoint=0xFFFF, exclude_categories=["Cs"])
    index = st.integers(min_value=0, max_value=2**20)
    real_id = index.map(pools.any_id)
    ids: st.SearchStrategy[ValueNode] = st.one_of(
        real_id.map(nodes.String),
        real_id.map(nodes.String),
        real_id.map(nodes.String),
        real_id.map(nodes.String),
        st.uuids().map(nodes.String),
        st.sampled_from(JUNK_IDS).map(nodes.String),
        st.text(alphabet=alphabet, max_size=40).map(nodes.String),
        st.integers(min_value=-(2**31), max_value=2**31 - 1).map(nodes.Int),
    )
    strings: st.SearchStrategy[ValueNode] = st.one_of(
        st.text(alphabet=alphabet).map(nodes.String),
        st.text(alphabet=alphabet).map(nodes.String),
        index.map(pools.any_string).map(nodes.String),
    )
    offsets = st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-12))])
    moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=cast(Any, offsets))
    datetimes: st.SearchStrategy[ValueNode] = st.one_of(
        moments.map(lambda d: nodes.String(d.isoformat())),
        moments.map(lambda d: nodes.String(d.isoformat())),
        moments.map(lambda d: nodes.String(d.isoformat())),
        st.sampled_from(DATETIME_JUNK).map(nodes.String),
        st.text(alphabet=alphabet, max_size=30).map(nodes.String),
        st.integers().map(nodes.Int),
    )
    keys = st.one_of(
        st.sampled_from(["features", "chatBot", "clubAnalytics", "a", "b", "_", "nested"]),
        st.from_regex(r"[_A-Za-z][_0-9A-Za-z]{0,8}", fullmatch=True),
    )
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(alphabet=alphabet, max_size=20),
    )
    json_values = st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
        max_leaves=12,
    )
    return {
        "ID": ids,
        "String": strings,
        "DateTime": datetimes,
        "JSON": json_values.map(value_node),
    }


class Rewriter(Visitor):
    """Second pass over a generated document (driven by a Random that hypothesis seeds).

    Swaps some values for plausible ones by argument name (a real id of the right type, a real service
    name or node key, an in-range coordinate, a small page size), so that resolvers get past input
    checks more often; then optionally hoists every argument into a variable."""

    def __init__(self, type_info: TypeInfo, rng: random.Random, pools: Pools, hoist: bool) -> None:
        super().__init__()
        self.type_info = type_info
        self.rng = rng
        self.pools = pools
        self.hoist = hoist
        self.fields: list[str] = []
        self.definitions: list[VariableDefinitionNode] = []
        self.variables: dict[str, Any] = {}

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        self.fields.append(node.name.value)

    def leave_field(self, node: FieldNode, *_: Any) -> None:
        self.fields.pop()

    def enter_argument(self, node: ArgumentNode, *_: Any) -> ArgumentNode | None:
        value = self.smart(node.name.value, self.type_info.get_input_type())
        return None if value is None else ArgumentNode(name=node.name, value=value)

    def enter_object_field(self, node: ObjectFieldNode, *_: Any) -> ObjectFieldNode | None:
        value = self.smart(node.name.value, self.type_info.get_input_type())
        return None if value is None else ObjectFieldNode(name=node.name, value=value)

    def leave_argument(self, node: ArgumentNode, *_: Any) -> ArgumentNode | None:
        argument = self.type_info.get_argument()
        if not self.hoist or argument is None or isinstance(node.value, VariableNode):
            return None
        name = f"v{len(self.definitions)}"
        variable = VariableNode(name=NameNode(value=name))
        self.variables[name] = graphql.value_from_ast_untyped(node.value)
        self.definitions.append(VariableDefinitionNode(variable=variable, type=type_node(argument.type)))
        return ArgumentNode(name=node.name, value=variable)

    def smart(self, name: str, type_: GraphQLInputType | None) -> ValueNode | None:
        if type_ is None or self.rng.random() < 0.5:
            return None
        kind = named(type_)
        listed = isinstance(graphql.get_nullable_type(type_), GraphQLList)
        rng = self.rng
        if kind == "ID" and not listed:
            target = ID_NAMES.get(name) or (self.id_target() if name == "id" else None)
            pool = self.pools.ids.get(target or "") or []
            return nodes.String(rng.choice(pool)) if pool else None
        if kind == "String" and listed and name in SMART_LISTS:
            return value_node(rng.choice(SMART_LISTS[name]))
        if kind == "String" and not listed:
            purpose = {
                "service": "service",
                "email": "email",
                "key": "node_key",
                "source": "node_key",
                "target": "node_key",
                "discordId": "discord_id",
                "externalId": "external_id",
                "refreshToken": "refreshToken",
                "after": "cursor",
                "before": "cursor",
            }.get(name)
            if name in ("password", "currentPassword"):
                return nodes.String(PASSWORD)
            if name == "status":
                return nodes.String(rng.choice(["active", "cancelled", "expired"]))
            if purpose is None:
                return None
            if purpose == "email" and rng.random() < 0.5:
                return nodes.String(f"fuzz-{rng.getrandbits(40):x}@example.com")
            values = list(self.pools.strings.get(purpose, [])) + list(self.pools.harvested.get(purpose, []))
            if purpose == "cursor" and values and rng.random() < 0.3:
                return nodes.String(mutate_cursor(rng, rng.choice(values)))
            return nodes.String(rng.choice(values)) if values else None
        if kind in ("Int", "Float") and not listed:
            if name in COORDINATES:
                bound = COORDINATES[name]
                choice = rng.choice([rng.uniform(-bound, bound), bound, -bound, bound + 1e-9])
                return nodes.Float(choice)
            if name in SMART_NUMBERS:
                number = rng.choice(SMART_NUMBERS[name])
                if kind == "Int" and isinstance(number, float):
                    number = int(number)
                return nodes.Int(number) if isinstance(number, int) else nodes.Float(number)
        return None

    def id_target(self) -> str | None:
        """The type an `id` argument names, from its field: deleteSession -> Session."""
        if not self.fields:
            return None
        field_name = self.fields[-1]
        if field_name == "conversation":
            return "ChatConversation"
        stem = VERBS.sub("", field_name)
        stem = stem[:1].upper() + stem[1:]
        matches = [t for t in self.pools.ids if stem.startswith(t)]
        return max(matches, key=len) if matches else None


def mutate_cursor(rng: random.Random, cursor: str) -> str:
    """A cursor of a real kind with a value that is not one."""
    import base64

    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:
        raw = "x:1"
    kind = raw.partition(":")[0]
    value = rng.choice(
        [
            "",
            "-1",
            str(2**63),
            "99999999999999999999999",
            "x",
            "2026-01-01T00:00:00+00:00|not-a-uuid",
            "9999-12-31T23:59:59+00:00|" + str(uuid.UUID(int=0)),
            "0001-01-01T00:00:00+05:00|" + str(uuid.UUID(int=0)),
            "2026-01-01T00:00:00|",
            "|",
            "[]",
            '["NEWEST"]',
            '["MOST_CONFIDENT", "x", "y"]',
            '["NEWEST", "2026-01-01T00:00:00+00:00", "not-a-uuid"]',
            "{}",
            "null",
            "\x00",
        ]
    )
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def rewrite(
    document: DocumentNode, schema: GraphQLSchema, rng: random.Random, pools: Pools, hoist: bool
) -> tuple[str, dict[str, Any]]:
    type_info = TypeInfo(schema)
    rewriter = Rewriter(type_info, rng, pools, hoist)
    edited = graphql.visit(document, TypeInfoVisitor(type_info, rewriter))
    assert isinstance(edited, DocumentNode)
    if rewriter.definitions:
        op = edited.definitions[0]
        assert isinstance(op, OperationDefinitionNode)
        op = OperationDefinitionNode(
            operation=op.operation,
            name=op.name,
            variable_definitions=tuple(rewriter.definitions),
            directives=op.directives,
            selection_set=op.selection_set,
        )
        edited = DocumentNode(definitions=(op,))
    variables = rewriter.variables
    if variables and rng.random() < 0.1:
        # A variable of the wrong shape: coercion has to refuse it cleanly.
        victim = rng.choice(sorted(variables))
        variables[victim] = rng.choice([None, "x", 2**40, [], {}, True, 1.5, "2026-01-01", [None], {"a": 1}])
    return graphql.print_ast(edited), variables


# -- the server and the database ----------------------------------------------------------------


def server_code(rev: str, out: Path) -> tuple[Path, str]:
    """The code the server runs: a revision exported with `git archive` (the checkout may be in the middle of
    someone's edit), or with `worktree` the checkout as it is."""
    if rev == "worktree":
        return ROOT, f"working tree at {git('describe', '--always', '--dirty')}"
    tree = out / "code"
    commit = export(rev, tree)
    return tree, f"commit {commit[:12]} ({git('log', '-1', '--format=%s', commit)[:80]})"


def server(database_url: str, log_path: Path, redis_url: str, code: Path) -> LodgeProcess:
    """`lodge serve` in its own process; its log (tracebacks of unexpected errors) goes to `log_path`."""
    env = server_env(
        database_url,
        redis_url,
        LOG_LEVEL="WARNING",
        LODGE_LOG_FORMAT="json",
        LODGE_ACCESS_TOKEN_TTL="86400",
        # The sweepers write on their own schedule, which would look like partial writes.
        LODGE_SESSION_SWEEP_SECONDS="86400",
        LODGE_RESERVATION_SWEEP_SECONDS="86400",
    )
    return LodgeProcess(code, free_port(), env, log=log_path)


class Database:
    """Per-table row counts and checksums, and the pools of real values."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.tables: list[str] = []
        self.snapshot_sql = ""

    async def prepare(self) -> None:
        rows = await self.conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_type = 'BASE TABLE' AND table_name <> 'alembic_version' ORDER BY table_name"
        )
        self.tables = [r["table_name"] for r in rows]
        parts = [
            f"SELECT '{t}' AS t, count(*) AS n, "
            + ("0::bigint" if t in ALWAYS_WRITTEN else "coalesce(sum(hashtext(x::text)::bigint), 0)")
            + f' AS h FROM "{t}" x'
            for t in self.tables
        ]
        self.snapshot_sql = " UNION ALL ".join(parts)

    async def snapshot(self) -> dict[str, tuple[int, int]]:
        return {r["t"]: (r["n"], r["h"]) for r in await self.conn.fetch(self.snapshot_sql)}

    async def audit_rows(self, request_id: str) -> list[tuple[str, bool]]:
        rows = await self.conn.fetch("SELECT action, success FROM audit_logs WHERE request_id = $1", request_id)
        return [(r["action"], r["success"]) for r in rows]

    async def refresh(self, pools: Pools) -> None:
        with_id = {
            r["table_name"]
            for r in await self.conn.fetch(
                "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'id'"
            )
        }
        ids: dict[str, list[str]] = {}
        for table, type_name in TABLE_TYPES.items():
            if table in with_id:
                rows = await self.conn.fetch(f'SELECT id::text AS id FROM "{table}" ORDER BY random() LIMIT 40')
                ids[type_name] = [r["id"] for r in rows]
        pools.ids = ids
        pools.all_ids = [i for values in ids.values() for i in values]

        async def column(sql: str) -> list[str]:
            return [str(r[0]) for r in await self.conn.fetch(sql) if r[0] is not None]

        pools.strings = {
            "service": await column("SELECT name FROM services ORDER BY random() LIMIT 20"),
            "email": await column("SELECT email FROM users ORDER BY random() LIMIT 20"),
            "node_key": await column("SELECT node_key FROM workflow_nodes ORDER BY random() LIMIT 20"),
            "discord_id": await column(
                "(SELECT discord_id FROM guilds ORDER BY random() LIMIT 10) UNION ALL "
                "(SELECT discord_id FROM users WHERE discord_id IS NOT NULL ORDER BY random() LIMIT 10)"
            ),
            "external_id": await column("SELECT external_id FROM integrations ORDER BY random() LIMIT 10"),
        }


# -- the drill ------------------------------------------------------------------------------------


@dataclass
class Case:
    index: int
    kind: str  # mutation (one field), multi (several mutation fields), negative (schema violation), query
    persona: str  # admin, user, anonymous, junk-token, project-key, environment-key
    document: str
    variables: dict[str, Any]
    hoisted: bool
    operation: str
    root_fields: list[str]


@dataclass
class Problem:
    kind: str  # INTERNAL, HTTP 5xx, partial write, audit, hang, ...
    signature: str
    case: Case
    request_id: str
    detail: str
    traceback: str = ""


@dataclass
class Stats:
    sent: int = 0
    by_outcome: collections.Counter[str] = field(default_factory=collections.Counter)
    by_code: collections.Counter[str] = field(default_factory=collections.Counter)
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    by_persona: collections.Counter[str] = field(default_factory=collections.Counter)
    by_status: collections.Counter[int] = field(default_factory=collections.Counter)
    field_outcomes: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    field_messages: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    persona_outcomes: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    hoisted: int = 0
    failed_mutations_checked: int = 0
    reseeds: int = 0
    reprovisions: int = 0
    seed_failures: list[str] = field(default_factory=list)
    elapsed: float = 0.0


class GraphQLFailed(Exception):
    pass


class Fuzzer:
    def __init__(self, base: str, client: httpx.AsyncClient, db: Database, schema: GraphQLSchema) -> None:
        self.base = base
        self.client = client
        self.db = db
        self.schema = schema
        self.pools = Pools()
        self.stats = Stats()
        self.problems: list[Problem] = []
        self.tokens: dict[str, str] = {}
        self.user_ids: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self.superuser_role: str = ""
        self.generation = 0
        self.last_snapshot: dict[str, tuple[int, int]] | None = None
        self.counter = 0
        assert schema.mutation_type is not None and schema.query_type is not None
        self.mutation_names = sorted(schema.mutation_type.fields)
        custom = scalar_strategies(self.pools)

        def identity(doc: DocumentNode) -> DocumentNode:
            return doc

        self.per_mutation = {
            name: hypothesis_graphql.mutations(schema, fields=[name], custom_scalars=custom, print_ast=identity)
            for name in self.mutation_names
        }
        self.any_mutations = hypothesis_graphql.mutations(schema, custom_scalars=custom, print_ast=identity)
        self.queries = hypothesis_graphql.queries(schema, custom_scalars=custom, print_ast=identity)
        self.negative = hypothesis_graphql.from_schema(
            schema, custom_scalars=custom, print_ast=identity, mode=hypothesis_graphql.Mode.NEGATIVE
        )

    # -- plumbing ------------------------------------------------------------------------------

    async def gql(self, query: str, variables: dict[str, Any] | None = None, auth: str | None = None) -> Any:
        headers = {"authorization": auth} if auth else {}
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        body = response.json()
        if body.get("errors"):
            raise GraphQLFailed(json.dumps(body["errors"])[:500])
        return body["data"]

    def bearer(self, persona: str) -> str:
        return f"Bearer {self.tokens[persona]}"

    async def register(self, label: str) -> tuple[str, str]:
        email = f"fuzz-{label}-{uuid.uuid4().hex[:8]}@example.com"
        data = await self.gql(
            "mutation($i: RegisterInput!) { register(input: $i) { accessToken refreshToken user { id } } }",
            {"i": {"email": email, "password": PASSWORD, "name": label}},
        )
        self.pools.harvested["refreshToken"].append(data["register"]["refreshToken"])
        return data["register"]["accessToken"], data["register"]["user"]["id"]

    async def provision(self, persona: str) -> None:
        """A fresh admin (a role with `*`, granted through the database as `lodge create-user --admin`
        does) or plain user."""
        token, user_id = await self.register(persona)
        if persona == "admin":
            if self.superuser_role and not await self.db.conn.fetchval(
                "SELECT 1 FROM roles WHERE id = $1", uuid.UUID(self.superuser_role)
            ):
                self.superuser_role = ""  # the fuzzing deleted it (deleteRole)
            if not self.superuser_role:
                self.superuser_role = str(
                    await self.db.conn.fetchval(
                        "INSERT INTO roles (name, permissions) VALUES ($1, '[\"*\"]') RETURNING id",
                        f"fuzz-superuser-{uuid.uuid4().hex[:8]}",
                    )
                )
            await self.db.conn.execute(
                "INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2)",
                uuid.UUID(user_id),
                uuid.UUID(self.superuser_role),
            )
        self.tokens[persona], self.user_ids[persona] = token, user_id

    async def persona_ok(self, persona: str) -> bool:
        try:
            me = (await self.gql("{ me { id roles { permissions } } }", auth=self.bearer(persona)))["me"]
        except (GraphQLFailed, KeyError):
            return False
        if me is None:
            return False
        permissions = {p for role in me["roles"] for p in role["permissions"]}
        return "*" in permissions if persona == "admin" else not permissions

    async def step(self, label: str, query: str, variables: dict[str, Any], auth: str) -> Any:
        try:
            return await self.gql(query, variables, auth)
        except (GraphQLFailed, httpx.HTTPError, ValueError) as exc:
            self.stats.seed_failures.append(f"{label}: {exc}"[:300])
            return None

    async def seed(self) -> None:
        """Real rows of every kind, owned by the admin and by the plain user."""
        self.generation += 1
        self.stats.reseeds += 1
        n = f"{self.generation}-{uuid.uuid4().hex[:6]}"
        for persona in ("admin", "user"):
            if persona not in self.tokens or not await self.persona_ok(persona):
                await self.provision(persona)
        _, victim = await self.register("victim")
        admin, user = self.bearer("admin"), self.bearer("user")
        s = self.step
        project = await s("project", 'mutation { createProject(input: {name: "fuzz"}) { id } }', {}, admin)
        if project is None:
            return
        pid = project["createProject"]["id"]
        key = await s(
            "key",
            'mutation($p: ID!) { createApiKey(input: {projectId: $p, label: "fuzz"}) { secret } }',
            {"p": pid},
            admin,
        )
        client = await s(
            "client", 'mutation { createClient(input: {name: "fuzz", email: "c@example.com"}) { id } }', {}, admin
        )
        service_name = f"svc-{n}"
        service = await s(
            "service", "mutation($n: String!) { createService(input: {name: $n}) { id } }", {"n": service_name}, admin
        )
        sid = service["createService"]["id"] if service else str(uuid.uuid4())
        await s(
            "project service",
            "mutation($p: ID!, $s: ID!) { addProjectService(projectId: $p, serviceId: $s) { id } }",
            {"p": pid, "s": sid},
            admin,
        )
        if client:
            await s(
                "project client",
                "mutation($p: ID!, $c: ID!) { updateProject(id: $p, input: {clientId: $c}) { id } }",
                {"p": pid, "c": client["createClient"]["id"]},
                admin,
            )
        env = await s(
            "environment",
            "mutation($p: ID!, $n: String!) { createEnvironment(projectId: $p, name: $n) { id } }",
            {"p": pid, "n": f"env-{n}"},
            admin,
        )
        eid = env["createEnvironment"]["id"] if env else str(uuid.uuid4())
        await s(
            "enable",
            "mutation($e: ID!, $s: ID!) { enableEnvironmentService(environmentId: $e, serviceId: $s, availableRequests: 1000000) { availableRequests } }",
            {"e": eid, "s": sid},
            admin,
        )
        env_key = await s(
            "env key",
            'mutation($p: ID!, $e: ID!) { createApiKey(input: {projectId: $p, environmentId: $e, label: "env"}) { secret } }',
            {"p": pid, "e": eid},
            admin,
        )
        if key:
            self.keys["project-key"] = key["createApiKey"]["secret"]
        if env_key:
            self.keys["environment-key"] = env_key["createApiKey"]["secret"]
            ek = f"ApiKey {self.keys['environment-key']}"
            flow = await s(
                "flow",
                "mutation($s: String!) { startFlow(service: $s, amount: 3, ttlSeconds: 86000) { requestLog { id } reservation { id } } }",
                {"s": service_name},
                ek,
            )
            if flow:
                await s(
                    "step",
                    'mutation($s: String!, $p: ID!) { recordRequest(service: $s, endpoint: "/x", startPoint: $p) { id } }',
                    {"s": service_name, "p": flow["startFlow"]["requestLog"]["id"]},
                    ek,
                )
            await s("request", "mutation($s: String!) { recordRequest(service: $s) { id } }", {"s": service_name}, ek)
        if key:
            await s(
                "ingest",
                'mutation { ingestLogs(inputs: [{log: "a", level: INFO, idempotencyKey: "k1"}, {log: "b", level: WARN, attributes: {x: 1}}]) { ids } }',
                {},
                f"ApiKey {self.keys['project-key']}",
            )
        guild = await s(
            "guild",
            'mutation($d: String!) { upsertGuild(input: {discordId: $d, name: "fuzz guild", settings: {features: {chatBot: true}}}) { id } }',
            {"d": f"discord-{n}"},
            admin,
        )
        if guild:
            gid = guild["upsertGuild"]["id"]
            for member, roles in ((self.user_ids["user"], ["owner"]), (victim, ["member"])):
                await s(
                    "member",
                    "mutation($g: ID!, $u: ID!, $r: [String!]) { addGuildMember(guildId: $g, userId: $u, roles: $r) { roles } }",
                    {"g": gid, "u": member, "r": roles},
                    admin,
                )
            await s(
                "analysis",
                'mutation($g: ID!) { createClubAnalysis(input: {guildId: $g, title: "t", summary: "club summary", confidence: 0.7, images: [{imageUrl: "https://example.com/a.png", fileSize: 10}], metrics: [{name: "m", value: 1.5, unit: "u"}]}) { id } }',
                {"g": gid},
                user,
            )
            conv = await s("conversation", 'mutation { createConversation(title: "c") { id } }', {}, user)
            if conv:
                await s(
                    "message",
                    'mutation($c: ID!, $g: ID!) { postChatMessage(input: {conversationId: $c, guildId: $g, text: "hi"}) { id } }',
                    {"c": conv["createConversation"]["id"], "g": gid},
                    user,
                )
        for owner in (user, admin):
            wf = await s(
                "workflow",
                'mutation { createWorkflow(input: {name: "fuzz flow", tags: ["t"], isPublic: true, configuration: {a: 1}}) { id } }',
                {},
                owner,
            )
            if not wf:
                continue
            wid = wf["createWorkflow"]["id"]
            for node in ("a", "b", "c"):
                await s(
                    "node",
                    'mutation($w: ID!, $k: String!) { addWorkflowNode(workflowId: $w, input: {key: $k, type: "task"}) { id } }',
                    {"w": wid, "k": node},
                    owner,
                )
            await s(
                "edge",
                'mutation($w: ID!) { addWorkflowEdge(workflowId: $w, input: {source: "a", target: "b"}) { id } }',
                {"w": wid},
                owner,
            )
            await s("publish", "mutation($w: ID!) { publishWorkflow(id: $w) { id } }", {"w": wid}, owner)
            execution = await s(
                "execution",
                "mutation($w: ID!) { startExecution(workflowId: $w, input: {x: 1}) { id } }",
                {"w": wid},
                owner,
            )
            if execution:
                await s(
                    "execution log",
                    'mutation($x: ID!) { appendExecutionLog(executionId: $x, input: {level: INFO, message: "m", nodeKey: "a"}) { id } }',
                    {"x": execution["startExecution"]["id"]},
                    owner,
                )
            await s(
                "file",
                'mutation { registerFile(input: {filename: "f.txt", originalFilename: "f.txt", mimeType: "text/plain", size: 12}) { id } }',
                {},
                owner,
            )
            vendor = await s(
                "vendor", 'mutation { createVendor(input: {name: "taco", lat: 1.5, long: 2.5}) { id } }', {}, owner
            )
            if vendor:
                await s(
                    "location",
                    "mutation($v: ID!) { recordVendorLocation(vendorId: $v, lat: 1.6, long: 2.6) { id } }",
                    {"v": vendor["createVendor"]["id"]},
                    owner,
                )
            await s(
                "billing",
                'mutation { createBillingSubscription(input: {provider: "stripe", productId: "pro", startDate: "2026-01-01T00:00:00Z"}) { id } }',
                {},
                admin,  # billing:write: nobody grants themself a subscription
            )
        await s(
            "integration",
            'mutation($e: String!) { upsertIntegration(input: {service: "stripe", externalId: $e, internalId: "i", metadata: {a: 1}}) { id } }',
            {"e": f"ext-{n}"},
            admin,
        )
        await s(
            "role",
            'mutation($n: String!) { createRole(input: {name: $n, permissions: ["audit:read"]}) { id } }',
            {"n": f"fuzz-role-{n}"},
            admin,
        )
        await s(
            "session",
            "mutation($u: ID!) { createSession(userId: $u, ttlSeconds: 86000) { token } }",
            {"u": victim},
            admin,
        )
        await self.db.refresh(self.pools)

    # -- one example ---------------------------------------------------------------------------

    def strategy(self, kind: str, target: str) -> st.SearchStrategy[DocumentNode]:
        if kind == "query":
            return self.queries
        if kind == "multi":
            return self.any_mutations
        if kind == "negative":
            return self.negative
        return self.per_mutation[target]

    def draw(self, data: st.DataObject, kind: str, target: str) -> Case:
        # Every choice comes from `data` (never from the fuzzer's state): hypothesis replays choice sequences
        # and refuses a test whose draws depend on anything else.
        index = self.counter
        self.counter += 1
        document = data.draw(self.strategy(kind, target))
        op = document.definitions[0]
        assert isinstance(op, OperationDefinitionNode)
        root_fields = [sel.name.value for sel in op.selection_set.selections if isinstance(sel, FieldNode)]
        roll = data.draw(st.integers(min_value=0, max_value=99))
        if API_KEY_FIELDS & set(root_fields):
            persona = (
                "environment-key"
                if roll < 45
                else "project-key"
                if roll < 70
                else "admin"
                if roll < 85
                else "anonymous"
            )
        else:
            persona = (
                "admin"
                if roll < 70
                else "user"
                if roll < 85
                else "anonymous"
                if roll < 93
                else "junk-token"
                if roll < 95
                else "project-key"
                if roll < 98
                else "environment-key"
            )
        rng = random.Random(data.draw(st.integers(min_value=0, max_value=2**64)))
        hoisted = rng.random() < 0.5
        text, variables = rewrite(document, self.schema, rng, self.pools, hoisted)
        return Case(
            index=index,
            kind=kind,
            persona=persona,
            document=text,
            variables=variables,
            hoisted=hoisted,
            operation=op.operation.value,
            root_fields=root_fields,
        )

    def auth_header(self, persona: str) -> dict[str, str]:
        if persona in ("admin", "user"):
            return {"authorization": self.bearer(persona)}
        if persona in self.keys:
            return {"authorization": f"ApiKey {self.keys[persona]}"}
        if persona == "junk-token":
            return {"authorization": "Bearer not-a-token"}
        return {}

    def problem(self, kind: str, signature: str, case: Case, request_id: str, detail: str) -> None:
        self.problems.append(Problem(kind=kind, signature=signature, case=case, request_id=request_id, detail=detail))

    async def execute(self, case: Case) -> None:
        request_id = f"fuzz-{case.index}-{uuid.uuid4().hex[:8]}"
        headers = {"x-request-id": request_id, **self.auth_header(case.persona)}
        mutation = case.operation == "mutation"
        before = None
        if mutation:
            before = self.last_snapshot or await self.db.snapshot()
        self.last_snapshot = None
        stats = self.stats
        stats.sent += 1
        stats.by_kind[case.kind] += 1
        stats.by_persona[case.persona] += 1
        stats.hoisted += case.hoisted
        try:
            response = await self.client.post(
                "/graphql",
                json={"query": case.document, "variables": case.variables},
                headers=headers,
                timeout=REQUEST_TIMEOUT,
            )
        except httpx.TimeoutException:
            stats.by_outcome["timeout"] += 1
            self.problem("hang", "hang: " + ",".join(case.root_fields), case, request_id, "no answer in 60 s")
            return
        except httpx.HTTPError as exc:
            stats.by_outcome["transport error"] += 1
            self.problem("transport", f"transport: {type(exc).__name__}", case, request_id, repr(exc))
            return
        stats.by_status[response.status_code] += 1
        if response.status_code >= 500:
            self.problem(
                "HTTP 5xx",
                f"HTTP {response.status_code}: " + ",".join(case.root_fields),
                case,
                request_id,
                response.text[:2000],
            )
        try:
            body = response.json()
        except ValueError:
            stats.by_outcome[f"HTTP {response.status_code} (not JSON)"] += 1
            if response.status_code < 500:
                self.problem(
                    "not JSON", f"not JSON: HTTP {response.status_code}", case, request_id, response.text[:2000]
                )
            return
        errors = body.get("errors") or [] if isinstance(body, dict) else []
        data = body.get("data") if isinstance(body, dict) else None
        codes = [str(((e or {}).get("extensions") or {}).get("code") or "NO CODE") for e in errors]
        outcome = "data" if not errors else codes[0]
        stats.by_outcome[outcome] += 1
        stats.persona_outcomes[case.persona][outcome] += 1
        stats.by_code.update(codes)
        for target in case.root_fields if case.kind in ("mutation", "query") else []:
            stats.field_outcomes[target][outcome] += 1
            if errors and isinstance(errors[0], dict):
                message = re.sub(r"\d+", "<n>", str(errors[0].get("message")))[:90]
                stats.field_messages[target][message] += 1
        for error, code in zip(errors, codes, strict=True):
            if code == "INTERNAL":
                rid = str((error.get("extensions") or {}).get("requestId") or request_id)
                path = ".".join(str(p) for p in error.get("path") or []) or "(no path)"
                self.problem("INTERNAL", f"INTERNAL at {path}", case, rid, path)
            elif code == "NO CODE":
                self.problem("no code", "error without extensions.code", case, request_id, json.dumps(error)[:1000])
        if data:
            self.pools.harvest(data)
        if mutation and errors:
            stats.failed_mutations_checked += 1
            assert before is not None
            after = await self.db.snapshot()
            exempt = set(ALWAYS_WRITTEN)
            for name in case.root_fields:
                exempt |= WRITTEN_ON_FAILURE.get(name, frozenset())
            changed = [
                f"{t}: rows {before.get(t, (0, 0))[0]} -> {after.get(t, (0, 0))[0]}"
                + ("" if before.get(t, (0, 0))[0] != after.get(t, (0, 0))[0] else " (same count, contents changed)")
                for t in sorted(set(before) | set(after))
                if t not in exempt and before.get(t) != after.get(t)
            ]
            if changed:
                tables = sorted(c.split(":")[0] for c in changed)
                self.problem(
                    "partial write",
                    f"partial write in {','.join(tables)} by {','.join(sorted(set(case.root_fields)))}",
                    case,
                    request_id,
                    "; ".join(changed) + f"; errors: {json.dumps(errors)[:800]}",
                )
            else:
                self.last_snapshot = after
            audited = await self.db.audit_rows(request_id)
            executed = any(e.get("path") for e in errors if isinstance(e, dict))
            if executed and not audited:
                # A field ran (its error has a path), so its audit row must have been recorded as a failure.
                self.problem(
                    "audit",
                    "failed mutation left no audit row",
                    case,
                    request_id,
                    f"errors: {json.dumps(errors)[:800]}",
                )
            if any(success for _, success in audited):
                self.problem(
                    "audit",
                    "failed mutation audited as a success",
                    case,
                    request_id,
                    f"audit rows {audited}; errors: {json.dumps(errors)[:800]}",
                )
            if isinstance(data, dict) and any(v is not None for v in data.values()):
                self.problem(
                    "data with errors", "failed mutation returned data", case, request_id, json.dumps(body)[:1500]
                )
        try:
            await self.recover(case, codes)
        except Exception as exc:  # the harness's own trouble: note it, the next example tries again
            self.stats.seed_failures.append(f"recover after {request_id}: {type(exc).__name__}: {exc}"[:300])
            self.last_snapshot = None

    async def recover(self, case: Case, codes: list[str]) -> None:
        """The fuzzer may delete its own users or revoke its keys: make fresh ones."""
        if self.counter % 100 == 0:
            await self.db.refresh(self.pools)
        if "UNAUTHENTICATED" not in codes and self.counter % 500:
            return
        if self.counter % 500 == 0:
            await self.seed()
            self.last_snapshot = None
            return
        if case.persona in ("admin", "user") and not await self.persona_ok(case.persona):
            await self.provision(case.persona)
            self.stats.reprovisions += 1
        elif case.persona in ("project-key", "environment-key"):
            probe = await self.client.post(
                "/graphql",
                json={"query": "{ requestLogs(first: 1) { totalCount } }"},
                headers=self.auth_header(case.persona),
            )
            if any(
                (e.get("extensions") or {}).get("code") == "UNAUTHENTICATED" for e in probe.json().get("errors") or []
            ):
                await self.seed()
        self.last_snapshot = None


# -- report ---------------------------------------------------------------------------------------

LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) (\S+) ", re.M)


def server_records(log_path: Path) -> list[tuple[str, str, str, str]]:
    """(level, logger, message, traceback) for every record of the server's log, JSON lines or text."""
    out: list[tuple[str, str, str, str]] = []
    text = log_path.read_text(errors="replace")
    plain: list[str] = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                out.append(
                    (
                        str(entry.get("level", "")).upper(),
                        str(entry.get("logger", "")),
                        str(entry.get("message", "")),
                        str(entry.get("exception", "")),
                    )
                )
                continue
        plain.append(line)
    rest = "\n".join(plain)
    starts = [m.start() for m in LOG_RECORD.finditer(rest)]
    for i, start in enumerate(starts):
        chunk = rest[start : starts[i + 1] if i + 1 < len(starts) else len(rest)].rstrip()
        m = LOG_RECORD.match(chunk)
        assert m is not None
        first, _, tb = chunk.partition("\n")
        out.append((m.group(1), m.group(2), first[m.end() :], tb))
    return out


def exception_of(tb: str) -> str:
    """`Type: message` of the last exception in a traceback, with ids and numbers blurred."""
    named = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Warning|Exit|Interrupt|Cancelled)\b")
    lines = [line for line in tb.strip().splitlines() if named.match(line)]
    last = lines[-1] if lines else (tb.strip().splitlines() or ["?"])[-1]
    last = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", last)
    last = re.sub(r"\(Background on this error at: [^)]*\)", "", last)
    last = re.sub(r"\d+", "<n>", last)
    return last.strip()[:160]


def app_frame(tb: str) -> str:
    """The deepest frame in app/: where the fix goes."""
    frames = re.findall(r'File "[^"]*/app/([^"]+)", line (\d+), in (\S+)', tb)
    if not frames:
        return "(no app frame)"
    path, line, func = frames[-1]
    return f"app/{path}:{line} ({func})"


def attach_tracebacks(problems: list[Problem], log_path: Path) -> tuple[list[Problem], list[str]]:
    """One INTERNAL problem per traceback the server logged for the request (a request may log several);
    the server's other ERROR records are returned apart."""
    by_request: dict[str, list[str]] = collections.defaultdict(list)
    unattributed = []
    for level, _, message, tb in server_records(log_path):
        m = re.search(r"\(request ([A-Za-z0-9._-]+)\)", message)
        if m and tb:
            by_request[m.group(1)].append(f"{message}\n{tb}")
        elif level in ("ERROR", "CRITICAL"):
            unattributed.append(f"{message}\n{tb}".strip())
    out: list[Problem] = []
    done: set[str] = set()
    for problem in problems:
        tbs = by_request.get(problem.request_id, [])
        if problem.kind != "INTERNAL" or not tbs:
            if tbs:
                problem.traceback = tbs[0]
            out.append(problem)
            continue
        if problem.request_id in done:
            continue
        done.add(problem.request_id)
        paths = [p.detail for p in problems if p.request_id == problem.request_id and p.kind == "INTERNAL"]
        for tb in dict.fromkeys(tbs):
            out.append(
                Problem(
                    kind="INTERNAL",
                    signature=exception_of(tb),
                    case=problem.case,
                    request_id=problem.request_id,
                    detail=f"{app_frame(tb)}; errors: " + " ".join(paths)[:600],
                    traceback=tb,
                )
            )
    return out, unattributed


def size(case: Case) -> int:
    return len(case.document) + len(json.dumps(case.variables))


def summarize(fuzzer: Fuzzer, unattributed: list[str], healthy: str, seed: int, examples: int) -> str:
    stats = fuzzer.stats
    lines = [
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {machine()}",
        f"examples asked: {examples}, seed {seed}; documents sent: {stats.sent} in {stats.elapsed:.0f} s "
        f"({stats.sent / max(stats.elapsed, 1e-9):.1f}/s); variables used in {stats.hoisted}",
        "by kind: " + ", ".join(f"{k} {v}" for k, v in stats.by_kind.most_common()),
        "by persona: "
        + "; ".join(
            f"{k} {v} ({', '.join(f'{o} {n}' for o, n in stats.persona_outcomes[k].most_common(4))})"
            for k, v in stats.by_persona.most_common()
        ),
        "HTTP status: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.by_status.items())),
        "outcome (first error's code): " + ", ".join(f"{k} {v}" for k, v in stats.by_outcome.most_common()),
        "all error codes: " + ", ".join(f"{k} {v}" for k, v in stats.by_code.most_common()),
        f"failed mutations checked for partial writes: {stats.failed_mutations_checked}; reseeds: {stats.reseeds}, "
        f"personas replaced: {stats.reprovisions}; "
        f"seed failures: {len(stats.seed_failures)}",
        f"health at the end: {healthy}",
    ]
    reached = sorted(f for f in fuzzer.mutation_names if stats.field_outcomes[f]["data"])
    never = sorted(f for f in fuzzer.mutation_names if not stats.field_outcomes[f]["data"])
    lines.append(f"mutations that returned data at least once: {len(reached)}/{len(fuzzer.mutation_names)}")
    if never:
        lines.append(
            "never returned data: "
            + "; ".join(
                f"{f} ({', '.join(f'{k} {v}' for k, v in stats.field_outcomes[f].most_common(3))}: "
                + " / ".join(m for m, _ in stats.field_messages[f].most_common(2))
                + ")"
                for f in never
            )
        )
    groups: dict[str, list[Problem]] = collections.defaultdict(list)
    for problem in fuzzer.problems:
        groups[f"{problem.kind}: {problem.signature}"].append(problem)
    lines.append(f"problems: {len(fuzzer.problems)} in {len(groups)} distinct signatures")
    for name, found in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        smallest = min(found, key=lambda p: size(p.case))
        fields = collections.Counter(f for p in found for f in p.case.root_fields)
        lines.append(f"- {name} x{len(found)} (fields: {', '.join(f'{k} {v}' for k, v in fields.most_common(6))})")
        if found[0].kind == "INTERNAL":
            frames = collections.Counter(p.detail.split(";")[0] for p in found)
            lines.append("    where: " + ", ".join(f"{k} x{v}" for k, v in frames.most_common(8)))
        lines.append(f"    persona {smallest.case.persona}, request {smallest.request_id}")
        lines.append("    document: " + smallest.case.document.replace("\n", " ")[:1500])
        lines.append("    variables: " + json.dumps(smallest.case.variables)[:800])
        lines.append("    detail: " + smallest.detail[:800])
        if smallest.traceback:
            tail = smallest.traceback.strip().splitlines()
            lines.append("    traceback (tail): " + " | ".join(t.strip() for t in tail[-8:]))
    if unattributed:
        lines.append(f"server ERROR records without a request id: {len(unattributed)}")
        for text in collections.Counter(exception_of(u) or u[:160] for u in unattributed).most_common(10):
            lines.append(f"  {text[1]} x {text[0]}")
    if stats.seed_failures:
        lines.append("seed failures (first 10): " + " || ".join(stats.seed_failures[:10]))
    return "\n".join(lines)


async def introspect(client: httpx.AsyncClient) -> GraphQLSchema:
    response = await client.post("/graphql", json={"query": graphql.get_introspection_query()})
    sdl = graphql.print_schema(graphql.build_client_schema(response.json()["data"]))
    return graphql.build_schema(sdl)  # from SDL, so argument defaults carry AST nodes


def plan(fuzzer: Fuzzer, examples: int) -> list[tuple[str, str, int]]:
    """(kind, target, examples): 75% single-field mutations, the same number for every mutation field; 15%
    queries, 5% documents of several mutation fields, 5% documents with one schema violation (hypothesis-graphql's
    negative mode), interleaved."""
    names = fuzzer.mutation_names
    others = {"query": examples * 15 // 100, "multi": examples * 5 // 100, "negative": examples * 5 // 100}
    single = examples - sum(others.values())
    per, extra = divmod(single, len(names))
    runs = [("mutation", name, per + (i < extra)) for i, name in enumerate(names)]
    chunks = 8
    spread: list[tuple[str, str, int]] = []
    for kind, total in others.items():
        spread.extend((kind, "", total // chunks + (i < total % chunks)) for i in range(chunks))
    out: list[tuple[str, str, int]] = []
    step = max(1, len(runs) // chunks)
    for i in range(chunks):
        out.extend(runs[i * step : (i + 1) * step if i < chunks - 1 else len(runs)])
        out.extend(spread[i::chunks])
    return [run for run in out if run[2] > 0]


def run_examples(fuzzer: Fuzzer, loop: asyncio.AbstractEventLoop, examples: int, seed: int, progress: int) -> None:
    """One hypothesis run per planned (kind, target), each seeded from `seed` and its name; then top-ups until
    `examples` documents have been sent (hypothesis may drop a draw that grows too large)."""
    started = time.perf_counter()
    last = 0

    def report() -> None:
        nonlocal last
        if progress and fuzzer.stats.sent // progress > last // progress:
            elapsed = time.perf_counter() - started
            print(
                f"[{elapsed:6.0f}s] sent {fuzzer.stats.sent}, problems {len(fuzzer.problems)}, "
                + ", ".join(f"{k} {v}" for k, v in fuzzer.stats.by_outcome.most_common(7)),
                flush=True,
            )
        last = fuzzer.stats.sent

    def run(kind: str, target: str, count: int, round_: int) -> None:
        @hypothesis_seed(zlib.crc32(f"{seed}:{kind}:{target}:{round_}".encode()))
        @settings(
            max_examples=count,
            phases=[Phase.generate],
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(st.data())
        def fuzz(data: st.DataObject) -> None:
            if fuzzer.stats.sent >= examples:
                return
            case = fuzzer.draw(data, kind, target)  # every draw before the request: hypothesis may drop a draw
            loop.run_until_complete(fuzzer.execute(case))
            report()

        try:
            fuzz()
        except Exception as exc:  # a harness failure, not a server one: note it and go on
            fuzzer.stats.seed_failures.append(f"hypothesis run {kind} {target}: {type(exc).__name__}: {exc}"[:300])

    round_ = 0
    while fuzzer.stats.sent < examples and round_ < 5:
        for kind, target, count in plan(fuzzer, examples - fuzzer.stats.sent):
            run(kind, target, count, round_)
        round_ += 1
    fuzzer.stats.elapsed = time.perf_counter() - started


def iter_problem_json(problems: list[Problem]) -> Iterator[dict[str, Any]]:
    for p in problems:
        yield {
            "kind": p.kind,
            "signature": p.signature,
            "request_id": p.request_id,
            "persona": p.case.persona,
            "fields": p.case.root_fields,
            "document": p.case.document,
            "variables": p.case.variables,
            "detail": p.detail,
            "traceback": p.traceback,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random, printed)")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--progress", type=int, default=500, help="print a line every N documents (0: never)")
    parser.add_argument("--rev", default="HEAD", help="git revision the server runs, or `worktree` for the checkout")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    out = ROOT / "bench" / ".results" / f"fuzz-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "server.log"
    code, described = server_code(args.rev, out)
    print(f"seed {seed}; server runs {described}; server log and problems in {out}", flush=True)
    loop = asyncio.new_event_loop()
    try:
        summary = drill(loop, args.examples, seed, args.redis, log_path, code, args.progress)
        summary = f"server code: {described}\n{summary}"
        (out / "summary.txt").write_text(summary + "\n")
    finally:
        loop.close()
    print(summary)


async def _setup(
    stack: contextlib.AsyncExitStack, redis_url: str, log_path: Path, code: Path
) -> tuple[LodgeProcess, Any, Any]:
    url = await stack.enter_async_context(bench_database())
    lodge = await stack.enter_async_context(server(url, log_path, redis_url, code).running())
    conn = await asyncpg.connect(plain_dsn(url))
    stack.push_async_callback(conn.close)
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    client = await stack.enter_async_context(
        httpx.AsyncClient(base_url=lodge.base, timeout=REQUEST_TIMEOUT, limits=limits)
    )
    return lodge, conn, client


def drill(
    loop: asyncio.AbstractEventLoop, examples: int, seed: int, redis_url: str, log_path: Path, code: Path, progress: int
) -> str:
    """Set up, fuzz (hypothesis drives the loop example by example), check health, tear down."""
    stack = contextlib.AsyncExitStack()
    try:
        lodge, conn, client = loop.run_until_complete(_setup(stack, redis_url, log_path, code))
        db = Database(conn)
        loop.run_until_complete(db.prepare())
        schema = loop.run_until_complete(introspect(client))
        fuzzer = Fuzzer(lodge.base, client, db, schema)
        loop.run_until_complete(fuzzer.seed())
        run_examples(fuzzer, loop, examples, seed, progress)
        healthz = loop.run_until_complete(client.get("/healthz"))
        readyz = loop.run_until_complete(client.get("/readyz"))
        alive = lodge.alive()
        healthy = (
            f"/healthz {healthz.status_code}, /readyz {readyz.status_code}, process {'alive' if alive else 'DEAD'}"
        )
        if healthz.status_code != 200 or not alive:
            fuzzer.problems.append(
                Problem(
                    "unhealthy", "server unhealthy at the end", Case(-1, "-", "-", "", {}, False, "-", []), "", healthy
                )
            )
    finally:
        loop.run_until_complete(stack.aclose())
    fuzzer.problems, unattributed = attach_tracebacks(fuzzer.problems, log_path)
    (log_path.parent / "problems.json").write_text(
        json.dumps(list(iter_problem_json(fuzzer.problems)), indent=1, default=str)
    )
    summary = summarize(fuzzer, unattributed, healthy, seed, examples)
    return summary


if __name__ == "__main__":
    main()
