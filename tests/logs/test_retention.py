"""Log retention: a project's logs stored longer ago than its retention are deleted by the sweeper,
in batches; a project without one keeps everything."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from app.logs import service
from app.settings import Settings
from tests.support import LiveServer, Tenant, ingest, live_server, new_tenant

UPDATE = "mutation($id: ID!, $d: Int) { updateProject(id: $id, input: {logRetentionDays: $d}) { logRetentionDays } }"
COUNT = "query($p: ID!) { logs(projectId: $p) { totalCount } }"


@pytest.fixture(scope="module")
async def sweeping_server(settings: Settings, database_url: str) -> AsyncIterator[LiveServer]:
    async with live_server(settings.model_copy(update={"retention_sweep_seconds": 0.2}), database_url) as live:
        yield live


async def _logs_with_old_ones(server: LiveServer, *, old: int, new: int) -> Tenant:
    t = await new_tenant(server)
    await ingest(server, t.secret, [f"old {n}" for n in range(old)])
    async with server.deps.db.session() as session:
        await session.execute(
            text("UPDATE logs SET created_at = now() - interval '3 days' WHERE project_id = :p"), {"p": t.project_id}
        )
        await session.commit()
    await ingest(server, t.secret, [f"new {n}" for n in range(new)])
    return t


async def _count(server: LiveServer, t: Tenant) -> int:
    return int((await server.data(COUNT, {"p": t.project_id}, token=t.token))["logs"]["totalCount"])


async def test_the_sweeper_deletes_what_is_past_the_retention(sweeping_server: LiveServer) -> None:
    server = sweeping_server
    kept = await _logs_with_old_ones(server, old=20, new=10)
    swept = await _logs_with_old_ones(server, old=20, new=10)
    changed = await server.data(UPDATE, {"id": swept.project_id, "d": 1}, token=swept.token)
    assert changed["updateProject"] == {"logRetentionDays": 1}
    async with asyncio.timeout(15):
        while await _count(server, swept) != 10:
            await asyncio.sleep(0.05)
    remaining = await server.data(
        "query($p: ID!) { logs(projectId: $p, first: 50) { nodes { log } } }",
        {"p": swept.project_id},
        token=swept.token,
    )
    assert sorted(n["log"] for n in remaining["logs"]["nodes"]) == sorted(f"new {n}" for n in range(10))
    # A project with no retention keeps its old logs; null turns retention off again.
    assert await _count(server, kept) == 30
    cleared = await server.data(UPDATE, {"id": swept.project_id, "d": None}, token=swept.token)
    assert cleared["updateProject"] == {"logRetentionDays": None}


async def test_a_sweep_goes_batch_by_batch(server: LiveServer) -> None:
    t = await _logs_with_old_ones(server, old=25, new=5)
    await server.data(UPDATE, {"id": t.project_id, "d": 2}, token=t.token)
    async with server.deps.db.autocommit() as conn:
        await service.sweep_retention(conn, batch=4)  # 7 batches for this project (others may share the run)
    assert await _count(server, t) == 5


async def test_a_retention_out_of_range_is_refused(server: LiveServer) -> None:
    t = await new_tenant(server)
    for days in (0, -1, 36_501):
        assert await server.error_code(UPDATE, {"id": t.project_id, "d": days}, token=t.token) == "BAD_USER_INPUT"
    # An API key does not change its project.
    assert await server.error_code(UPDATE, {"id": t.project_id, "d": 5}, api_key=t.secret) in (
        "UNAUTHENTICATED",
        "FORBIDDEN",
    )
