"""Tokens, sessions, soft deletion, identities from Discord, permissions, websocket auth."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import websockets
from sqlalchemy import func, select

from app.accounts import models
from tests.support import (
    FROM_START,
    LOG_ADDED,
    PASSWORD,
    GraphQLWS,
    LiveServer,
    new_admin,
    new_project,
    new_user,
    unique_email,
)

REGISTER = "mutation($input: RegisterInput!) { register(input: $input) { accessToken refreshToken user { id } } }"
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken refreshToken } }"
REFRESH = "mutation($t: String!) { refresh(refreshToken: $t) { accessToken refreshToken } }"
LOGOUT = "mutation($t: String!) { logout(refreshToken: $t) }"
ME = "{ me { id email } }"


async def test_refresh_rotates_and_reuse_revokes_the_family(server: LiveServer) -> None:
    email = unique_email()
    await new_user(server, email)
    first = (await server.data(LOGIN, {"e": email, "p": PASSWORD}))["login"]
    second = (await server.data(REFRESH, {"t": first["refreshToken"]}))["refresh"]
    assert (await server.data(ME, token=second["accessToken"]))["me"]["email"] == email
    # The spent token again: theft. Its whole family dies, the newest token included.
    assert await server.error_code(REFRESH, {"t": first["refreshToken"]}) == "UNAUTHENTICATED"
    assert await server.error_code(REFRESH, {"t": second["refreshToken"]}) == "UNAUTHENTICATED"

    again = (await server.data(LOGIN, {"e": email, "p": PASSWORD}))["login"]
    assert (await server.data(LOGOUT, {"t": again["refreshToken"]}))["logout"] is True
    assert await server.error_code(REFRESH, {"t": again["refreshToken"]}) == "UNAUTHENTICATED"
    assert await server.error_code(REFRESH, {"t": "lodge_rt_made-up"}) == "UNAUTHENTICATED"


async def test_a_soft_deleted_user_is_gone_everywhere(server: LiveServer) -> None:
    admin, _ = await new_admin(server)
    email = unique_email()
    registered = (await server.data(REGISTER, {"input": {"email": email, "password": PASSWORD}}))["register"]
    user_id = registered["user"]["id"]
    session = await server.data(
        "mutation($u: ID!) { createSession(userId: $u, ttlSeconds: 600) { token session { id } } }",
        {"u": user_id},
        token=admin,
    )
    session_token = session["createSession"]["token"]
    assert (await server.data(ME, token=session_token))["me"]["id"] == user_id

    assert await server.data(
        "mutation($id: ID!) { deleteUser(id: $id) }", {"id": user_id}, token=registered["accessToken"]
    )
    assert await server.error_code(LOGIN, {"e": email, "p": PASSWORD}) == "UNAUTHENTICATED"
    assert await server.error_code(ME, token=registered["accessToken"]) == "UNAUTHENTICATED"
    assert await server.error_code(ME, token=session_token) == "UNAUTHENTICATED"
    assert await server.error_code(REFRESH, {"t": registered["refreshToken"]}) == "UNAUTHENTICATED"
    again = (await server.data(REGISTER, {"input": {"email": email, "password": PASSWORD}}))["register"]
    assert again["user"]["id"] != user_id


async def test_concurrent_discord_upserts_make_one_user(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("users:admin",))
    discord_id = str(uuid.uuid4().int)[:18]
    upsert = "mutation($i: DiscordUserInput!) { upsertDiscordUser(input: $i) { id username discordId } }"
    results = await asyncio.gather(
        *(server.data(upsert, {"i": {"discordId": discord_id, "username": f"u{n}"}}, token=admin) for n in range(50))
    )
    assert len({r["upsertDiscordUser"]["id"] for r in results}) == 1
    async with server.deps.db.session() as session:
        count = await session.scalar(select(func.count()).where(models.User.discord_id == discord_id))  # type: ignore[arg-type]
    assert count == 1


async def test_permissions_owners_and_superusers(server: LiveServer) -> None:
    owner = await new_user(server)
    project_id = await new_project(server, owner)
    stranger = await new_user(server)
    rename = "mutation($id: ID!, $n: String!) { updateProject(id: $id, input: {name: $n}) { name } }"
    create_role = 'mutation { createRole(input: {name: "%s", permissions: ["gateway:admin"]}) { id } }'

    assert await server.error_code(create_role % uuid.uuid4().hex, token=stranger) == "FORBIDDEN"
    assert await server.error_code(rename, {"id": project_id, "n": "mine now"}, token=stranger) == "FORBIDDEN"
    assert (await server.data(rename, {"id": project_id, "n": "still mine"}, token=owner))["updateProject"][
        "name"
    ] == "still mine"

    limited, limited_id = await new_admin(server, ("users:admin",))
    assert await server.error_code("{ auditLogs { totalCount } }", token=limited) == "FORBIDDEN"
    # users:admin manages users, but hands out nothing it does not hold itself.
    same = 'mutation { createRole(input: {name: "%s", permissions: ["users:admin"]}) { id } }'
    assert (await server.data(same % uuid.uuid4().hex, token=limited))["createRole"]["id"]
    assert await server.error_code(create_role % uuid.uuid4().hex, token=limited) == "FORBIDDEN"

    root, root_id = await new_admin(server)
    renamed = await server.data(rename, {"id": project_id, "n": "by root"}, token=root)
    assert renamed["updateProject"]["name"] == "by root"
    star_role = 'mutation { createRole(input: {name: "%s", permissions: ["*"]}) { id } }' % uuid.uuid4().hex
    star = await server.data(star_role, token=root)
    assign = "mutation($u: ID!, $r: ID!) { assignRole(userId: $u, roleId: $r) { id } }"
    assert (
        await server.error_code(assign, {"u": limited_id, "r": star["createRole"]["id"]}, token=limited) == "FORBIDDEN"
    )
    impersonate = "mutation($u: ID!) { createSession(userId: $u) { token } }"
    assert await server.error_code(impersonate, {"u": root_id}, token=limited) == "FORBIDDEN"
    assert (await server.data("{ auditLogs(first: 1) { totalCount } }", token=root))["auditLogs"]["totalCount"] > 0


async def test_roles_can_be_assigned_and_revoked(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("users:admin", "audit:read"))
    user = await new_user(server)
    user_id = (await server.data(ME, token=user))["me"]["id"]
    role = await server.data(
        'mutation { createRole(input: {name: "%s", permissions: ["audit:read"]}) { id permissions } }'
        % uuid.uuid4().hex,
        token=admin,
    )
    role_id = role["createRole"]["id"]
    assign = "mutation($u: ID!, $r: ID!) { assignRole(userId: $u, roleId: $r) { roles { id } } }"
    assigned = await server.data(assign, {"u": user_id, "r": role_id}, token=admin)
    assert [r["id"] for r in assigned["assignRole"]["roles"]] == [role_id]
    assert (await server.data("{ auditLogs(first: 1) { totalCount } }", token=user))["auditLogs"]["totalCount"] >= 0
    revoke = "mutation($u: ID!, $r: ID!) { revokeRole(userId: $u, roleId: $r) { roles { id } } }"
    assert (await server.data(revoke, {"u": user_id, "r": role_id}, token=admin))["revokeRole"]["roles"] == []
    assert await server.error_code("{ auditLogs { totalCount } }", token=user) == "FORBIDDEN"


async def test_bad_input(server: LiveServer) -> None:
    admin, _ = await new_admin(server)
    user_id = (await server.data(ME, token=admin))["me"]["id"]
    expired = jwt.encode(
        {"sub": user_id, "typ": "access", "exp": datetime.now(UTC) - timedelta(minutes=1)},
        server.deps.secret_key,
        algorithm="HS256",
    )
    assert await server.error_code(ME, token=expired) == "UNAUTHENTICATED"
    unknown_role = "mutation($u: ID!, $r: ID!) { assignRole(userId: $u, roleId: $r) { id } }"
    assert await server.error_code(unknown_role, {"u": user_id, "r": str(uuid.uuid4())}, token=admin) == "NOT_FOUND"
    bad_permission = 'mutation { createRole(input: {name: "x", permissions: ["not a permission"]}) { id } }'
    assert await server.error_code(bad_permission, token=admin) == "BAD_USER_INPUT"
    bad_ttl = "mutation($u: ID!) { createSession(userId: $u, ttlSeconds: -5) { token } }"
    assert await server.error_code(bad_ttl, {"u": user_id}, token=admin) == "BAD_USER_INPUT"


async def test_sessions_expire_and_are_swept(server: LiveServer) -> None:
    admin, _ = await new_admin(server)
    user = await new_user(server)
    user_id = (await server.data(ME, token=user))["me"]["id"]
    created = await server.data(
        "mutation($u: ID!) { createSession(userId: $u, ttlSeconds: 600) { token session { id } } }",
        {"u": user_id},
        token=admin,
    )
    token, session_id = created["createSession"]["token"], created["createSession"]["session"]["id"]
    async with server.deps.db.session() as session:
        await session.execute(
            models.Session.__table__.update()  # type: ignore[attr-defined]
            .where(models.Session.__table__.c.id == uuid.UUID(session_id))  # type: ignore[attr-defined]
            .values(expires_at=func.now() - timedelta(seconds=1))
        )
        await session.commit()
    assert await server.error_code(ME, token=token) == "UNAUTHENTICATED"
    swept = (await server.data("mutation { deleteExpiredSessions }", token=admin))["deleteExpiredSessions"]
    assert swept >= 1


async def test_websocket_closes_with_4403_when_its_session_is_deleted(server: LiveServer) -> None:
    admin, _ = await new_admin(server)
    user = await new_user(server)
    project_id = await new_project(server, user)
    user_id = (await server.data(ME, token=user))["me"]["id"]
    created = await server.data(
        "mutation($u: ID!) { createSession(userId: $u, ttlSeconds: 600) { token session { id } } }",
        {"u": user_id},
        token=admin,
    )
    token, session_id = created["createSession"]["token"], created["createSession"]["session"]["id"]
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {token}") as ws:
        await ws.subscribe(LOG_ADDED, {"projectId": project_id, "after": FROM_START})
        await server.data("mutation($id: ID!) { deleteSession(id: $id) }", {"id": session_id}, token=admin)
        seen = []
        try:
            async with asyncio.timeout(10):
                while True:
                    # The subscription may notice first (an error or its end) before the socket closes;
                    # what it must never get is data.
                    message = await ws.receive(timeout=10)
                    seen.append(message)
                    payload = message.get("payload")
                    assert message["type"] in ("error", "complete", "next"), message
                    assert message["type"] != "next" or (payload or {}).get("data") is None, message
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4403, seen


async def test_websocket_closes_with_4403_when_its_token_expires(server: LiveServer) -> None:
    user = await new_user(server)
    user_id = (await server.data(ME, token=user))["me"]["id"]
    soon = jwt.encode(
        {"sub": user_id, "typ": "access", "exp": datetime.now(UTC) + timedelta(seconds=2)},
        server.deps.secret_key,
        algorithm="HS256",
    )
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {soon}") as ws:
        try:
            await ws.receive(timeout=10)
            raise AssertionError("the connection stayed open")
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4403


async def test_update_me_and_the_user_directory(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("users:admin",))
    token = await new_user(server)
    handle = f"handle-{uuid.uuid4().hex[:8]}"
    updated = await server.data(
        "mutation($i: UpdateMeInput!) { updateMe(input: $i) { id username name } }",
        {"i": {"username": handle, "name": "Renamed"}},
        token=token,
    )
    user_id = updated["updateMe"]["id"]
    assert updated["updateMe"]["username"] == handle
    update_me = "mutation($i: UpdateMeInput!) { updateMe(input: $i) { id } }"
    no_proof = await server.gql(update_me, {"i": {"email": unique_email()}}, token=token)
    assert no_proof["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    malformed = await server.gql(update_me, {"i": {"email": "not an email", "currentPassword": PASSWORD}}, token=token)
    assert malformed["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    found = await server.data(
        "query($s: String) { users(search: $s) { totalCount nodes { id } } }", {"s": handle}, token=admin
    )
    assert found["users"]["totalCount"] == 1 and found["users"]["nodes"][0]["id"] == user_id
    assert await server.error_code("{ users { totalCount } }", token=token) == "FORBIDDEN"
    assert (await server.data("query($id: ID!) { user(id: $id) { id } }", {"id": user_id}, token=token))["user"][
        "id"
    ] == user_id
    other = await new_user(server)
    assert (
        await server.error_code("query($id: ID!) { user(id: $id) { id } }", {"id": user_id}, token=other) == "FORBIDDEN"
    )


async def test_clerk_users_find_or_create_and_keep_emails_unique(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("users:admin",))
    upsert = "mutation($i: ClerkUserInput!) { upsertClerkUser(input: $i) { id email firstName } }"
    clerk_id = f"user_{uuid.uuid4().hex}"
    email = unique_email()
    first = await server.data(upsert, {"i": {"clerkId": clerk_id, "email": email, "firstName": "Ada"}}, token=admin)
    again = await server.data(upsert, {"i": {"clerkId": clerk_id, "firstName": "Augusta"}}, token=admin)
    assert first["upsertClerkUser"]["id"] == again["upsertClerkUser"]["id"]
    assert again["upsertClerkUser"] == {"id": first["upsertClerkUser"]["id"], "email": email, "firstName": "Augusta"}
    clash = await server.gql(upsert, {"i": {"clerkId": f"user_{uuid.uuid4().hex}", "email": email}}, token=admin)
    assert clash["errors"][0]["extensions"]["code"] == "CONFLICT"


async def test_a_new_password_ends_the_other_logins(server: LiveServer) -> None:
    email = unique_email()
    await new_user(server, email)
    first = (await server.data(LOGIN, {"e": email, "p": PASSWORD}))["login"]
    second = (await server.data(LOGIN, {"e": email, "p": PASSWORD}))["login"]
    change = "mutation($i: UpdateMeInput!) { updateMe(input: $i) { id } }"
    new_password = "an entirely new passphrase"
    await server.data(
        change, {"i": {"password": new_password, "currentPassword": PASSWORD}}, token=second["accessToken"]
    )
    assert await server.error_code(REFRESH, {"t": first["refreshToken"]}) == "UNAUTHENTICATED"
    assert await server.error_code(LOGIN, {"e": email, "p": PASSWORD}) == "UNAUTHENTICATED"
    assert (await server.data(LOGIN, {"e": email, "p": new_password}))["login"]["accessToken"]
