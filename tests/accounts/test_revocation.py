"""Revocation is immediate: a principal's end closes its websockets on every instance, and logout
ends the login's access tokens over HTTP too. Nobody acts on someone holding more than they do."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import websockets

from app.settings import Settings
from tests.support import (
    LOG_ADDED,
    PASSWORD,
    GraphQLWS,
    LiveServer,
    ingest,
    live_server,
    need,
    new_admin,
    new_api_key,
    new_tenant,
    new_user,
    unique_email,
    wait_for_subscriber,
)

LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken refreshToken } }"
ME = "{ me { id } }"
# The bound: a revoked principal's subscriptions end within 2 seconds.
REVOCATION_DEADLINE = 2.0


@contextlib.asynccontextmanager
async def second_instance(settings: Settings, database_url: str) -> AsyncIterator[LiveServer]:
    """Another Lodge instance on the same database and broker (its own hub, its own pool)."""
    need(settings.broadcast_url.startswith("redis"), "two instances share revocations through Redis")
    async with live_server(settings, database_url) as other:
        yield other


async def closed_with(ws: GraphQLWS, code: int = 4403, timeout: float = REVOCATION_DEADLINE) -> None:
    """The connection closes with `code` within `timeout`; `next` frames before it are fine."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.ws.recv()
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == code, closed
        return
    except TimeoutError:
        raise AssertionError(f"still open {timeout} s after the revocation") from None


async def still_open(ws: GraphQLWS) -> None:
    """A round trip on the connection: it answers, so it was not closed."""
    await ws.ws.send('{"type": "ping"}')
    async with asyncio.timeout(10):
        while True:
            message = await ws.ws.recv()
            if '"pong"' in message:
                return


