"""Who is calling is remembered per process, and forgotten the moment it ends (app/accounts/principals.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from app.settings import Settings
from tests.accounts.test_revocation import LOGIN, ME, second_instance
from tests.support import PASSWORD, LiveServer, counted, new_api_key, new_project, new_user, unique_email

REFRESH = "mutation($t: String!) { refresh(refreshToken: $t) { accessToken refreshToken } }"
LOGOUT = "mutation($t: String!) { logout(refreshToken: $t) }"
PROJECT = "query($id: ID!) { project(id: $id) { id } }"


async def login(server: LiveServer) -> tuple[str, str, str]:
    """(email, access token, refresh token) of a new user's login."""
    email = unique_email()
    await new_user(server, email=email)
    tokens = (await server.data(LOGIN, {"e": email, "p": PASSWORD}))["login"]
    return email, tokens["accessToken"], tokens["refreshToken"]


async def errors(server: LiveServer, query: str, variables: dict[str, object] | None = None, **auth: str) -> list[str]:
    body = await server.gql(query, variables, **auth)
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def test_a_known_caller_costs_no_statement(quiet_server: LiveServer) -> None:
    _, access, _ = await login(quiet_server)
    first, statements = await counted(quiet_server, ME, {}, access)
    assert statements == 2  # whether the login is live, then the user
    again, statements = await counted(quiet_server, ME, {}, access)
    assert again == first and statements == 1


async def test_logout_is_refused_at_once_though_the_login_was_remembered(server: LiveServer) -> None:
    _, access, refresh = await login(server)
    assert not await errors(server, ME, token=access)
    assert not await errors(server, ME, token=access)  # remembered now
    assert (await server.data(LOGOUT, {"t": refresh}))["logout"] is True
    assert await errors(server, ME, token=access) == ["UNAUTHENTICATED"]


async def test_a_reused_refresh_token_ends_the_remembered_login(server: LiveServer) -> None:
    _, access, refresh = await login(server)
    assert not await errors(server, ME, token=access)
    assert not await errors(server, REFRESH, {"t": refresh})  # spent
    assert await errors(server, REFRESH, {"t": refresh}) == ["UNAUTHENTICATED"]  # reused: the login ends
    assert await errors(server, ME, token=access) == ["UNAUTHENTICATED"]


async def test_a_revoked_key_is_refused_at_once_though_it_was_remembered(server: LiveServer) -> None:
    token = await new_user(server)
    project_id = await new_project(server, token)
    key_id, secret = await new_api_key(server, token, project_id)
    assert not await errors(server, PROJECT, {"id": project_id}, api_key=secret)
    assert not await errors(server, PROJECT, {"id": project_id}, api_key=secret)
    revoke = "mutation($id: ID!) { revokeApiKey(id: $id) { id } }"
    assert not await errors(server, revoke, {"id": key_id}, token=token)
    assert await errors(server, PROJECT, {"id": project_id}, api_key=secret) == ["UNAUTHENTICATED"]


async def test_a_revoked_key_is_refused_by_ingest_at_once_though_it_was_remembered(server: LiveServer) -> None:
    token = await new_user(server)
    project_id = await new_project(server, token)
    key_id, secret = await new_api_key(server, token, project_id)
    headers = {"authorization": f"ApiKey {secret}"}
    for _ in range(2):  # the second is answered from memory
        response = await server.http.post("/ingest", content=b'{"log": "remembered"}\n', headers=headers)
        assert response.status_code == 200, response.text
    revoke = "mutation($id: ID!) { revokeApiKey(id: $id) { id } }"
    assert not await errors(server, revoke, {"id": key_id}, token=token)
    response = await server.http.post("/ingest", content=b'{"log": "after"}\n', headers=headers)
    assert response.status_code == 401 and response.json()["error"]["code"] == "UNAUTHENTICATED"


async def test_another_instance_forgets_a_login_that_ended_here(
    server: LiveServer, settings: Settings, database_url: str
) -> None:
    async with second_instance(settings, database_url) as other:
        _, access, refresh = await login(server)
        assert not await errors(other, ME, token=access)
        _, statements = await counted(other, ME, {}, access)
        assert statements == 1  # the other instance remembers the login
        generation = other.deps.principals.generation
        assert (await server.data(LOGOUT, {"t": refresh}))["logout"] is True
        # The announcement crosses the broker: await its arrival (no sleeping), then ask.
        async with asyncio.timeout(5):
            while other.deps.principals.generation == generation:
                await asyncio.sleep(0.005)
        assert await errors(other, ME, token=access) == ["UNAUTHENTICATED"]


async def test_without_the_cache_every_request_asks(settings: Settings, database_url: str) -> None:
    from tests.support import live_server

    async with live_server(settings.model_copy(update={"auth_cache_seconds": 0}), database_url) as uncached:
        _, access, _ = await login(uncached)
        for _ in range(2):
            _, statements = await counted(uncached, ME, {}, access)
            assert statements == 2
        assert uncached.deps.principals.hits == 0
        assert uuid.UUID((await uncached.data(ME, token=access))["me"]["id"])


async def test_a_key_revoked_while_its_ingest_body_arrives_stores_nothing(server: LiveServer) -> None:
    token = await new_user(server)
    project_id = await new_project(server, token)
    key_id, secret = await new_api_key(server, token, project_id)
    revoke = "mutation($id: ID!) { revokeApiKey(id: $id) { id } }"

    async def body() -> AsyncIterator[bytes]:
        yield b'{"log": "sent before the revocation"}\n'
        # The key was checked when the request began; revoke it before the rest arrives.
        assert not await errors(server, revoke, {"id": key_id}, token=token)
        yield b'{"log": "sent after the revocation"}\n'

    headers = {"authorization": f"ApiKey {secret}", "content-type": "application/x-ndjson"}
    response = await server.http.post("/ingest", content=body(), headers=headers)
    assert response.status_code == 401 and response.json()["error"]["code"] == "UNAUTHENTICATED"
    logs = await server.data(
        "query($p: ID!) { logs(projectId: $p, first: 10) { nodes { id } } }", {"p": project_id}, token=token
    )
    assert logs["logs"]["nodes"] == []
