"""The same question gets the same kind of answer in every domain (issue 14.6).

* `me` is null for a caller who is not a signed-in user (anonymous, or an API key).
* A single-object lookup (`user(id:)`, `vendor(id:)`, ...) of an id that names nothing is null,
  with no error, once the caller may ask at all (a permission error still comes first).
* An argument that names a parent (`logs(projectId:)`, `clubAnalyses(guildId:)`,
  `workflows(ownerId:)`, ...) is NOT_FOUND when it names nothing, not an empty page.
"""

from __future__ import annotations

import uuid

import pytest

from tests.support import LiveServer, new_admin, new_tenant

NOWHERE = str(uuid.uuid4())

SINGLE_OBJECT = [
    "user(id: $id)",
    "project(id: $id)",
    "client(id: $id)",
    "guild(id: $id)",
    "clubAnalysis(id: $id)",
    "conversation(id: $id)",
    "workflow(id: $id)",
    "execution(id: $id)",
    "file(id: $id)",
    "vendor(id: $id)",
]

PARENT_ARGUMENTS = [
    ("logs(projectId: $id)", "projectId"),
    ("clubAnalyses(guildId: $id)", "guildId"),
    ("clubAnalyses(userId: $id)", "userId"),
    ("requestLogs(environmentId: $id)", "environmentId"),
    ("requestLogs(serviceId: $id)", "serviceId"),
    ("workflows(ownerId: $id)", "ownerId"),
    ("vendors(ownerId: $id)", "ownerId"),
    ("billingSubscriptions(userId: $id)", "userId"),
]


async def test_me_is_null_for_anyone_but_a_signed_in_user(server: LiveServer) -> None:
    t = await new_tenant(server)
    for api_key in (None, t.secret):
        body = await server.gql("{ me { id } }", api_key=api_key)
        assert body == {"data": {"me": None}}, (api_key, body)
    assert (await server.data("{ me { id } }", token=t.token))["me"]["id"]


@pytest.mark.parametrize("field", SINGLE_OBJECT)
async def test_an_unknown_id_is_null_in_every_domain(server: LiveServer, field: str) -> None:
    admin, _ = await new_admin(server)  # `*`: no permission error hides the answer
    body = await server.gql(f"query($id: ID!) {{ found: {field} {{ id }} }}", {"id": NOWHERE}, token=admin)
    assert body == {"data": {"found": None}}, body


@pytest.mark.parametrize(("field", "argument"), PARENT_ARGUMENTS)
async def test_an_argument_naming_no_parent_is_not_found(server: LiveServer, field: str, argument: str) -> None:
    admin, _ = await new_admin(server)
    body = await server.gql(f"query($id: ID!) {{ {field} {{ totalCount }} }}", {"id": NOWHERE}, token=admin)
    assert body["data"] is None, body
    [error] = body["errors"]
    assert error["extensions"]["code"] == "NOT_FOUND", error
    # An ordinary user gets the same answer where the argument is open to them.
    if argument in ("projectId", "guildId", "ownerId", "environmentId", "serviceId"):
        t = await new_tenant(server)
        body = await server.gql(f"query($id: ID!) {{ {field} {{ totalCount }} }}", {"id": NOWHERE}, token=t.token)
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND", body


async def test_who_asks_comes_before_whether_it_exists(server: LiveServer) -> None:
    for field, _ in PARENT_ARGUMENTS:
        if field.startswith("vendors"):
            continue  # vendors are public
        body = await server.gql(f"query($id: ID!) {{ {field} {{ totalCount }} }}", {"id": NOWHERE})
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", (field, body)


async def test_a_known_parent_still_answers_a_page(server: LiveServer) -> None:
    t = await new_tenant(server)
    me = (await server.data("{ me { id } }", token=t.token))["me"]["id"]
    data = await server.data(
        "query($p: ID!, $u: ID!) { logs(projectId: $p) { totalCount } workflows(ownerId: $u) { totalCount } }",
        {"p": t.project_id, "u": me},
        token=t.token,
    )
    assert data == {"logs": {"totalCount": 0}, "workflows": {"totalCount": 0}}
