"""Deleting a user retires what acts for them in public: their projects' API keys, their vendors in
public lists, their active subscriptions, their public workflows."""

from __future__ import annotations

from sqlalchemy import text

from tests.support import LiveServer, new_admin, new_project, new_tenant, new_user

VENDORS = "query($s: String!) { vendors(search: $s, first: 50) { totalCount nodes { id } } }"
NEAR = "{ vendorsNear(lat: 12.3456, long: 65.4321, radiusKm: 1) { vendor { id } } }"
WORKFLOW = "query($id: ID!) { workflow(id: $id) { id name } }"


async def test_deleting_a_user_retires_what_they_own(server: LiveServer) -> None:
    t = await new_tenant(server)  # the user, a project and an API key of it
    me = (await server.data("{ me { id } }", token=t.token))["me"]["id"]
    name = f"truck-{me[:8]}"
    vendor = await server.data(
        "mutation($n: String!) { createVendor(input: {name: $n, lat: 12.3456, long: 65.4321}) { id } }",
        {"n": name},
        token=t.token,
    )
    vendor_id = vendor["createVendor"]["id"]
    billing, _ = await new_admin(server, ("billing:write",))
    await server.data(
        """mutation($u: ID!) { createBillingSubscription(input: {provider: "stripe", productId: "pro",
          startDate: "2026-11-01T00:00:00Z", userId: $u}) { id } }""",
        {"u": me},
        token=billing,
    )
    workflow_id = (
        await server.data('mutation { createWorkflow(input: {name: "shared", isPublic: true}) { id } }', token=t.token)
    )["createWorkflow"]["id"]
    other = await new_user(server)
    # Before: all of it public and working.
    await server.data('mutation { ingestLog(input: {log: "before"}) { id } }', api_key=t.secret)
    assert (await server.data(VENDORS, {"s": name}, token=other))["vendors"]["totalCount"] == 1
    assert vendor_id in [n["vendor"]["id"] for n in (await server.data(NEAR, token=other))["vendorsNear"]]
    assert (await server.data(WORKFLOW, {"id": workflow_id}, token=other))["workflow"]["id"] == workflow_id
    # Another user's things stay as they are.
    bystander = await new_tenant(server)
    await new_project(server, bystander.token)

    assert (await server.data("mutation($id: ID!) { deleteUser(id: $id) }", {"id": me}, token=t.token)) == {
        "deleteUser": True
    }

    assert await server.error_code('mutation { ingestLog(input: {log: "after"}) { id } }', api_key=t.secret) == (
        "UNAUTHENTICATED"
    )
    response = await server.http.post("/ingest", content='{"log": "after"}', headers={"x-api-key": t.secret})
    assert response.status_code == 401
    assert (await server.data(VENDORS, {"s": name}, token=other))["vendors"]["totalCount"] == 0
    assert vendor_id not in [n["vendor"]["id"] for n in (await server.data(NEAR, token=other))["vendorsNear"]]
    assert (await server.data(WORKFLOW, {"id": workflow_id}, token=other))["workflow"] is None
    start = "mutation($w: ID!) { startExecution(workflowId: $w) { id } }"
    assert await server.error_code(start, {"w": workflow_id}, token=other) == "NOT_FOUND"
    async with server.deps.db.session() as session:
        statuses = (await session.scalars(text("SELECT status FROM subscriptions WHERE user_id = :u"), {"u": me})).all()
    assert statuses == ["cancelled"]
    # The bystander's key still works.
    await server.data('mutation { ingestLog(input: {log: "still here"}) { id } }', api_key=bystander.secret)
