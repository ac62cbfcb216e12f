"""Live events rendered by compiled plans (issue 16, design §6): a subscription whose selection
reaches other tables renders each event with one statement, the event's own fields bound from the
event's row. Each case subscribes on a server with compiled reads and on one without, through the
same broker, and the frames must be equal, key order included; the compiled server must have run
its statement (`lodge_compiled_roots_total`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from app.observability import metrics
from tests.api.compiled_support import OUTCOMES
from tests.support import GraphQLWS, LiveServer, ingest, new_api_key, new_tenant, new_user
from tests.workflows.test_workflows import PUBLISH, START, STATUS, new_workflow


async def _subscribers(servers: tuple[LiveServer, ...], channel: str) -> None:
    async with asyncio.timeout(10):  # each server's own hub, fed by the shared broker
        while not all(live.deps.hub.subscribers(channel) for live in servers):
            await asyncio.sleep(0.005)


def _outcomes() -> dict[str, float]:
    return {name: metrics.COMPILED_ROOTS.labels(name)._value.get() for name in OUTCOMES}


async def _frames(
    servers: tuple[LiveServer, LiveServer],
    document: str,
    variables: dict[str, Any],
    authorization: str | None,
    channel: str,
    trigger: Callable[[], Awaitable[Any]],
    root: str,
    frames: int = 1,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The frames each server sends after `trigger`, checked equal; and how the compiled server ran
    its renderings (outcome -> count) meanwhile."""
    async with contextlib.AsyncExitStack() as stack:
        sockets = []
        for live in servers:
            ws = await stack.enter_async_context(GraphQLWS.connect(live.ws_url, authorization=authorization))
            await ws.subscribe(document, variables)
            sockets.append(ws)
        await _subscribers(servers, channel)
        before = _outcomes()
        await trigger()
        got = [[(await ws.next_data())[root] for _ in range(frames)] for ws in sockets]
        after = _outcomes()
    compiled, resolvers = (json.dumps(g) for g in got)
    assert compiled == resolvers, f"{document}\ncompiled:  {compiled}\nresolvers: {resolvers}"
    ran = {name: after[name] - before[name] for name in OUTCOMES if after[name] > before[name]}
    return got[0], ran


async def test_a_log_with_its_project_and_key(server: LiveServer, resolver_server: LiveServer) -> None:
    t = await new_tenant(server)
    document = (
        "subscription($p: ID!) { logAdded(projectId: $p) { id log level attributes occurredAt cursor"
        " project { id name description } apiKey { id label prefix } } }"
    )
    servers = (server, resolver_server)

    async def send() -> None:
        await ingest(server, t.secret, ['quote " é \u2028'], attributes={"n": 1.5, "nested": {"a": [1, None]}})

    for authorization in (f"Bearer {t.token}", f"ApiKey {t.secret}"):
        got, ran = await _frames(
            servers, document, {"p": t.project_id}, authorization, f"logs:{t.project_id}", send, "logAdded"
        )
        assert got[0]["project"]["id"] == t.project_id and got[0]["apiKey"]["id"] == t.key_id
        assert ran == {"compiled": 1}, ran


async def test_a_log_whose_rendering_depends_on_the_viewer(server: LiveServer, resolver_server: LiveServer) -> None:
    """The project's keys are seen per viewer (an environment's key sees its own): the statement
    binds the viewer, and each credential gets the resolvers' answer."""
    t = await new_tenant(server)
    env = await server.data(
        'mutation($p: ID!) { createEnvironment(projectId: $p, name: "staging") { id } }',
        {"p": t.project_id},
        token=t.token,
    )
    env_key, env_secret = await new_api_key(
        server, t.token, t.project_id, environmentId=env["createEnvironment"]["id"], scopes=["INGEST", "READ"]
    )
    document = "subscription($p: ID!) { logAdded(projectId: $p) { log project { name apiKeys { id } } } }"

    async def send() -> None:
        await ingest(server, t.secret, ["hello"])

    seen = {}
    for authorization in (f"Bearer {t.token}", f"ApiKey {env_secret}"):
        got, ran = await _frames(
            (server, resolver_server),
            document,
            {"p": t.project_id},
            authorization,
            f"logs:{t.project_id}",
            send,
            "logAdded",
        )
        assert ran == {"compiled": 1}, ran
        seen[authorization] = {k["id"] for k in got[0]["project"]["apiKeys"]}
    assert seen == {f"Bearer {t.token}": {t.key_id, env_key}, f"ApiKey {env_secret}": {env_key}}