async def _busy(server: LiveServer, secret: str, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await ingest(server, secret, ["busy"])


async def test_a_revoked_key_loses_its_busy_live_tail_on_another_instance(
    server: LiveServer, settings: Settings, database_url: str
) -> None:
    t = await new_tenant(server)
    key_id, secret = await new_api_key(server, t.token, t.project_id)
    async with second_instance(settings, database_url) as other:
        async with GraphQLWS.connect(other.ws_url, authorization=f"ApiKey {secret}") as ws:
            await ws.subscribe(LOG_ADDED, {"projectId": t.project_id})
            await wait_for_subscriber(other, t.project_id)
            stop = asyncio.Event()
            busy = asyncio.create_task(_busy(server, t.secret, stop))
            try:
                await ws.next_data()  # the tail is live and busy
                await server.data(
                    "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }", {"id": key_id}, token=t.token
                )
                await closed_with(ws)
            finally:
                stop.set()
                await busy
    assert (
        await server.error_code('mutation { ingestLog(input: {log: "x"}) { id } }', api_key=secret) == "UNAUTHENTICATED"
    )


async def test_a_revoked_key_is_refused_at_connection_init(server: LiveServer) -> None:
    t = await new_tenant(server)
    key_id, secret = await new_api_key(server, t.token, t.project_id)
    await server.data("mutation($id: ID!) { revokeApiKey(id: $id) { id } }", {"id": key_id}, token=t.token)
    try:
        async with GraphQLWS.connect(server.ws_url, authorization=f"ApiKey {secret}"):
            raise AssertionError("a revoked key was accepted")
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 4403


async def test_deleting_a_project_closes_its_keys_connections(server: LiveServer) -> None:
    t = await new_tenant(server)
    async with GraphQLWS.connect(server.ws_url, authorization=f"ApiKey {t.secret}") as ws:
        await ws.subscribe(LOG_ADDED, {"projectId": t.project_id})
        await wait_for_subscriber(server, t.project_id)
        await server.data("mutation($id: ID!) { deleteProject(id: $id) }", {"id": t.project_id}, token=t.token)
        await closed_with(ws)


async def test_logout_ends_the_logins_access_tokens_over_http_and_websockets(
    server: LiveServer, settings: Settings, database_url: str
) -> None:
    email = unique_email()
    await new_user(server, email)
    ended = (await server.data(LOGIN, {"e": email, "p": PASSWORD}))["login"]
    kept = (await server.data(LOGIN, {"e": email, "p": PASSWORD}))["login"]
    async with second_instance(settings, database_url) as other:
        async with (
            GraphQLWS.connect(other.ws_url, authorization=f"Bearer {ended['accessToken']}") as ws_ended,
            GraphQLWS.connect(other.ws_url, authorization=f"Bearer {kept['accessToken']}") as ws_kept,
        ):
            logout = "mutation($t: String!) { logout(refreshToken: $t) }"
            assert (await server.data(logout, {"t": ended["refreshToken"]}))["logout"] is True
            await closed_with(ws_ended)
            await still_open(ws_kept)
        assert await other.error_code(ME, token=ended["accessToken"]) == "UNAUTHENTICATED"
    assert await server.error_code(ME, token=ended["accessToken"]) == "UNAUTHENTICATED"
    assert (await server.data(ME, token=kept["accessToken"]))["me"]["id"]


async def test_a_password_change_closes_the_other_logins_sockets_not_its_own(server: LiveServer) -> None:
    email = unique_email()
    await new_user(server, email)
    mine = (await server.data(LOGIN, {"e": email, "p": PASSWORD}))["login"]
    theirs = (await server.data(LOGIN, {"e": email, "p": PASSWORD}))["login"]
    async with (
        GraphQLWS.connect(server.ws_url, authorization=f"Bearer {mine['accessToken']}") as ws_mine,
        GraphQLWS.connect(server.ws_url, authorization=f"Bearer {theirs['accessToken']}") as ws_theirs,
    ):
        await server.data(
            "mutation($i: UpdateMeInput!) { updateMe(input: $i) { id } }",
            {"i": {"password": "an entirely new passphrase", "currentPassword": PASSWORD}},
            token=mine["accessToken"],
        )
        await closed_with(ws_theirs)
        await still_open(ws_mine)
    assert await server.error_code(ME, token=theirs["accessToken"]) == "UNAUTHENTICATED"
    assert (await server.data(ME, token=mine["accessToken"]))["me"]["id"]
    refresh = "mutation($t: String!) { refresh(refreshToken: $t) { accessToken } }"
    assert (await server.data(refresh, {"t": mine["refreshToken"]}))["refresh"]["accessToken"]


async def test_a_role_revocation_ends_the_users_subscriptions(server: LiveServer) -> None:
    admin, _ = await new_admin(server)
    holder, holder_id = await new_admin(server, ("projects:admin",))
    t = await new_tenant(server)
    role_id = (await server.data("query($id: ID!) { user(id: $id) { roles { id } } }", {"id": holder_id}, token=admin))[
        "user"
    ]["roles"][0]["id"]
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {holder}") as ws:
        # Someone else's project, readable through projects:admin only.
        await ws.subscribe(LOG_ADDED, {"projectId": t.project_id})
        await wait_for_subscriber(server, t.project_id)
        await server.data(
            "mutation($u: ID!, $r: ID!) { revokeRole(userId: $u, roleId: $r) { id } }",
            {"u": holder_id, "r": role_id},
            token=admin,
        )
        await closed_with(ws)


async def test_users_admin_cannot_act_on_someone_holding_more(server: LiveServer) -> None:
    admin, _ = await new_admin(server, ("users:admin",))
    superuser, superuser_id = await new_admin(server, ("*",))
    _, peer_id = await new_admin(server, ("users:admin", "audit:read"))
    ordinary = await new_user(server)
    ordinary_id = (await server.data(ME, token=ordinary))["me"]["id"]
    delete_user = "mutation($id: ID!) { deleteUser(id: $id) }"
    assert await server.error_code(delete_user, {"id": superuser_id}, token=admin) == "FORBIDDEN"
    assert await server.error_code(delete_user, {"id": peer_id}, token=admin) == "FORBIDDEN"
    # Their sessions are theirs too: a session made for the superuser cannot be ended by `admin`.
    created = await server.data(
        "mutation($u: ID!) { createSession(userId: $u) { session { id } } }", {"u": superuser_id}, token=superuser
    )
    session_id = created["createSession"]["session"]["id"]
    delete_session = "mutation($id: ID!) { deleteSession(id: $id) }"
    assert await server.error_code(delete_session, {"id": session_id}, token=admin) == "FORBIDDEN"
    assert (await server.data(ME, token=superuser))["me"]["id"] == superuser_id
    # Holding as much is enough.
    assert (await server.data(delete_user, {"id": ordinary_id}, token=admin))["deleteUser"] is True
    assert (await server.data(delete_session, {"id": session_id}, token=superuser))["deleteSession"] is True


async def test_reusing_a_spent_refresh_token_closes_the_logins_sockets(server: LiveServer) -> None:
    """A spent refresh token presented again ends its whole login (someone else holds it): the
    login's websockets close with 4403, another login of the same user stays open."""
    email = unique_email()
    await new_user(server, email)
    stolen = (await server.data(LOGIN, {"e": email, "p": PASSWORD}))["login"]
    other = (await server.data(LOGIN, {"e": email, "p": PASSWORD}))["login"]
    refresh = "mutation($t: String!) { refresh(refreshToken: $t) { accessToken } }"
    async with (
        GraphQLWS.connect(server.ws_url, authorization=f"Bearer {stolen['accessToken']}") as ws_stolen,
        GraphQLWS.connect(server.ws_url, authorization=f"Bearer {other['accessToken']}") as ws_other,
    ):
        assert (await server.data(refresh, {"t": stolen["refreshToken"]}))["refresh"]["accessToken"]
        assert await server.error_code(refresh, {"t": stolen["refreshToken"]}) == "UNAUTHENTICATED"  # reused
        await closed_with(ws_stolen)
        await still_open(ws_other)
