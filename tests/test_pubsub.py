"""The bus against real Redis: each test covers one fault of broadcaster 0.3.1 as shipped."""

from __future__ import annotations

import asyncio
import shutil
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from app.pubsub import RESYNC, Delivery, Hub
from tests.conftest import make_settings
from tests.support import (
    FROM_START,
    LOG_ADDED,
    GraphQLWS,
    LiveServer,
    free_port,
    ingest,
    live_server,
    need,
    new_tenant,
    wait_for_subscriber,
)


@pytest.fixture
def redis(redis_url: str | None) -> str:
    need(redis_url is not None, "TEST_REDIS_URL is not set")
    assert redis_url is not None
    return redis_url


@pytest.fixture
async def hub(redis: str) -> AsyncIterator[Hub]:
    hub = Hub(redis, queue_bytes=1 << 20)
    await hub.connect()
    yield hub
    await hub.disconnect()


async def test_messages_published_through_redis_are_received(hub: Hub, redis: str) -> None:
    # broadcaster's RedisBackend with redis-py 8 receives nothing: it listens before SUBSCRIBE completes.
    channel = f"test:{uuid.uuid4()}"
    async with hub.subscribe(channel) as sub:
        client = aioredis.Redis.from_url(redis)
        try:
            receivers = await client.publish(channel, '{"n": 1}')
        finally:
            await client.aclose()
        assert receivers == 1  # subscribe() returned only once Redis had confirmed it
        assert await asyncio.wait_for(sub.get(), 10) == {"n": 1}


async def test_subscribers_share_one_delivery_and_what_is_made_of_it(hub: Hub) -> None:
    # A live event is rendered once per process, not once per subscriber (app.api.sharing).
    channel = f"test:{uuid.uuid4()}"
    made: list[object] = []

    def render(payload: dict[str, int]) -> tuple[str, int]:
        made.append(payload)
        return "rendered", payload["n"]

    async with hub.subscribe(channel) as a, hub.subscribe(channel) as b:
        await hub.publish(channel, {"n": 1})
        first = await asyncio.wait_for(a.receive(), 10)
        second = await asyncio.wait_for(b.receive(), 10)
        assert isinstance(first, Delivery) and first is second
        assert first.shared(render) == second.shared(render) == ("rendered", 1)
        assert made == [{"n": 1}]
        await hub.publish(channel, {"n": 2})
        assert await asyncio.wait_for(a.get(), 10) == {"n": 2}  # get(): the payload alone


async def test_listener_survives_a_killed_connection(hub: Hub, redis: str) -> None:
    # broadcaster's listener dies silently when its connection drops, and never reconnects.
    channel = f"test:{uuid.uuid4()}"
    async with hub.subscribe(channel) as sub:
        admin = aioredis.Redis.from_url(redis)
        try:
            killed = await admin.client_kill_filter(_type="pubsub")
            assert killed >= 1
            assert await asyncio.wait_for(sub.get(), 10) is RESYNC  # "you may have missed something"
            # Told once when the connection is lost, and again once it is back and subscribed.
            while hub.reconnects == 0:
                assert await asyncio.wait_for(sub.get(), 10) is RESYNC
            await hub.publish(channel, {"after": "kill"})
            assert await asyncio.wait_for(sub.get(), 10) == {"after": "kill"}
        finally:
            await admin.aclose()
    assert hub.reconnects >= 1


async def test_two_subscribers_joining_at_once_both_receive(hub: Hub) -> None:
    # broadcaster's Broadcast.subscribe: one of two simultaneous joiners gets nothing, and leaving raises KeyError.
    channel = f"test:{uuid.uuid4()}"
    a_in, b_in, done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    received: dict[str, object] = {}

    async def member(name: str, joined: asyncio.Event) -> None:
        async with hub.subscribe(channel) as sub:
            joined.set()
            received[name] = await asyncio.wait_for(sub.get(), 10)
            await done.wait()

    tasks = [asyncio.create_task(member("a", a_in)), asyncio.create_task(member("b", b_in))]
    await asyncio.wait_for(asyncio.gather(a_in.wait(), b_in.wait()), 10)
    await hub.publish(channel, {"hello": "both"})
    async with asyncio.timeout(10):
        while len(received) < 2:
            await asyncio.sleep(0.005)
    done.set()
    await asyncio.gather(*tasks)  # leaving raises nothing
    assert received == {"a": {"hello": "both"}, "b": {"hello": "both"}}
    assert hub.subscribers(channel) == set()


