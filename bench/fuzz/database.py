"""The fuzzer's direct reads of the server's database: per-table row counts and checksums (the partial-write
check) and audit rows, and the real ids and strings it mixes into documents."""

from __future__ import annotations

from typing import Any

from bench.fuzz.oracle import ALWAYS_WRITTEN
from bench.fuzz.strategies import Pools

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
