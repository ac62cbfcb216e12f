"""Workflows: graphs without cycles, immutable versions, the execution status machine, live runs."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import text

from app.workflows import models
from tests.support import GraphQLWS, LiveServer, new_user

CREATE = "mutation($input: WorkflowInput!) { createWorkflow(input: $input) { id version status } }"
ADD_NODE = "mutation($w: ID!, $input: NodeInput!) { addWorkflowNode(workflowId: $w, input: $input) { id key } }"
ADD_EDGE = (
    "mutation($w: ID!, $input: EdgeInput!) { addWorkflowEdge(workflowId: $w, input: $input) { id source target } }"
)
PUBLISH = "mutation($id: ID!) { publishWorkflow(id: $id) { version status } }"
START = (
    "mutation($w: ID!, $input: JSON) { startExecution(workflowId: $w, input: $input) { id status workflowVersion } }"
)
STATUS = """mutation($id: ID!, $s: ExecutionStatus!) {
  updateExecutionStatus(id: $id, status: $s) { status startedAt completedAt }
}"""
LOG = """mutation($id: ID!, $input: ExecutionLogInput!) {
  appendExecutionLog(executionId: $id, input: $input) { message level cursor }
}"""
GRAPH = """query($id: ID!) { workflow(id: $id) {
  version nodes { key } edges { source target }
  versions(last: 10) { version nodes { key } edges { source target } configuration }
} }"""


async def new_workflow(server: LiveServer, token: str, nodes: tuple[str, ...] = ("a", "b", "c"), **fields: Any) -> str:
    data = await server.data(CREATE, {"input": {"name": "flow", **fields}}, token=token)
    workflow_id: str = data["createWorkflow"]["id"]
    for key in nodes:
        await server.data(ADD_NODE, {"w": workflow_id, "input": {"key": key, "type": "task"}}, token=token)
    return workflow_id


async def edge(server: LiveServer, token: str, workflow_id: str, source: str, target: str) -> dict[str, Any]:
    return await server.gql(ADD_EDGE, {"w": workflow_id, "input": {"source": source, "target": target}}, token=token)


async def test_a_cycle_is_refused_and_nothing_is_stored(server: LiveServer) -> None:
    token = await new_user(server)
    workflow_id = await new_workflow(server, token)
    assert "errors" not in await edge(server, token, workflow_id, "a", "b")
    assert "errors" not in await edge(server, token, workflow_id, "b", "c")
    body = await edge(server, token, workflow_id, "c", "a")
    error = body["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["cycle"] == ["c", "a", "b", "c"]
    assert "c -> a -> b -> c" in error["message"]
    graph = (await server.data(GRAPH, {"id": workflow_id}, token=token))["workflow"]
    assert graph["edges"] == [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}]
    # Other bad edges: unknown node, a self-loop, a duplicate.
    for source, target, code in (("a", "zz", "BAD_USER_INPUT"), ("a", "a", "BAD_USER_INPUT"), ("a", "b", "CONFLICT")):
        assert (await edge(server, token, workflow_id, source, target))["errors"][0]["extensions"]["code"] == code
    # Removing a node removes its edges.
    await server.data(
        'mutation($w: ID!) { removeWorkflowNode(workflowId: $w, key: "b") }', {"w": workflow_id}, token=token
    )
    graph = (await server.data(GRAPH, {"id": workflow_id}, token=token))["workflow"]
    assert graph["edges"] == [] and [n["key"] for n in graph["nodes"]] == ["a", "c"]


async def test_versions_come_in_bounded_pages(server: LiveServer) -> None:
    token = await new_user(server)
    workflow_id = await new_workflow(server, token, nodes=("a",))
    for _ in range(3):
        await server.data(PUBLISH, {"id": workflow_id}, token=token)
    page = "query($id: ID!, $l: Int, $b: Int) { workflow(id: $id) { versions(last: $l, before: $b) { version } } }"

    async def versions(**args: int) -> list[int]:
        data = await server.data(page, {"id": workflow_id, **args}, token=token)
        return [v["version"] for v in data["workflow"]["versions"]]

    assert await versions() == [1, 2, 3]
    assert await versions(l=2) == [2, 3]
    assert await versions(l=2, b=2) == [1]
    assert await versions(l=0) == []
    assert await server.error_code(page, {"id": workflow_id, "l": 501}, token=token) == "BAD_USER_INPUT"


async def test_concurrent_publishes_make_two_faithful_immutable_versions(server: LiveServer) -> None:
    token = await new_user(server)
    workflow_id = await new_workflow(server, token, configuration={"retries": 3})
    await edge(server, token, workflow_id, "a", "b")
    bodies = await asyncio.gather(*(server.gql(PUBLISH, {"id": workflow_id}, token=token) for _ in range(2)))
    assert all("errors" not in body for body in bodies), bodies
    assert sorted(b["data"]["publishWorkflow"]["version"] for b in bodies) == [2, 3]
    # Editing the draft afterwards changes neither version.
    await server.data(ADD_NODE, {"w": workflow_id, "input": {"key": "d", "type": "task"}}, token=token)
    await edge(server, token, workflow_id, "c", "d")
    await server.data(
        "mutation($id: ID!) { updateWorkflow(id: $id, input: {configuration: {retries: 9}}) { id } }",
        {"id": workflow_id},
        token=token,
    )
    graph = (await server.data(GRAPH, {"id": workflow_id}, token=token))["workflow"]
    assert [v["version"] for v in graph["versions"]] == [1, 2]
    for version in graph["versions"]:
        assert [n["key"] for n in version["nodes"]] == ["a", "b", "c"]
        assert version["edges"] == [{"source": "a", "target": "b"}]
        assert version["configuration"] == {"retries": 3}
    assert [n["key"] for n in graph["nodes"]] == ["a", "b", "c", "d"]
    async with server.deps.db.session() as session:
        refused = await session.execute(text("SELECT 1"))
        assert refused.scalar() == 1
        try:
            await session.execute(text("UPDATE workflow_versions SET name = 'x'"))
            raise AssertionError("a version was changed")
        except Exception as exc:
            assert "cannot be changed" in str(exc)


async def test_a_draft_cannot_run_and_executions_pin_the_latest_version(server: LiveServer) -> None:
    token = await new_user(server)
    workflow_id = await new_workflow(server, token)
    assert await server.error_code(START, {"w": workflow_id}, token=token) == "BAD_USER_INPUT"
    await server.data(PUBLISH, {"id": workflow_id}, token=token)
    await server.data(PUBLISH, {"id": workflow_id}, token=token)
    started = (await server.data(START, {"w": workflow_id, "input": {"x": 1}}, token=token))["startExecution"]
    assert started["status"] == "PENDING" and started["workflowVersion"] == 2
    stranger = await new_user(server)
    assert await server.error_code(START, {"w": workflow_id}, token=stranger) == "FORBIDDEN"
    assert await server.error_code(STATUS, {"id": started["id"], "s": "RUNNING"}, token=stranger) == "FORBIDDEN"


async def test_every_illegal_transition_is_refused(server: LiveServer) -> None:
    token = await new_user(server)
    workflow_id = await new_workflow(server, token)
    await server.data(PUBLISH, {"id": workflow_id}, token=token)
    legal = {
        "PENDING": {"RUNNING", "CANCELLED"},
        "RUNNING": {"COMPLETED", "FAILED", "CANCELLED"},
        "COMPLETED": set(),
        "FAILED": set(),
        "CANCELLED": set(),
    }
    paths = {
        "PENDING": [],
        "RUNNING": ["RUNNING"],
        "COMPLETED": ["RUNNING", "COMPLETED"],
        "FAILED": ["RUNNING", "FAILED"],
        "CANCELLED": ["CANCELLED"],
    }
    for current, allowed in legal.items():
        for target in legal:
            execution_id = (await server.data(START, {"w": workflow_id}, token=token))["startExecution"]["id"]
            for step in paths[current]:
                await server.data(STATUS, {"id": execution_id, "s": step}, token=token)
            body = await server.gql(STATUS, {"id": execution_id, "s": target}, token=token)
            if target in allowed:
                assert "errors" not in body, (current, target, body)
                moved = body["data"]["updateExecutionStatus"]
                assert moved["status"] == target
                assert (moved["startedAt"] is not None) == (target != "CANCELLED" or current == "RUNNING")
                assert (moved["completedAt"] is not None) == (target != "RUNNING")
            else:
                code = body["errors"][0]["extensions"]["code"]
                assert code == ("BAD_USER_INPUT" if target == "PENDING" else "CONFLICT"), (current, target, body)


async def test_twenty_concurrent_starts_of_one_execution_one_wins(server: LiveServer) -> None:
    token = await new_user(server)
    workflow_id = await new_workflow(server, token)
    await server.data(PUBLISH, {"id": workflow_id}, token=token)
    execution_id = (await server.data(START, {"w": workflow_id}, token=token))["startExecution"]["id"]
    bodies = await asyncio.gather(
        *(server.gql(STATUS, {"id": execution_id, "s": "RUNNING"}, token=token) for _ in range(20))
    )
    wins = [b for b in bodies if "errors" not in b]
    assert len(wins) == 1
    assert {b["errors"][0]["extensions"]["code"] for b in bodies if "errors" in b} == {"CONFLICT"}


async def test_a_subscriber_sees_running_its_logs_then_completed_in_order(server: LiveServer) -> None:
    token = await new_user(server)
    workflow_id = await new_workflow(server, token)
    await server.data(PUBLISH, {"id": workflow_id}, token=token)
    execution_id = (await server.data(START, {"w": workflow_id}, token=token))["startExecution"]["id"]
    updated = "subscription($id: ID!) { executionUpdated(executionId: $id) { status } }"
    logs = "subscription($id: ID!) { executionLogAdded(executionId: $id) { message level } }"
    channel = f"execution:{execution_id}"
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {token}") as ws:
        status_op = await ws.subscribe(updated, {"id": execution_id})
        log_op = await ws.subscribe(logs, {"id": execution_id})
        first = await ws.receive()  # a late joiner gets the current status first
        assert first["id"] == status_op and first["payload"]["data"]["executionUpdated"]["status"] == "PENDING"
        async with asyncio.timeout(10):
            while len(server.deps.hub.subscribers(channel)) < 2:
                await asyncio.sleep(0.005)
        await server.data(STATUS, {"id": execution_id, "s": "RUNNING"}, token=token)
        for i in range(3):
            await server.data(
                LOG, {"id": execution_id, "input": {"level": "INFO", "message": f"step {i}"}}, token=token
            )
        await server.data(STATUS, {"id": execution_id, "s": "COMPLETED"}, token=token)
        seen: list[tuple[str, str]] = []
        completed: set[str] = set()
        while len(completed) < 2:
            message = await ws.receive()
            if message["type"] == "complete":
                completed.add(message["id"])
                continue
            data = message["payload"]["data"]
            if message["id"] == status_op:
                seen.append(("status", data["executionUpdated"]["status"]))
            else:
                assert message["id"] == log_op
                seen.append(("log", data["executionLogAdded"]["message"]))
        statuses = [v for k, v in seen if k == "status"]
        assert statuses == ["RUNNING", "COMPLETED"]
        assert [v for k, v in seen if k == "log"] == ["step 0", "step 1", "step 2"]
        assert seen.index(("status", "RUNNING")) < seen.index(("log", "step 0"))
        assert seen.index(("log", "step 2")) < seen.index(("status", "COMPLETED"))
    # A finished execution takes no more logs.
    late = {"id": execution_id, "input": {"level": "INFO", "message": "late"}}
    assert await server.error_code(LOG, late, token=token) == "CONFLICT"


async def test_soft_delete_hides_and_blocks_and_restore_brings_back(server: LiveServer) -> None:
    token = await new_user(server)
    tag = uuid.uuid4().hex[:8]
    workflow_id = await new_workflow(server, token, tags=[tag, "etl"])
    await server.data(PUBLISH, {"id": workflow_id}, token=token)
    listed = "query($t: String!) { workflows(tag: $t) { totalCount nodes { id } } }"
    assert (await server.data(listed, {"t": tag}, token=token))["workflows"]["totalCount"] == 1
    await server.data("mutation($id: ID!) { deleteWorkflow(id: $id) }", {"id": workflow_id}, token=token)
    assert (await server.data(listed, {"t": tag}, token=token))["workflows"]["totalCount"] == 0
    assert (await server.data("query($id: ID!) { workflow(id: $id) { id } }", {"id": workflow_id}, token=token))[
        "workflow"
    ] is None
    assert await server.error_code(START, {"w": workflow_id}, token=token) == "NOT_FOUND"
    restored = "mutation($id: ID!) { restoreWorkflow(id: $id) { id deletedAt } }"
    assert (await server.data(restored, {"id": workflow_id}, token=token))["restoreWorkflow"]["deletedAt"] is None
    assert (await server.data(listed, {"t": tag}, token=token))["workflows"]["nodes"] == [{"id": workflow_id}]
    assert (await server.data(START, {"w": workflow_id}, token=token))["startExecution"]["status"] == "PENDING"


async def test_lists_filter_and_private_workflows_stay_private(server: LiveServer) -> None:
    owner = await new_user(server)
    other = await new_user(server)
    tag = uuid.uuid4().hex[:8]
    private = await new_workflow(server, owner, nodes=(), tags=[tag], description="Nightly ETL")
    public = await new_workflow(server, owner, nodes=(), tags=[tag], isPublic=True, isTemplate=True)
    query = """query($t: String!, $s: String, $template: Boolean) {
      workflows(tag: $t, search: $s, isTemplate: $template) { nodes { id } } }"""

    def ids(data: dict[str, Any]) -> set[str]:
        return {n["id"] for n in data["workflows"]["nodes"]}

    assert ids(await server.data(query, {"t": tag}, token=owner)) == {private, public}
    assert ids(await server.data(query, {"t": tag}, token=other)) == {public}
    assert ids(await server.data(query, {"t": tag, "s": "etl"}, token=owner)) == {private}
    assert ids(await server.data(query, {"t": tag, "template": True}, token=owner)) == {public}
    read = "query($id: ID!) { workflow(id: $id) { id } }"
    assert await server.error_code(read, {"id": private}, token=other) == "FORBIDDEN"
    change = 'mutation($id: ID!) { updateWorkflow(id: $id, input: {name: "x"}) { id } }'
    assert await server.error_code(change, {"id": public}, token=other) == "FORBIDDEN"


async def test_files_are_owner_only_unless_public_and_soft_deleted(server: LiveServer) -> None:
    owner = await new_user(server)
    other = await new_user(server)
    register = "mutation($input: FileInput!) { registerFile(input: $input) { id size mimeType checksum } }"
    base = {"filename": "a.pdf", "originalFilename": "Report.pdf", "mimeType": "application/pdf", "size": 1024}
    file_id = (await server.data(register, {"input": {**base, "checksum": "ab" * 32}}, token=owner))["registerFile"][
        "id"
    ]
    public_id = (await server.data(register, {"input": {**base, "isPublic": True}}, token=owner))["registerFile"]["id"]
    read = "query($id: ID!) { file(id: $id) { id } }"
    assert await server.error_code(read, {"id": file_id}, token=other) == "FORBIDDEN"
    assert (await server.data(read, {"id": public_id}, token=other))["file"] == {"id": public_id}
    for bad in ({"size": -1}, {"mimeType": "pdf"}, {"checksum": "xyz"}, {"filename": " "}, {"size": 1.5}):
        assert await server.error_code(register, {"input": {**base, **bad}}, token=owner) == "BAD_USER_INPUT", bad
    delete = "mutation($id: ID!) { deleteFile(id: $id) }"
    assert await server.error_code(delete, {"id": file_id}, token=other) == "FORBIDDEN"
    assert (await server.data(delete, {"id": file_id}, token=owner))["deleteFile"] is True
    assert (await server.data(read, {"id": file_id}, token=owner))["file"] is None
    listed = (await server.data("{ files { nodes { id } } }", token=owner))["files"]["nodes"]
    assert listed == [{"id": public_id}]
    async with server.deps.db.session() as session:
        kept = await session.get(models.File, uuid.UUID(file_id))
        assert kept is not None and kept.deleted_at is not None  # a soft delete keeps the row


async def test_concurrent_log_appends_reach_a_subscriber_all_in_order(server: LiveServer) -> None:
    token = await new_user(server)
    workflow_id = await new_workflow(server, token)
    await server.data(PUBLISH, {"id": workflow_id}, token=token)
    execution_id = (await server.data(START, {"w": workflow_id}, token=token))["startExecution"]["id"]
    await server.data(STATUS, {"id": execution_id, "s": "RUNNING"}, token=token)
    logs = "subscription($id: ID!) { executionLogAdded(executionId: $id) { message cursor } }"
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {token}") as ws:
        await ws.subscribe(logs, {"id": execution_id})
        async with asyncio.timeout(10):
            while not server.deps.hub.subscribers(f"execution:{execution_id}"):
                await asyncio.sleep(0.005)
        bodies = await asyncio.gather(
            *(
                server.gql(LOG, {"id": execution_id, "input": {"level": "INFO", "message": f"{i}"}}, token=token)
                for i in range(40)
            )
        )
        assert all("errors" not in body for body in bodies)
        received = [(await ws.next_data())["executionLogAdded"] for _ in range(40)]
    stored = await server.data(
        "query($id: ID!) { execution(id: $id) { logs(first: 100) { nodes { message cursor } } } }",
        {"id": execution_id},
        token=token,
    )
    assert received == stored["execution"]["logs"]["nodes"]  # every log, once, in the stored order
    assert sorted(int(r["message"]) for r in received) == list(range(40))


async def test_values_postgresql_cannot_hold_are_bad_input(server: LiveServer) -> None:
    token = await new_user(server)
    workflow_id = await new_workflow(server, token, nodes=("a", "b"))
    huge_position = {"w": workflow_id, "input": {"key": "x", "type": "t", "positionX": 1e39}}
    assert await server.error_code(ADD_NODE, huge_position, token=token) == "BAD_USER_INPUT"
    # Too small for REAL is no distance at all: stored as 0, not an INTERNAL underflow.
    tiny = {"w": workflow_id, "input": {"key": "tiny", "type": "t", "positionX": 1e-200, "positionY": -1e-40}}
    add_positioned = "mutation($w: ID!, $input: NodeInput!) { addWorkflowNode(workflowId: $w, input: $input) { positionX positionY } }"
    stored = await server.data(add_positioned, tiny, token=token)
    assert [stored["addWorkflowNode"][k] for k in ("positionX", "positionY")] == [0.0, 0.0]
    inline = "mutation($id: ID!) { updateWorkflow(id: $id, input: {configuration: {a: 1e400}}) { id } }"
    assert await server.error_code(inline, {"id": workflow_id}, token=token) == "BAD_USER_INPUT"
    # An inline integer longer than any double: jsonb would keep it, and every later read of the row
    # would fail (it reads back as infinity). The same digits in a string are only text.
    digits = "9" * 400
    for value in (digits, f"-{digits}", f"[1, {{b: {digits}}}]"):
        create = f'mutation {{ createWorkflow(input: {{name: "huge", configuration: {{a: {value}}}}}) {{ id }} }}'
        assert await server.error_code(create, token=token) == "BAD_USER_INPUT", value
    as_text = (
        f'mutation {{ createWorkflow(input: {{name: "text", configuration: {{a: "{digits}"}}}}) {{ configuration }} }}'
    )
    assert (await server.data(as_text, token=token))["createWorkflow"]["configuration"] == {"a": digits}
    register = "mutation($input: FileInput!) { registerFile(input: $input) { id } }"
    big = {"filename": "a", "originalFilename": "a", "mimeType": "text/plain", "size": 1e30}
    assert await server.error_code(register, {"input": big}, token=token) == "BAD_USER_INPUT"
    graph = (await server.data(GRAPH, {"id": workflow_id}, token=token))["workflow"]
    assert [n["key"] for n in graph["nodes"]] == ["a", "b", "tiny"]


async def test_concurrent_removals_of_one_edge_one_succeeds(server: LiveServer) -> None:
    token = await new_user(server)
    workflow_id = await new_workflow(server, token, nodes=("a", "b"))
    edge_id = (await edge(server, token, workflow_id, "a", "b"))["data"]["addWorkflowEdge"]["id"]
    remove = "mutation($id: ID!) { removeWorkflowEdge(id: $id) }"
    bodies = await asyncio.gather(*(server.gql(remove, {"id": edge_id}, token=token) for _ in range(4)))
    codes = sorted(b["errors"][0]["extensions"]["code"] if "errors" in b else "ok" for b in bodies)
    assert codes == ["NOT_FOUND", "NOT_FOUND", "NOT_FOUND", "ok"]
