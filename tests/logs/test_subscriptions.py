"""Live tail over real websockets: order, resume without gaps, permissions, slow subscribers."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from websockets.typing import Subprotocol

from app.settings import Settings
from tests.conftest import make_settings
from tests.support import (
    FROM_START,
    LOG_ADDED,
    TRANSPORT_WS,
    GraphQLWS,
    LiveServer,
    ingest,
    live_server,
    new_tenant,
    new_user,
    wait_for_subscriber,
)


async def test_live_logs_arrive_in_order(server: LiveServer) -> None:
    t = await new_tenant(server)
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {t.token}") as ws:
        await ws.subscribe(LOG_ADDED, {"projectId": t.project_id, "after": FROM_START})
        await wait_for_subscriber(server, t.project_id)
        await ingest(server, t.secret, ["one", "two"])
        await ingest(server, t.secret, ["three"])
        got = [(await ws.next_data())["logAdded"]["log"] for _ in range(3)]
    assert got == ["one", "two", "three"]


async def test_filter_applies_to_live_logs(server: LiveServer) -> None:
    t = await new_tenant(server)
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {t.token}") as ws:
        await ws.subscribe(LOG_ADDED, {"projectId": t.project_id, "after": FROM_START, "filter": {"level": "ERROR"}})
        await wait_for_subscriber(server, t.project_id)
        await ingest(server, t.secret, ["quiet"], level="INFO")
        await ingest(server, t.secret, ["loud"], level="ERROR")
        assert (await ws.next_data())["logAdded"]["log"] == "loud"


async def test_resume_after_disconnect_gets_exactly_the_missed_logs(server: LiveServer) -> None:
    t = await new_tenant(server)
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {t.token}") as ws:
        await ws.subscribe(LOG_ADDED, {"projectId": t.project_id, "after": FROM_START})
        await wait_for_subscriber(server, t.project_id)
        await ingest(server, t.secret, ["before"])
        cursor = (await ws.next_data())["logAdded"]["cursor"]

    missed = [f"missed {i}" for i in range(500)]
    for start in range(0, 500, 100):
        await ingest(server, t.secret, missed[start : start + 100])

    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {t.token}") as ws:
        await ws.subscribe(LOG_ADDED, {"projectId": t.project_id, "after": cursor})
        replayed = [(await ws.next_data())["logAdded"]["log"] for _ in range(500)]
        assert replayed == missed
        await ingest(server, t.secret, ["live again"])
        assert (await ws.next_data())["logAdded"]["log"] == "live again"


async def test_subscription_to_another_users_project_is_forbidden(server: LiveServer) -> None:
    t = await new_tenant(server)
    stranger = await new_user(server)
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {stranger}") as ws:
        await ws.subscribe(LOG_ADDED, {"projectId": t.project_id, "after": FROM_START})
        message = await ws.receive()
        errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
        assert errors[0]["extensions"]["code"] == "FORBIDDEN"
    async with GraphQLWS.connect(server.ws_url) as ws:
        await ws.subscribe(LOG_ADDED, {"projectId": t.project_id, "after": FROM_START})
        message = await ws.receive()
        errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
        assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert (await server.http.get("/healthz")).status_code == 200


async def test_bad_token_in_connection_init_is_refused(server: LiveServer) -> None:
    import websockets

    async with websockets.connect(server.ws_url, subprotocols=[TRANSPORT_WS]) as raw:
        await raw.send(json.dumps({"type": "connection_init", "payload": {"authorization": "Bearer nope"}}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(raw.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_legacy_protocol_is_off_by_default(server: LiveServer) -> None:
    import websockets

    async with websockets.connect(server.ws_url, subprotocols=[Subprotocol("graphql-ws")]) as raw:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await raw.send(json.dumps({"type": "connection_init"}))
            await asyncio.wait_for(raw.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4406


async def test_slow_subscriber_keeps_memory_bounded_and_catches_up(database_url: str, redis_url: str | None) -> None:
    settings: Settings = make_settings(broadcast_url=redis_url or "memory://", subscriber_queue_bytes=256 * 1024)
    async with live_server(settings, database_url) as server:
        t = await new_tenant(server)
        total, batch = 50_000, 1000
        pad = "." * 200
        # A small receive buffer so that the kernel cannot absorb the whole stream for the client.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(("127.0.0.1", server.port))
        async with GraphQLWS.connect(
            server.ws_url, authorization=f"Bearer {t.token}", max_queue=4, sock=sock, compression=None
        ) as ws:
            await ws.subscribe(LOG_ADDED, {"projectId": t.project_id, "after": FROM_START})
            await wait_for_subscriber(server, t.project_id)
            # The client reads nothing while every log is ingested: its TCP window fills up, the
            # server's send blocks, and the hub must drop the backlog rather than grow it.
            for start in range(0, total, batch):
                await ingest(server, t.secret, [f"log {i} {pad}" for i in range(start, start + batch)])
            (sub,) = server.deps.hub.subscribers(f"logs:{t.project_id}")
            assert sub.high_water <= 512 * 1024  # one message may exceed the bound when the queue is empty
            assert sub.overflows > 0, "the subscriber was expected to fall behind"
            got = []
            for _ in range(total):
                got.append((await ws.next_data(timeout=30))["logAdded"]["log"])
        assert got == [f"log {i} {pad}" for i in range(total)]


async def test_without_after_only_new_logs_arrive(server: LiveServer) -> None:
    t = await new_tenant(server)
    await ingest(server, t.secret, ["old"])
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {t.token}") as ws:
        await ws.subscribe(LOG_ADDED, {"projectId": t.project_id})
        # When the subscription starts is the server's business: keep logging until one arrives.
        for attempt in range(50):
            await ingest(server, t.secret, [f"new {attempt}"])
            try:
                first = (await ws.next_data(timeout=0.5))["logAdded"]["log"]
                break
            except TimeoutError:
                continue
        else:
            pytest.fail("no live log arrived")
    assert first.startswith("new ")


async def test_a_lost_bus_message_is_recovered_by_polling(database_url: str, redis_url: str | None) -> None:
    from sqlalchemy import text

    settings = make_settings(broadcast_url=redis_url or "memory://", tail_poll_seconds=0.3)
    async with live_server(settings, database_url) as server:
        t = await new_tenant(server)
        async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {t.token}") as ws:
            await ws.subscribe(LOG_ADDED, {"projectId": t.project_id, "after": FROM_START})
            await ingest(server, t.secret, ["announced"])
            assert (await ws.next_data())["logAdded"]["log"] == "announced"
            # Stored but never announced, as after a crash between commit and publish.
            async with server.deps.db.autocommit() as conn:
                await conn.execute(
                    text("SELECT * FROM ingest_logs(:p, :k, ARRAY['silent'], ARRAY['INFO'], ARRAY[NULL], ARRAY[NULL])"),
                    {"p": t.project_id, "k": t.key_id},
                )
            assert (await ws.next_data(timeout=10))["logAdded"]["log"] == "silent"


async def test_resuming_clients_with_different_cursors_share_live_events(server: LiveServer) -> None:
    t = await new_tenant(server)
    ids = await ingest(server, t.secret, ["one", "two"])
    assert len(ids) == 2
    first = await server.data(
        "query($p: ID!) { logs(projectId: $p) { edges { cursor } } }", {"p": t.project_id}, token=t.token
    )
    cursors = [edge["cursor"] for edge in first["logs"]["edges"]]
    async with (
        GraphQLWS.connect(server.ws_url, authorization=f"Bearer {t.token}") as a,
        GraphQLWS.connect(server.ws_url, authorization=f"Bearer {t.token}") as b,
    ):
        await a.subscribe(LOG_ADDED, {"projectId": t.project_id, "after": cursors[0]})
        await b.subscribe(LOG_ADDED, {"projectId": t.project_id, "after": cursors[1]})
        assert (await a.next_data())["logAdded"]["log"] == "two"
        await ingest(server, t.secret, ["three"])
        assert (await a.next_data())["logAdded"]["log"] == "three"
        assert (await b.next_data())["logAdded"]["log"] == "three"


async def test_filter_times_without_an_offset_are_utc(server: LiveServer) -> None:
    t = await new_tenant(server)
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {t.token}") as ws:
        await ws.subscribe(
            LOG_ADDED, {"projectId": t.project_id, "after": FROM_START, "filter": {"since": "2020-01-01T00:00:00"}}
        )
        await ingest(server, t.secret, ["after 2020"])
        assert (await ws.next_data())["logAdded"]["log"] == "after 2020"
