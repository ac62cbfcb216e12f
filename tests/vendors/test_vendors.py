"""Vendors: ownership, coordinates, location history, billing and integrations."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import func, select

from app.vendors import models
from tests.support import LiveServer, new_admin, new_user

CREATE = "mutation($input: VendorInput!) { createVendor(input: $input) { id name open lat long } }"
RECORD = "mutation($v: ID!, $lat: Float!, $long: Float!) { recordVendorLocation(vendorId: $v, lat: $lat, long: $long) { id lat long timestamp } }"
HISTORY = """query($id: ID!, $first: Int, $after: String, $since: DateTime) {
  vendor(id: $id) { lat long locations(first: $first, after: $after, since: $since) {
    totalCount nodes { lat long timestamp } pageInfo { hasNextPage endCursor } } }
}"""


async def new_vendor(server: LiveServer, token: str, **fields: Any) -> dict[str, Any]:
    data = await server.data(CREATE, {"input": {"name": "Tacos", **fields}}, token=token)
    vendor: dict[str, Any] = data["createVendor"]
    return vendor


async def count(server: LiveServer, model: type, **where: object) -> int:
    async with server.deps.db.session() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(await session.scalar(query) or 0)


async def test_recording_a_location_appends_history_and_moves_the_vendor(server: LiveServer) -> None:
    token = await new_user(server)
    vendor = await new_vendor(server, token, lat=40.7128, long=-74.006)
    for lat, long in ((40.72, -74.0), (40.73, -73.99), (40.74, -73.98)):
        await server.data(RECORD, {"v": vendor["id"], "lat": lat, "long": long}, token=token)
    data = (await server.data(HISTORY, {"id": vendor["id"], "first": 2}, token=token))["vendor"]
    assert (data["lat"], data["long"]) == (40.74, -73.98)
    history = data["locations"]
    assert history["totalCount"] == 4  # the starting position counts
    assert [(n["lat"], n["long"]) for n in history["nodes"]] == [(40.74, -73.98), (40.73, -73.99)]
    rest = await server.data(HISTORY, {"id": vendor["id"], "after": history["pageInfo"]["endCursor"]}, token=token)
    assert [(n["lat"], n["long"]) for n in rest["vendor"]["locations"]["nodes"]] == [(40.72, -74.0), (40.7128, -74.006)]
    since = history["nodes"][1]["timestamp"]
    recent = await server.data(HISTORY, {"id": vendor["id"], "since": since}, token=token)
    assert recent["vendor"]["locations"]["totalCount"] == 2
    # The trail is the owner's: others see the vendor, not its history.
    other = await new_user(server)
    seen = (await server.data(HISTORY, {"id": vendor["id"]}, token=other))["vendor"]
    assert seen["lat"] == 40.74 and seen["locations"]["totalCount"] == 0


async def test_coordinates_out_of_range_are_refused_and_store_nothing(server: LiveServer) -> None:
    token = await new_user(server)
    vendor = await new_vendor(server, token, lat=10.0, long=10.0)
    vendor_id = uuid.UUID(vendor["id"])
    for lat, long in ((91.0, 0.0), (-90.5, 0.0), (0.0, 180.01), (0.0, -181.0)):
        body = await server.gql(RECORD, {"v": vendor["id"], "lat": lat, "long": long}, token=token)
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", (lat, long)
        assert body["data"] is None
    assert await count(server, models.Location, vendor_id=vendor_id) == 1
    data = (await server.data("query($id: ID!) { vendor(id: $id) { lat long } }", {"id": vendor["id"]}))["vendor"]
    assert data == {"lat": 10.0, "long": 10.0}
    name = f"Bad {uuid.uuid4().hex[:6]}"
    for bad in ({"lat": 95.0, "long": 0.0}, {"lat": 0.0, "long": 200.0}, {"lat": 1.0}, {"name": " "}):
        body = await server.gql(CREATE, {"input": {"name": name, **bad}}, token=token)
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", bad
    assert await count(server, models.Vendor, name=name) == 0


async def test_only_the_owner_changes_a_vendor_and_deleting_it_removes_its_history(server: LiveServer) -> None:
    token = await new_user(server)
    other = await new_user(server)
    vendor = await new_vendor(server, token, lat=1.0, long=2.0)
    await server.data(RECORD, {"v": vendor["id"], "lat": 1.5, "long": 2.5}, token=token)
    assert await server.error_code(RECORD, {"v": vendor["id"], "lat": 0.0, "long": 0.0}, token=other) == "FORBIDDEN"
    update = 'mutation($id: ID!) { updateVendor(id: $id, input: {open: false, name: "Closed"}) { open name } }'
    assert await server.error_code(update, {"id": vendor["id"]}, token=other) == "FORBIDDEN"
    assert (await server.data(update, {"id": vendor["id"]}, token=token))["updateVendor"] == {
        "open": False,
        "name": "Closed",
    }
    delete = "mutation($id: ID!) { deleteVendor(id: $id) }"
    assert await server.error_code(delete, {"id": vendor["id"]}, token=other) == "FORBIDDEN"
    assert (await server.data(delete, {"id": vendor["id"]}, token=token))["deleteVendor"] is True
    assert await count(server, models.Location, vendor_id=uuid.UUID(vendor["id"])) == 0
    assert await server.error_code(delete, {"id": vendor["id"]}, token=token) == "NOT_FOUND"


UPSERT = """mutation($input: IntegrationInput!) { upsertIntegration(input: $input) { id internalId metadata } }"""


async def test_fifty_concurrent_upserts_make_one_integration(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("vendors:write",))
    external = uuid.uuid4().hex
    bodies = await asyncio.gather(
        *(
            server.gql(
                UPSERT,
                {"input": {"service": "algolia", "externalId": external, "internalId": f"v{i}", "metadata": {"i": i}}},
                token=admin,
            )
            for i in range(50)
        )
    )
    assert all("errors" not in body for body in bodies), [b["errors"] for b in bodies if "errors" in b]
    assert len({body["data"]["upsertIntegration"]["id"] for body in bodies}) == 1
    assert await count(server, models.Integration, service="algolia", external_id=external) == 1
    found = await server.data(
        'query($e: String!) { integration(service: "algolia", externalId: $e) { internalId metadata } }',
        {"e": external},
        token=admin,
    )
    last = found["integration"]
    assert last["metadata"] == {"i": int(last["internalId"][1:])}  # one writer's values, whole
    user = await new_user(server)
    payload = {"input": {"service": "algolia", "externalId": external, "internalId": "x"}}
    assert await server.error_code(UPSERT, payload, token=user) == "FORBIDDEN"
    assert await server.error_code(
        UPSERT, {"input": {"service": "", "externalId": "e", "internalId": "x"}}, token=admin
    ) == ("BAD_USER_INPUT")


async def test_billing_subscription_status_machine(server: LiveServer) -> None:
    token = await new_user(server)
    other = await new_user(server)
    service, _ = await new_admin(server, ("billing:write",))
    me = (await server.data("{ me { id } }", token=token))["me"]["id"]
    create = """mutation($input: BillingSubscriptionInput!) {
      createBillingSubscription(input: $input) { id status startDate endDate user { id } } }"""
    base = {"provider": "revenuecat", "productId": "pro_monthly", "startDate": "2026-11-01T00:00:00Z", "userId": me}
    # Nobody grants themself a subscription: the provider's webhook or `billing:write` does.
    own = {k: v for k, v in base.items() if k != "userId"}
    assert await server.error_code(create, {"input": own}, token=token) == "FORBIDDEN"
    assert await server.error_code(create, {"input": base}, token=other) == "FORBIDDEN"
    sub = (await server.data(create, {"input": base}, token=service))["createBillingSubscription"]
    assert sub["status"] == "active" and sub["user"]["id"] == me
    cancel = "mutation($id: ID!) { cancelBillingSubscription(id: $id) { status } }"
    # Someone else's subscription does not exist for a user without `billing:write`; their own is
    # cancelled with the provider.
    assert await server.error_code(cancel, {"id": sub["id"]}, token=other) == "NOT_FOUND"
    assert await server.error_code(cancel, {"id": sub["id"]}, token=token) == "FORBIDDEN"
    listing = "query($u: ID) { billingSubscriptions(userId: $u) { totalCount nodes { id } } }"
    assert await server.error_code(listing, {"u": me}, token=other) == "FORBIDDEN"
    assert (await server.data(cancel, {"id": sub["id"]}, token=service))["cancelBillingSubscription"][
        "status"
    ] == "cancelled"
    assert await server.error_code(cancel, {"id": sub["id"]}, token=service) == "CONFLICT"
    for bad in ({"status": "paused"}, {"endDate": "2026-10-01T00:00:00Z"}, {"provider": " "}):
        assert await server.error_code(create, {"input": {**base, **bad}}, token=service) == "BAD_USER_INPUT", bad
    # An active subscription past its end date expires (the sweeper's statement), and stays so.
    ended = (await server.data(create, {"input": {**base, "endDate": "2026-11-02T00:00:00Z"}}, token=service))[
        "createBillingSubscription"
    ]
    from app.vendors.service import billing

    async with server.deps.db.session() as session:
        assert await billing.expire_subscriptions(session) >= 1
        await session.commit()
    mine = await server.data("{ billingSubscriptions { nodes { id status } } }", token=token)
    statuses = {n["id"]: n["status"] for n in mine["billingSubscriptions"]["nodes"]}
    assert statuses == {sub["id"]: "cancelled", ended["id"]: "expired"}
    assert await server.error_code(cancel, {"id": ended["id"]}, token=service) == "CONFLICT"
    # An admin may set any status (a correction), and only a known one.
    status = "mutation($id: ID!, $s: String!) { setBillingSubscriptionStatus(id: $id, status: $s) { status } }"
    restored = await server.data(status, {"id": ended["id"], "s": "active"}, token=service)
    assert restored["setBillingSubscriptionStatus"] == {"status": "active"}
    assert await server.error_code(status, {"id": ended["id"], "s": "paused"}, token=service) == "BAD_USER_INPUT"
    assert await server.error_code(status, {"id": ended["id"], "s": "active"}, token=token) == "FORBIDDEN"


async def test_a_billing_service_manages_other_peoples_subscriptions(server: LiveServer) -> None:
    user = await new_user(server)
    service, _ = await new_admin(server, ("billing:write",))
    user_id = (await server.data("{ me { id } }", token=user))["me"]["id"]
    create = """mutation($input: BillingSubscriptionInput!) {
      createBillingSubscription(input: $input) { id status user { id } } }"""
    base = {"provider": "stripe", "productId": "pro", "startDate": "2026-11-01T00:00:00Z"}
    sub = (await server.data(create, {"input": {**base, "userId": user_id}}, token=service))[
        "createBillingSubscription"
    ]
    assert sub["user"]["id"] == user_id and sub["status"] == "active"
    missing = {**base, "userId": str(uuid.uuid4())}
    assert await server.error_code(create, {"input": missing}, token=service) == "NOT_FOUND"
    assert await server.error_code(create, {"input": {**base, "userId": "nope"}}, token=service) == "BAD_USER_INPUT"
    listing = "query($u: ID) { billingSubscriptions(userId: $u) { totalCount nodes { id } } }"
    seen = (await server.data(listing, {"u": user_id}, token=service))["billingSubscriptions"]
    assert seen == {"totalCount": 1, "nodes": [{"id": sub["id"]}]}
    cancel = "mutation($id: ID!) { cancelBillingSubscription(id: $id) { status } }"
    assert (await server.data(cancel, {"id": sub["id"]}, token=service))["cancelBillingSubscription"] == {
        "status": "cancelled"
    }
    # The second attempt names the status the row has now, not the one first read in the operation.
    again = await server.gql(cancel, {"id": sub["id"]}, token=service)
    assert again["errors"][0]["extensions"]["code"] == "CONFLICT"
    assert again["errors"][0]["extensions"]["status"] == "cancelled"
    assert await count(server, models.BillingSubscription, user_id=uuid.UUID(user_id)) == 1
