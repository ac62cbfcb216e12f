"""Shared rendering of live events: never across viewers when the selection depends on who asks."""

from __future__ import annotations

import contextlib

from tests.api.test_observability import scrape, value
from tests.support import GraphQLWS, LiveServer, ingest, new_api_key, new_tenant, wait_for_subscriber

# The owner may see their own email; a project key (no user) sees null there, and only the
# key's own environment's keys: both are rules of the viewer.
PERSONAL = """
subscription($projectId: ID!) {
  logAdded(projectId: $projectId) { log project { name owner { email } apiKeys { id } } }
}
"""
PLAIN = "subscription($projectId: ID!) { logAdded(projectId: $projectId) { id log level cursor project { name } } }"
RENDERS = "lodge_subscription_shared_renders_total"


async def test_each_viewer_gets_its_own_rendering_in_either_order(server: LiveServer) -> None:
    for key_first in (True, False):
        t = await new_tenant(server)
        email = (await server.data("{ me { email } }", token=t.token))["me"]["email"]
        env = await server.data(
            'mutation($p: ID!) { createEnvironment(projectId: $p, name: "staging") { id } }',
            {"p": t.project_id},
            token=t.token,
        )
        env_key_id, env_secret = await new_api_key(
            server, t.token, t.project_id, environmentId=env["createEnvironment"]["id"], scopes=["INGEST", "READ"]
        )
        credentials = [f"ApiKey {env_secret}", f"Bearer {t.token}"]
        if not key_first:
            credentials.reverse()
        async with contextlib.AsyncExitStack() as stack:
            clients = []
            for authorization in credentials:
                ws = await stack.enter_async_context(GraphQLWS.connect(server.ws_url, authorization=authorization))
                await ws.subscribe(PERSONAL, {"projectId": t.project_id})
                clients.append(ws)
                await wait_for_subscriber(server, t.project_id, count=len(clients))
            await ingest(server, t.secret, ["hello"])
            got = {auth: (await ws.next_data())["logAdded"] for auth, ws in zip(credentials, clients, strict=True)}
        owner_view = got[f"Bearer {t.token}"]["project"]
        key_view = got[f"ApiKey {env_secret}"]["project"]
        assert owner_view["owner"]["email"] == email
        assert {k["id"] for k in owner_view["apiKeys"]} == {t.key_id, env_key_id}
        assert key_view["owner"]["email"] is None
        assert [k["id"] for k in key_view["apiKeys"]] == [env_key_id]


async def renders(
    server: LiveServer, project_id: str, secret: str, credentials: list[str], document: str
) -> tuple[int, int]:
    """(executed, reused) renderings of one log delivered to one socket per credential."""
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for authorization in credentials:
            ws = await stack.enter_async_context(GraphQLWS.connect(server.ws_url, authorization=authorization))
            await ws.subscribe(document, {"projectId": project_id})
            clients.append(ws)
        await wait_for_subscriber(server, project_id, count=len(clients))
        before = await scrape(server)
        await ingest(server, secret, ["one event"])
        for ws in clients:
            assert (await ws.next_data())["logAdded"]["log"] == "one event"
        after = await scrape(server)
    executed = value(after, RENDERS, outcome="executed") - value(before, RENDERS, outcome="executed")
    reused = value(after, RENDERS, outcome="reused") - value(before, RENDERS, outcome="reused")
    return int(executed), int(reused)


async def test_viewer_independent_selection_is_rendered_once_for_many_principals(server: LiveServer) -> None:
    t = await new_tenant(server)
    secrets = [t.secret] + [(await new_api_key(server, t.token, t.project_id))[1] for _ in range(5)]
    credentials = [f"ApiKey {secret}" for secret in secrets]
    assert await renders(server, t.project_id, t.secret, credentials, PLAIN) == (1, len(secrets) - 1)


async def test_viewer_dependent_selection_is_shared_only_within_one_principal(server: LiveServer) -> None:
    t = await new_tenant(server)
    other_key = (await new_api_key(server, t.token, t.project_id))[1]
    # Two sockets of the same key share; the owner and the other key get renderings of their own.
    credentials = [f"ApiKey {t.secret}", f"ApiKey {t.secret}", f"ApiKey {other_key}", f"Bearer {t.token}"]
    assert await renders(server, t.project_id, t.secret, credentials, PERSONAL) == (3, 1)


async def test_each_part_that_depends_on_the_viewer_keeps_renderings_apart(server: LiveServer) -> None:
    """Each viewer-dependent field alone (a key confined to an environment sees fewer keys and
    environments) splits renderings by principal; declared public relations do not."""
    t = await new_tenant(server)
    other_key = (await new_api_key(server, t.token, t.project_id))[1]
    credentials = [f"ApiKey {t.secret}", f"ApiKey {other_key}"]
    for part in ("apiKeys { id }", "environments { id }", "owner { email }"):
        document = f"subscription($projectId: ID!) {{ logAdded(projectId: $projectId) {{ log project {{ {part} }} }} }}"
        assert await renders(server, t.project_id, t.secret, credentials, document) == (2, 0), part
    public = "subscription($projectId: ID!) { logAdded(projectId: $projectId) { log project { name owner { name } services { name } } } }"
    assert await renders(server, t.project_id, t.secret, credentials, public) == (1, 1)