async def test_overflowing_subscriber_is_bounded_and_told_to_resync(redis: str) -> None:
    # broadcaster's per-subscriber queues grow without bound.
    hub = Hub(redis, queue_bytes=1000)
    await hub.connect()
    try:
        channel = f"test:{uuid.uuid4()}"
        async with hub.subscribe(channel) as sub:
            for n in range(500):
                await hub.publish(channel, {"n": n, "pad": "x" * 50})
            await hub.publish(channel, {"last": True})
            async with asyncio.timeout(10):
                while sub.overflows == 0 or len(sub) == 0:
                    await asyncio.sleep(0.005)
            assert sub.high_water <= 1000
            items: list[object] = []
            async with asyncio.timeout(10):
                while not items or items[-1] != {"last": True}:
                    items.append(await sub.get())
            assert RESYNC in items and len(items) < 30
    finally:
        await hub.disconnect()


async def test_a_log_ingested_on_one_instance_reaches_a_subscriber_on_another(
    database_url: str, redis: str, server: LiveServer
) -> None:
    async with live_server(make_settings(broadcast_url=redis, secret_key=server.deps.secret_key), database_url) as b:
        t = await new_tenant(server)
        async with GraphQLWS.connect(b.ws_url, authorization=f"Bearer {t.token}") as ws:
            await ws.subscribe(LOG_ADDED, {"projectId": t.project_id, "after": FROM_START})
            await wait_for_subscriber(b, t.project_id)
            await ingest(server, t.secret, ["from instance A"])
            assert (await ws.next_data())["logAdded"]["log"] == "from instance A"


async def test_live_tail_survives_client_kill_without_losing_logs(server: LiveServer, redis: str) -> None:
    need(server.deps.settings.broadcast_url.startswith("redis"), "the shared server is not on Redis")
    t = await new_tenant(server)
    async with GraphQLWS.connect(server.ws_url, authorization=f"Bearer {t.token}") as ws:
        await ws.subscribe(LOG_ADDED, {"projectId": t.project_id, "after": FROM_START})
        await wait_for_subscriber(server, t.project_id)
        await ingest(server, t.secret, ["before the kill"])
        assert (await ws.next_data())["logAdded"]["log"] == "before the kill"

        admin = aioredis.Redis.from_url(redis)
        try:
            assert await admin.client_kill_filter(_type="pubsub") >= 1
        finally:
            await admin.aclose()
        after = [f"after {i}" for i in range(20)]
        for text in after:
            await ingest(server, t.secret, [text])
        got = [(await ws.next_data())["logAdded"]["log"] for _ in after]
        assert got == after


async def test_subscribing_without_a_broker_degrades_and_cleans_up() -> None:
    hub = Hub("redis://127.0.0.1:1/0", confirm_timeout=0.2)
    await hub.connect()
    try:
        assert not await hub.ping()
        async with hub.subscribe("test:offline") as sub:
            assert len(sub) == 0  # yielded anyway: the subscriber polls PostgreSQL meanwhile
        waiting = asyncio.create_task(hub.subscribe("test:cancelled").__aenter__())
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert hub.subscribers("test:offline") == set() and hub.subscribers("test:cancelled") == set()
        assert not hub._pumps
    finally:
        await hub.disconnect()


async def test_a_frozen_redis_counts_as_down_and_subscribers_are_told(tmp_path: Path) -> None:
    # SIGSTOP: the connection stays open and nothing answers, as in a network partition.
    binary = shutil.which("redis-server")
    need(binary is not None, "redis-server is not installed")
    assert binary is not None
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(tmp_path), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        probe = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
        async with asyncio.timeout(10):
            while True:
                try:
                    await probe.ping()  # type: ignore[misc]
                    break
                except (OSError, RedisError):
                    await asyncio.sleep(0.05)
        await probe.aclose()
        hub = Hub(f"redis://127.0.0.1:{port}/0")
        await hub.connect()
        try:
            channel = f"test:{uuid.uuid4()}"
            async with hub.subscribe(channel) as sub:
                assert hub.connected and await hub.ping()
                server.send_signal(signal.SIGSTOP)
                # Noticed by the pub/sub reader's PING (5 s of silence, then 3 s for the PONG).
                assert await asyncio.wait_for(sub.get(), 20) is RESYNC
                assert not hub.connected
                assert not await asyncio.wait_for(hub.ping(), 5)  # bounded: /readyz answers
                # Publishing fails fast and tells this process's subscribers to read PostgreSQL.
                assert not await asyncio.wait_for(hub.publish(channel, {"n": 1}), 5)
                assert await asyncio.wait_for(sub.get(), 5) is RESYNC
                server.send_signal(signal.SIGCONT)
        finally:
            await asyncio.wait_for(hub.disconnect(), 20)
    finally:
        server.send_signal(signal.SIGCONT)
        server.kill()
        await server.wait()


