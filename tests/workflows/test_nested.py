"""A workflow list with its graph, versions, executions and their logs costs a fixed number of statements."""

from __future__ import annotations

import uuid

from app.workflows.service import executions, workflows
from tests.communities.support import user_id_of
from tests.conftest import QUIET_SWEEPERS, make_settings
from tests.support import LiveServer, counted, live_server, new_user

NESTED = """
query($tag: String!) {
  workflows(tag: $tag, first: 100) {
    nodes {
      name owner { id }
      nodes { key } edges { source target }
      versions { version createdBy { id } nodes { key } }
      executions(first: 3) { totalCount nodes { status user { id } logs(first: 5) { nodes { message } } } }
    }
  }
}
"""


async def _workflows(server: LiveServer, owner_id: uuid.UUID, count: int) -> str:
    tag = uuid.uuid4().hex[:10]
    async with server.deps.db.session() as session:
        for index in range(count):
            workflow = await workflows.create_workflow(
                session,
                owner_id=owner_id,
                name=f"w{index}",
                description=None,
                tags=[tag],
                configuration={},
                is_template=False,
                is_public=False,
            )
            for key in ("a", "b", "c"):
                await workflows.add_node(session, workflow=workflow, values={"node_key": key, "node_type": "task"})
            await workflows.add_edge(
                session, workflow=workflow, source="a", target="b", edge_type=None, configuration=None
            )
            await workflows.publish(session, workflow_id=workflow.id, user_id=owner_id)
            for _ in range(4):
                run = await executions.start_execution(
                    session, workflow_id=workflow.id, user_id=owner_id, input_data=None
                )
                for line in range(6):
                    await executions.append_log(
                        session, execution_id=run.id, node_key="a", level="info", message=f"{line}", data=None
                    )
        await session.commit()
    return tag


async def test_statement_count_is_the_same_for_5_and_50_workflows(database_url: str) -> None:
    # 100 workflows with their graphs and versions could return millions of objects (a workflow
    # holds up to 1,000 nodes and 5,000 edges), so the cost limit refuses NESTED by design; the
    # subject here is the statement count, on a server of its own without the limit and whose
    # sweepers sleep (every statement counted is the query's).
    settings = make_settings(**QUIET_SWEEPERS, max_query_cost=0)
    async with live_server(settings, database_url) as server:
        await _statement_count_is_the_same_for_5_and_50_workflows(server)


async def _statement_count_is_the_same_for_5_and_50_workflows(server: LiveServer) -> None:
    token = await new_user(server)
    owner_id = uuid.UUID(await user_id_of(server, token))
    small, large = await _workflows(server, owner_id, 5), await _workflows(server, owner_id, 50)
    small_data, small_count = await counted(server, NESTED, {"tag": small}, token)
    large_data, large_count = await counted(server, NESTED, {"tag": large}, token)
    nodes = large_data["workflows"]["nodes"]
    assert len(nodes) == 50 and len(small_data["workflows"]["nodes"]) == 5
    for workflow in nodes:
        assert [n["key"] for n in workflow["nodes"]] == ["a", "b", "c"]
        assert workflow["versions"][0]["nodes"] == [{"key": "a"}, {"key": "b"}, {"key": "c"}]
        assert workflow["executions"]["totalCount"] == 4
        assert len(workflow["executions"]["nodes"]) == 3
        assert all(len(run["logs"]["nodes"]) == 5 for run in workflow["executions"]["nodes"])
    assert small_count == large_count, (small_count, large_count)
