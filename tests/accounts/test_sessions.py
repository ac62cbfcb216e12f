"""A user lists their own live sessions and ends the others (issue 17, Communities)."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from tests.support import LiveServer, new_admin, new_user

ME = "{ me { id } }"
CREATE = "mutation($u: ID!, $ttl: Int) { createSession(userId: $u, ttlSeconds: $ttl) { token session { id } } }"
SESSIONS = """query($u: ID, $first: Int, $after: String) {
  sessions(userId: $u, first: $first, after: $after) {
    totalCount nodes { id current expiresAt createdAt user { id } } pageInfo { hasNextPage endCursor }
  }
}"""
END_OTHERS = "mutation { deleteOtherSessions }"


async def _user_with_sessions(server: LiveServer, admin: str, count: int) -> tuple[str, str, list[tuple[str, str]]]:
    """A user's access token, id, and (session id, token) of `count` sessions, oldest first."""
    token = await new_user(server)
    user_id = (await server.data(ME, token=token))["me"]["id"]
    sessions = []
    for _ in range(count):
        made = (await server.data(CREATE, {"u": user_id, "ttl": 600}, token=admin))["createSession"]
        sessions.append((made["session"]["id"], made["token"]))
    return token, user_id, sessions


async def test_a_user_lists_their_live_sessions_newest_first(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("users:admin",))
    token, user_id, sessions = await _user_with_sessions(server, admin, 3)
    expired = (await server.data(CREATE, {"u": user_id, "ttl": 600}, token=admin))["createSession"]["session"]["id"]
    async with server.deps.db.session() as session:  # as if its time had passed: not listed
        await session.execute(
            text("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = :id"), {"id": expired}
        )
        await session.commit()
    (first_id, first_token), _, (last_id, _) = sessions

    listed = (await server.data(SESSIONS, {}, token=first_token))["sessions"]
    assert listed["totalCount"] == 3
    assert [n["id"] for n in listed["nodes"]] == [s for s, _ in reversed(sessions)]
    assert [n["current"] for n in listed["nodes"]] == [False, False, True]  # the request's own session
    assert {n["user"]["id"] for n in listed["nodes"]} == {user_id}
    # Signed in with an access token: none of them is the current one.
    with_jwt = (await server.data(SESSIONS, {}, token=token))["sessions"]
    assert [n["current"] for n in with_jwt["nodes"]] == [False, False, False]

    # Page by page.
    page = (await server.data(SESSIONS, {"first": 2}, token=token))["sessions"]
    assert [n["id"] for n in page["nodes"]] == [last_id, sessions[1][0]] and page["pageInfo"]["hasNextPage"]
    rest = (await server.data(SESSIONS, {"first": 2, "after": page["pageInfo"]["endCursor"]}, token=token))["sessions"]
    assert [n["id"] for n in rest["nodes"]] == [first_id] and not rest["pageInfo"]["hasNextPage"]

    # Someone else sees only their own; users:admin may ask for anyone's.
    other = await new_user(server)
    assert (await server.data(SESSIONS, {}, token=other))["sessions"]["totalCount"] == 0
    assert (await server.data(SESSIONS, {"u": user_id}, token=admin))["sessions"]["totalCount"] == 3


async def test_bad_requests_for_sessions(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("users:admin",))
    token, user_id, _ = await _user_with_sessions(server, admin, 1)
    other = await new_user(server)
    assert await server.error_code(SESSIONS, {}) == "UNAUTHENTICATED"
    assert await server.error_code(SESSIONS, {"u": user_id}, token=other) == "FORBIDDEN"
    assert await server.error_code(SESSIONS, {"u": str(uuid.uuid4())}, token=admin) == "NOT_FOUND"
    assert await server.error_code(SESSIONS, {"u": "nope"}, token=admin) == "BAD_USER_INPUT"
    assert await server.error_code(SESSIONS, {"after": "garbage"}, token=token) == "BAD_USER_INPUT"
    assert await server.error_code(SESSIONS, {"first": 501}, token=token) == "BAD_USER_INPUT"
    assert await server.error_code(END_OTHERS, {}) == "UNAUTHENTICATED"
    # Nothing was ended by the refusals, and the server still answers.
    assert (await server.data(SESSIONS, {}, token=token))["sessions"]["totalCount"] == 1


async def test_signing_out_everywhere_else(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("users:admin",))
    token, user_id, sessions = await _user_with_sessions(server, admin, 3)
    other_token, other_id, other_sessions = await _user_with_sessions(server, admin, 1)
    (kept_id, kept_token), *ended = sessions

    assert (await server.data(END_OTHERS, {}, token=kept_token))["deleteOtherSessions"] == 2
    assert (await server.data(ME, token=kept_token))["me"]["id"] == user_id
    for _, gone in ended:
        assert await server.error_code(ME, token=gone) == "UNAUTHENTICATED"
    listed = (await server.data(SESSIONS, {}, token=token))["sessions"]
    assert [n["id"] for n in listed["nodes"]] == [kept_id]
    # Another user's sessions are untouched.
    assert (await server.data(ME, token=other_sessions[0][1]))["me"]["id"] == other_id
    # Signed in with an access token, every session goes.
    assert (await server.data(END_OTHERS, {}, token=token))["deleteOtherSessions"] == 1
    assert await server.error_code(ME, token=kept_token) == "UNAUTHENTICATED"
    assert (await server.data(ME, token=token))["me"]["id"] == user_id
    assert other_token