async def test_an_execution_with_its_workflow(server: LiveServer, resolver_server: LiveServer) -> None:
    """The first frame (the current status) and each change; the event's status is the event's,
    its workflow and author are read by the statement."""
    token = await new_user(server)
    workflow = await new_workflow(server, token)
    await server.data(PUBLISH, {"id": workflow}, token=token)
    execution = (await server.data(START, {"w": workflow}, token=token))["startExecution"]["id"]
    document = (
        "subscription($e: ID!) { executionUpdated(executionId: $e) { id status startedAt completedAt"
        " workflow { id name version } user { id } logs { totalCount } } }"
    )
    statuses = iter(("RUNNING", "COMPLETED"))

    async def advance() -> None:
        await server.data(STATUS, {"id": execution, "s": next(statuses)}, token=token)

    # The current status comes first, then RUNNING; then COMPLETED ends the stream.
    got, ran = await _frames(
        (server, resolver_server),
        document,
        {"e": execution},
        f"Bearer {token}",
        f"execution:{execution}",
        advance,
        "executionUpdated",
        frames=2,
    )
    assert [g["status"] for g in got] == ["PENDING", "RUNNING"]
    assert got[0]["workflow"]["id"] == workflow
    # RUNNING's rendering at least (the first frame may be rendered before the count starts).
    assert set(ran) == {"compiled"} and ran["compiled"] in (1, 2), ran


async def test_a_chat_message_with_its_author(server: LiveServer, resolver_server: LiveServer) -> None:
    token = await new_user(server)
    conversation = (await server.data('mutation { createConversation(title: "t") { id } }', token=token))[
        "createConversation"
    ]["id"]
    document = (
        "subscription($c: ID) { chatMessageAdded(conversationId: $c) { id text cursor createdAt"
        " user { id name } conversation { id title } } }"
    )

    async def post() -> None:
        await server.data(
            "mutation($input: ChatMessageInput!) { postChatMessage(input: $input) { id } }",
            {"input": {"conversationId": conversation, "text": 'hi "there" é'}},
            token=token,
        )

    got, ran = await _frames(
        (server, resolver_server),
        document,
        {"c": conversation},
        f"Bearer {token}",
        f"chat:conversation:{conversation}",
        post,
        "chatMessageAdded",
    )
    assert got[0]["conversation"]["id"] == conversation and got[0]["text"] == 'hi "there" é'
    assert ran == {"compiled": 1}, ran


async def test_what_reads_nothing_else_keeps_the_python_rendering(
    server: LiveServer, resolver_server: LiveServer
) -> None:
    """A selection of the event's own fields needs no statement; one with a field that needs
    Python (a message's guild) keeps the resolvers for the whole event."""
    t = await new_tenant(server)

    async def send() -> None:
        await ingest(server, t.secret, ["plain"])

    _, ran = await _frames(
        (server, resolver_server),
        "subscription($p: ID!) { logAdded(projectId: $p) { id log cursor } }",
        {"p": t.project_id},
        f"Bearer {t.token}",
        f"logs:{t.project_id}",
        send,
        "logAdded",
    )
    assert ran == {}, ran
    token = await new_user(server)
    conversation = (await server.data('mutation { createConversation(title: "t") { id } }', token=token))[
        "createConversation"
    ]["id"]

    async def post() -> None:
        await server.data(
            "mutation($input: ChatMessageInput!) { postChatMessage(input: $input) { id } }",
            {"input": {"conversationId": conversation, "text": "x"}},
            token=token,
        )

    _, ran = await _frames(
        (server, resolver_server),
        "subscription($c: ID) { chatMessageAdded(conversationId: $c) { id user { id } guild { id } } }",
        {"c": conversation},
        f"Bearer {token}",
        f"chat:conversation:{conversation}",
        post,
        "chatMessageAdded",
    )
    assert ran == {}, ran