async def test_a_subscriber_cancelled_while_it_leaves_stays_cancelled(hub: Hub) -> None:
    # Leaving waits for the channel's pump to stop; a cancellation of the leaving task meanwhile
    # (its operation cancelled, the server stopping) must end it, not be swallowed with the pump's.
    channel = f"leave-{uuid.uuid4().hex}"
    after_leaving = asyncio.Event()

    async def subscribe_then_leave() -> None:
        async with hub.subscribe(channel):
            pass
        after_leaving.set()  # only reached if the cancellation below was lost
        await asyncio.Event().wait()

    task = asyncio.create_task(subscribe_then_leave())
    async with asyncio.timeout(10):
        while not hub.subscribers(channel):
            await asyncio.sleep(0)
        while channel in hub._pumps:  # popped just before the leaving task awaits the pump
            await asyncio.sleep(0)
        task.cancel()
    # Not `await task`: were the cancellation swallowed, the task would wait forever.
    await asyncio.wait({task}, timeout=5)
    lost = not task.done()
    if lost:
        task.cancel()  # it now waits in an Event, where a cancellation ends it
        await asyncio.wait({task}, timeout=5)
    assert not lost and task.cancelled() and not after_leaving.is_set()


async def test_a_leave_cancelled_while_its_pump_unsubscribes_holds_the_lock_until_it_is_done(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last subscriber of a channel stops its pump under the hub's lock, so that nobody joins
    # the channel while the pump unsubscribes. Cancelling the leaving task then must neither cut
    # the UNSUBSCRIBE short (`await pump` passed the cancellation on to the pump) nor let the lock
    # go before the pump is done (as `asyncio.wait` alone would).
    channel = f"test:{uuid.uuid4()}"
    backend = hub._backend
    real_unsubscribe = backend.unsubscribe
    unsubscribing, release = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def held_unsubscribe(name: str) -> None:
        if name == channel:
            unsubscribing.set()
            await release.wait()
            # The leaving task's cancellation is handled first (asyncio runs callbacks in order).
            order.append("under the lock" if hub._lock.locked() else "lock released")
        await real_unsubscribe(name)
        if name == channel:
            order.append("unsubscribed")

    monkeypatch.setattr(backend, "unsubscribe", held_unsubscribe)

    async def subscribe_then_leave() -> None:
        async with hub.subscribe(channel):
            pass
        order.append("left")  # only reached if the cancellation below was lost

    async def newcomer() -> None:
        async with hub._lock:
            order.append("lock")

    leaving = asyncio.create_task(subscribe_then_leave())
    async with asyncio.timeout(10):
        await unsubscribing.wait()
    assert hub._lock.locked()  # the pump unsubscribes under the leaving task's lock
    competitor = asyncio.create_task(newcomer())
    leaving.cancel()
    release.set()
    async with asyncio.timeout(10):
        await competitor
        await asyncio.wait({leaving})
    assert order == ["under the lock", "unsubscribed", "lock"]
    assert leaving.cancelled()
    assert channel not in hub._pumps and hub.subscribers(channel) == set()


async def test_a_leave_cancelled_while_it_waits_for_the_lock_leaves_no_subscriber(hub: Hub) -> None:
    channel = f"test:{uuid.uuid4()}"
    leave = asyncio.Event()

    async def member() -> None:
        async with hub.subscribe(channel):
            await leave.wait()

    task = asyncio.create_task(member())
    async with asyncio.timeout(10):
        while not hub.subscribers(channel):
            await asyncio.sleep(0)
        async with hub._lock:  # another subscribe or leave holds the hub
            leave.set()
            while not hub._lock._waiters:  # the member waits for the lock to leave
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.wait({task})
    assert task.cancelled()
    assert hub.subscribers(channel) == set()  # no subscriber left behind to be fed forever
    # The channel's pump outlived it; the next subscriber to leave stops it.
    async with hub.subscribe(channel):
        pass
    assert channel not in hub._pumps and hub.subscribers(channel) == set()
