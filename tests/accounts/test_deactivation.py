"""Deactivating and reactivating a user (issue 17, Workflows' users): a suspended user cannot sign
in and every credential they hold stops at once; reactivated, they sign in again."""

from __future__ import annotations

from tests.accounts.test_auth import LOGIN, ME, REFRESH, REGISTER
from tests.support import PASSWORD, LiveServer, new_admin, new_user, unique_email

DEACTIVATE = "mutation($id: ID!) { deactivateUser(id: $id) { id isActive } }"
REACTIVATE = "mutation($id: ID!) { reactivateUser(id: $id) { id isActive } }"
SESSION = "mutation($u: ID!) { createSession(userId: $u, ttlSeconds: 600) { token } }"


async def test_a_suspended_user_is_locked_out_until_reactivated(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("users:admin",))
    email = unique_email()
    registered = (await server.data(REGISTER, {"input": {"email": email, "password": PASSWORD}}))["register"]
    user_id = registered["user"]["id"]
    session = (await server.data(SESSION, {"u": user_id}, token=admin))["createSession"]["token"]
    assert (await server.data(ME, token=session))["me"]["id"] == user_id

    done = (await server.data(DEACTIVATE, {"id": user_id}, token=admin))["deactivateUser"]
    assert done == {"id": user_id, "isActive": False}
    for token in (registered["accessToken"], session):
        assert await server.error_code(ME, token=token) == "UNAUTHENTICATED"
    assert await server.error_code(LOGIN, {"e": email, "p": PASSWORD}) == "UNAUTHENTICATED"
    assert await server.error_code(REFRESH, {"t": registered["refreshToken"]}) == "UNAUTHENTICATED"
    # Still a user: an administrator reads them.
    read = await server.data("query($id: ID!) { user(id: $id) { isActive } }", {"id": user_id}, token=admin)
    assert read["user"] == {"isActive": False}

    again = (await server.data(REACTIVATE, {"id": user_id}, token=admin))["reactivateUser"]
    assert again["isActive"] is True
    fresh = (await server.data(LOGIN, {"e": email, "p": PASSWORD}))["login"]
    assert (await server.data(ME, token=fresh["accessToken"]))["me"]["id"] == user_id
    assert await server.error_code(ME, token=session) == "UNAUTHENTICATED"  # ended sessions stay ended


async def test_bad_suspensions_change_nothing(server: LiveServer) -> None:
    admin, admin_id = await new_admin(server, ("users:admin",))
    boss, _ = await new_admin(server, ("*",))
    someone = await new_user(server)
    target = await new_user(server)
    target_id = (await server.data(ME, token=target))["me"]["id"]
    boss_id = (await server.data(ME, token=boss))["me"]["id"]
    assert await server.error_code(DEACTIVATE, {"id": target_id}) == "UNAUTHENTICATED"
    assert await server.error_code(DEACTIVATE, {"id": target_id}, token=someone) == "FORBIDDEN"
    assert await server.error_code(DEACTIVATE, {"id": boss_id}, token=admin) == "FORBIDDEN"  # holds more
    assert await server.error_code(DEACTIVATE, {"id": admin_id}, token=admin) == "BAD_USER_INPUT"  # yourself
    assert await server.error_code(DEACTIVATE, {"id": "nope"}, token=admin) == "BAD_USER_INPUT"
    assert await server.error_code(REACTIVATE, {"id": "00000000-0000-0000-0000-000000000000"}, token=admin) == (
        "NOT_FOUND"
    )
    assert (await server.data(ME, token=target))["me"]["id"] == target_id
    assert (await server.data(ME, token=boss))["me"]["id"] == boss_id
