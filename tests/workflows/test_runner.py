"""The runner protocol, driven by the reference runner (examples/runner.py): each execution goes to
exactly one runner, a runner that dies loses its execution to the next one once its lease runs
out, and a runner whose lease is gone cannot report any more."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import text

from app.settings import Settings
from tests.support import LiveServer, live_server, new_admin, new_user
from tests.workflows.test_workflows import PUBLISH, START, edge, new_workflow

CLAIM = """mutation($r: String!, $w: ID, $l: Int!) { claimExecution(runner: $r, workflowId: $w, leaseSeconds: $l) {
  id status runner attempts leaseExpiresAt } }"""
HEARTBEAT = (
    "mutation($id: ID!, $r: String!) { heartbeatExecution(id: $id, runner: $r, leaseSeconds: 30) { leaseExpiresAt } }"
)
REPORT = "mutation($id: ID!, $r: String!, $s: ExecutionStatus!) { updateExecutionStatus(id: $id, runner: $r, status: $s) { status } }"
EXECUTION = """query($id: ID!) { execution(id: $id) { status runner attempts errorMessage leaseExpiresAt output
  logs(first: 100) { nodes { nodeKey message } } } }"""


def _load_runner() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "examples" / "runner.py"
    spec = importlib.util.spec_from_file_location("lodge_example_runner", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through it
    spec.loader.exec_module(module)
    return module


runner_module = _load_runner()


@pytest.fixture(scope="module")
async def sweeping_server(database_url: str, settings: Settings) -> AsyncIterator[LiveServer]:
    """A server whose lease sweeper runs five times a second."""
    async with live_server(settings.model_copy(update={"lease_sweep_seconds": 0.2}), database_url) as live:
        yield live


async def _published_workflow(server: LiveServer, token: str) -> str:
    """a -> b, a -> c, b -> d, c -> d, published."""
    workflow_id = await new_workflow(server, token, nodes=("a", "b", "c", "d"))
    for source, target in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")):
        assert not (await edge(server, token, workflow_id, source, target)).get("errors")
    await server.data(PUBLISH, {"id": workflow_id}, token=token)
    return workflow_id


async def test_ten_runners_run_a_hundred_executions_each_exactly_once(server: LiveServer) -> None:
    owner = await new_user(server)
    staff, _ = await new_admin(server, ("workflows:write",))
    workflow_id = await _published_workflow(server, owner)
    started = await asyncio.gather(
        *(server.data(START, {"w": workflow_id, "input": {"n": n}}, token=owner) for n in range(100))
    )
    ids = {s["startExecution"]["id"] for s in started}

    ran: list[tuple[str, str]] = []  # (runner, node key) for each handler call

    def handler_for(name: str) -> Any:
        async def task(node: dict[str, Any], inputs: dict[str, Any]) -> Any:
            ran.append((name, node["key"]))
            await asyncio.sleep(0)  # let the other runners interleave
            # Every predecessor has run, in this execution, before its successors.
            return {"key": node["key"], "after": sorted(k for k in inputs if k != "$input"), "n": inputs["$input"]["n"]}

        return task

    runners = [
        runner_module.Runner(
            server.http,
            "/graphql",
            staff,
            f"runner-{i}",
            handlers={"task": handler_for(f"runner-{i}")},
            workflow_id=workflow_id,
        )
        for i in range(10)
    ]

    async def drain(runner: Any) -> list[str]:
        done = []
        while (execution_id := await runner.run_once()) is not None:
            done.append(execution_id)
        return done

    async with asyncio.timeout(120):
        results = await asyncio.gather(*(drain(r) for r in runners))
    claims = [execution_id for done in results for execution_id in done]
    assert Counter(claims) == Counter(ids), "each execution claimed exactly once"
    assert len(ran) == 400 and sum(1 for done in results if done) > 1

    for execution_id in list(ids)[:10]:
        found = (await server.data(EXECUTION, {"id": execution_id}, token=owner))["execution"]
        assert found["status"] == "COMPLETED" and found["attempts"] == 1 and found["leaseExpiresAt"] is None
        assert found["output"]["d"]["after"] == ["b", "c"] and found["output"]["b"]["after"] == ["a"]
        keys = [log["nodeKey"] for log in found["logs"]["nodes"]]
        assert keys == sorted(keys, key="abcd".index) and Counter(keys) == dict.fromkeys("abcd", 2)
    # Nothing is left to claim.
    assert (await server.data(CLAIM, {"r": "late", "w": workflow_id, "l": 30}, token=staff))["claimExecution"] is None


async def test_a_dead_runners_execution_goes_to_the_next_runner(sweeping_server: LiveServer) -> None:
    server = sweeping_server
    owner = await new_user(server)
    workflow_id = await _published_workflow(server, owner)
    execution_id = (await server.data(START, {"w": workflow_id}, token=owner))["startExecution"]["id"]

    # The first runner claims it with a one-second lease and dies (no heartbeat, no report).
    first = (await server.data(CLAIM, {"r": "dies", "w": workflow_id, "l": 1}, token=owner))["claimExecution"]
    assert first["id"] == execution_id and first["status"] == "RUNNING" and first["runner"] == "dies"
    assert first["attempts"] == 1 and first["leaseExpiresAt"] is not None
    # Until its lease runs out nobody else gets it; then the sweeper hands it back.
    assert (await server.data(CLAIM, {"r": "next", "w": workflow_id, "l": 30}, token=owner))["claimExecution"] is None
    async with asyncio.timeout(15):
        while (await server.data(EXECUTION, {"id": execution_id}, token=owner))["execution"]["status"] != "PENDING":
            await asyncio.sleep(0.05)

    runner = runner_module.Runner(server.http, "/graphql", owner, "next", handlers={"task": runner_module.noop})
    assert await runner.run_once() == execution_id
    found = (await server.data(EXECUTION, {"id": execution_id}, token=owner))["execution"]
    assert (found["status"], found["runner"], found["attempts"]) == ("COMPLETED", "next", 2), found
    # The dead runner, back to life, can neither renew nor report.
    assert await server.error_code(HEARTBEAT, {"id": execution_id, "r": "dies"}, token=owner) == "CONFLICT"
    assert await server.error_code(REPORT, {"id": execution_id, "r": "dies", "s": "FAILED"}, token=owner) == "CONFLICT"


async def test_a_lease_that_keeps_running_out_fails_the_execution(sweeping_server: LiveServer) -> None:
    server = sweeping_server
    owner = await new_user(server)
    workflow_id = await _published_workflow(server, owner)
    execution_id = (await server.data(START, {"w": workflow_id}, token=owner))["startExecution"]["id"]
    attempts = server.deps.settings.execution_max_attempts
    for attempt in range(1, attempts + 1):
        async with asyncio.timeout(15):
            while True:
                claimed = (await server.data(CLAIM, {"r": f"r{attempt}", "w": workflow_id, "l": 1}, token=owner))[
                    "claimExecution"
                ]
                if claimed is not None:
                    break
                await asyncio.sleep(0.05)
        assert claimed["attempts"] == attempt
    async with asyncio.timeout(15):
        while (found := (await server.data(EXECUTION, {"id": execution_id}, token=owner))["execution"])[
            "status"
        ] == "RUNNING":
            await asyncio.sleep(0.05)
    assert found["status"] == "FAILED" and f"ran out {attempts} times" in found["errorMessage"]


async def test_claims_are_scoped_and_bad_input_is_refused(server: LiveServer) -> None:
    owner = await new_user(server)
    stranger = await new_user(server)
    workflow_id = await _published_workflow(server, owner)
    execution_id = (await server.data(START, {"w": workflow_id}, token=owner))["startExecution"]["id"]
    # Another user's runner can neither name the workflow nor find its executions.
    assert await server.error_code(CLAIM, {"r": "x", "w": workflow_id, "l": 30}, token=stranger) == "FORBIDDEN"
    assert (await server.data(CLAIM, {"r": "x", "l": 30}, token=stranger))["claimExecution"] is None
    assert await server.error_code(CLAIM, {"r": "x", "l": 30}) == "UNAUTHENTICATED"
    for variables in ({"r": " ", "l": 30}, {"r": "x", "l": 0}, {"r": "x", "l": 10**6}, {"r": "x" * 201, "l": 30}):
        assert await server.error_code(CLAIM, {**variables, "w": workflow_id}, token=owner) == "BAD_USER_INPUT"
    # A report naming a runner that does not hold the execution changes nothing.
    assert await server.error_code(REPORT, {"id": execution_id, "r": "x", "s": "RUNNING"}, token=owner) == "CONFLICT"
    claimed = (await server.data(CLAIM, {"r": "mine", "w": workflow_id, "l": 30}, token=owner))["claimExecution"]
    assert claimed["id"] == execution_id
    assert await server.error_code(HEARTBEAT, {"id": execution_id, "r": "other"}, token=owner) == "CONFLICT"
    assert await server.error_code(HEARTBEAT, {"id": execution_id, "r": "mine"}, token=stranger) == "FORBIDDEN"
    renewed = await server.data(HEARTBEAT, {"id": execution_id, "r": "mine"}, token=owner)
    assert renewed["heartbeatExecution"]["leaseExpiresAt"] > claimed["leaseExpiresAt"]
    done = await server.data(REPORT, {"id": execution_id, "r": "mine", "s": "COMPLETED"}, token=owner)
    assert done["updateExecutionStatus"] == {"status": "COMPLETED"}
    found = (await server.data(EXECUTION, {"id": execution_id}, token=owner))["execution"]
    assert found["leaseExpiresAt"] is None and found["runner"] == "mine"


def test_topological_order_puts_every_source_before_its_target() -> None:
    nodes = [{"key": k} for k in "dcba"]
    edges = [{"source": s, "target": t} for s, t in (("a", "c"), ("b", "c"), ("c", "d"))]
    assert [n["key"] for n in runner_module.topological(nodes, edges)] == ["a", "b", "c", "d"]
    with pytest.raises(ValueError):
        runner_module.topological(nodes, [*edges, {"source": "d", "target": "a"}])


async def test_a_deleted_workflows_runs_are_not_handed_out(server: LiveServer) -> None:
    owner = await new_user(server)
    deleted = await _published_workflow(server, owner)
    kept = await _published_workflow(server, owner)
    await server.data(START, {"w": deleted}, token=owner)  # older: it would be claimed first
    waiting = (await server.data(START, {"w": kept}, token=owner))["startExecution"]["id"]
    await server.data("mutation($id: ID!) { deleteWorkflow(id: $id) }", {"id": deleted}, token=owner)
    claimed = (await server.data(CLAIM, {"r": "r", "l": 30}, token=owner))["claimExecution"]
    assert claimed["id"] == waiting
    assert (await server.data(CLAIM, {"r": "r", "l": 30}, token=owner))["claimExecution"] is None


async def test_polling_and_heartbeats_do_not_flood_the_audit_trail(server: LiveServer) -> None:
    owner = await new_user(server)
    workflow_id = await _published_workflow(server, owner)

    async def rows(action: str, success: bool) -> int:
        async with server.deps.db.session() as session:
            found = await session.scalar(
                text("SELECT count(*) FROM audit_logs WHERE action = :a AND success = :s AND resource_id = :w"),
                {"a": action, "s": success, "w": workflow_id},
            )
        return int(found or 0)

    # An empty poll leaves no row; a claim does; a renewed lease does not; a refused renewal does.
    assert (await server.data(CLAIM, {"r": "r", "w": workflow_id, "l": 30}, token=owner))["claimExecution"] is None
    assert await rows("execution.claim", True) == 0
    execution_id = (await server.data(START, {"w": workflow_id}, token=owner))["startExecution"]["id"]
    await server.data(CLAIM, {"r": "r", "w": workflow_id, "l": 30}, token=owner)
    async with server.deps.db.session() as session:
        claims = await session.scalar(
            text("SELECT count(*) FROM audit_logs WHERE action = 'execution.claim' AND success AND resource_id = :e"),
            {"e": execution_id},
        )
        await server.data(HEARTBEAT, {"id": execution_id, "r": "r"}, token=owner)
        assert await server.error_code(HEARTBEAT, {"id": execution_id, "r": "other"}, token=owner) == "CONFLICT"
        beats = (
            (
                await session.execute(
                    text("SELECT success FROM audit_logs WHERE action = 'execution.heartbeat' AND resource_id = :e"),
                    {"e": execution_id},
                )
            )
            .scalars()
            .all()
        )
    assert claims == 1 and list(beats) == [False]
