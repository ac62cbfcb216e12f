"""Roles are changed and deleted (issue 17, Workflows' roles): only by someone holding everything
the role grants, before and after; the holders' rights follow at once."""

from __future__ import annotations

import uuid

from tests.support import LiveServer, new_admin, new_user

CREATE = "mutation($i: RoleInput!) { createRole(input: $i) { id name permissions } }"
ASSIGN = "mutation($u: ID!, $r: ID!) { assignRole(userId: $u, roleId: $r) { id } }"
UPDATE = "mutation($id: ID!, $i: RoleUpdate!) { updateRole(id: $id, input: $i) { id name description permissions } }"
DELETE = "mutation($id: ID!) { deleteRole(id: $id) }"
AUDIT_READ = "{ auditLogs(first: 1) { totalCount } }"


async def _role(server: LiveServer, admin: str, permissions: list[str]) -> dict[str, str]:
    name = f"role-{uuid.uuid4().hex[:8]}"
    role: dict[str, str] = (await server.data(CREATE, {"i": {"name": name, "permissions": permissions}}, token=admin))[
        "createRole"
    ]
    return role


async def test_a_role_changes_and_its_holders_follow(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("*",))
    holder = await new_user(server)
    holder_id = (await server.data("{ me { id } }", token=holder))["me"]["id"]
    role = await _role(server, admin, ["audit:read"])
    await server.data(ASSIGN, {"u": holder_id, "r": role["id"]}, token=admin)
    assert "auditLogs" in await server.data(AUDIT_READ, token=holder)

    renamed = f"auditors-{uuid.uuid4().hex[:6]}"
    changed = (await server.data(UPDATE, {"id": role["id"], "i": {"name": renamed, "description": "d"}}, token=admin))[
        "updateRole"
    ]
    assert changed == {"id": role["id"], "name": renamed, "description": "d", "permissions": ["audit:read"]}
    changed = (await server.data(UPDATE, {"id": role["id"], "i": {"permissions": ["vendors:write"]}}, token=admin))[
        "updateRole"
    ]
    assert changed["permissions"] == ["vendors:write"] and changed["name"] == renamed
    assert await server.error_code(AUDIT_READ, token=holder) == "FORBIDDEN"  # the holder lost it at once

    assert (await server.data(DELETE, {"id": role["id"]}, token=admin))["deleteRole"] is True
    roles = await server.data("query($id: ID!) { user(id: $id) { roles { id } } }", {"id": holder_id}, token=admin)
    assert roles["user"]["roles"] == []
    assert await server.error_code(DELETE, {"id": role["id"]}, token=admin) == "NOT_FOUND"


async def test_bad_role_changes_change_nothing(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("*",))
    limited, _ = await new_admin(server, ("users:admin", "audit:read"))
    someone = await new_user(server)
    role = await _role(server, admin, ["audit:read"])
    other = await _role(server, admin, ["audit:read"])
    big = await _role(server, admin, ["vendors:write"])
    assert await server.error_code(UPDATE, {"id": role["id"], "i": {"name": "x"}}) == "UNAUTHENTICATED"
    assert await server.error_code(UPDATE, {"id": role["id"], "i": {"name": "x"}}, token=someone) == "FORBIDDEN"
    # Granting more than one holds, or touching a role that grants more: FORBIDDEN.
    escalate = {"id": role["id"], "i": {"permissions": ["audit:read", "vendors:write"]}}
    assert await server.error_code(UPDATE, escalate, token=limited) == "FORBIDDEN"
    assert await server.error_code(UPDATE, {"id": big["id"], "i": {"name": "mine"}}, token=limited) == "FORBIDDEN"
    assert await server.error_code(DELETE, {"id": big["id"]}, token=limited) == "FORBIDDEN"
    assert await server.error_code(UPDATE, {"id": role["id"], "i": {"name": other["name"]}}, token=admin) == "CONFLICT"
    assert await server.error_code(UPDATE, {"id": role["id"], "i": {"name": "  "}}, token=admin) == "BAD_USER_INPUT"
    bad_permission = {"id": role["id"], "i": {"permissions": ["Not A Permission"]}}
    assert await server.error_code(UPDATE, bad_permission, token=admin) == "BAD_USER_INPUT"
    assert await server.error_code(UPDATE, {"id": str(uuid.uuid4()), "i": {}}, token=admin) == "NOT_FOUND"
    assert await server.error_code(DELETE, {"id": "nope"}, token=admin) == "BAD_USER_INPUT"
    # Nothing changed; the limited admin may change what they fully hold.
    listed = {r["id"]: r for r in (await server.data("{ roles { id name permissions } }", token=admin))["roles"]}
    assert listed[role["id"]] == {"id": role["id"], "name": role["name"], "permissions": ["audit:read"]}
    assert listed[big["id"]]["name"] == big["name"]
    assert (await server.data(UPDATE, {"id": role["id"], "i": {"description": "ok"}}, token=limited))["updateRole"]


async def test_role_assignments_show_when_and_by_whom(server: LiveServer) -> None:
    admin, admin_id = await new_admin(server, ("users:admin", "workflows:write"))
    user = await new_user(server)
    user_id = (await server.data("{ me { id } }", token=user))["me"]["id"]
    role = (
        await server.data(
            'mutation { createRole(input: {name: "editor-x", permissions: ["workflows:write"]}) { id } }', token=admin
        )
    )["createRole"]["id"]
    await server.data(
        "mutation($u: ID!, $r: ID!) { assignRole(userId: $u, roleId: $r) { id } }",
        {"u": user_id, "r": role},
        token=admin,
    )
    mine = "{ me { roleAssignments { role { name } assignedAt assignedBy { id } } } }"
    seen = (await server.data(mine, token=user))["me"]["roleAssignments"]
    assert [(a["role"]["name"], a["assignedBy"]) for a in seen] == [("editor-x", {"id": admin_id})]
    assert seen[0]["assignedAt"] is not None
    # users:admin sees them too; the admin's own role was given by nobody (a test factory).
    query = "query($u: ID!) { user(id: $u) { roleAssignments { role { name } assignedBy { id } } } }"
    assert (await server.data(query, {"u": user_id}, token=admin))["user"]["roleAssignments"][0]["assignedBy"] == {
        "id": admin_id
    }
    own = (await server.data(query, {"u": admin_id}, token=admin))["user"]["roleAssignments"]
    assert own and all(a["assignedBy"] is None for a in own)
