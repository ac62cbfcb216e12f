"""What a stranger sees of a user (a vendor's owner) and of a project's client."""

from __future__ import annotations

import uuid

from tests.support import LiveServer, new_admin, new_project, new_user

OWNER = """
query($id: ID!) { vendor(id: $id) { owner { id name email discordId clerkId firstName lastName
  emailVerifiedAt lastLoginAt } } }
"""
PRIVATE = ("email", "discordId", "clerkId", "firstName", "lastName", "lastLoginAt")


async def test_a_public_vendors_owner_shows_only_public_fields(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("users:admin",))
    clerk_id = f"user_{uuid.uuid4().hex}"
    owner = await server.data(
        "mutation($i: ClerkUserInput!) { upsertClerkUser(input: $i) { id } }",
        {"i": {"clerkId": clerk_id, "email": f"{clerk_id}@example.com", "firstName": "Ada", "lastName": "L"}},
        token=admin,
    )
    owner_id = owner["upsertClerkUser"]["id"]
    session = await server.data(
        "mutation($u: ID!) { createSession(userId: $u) { token } }", {"u": owner_id}, token=admin
    )
    owner_token = session["createSession"]["token"]
    await server.data("{ me { id } }", token=owner_token)
    vendor = await server.data(
        'mutation { createVendor(input: {name: "Tacos", open: true}) { id } }', token=owner_token
    )
    variables = {"id": vendor["createVendor"]["id"]}

    stranger = await new_user(server)
    seen = (await server.data(OWNER, variables, token=stranger))["vendor"]["owner"]
    assert seen["id"] == owner_id
    assert {field: seen[field] for field in PRIVATE} == dict.fromkeys(PRIVATE)
    anonymous = (await server.data(OWNER, variables))["vendor"]["owner"]
    assert {field: anonymous[field] for field in PRIVATE} == dict.fromkeys(PRIVATE)

    for token in (owner_token, admin):
        own = (await server.data(OWNER, variables, token=token))["vendor"]["owner"]
        assert (own["clerkId"], own["firstName"], own["email"]) == (clerk_id, "Ada", f"{clerk_id}@example.com")


async def test_a_projects_client_email_follows_the_gateway_permission(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("gateway:admin", "projects:admin"))
    owner = await new_user(server)
    project_id = await new_project(server, owner)
    client = await server.data(
        'mutation { createClient(input: {name: "Acme", email: "billing@acme.example"}) { id } }', token=admin
    )
    await server.data(
        "mutation($p: ID!, $c: ID!) { updateProject(id: $p, input: {clientId: $c}) { id } }",
        {"p": project_id, "c": client["createClient"]["id"]},
        token=admin,
    )
    query = "query($p: ID!) { project(id: $p) { client { name email } } }"
    assert (await server.data(query, {"p": project_id}, token=owner))["project"]["client"] == {
        "name": "Acme",
        "email": None,
    }
    assert (await server.data(query, {"p": project_id}, token=admin))["project"]["client"] == {
        "name": "Acme",
        "email": "billing@acme.example",
    }
