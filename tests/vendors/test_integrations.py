"""Integrations listed by vendor (internal id) and service, and deleted (issue 17, Vendors)."""

from __future__ import annotations

import uuid

from tests.support import LiveServer, new_admin, new_user

UPSERT = "mutation($input: IntegrationInput!) { upsertIntegration(input: $input) { id } }"
LIST = """query($internal: String, $service: String, $first: Int, $after: String) {
  integrations(internalId: $internal, service: $service, first: $first, after: $after) {
    totalCount nodes { id service externalId internalId } pageInfo { hasNextPage endCursor }
  }
}"""
DELETE = "mutation($s: String!, $e: String!) { deleteIntegration(service: $s, externalId: $e) }"
LOOKUP = "query($s: String!, $e: String!) { integration(service: $s, externalId: $e) { id } }"


async def _mapped(server: LiveServer, token: str, vendor: str, *pairs: tuple[str, str]) -> list[str]:
    ids = []
    for service, external in pairs:
        data = await server.data(
            UPSERT, {"input": {"service": service, "externalId": external, "internalId": vendor}}, token=token
        )
        ids.append(data["upsertIntegration"]["id"])
    return ids


async def test_a_vendors_integrations_are_listed_and_deleted(server: LiveServer) -> None:
    writer, _ = await new_admin(server, ("vendors:write",))
    vendor, other_vendor = str(uuid.uuid4()), str(uuid.uuid4())
    tag = uuid.uuid4().hex[:8]
    ids = await _mapped(
        server, writer, vendor, (f"algolia-{tag}", "a1"), (f"cloudinary-{tag}", "c1"), (f"clerk-{tag}", "k1")
    )
    await _mapped(server, writer, other_vendor, (f"algolia-{tag}", "a2"))

    listed = (await server.data(LIST, {"internal": vendor}, token=writer))["integrations"]
    assert listed["totalCount"] == 3 and [n["id"] for n in listed["nodes"]] == ids
    assert {n["internalId"] for n in listed["nodes"]} == {vendor}
    by_service = (await server.data(LIST, {"service": f"algolia-{tag}"}, token=writer))["integrations"]
    assert {n["externalId"] for n in by_service["nodes"]} == {"a1", "a2"}
    both = (await server.data(LIST, {"internal": vendor, "service": f"algolia-{tag}"}, token=writer))["integrations"]
    assert [n["externalId"] for n in both["nodes"]] == ["a1"]
    # Page by page.
    page = (await server.data(LIST, {"internal": vendor, "first": 2}, token=writer))["integrations"]
    assert [n["id"] for n in page["nodes"]] == ids[:2] and page["pageInfo"]["hasNextPage"]
    after = page["pageInfo"]["endCursor"]
    rest = (await server.data(LIST, {"internal": vendor, "first": 2, "after": after}, token=writer))["integrations"]
    assert [n["id"] for n in rest["nodes"]] == ids[2:] and not rest["pageInfo"]["hasNextPage"]

    assert (await server.data(DELETE, {"s": f"cloudinary-{tag}", "e": "c1"}, token=writer))["deleteIntegration"] is True
    assert (await server.data(LOOKUP, {"s": f"cloudinary-{tag}", "e": "c1"}, token=writer))["integration"] is None
    left = (await server.data(LIST, {"internal": vendor}, token=writer))["integrations"]
    assert [n["id"] for n in left["nodes"]] == [ids[0], ids[2]]


async def test_bad_requests_for_integrations(server: LiveServer) -> None:
    writer, _ = await new_admin(server, ("vendors:write",))
    user = await new_user(server)
    vendor = str(uuid.uuid4())
    tag = uuid.uuid4().hex[:8]
    await _mapped(server, writer, vendor, (f"algolia-{tag}", "a1"))
    assert await server.error_code(LIST, {"internal": vendor}) == "UNAUTHENTICATED"
    assert await server.error_code(LIST, {"internal": vendor}, token=user) == "FORBIDDEN"
    assert await server.error_code(LIST, {"after": "garbage"}, token=writer) == "BAD_USER_INPUT"
    assert await server.error_code(LIST, {"first": 501}, token=writer) == "BAD_USER_INPUT"
    assert await server.error_code(LIST, {"service": "x" * 10_000}, token=writer) == "BAD_USER_INPUT"
    assert await server.error_code(DELETE, {"s": f"algolia-{tag}", "e": "a1"}, token=user) == "FORBIDDEN"
    assert await server.error_code(DELETE, {"s": f"algolia-{tag}", "e": "nope"}, token=writer) == "NOT_FOUND"
    # The refusals deleted nothing.
    assert (await server.data(LIST, {"internal": vendor}, token=writer))["integrations"]["totalCount"] == 1
