"""The event bus: broadcaster with Lodge's own Redis backend, and a per-process fan-out hub.

PostgreSQL is the source of truth; a bus message only says "something new" (and may carry the new
rows to save a read). Subscribers must therefore survive lost messages: the hub tells them to
resynchronise from the database whenever it cannot promise that nothing was missed (their queue
overflowed, or the broker connection was re-established).

This is the only module that imports broadcaster. It works around four faults of broadcaster 0.3.1:

* its Redis backend starts listening before SUBSCRIBE completes, so with redis-py 8 it receives
  nothing; `RedisBackend` here confirms each SUBSCRIBE before `subscribe` returns;
* its listener dies silently when the Redis connection drops; `RedisBackend` reconnects, subscribes
  again and emits a RESYNC event;
* `Broadcast.subscribe` races when two subscribers join one channel at once (one gets nothing,
  leaving raises KeyError); `Hub` holds exactly one bus subscription per channel, under a lock;
* per-subscriber queues are unbounded; `Hub` bounds each subscriber's queue (in bytes of
  messages) and, on overflow, drops its backlog and asks it to resynchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import urlparse

import orjson
from broadcaster import Broadcast, Event
from broadcaster._backends.base import BroadcastBackend
from broadcaster._backends.memory import MemoryBackend
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from app.observability import metrics

log = logging.getLogger(__name__)
_LIVE_DELIVERIES = metrics.DELIVERIES.labels("live")

RESYNC_CHANNEL = "lodge:resync"
# A published message is {"sent": <unix time>, "data": <payload>}; subscribers get the payload.
ENVELOPE_SENT = "sent"
ENVELOPE_DATA = "data"
PUBLISH_TIMEOUT = 1.0
PING_TIMEOUT = 1.0
HEALTH_CHECK_INTERVAL = 5.0  # a silent pub/sub connection is PINGed after this long
SILENCE_TIMEOUT = 3.0  # and counted as lost if the PONG does not come within this
PUBLISH_BACKOFF = 2.0


class RedisBackend(BroadcastBackend):
    """Redis pub/sub that confirms subscriptions and survives dropped connections."""

    def __init__(self, url: str, *, reconnect_delay: float = 0.2, max_reconnect_delay: float = 5.0) -> None:
        self._url = url
        self._client: aioredis.Redis = aioredis.Redis.from_url(url, socket_connect_timeout=5)
        self._pubsub: Any = None
        self._channels: set[str] = set()
        self._confirmed: dict[str, asyncio.Event] = {}
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        # Channels re-subscribed after a reconnect whose confirmation has not arrived yet; RESYNC
        # is emitted only once all have, or a publish could slip in between.
        self._awaiting: set[str] | None = None
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def connect(self) -> None:
        """Connect, or keep trying in the background: Lodge starts (and /readyz says 503) without Redis."""
        try:
            await self._open()
        except (RedisError, OSError) as exc:
            log.warning("redis is unreachable (%s); retrying in the background", exc)
        self._reader = asyncio.create_task(self._read_forever(), name="lodge-redis-reader")

    async def disconnect(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._close_pubsub()
        await self._client.aclose()

    async def _open(self) -> None:
        pubsub = self._client.pubsub()
        # A pub/sub connection with no channel is still a connection: subscribe to a private
        # channel so that redis-py keeps reading and a dropped connection is noticed at once.
        await pubsub.subscribe(RESYNC_CHANNEL, *self._channels)
        self._pubsub = pubsub
        self._connected.set()

    async def _close_pubsub(self) -> None:
        self._connected.clear()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), PING_TIMEOUT * 3)

    async def _read_forever(self) -> None:
        delay = self._reconnect_delay
        last_heard = time.monotonic()
        pinged: float | None = None
        while True:
            if self._pubsub is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_reconnect_delay)
                try:
                    await asyncio.wait_for(self._open(), PING_TIMEOUT * 3)
                except (RedisError, OSError, TimeoutError) as exc:
                    log.warning("redis reconnect failed: %r", exc)
                    await self._close_pubsub()
                    continue
                self._awaiting = {RESYNC_CHANNEL, *self._channels}
                last_heard, pinged = time.monotonic(), None
                continue
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
                delay = self._reconnect_delay
                now = time.monotonic()
                if message is not None:
                    last_heard, pinged = now, None
                elif pinged is not None and now - pinged > SILENCE_TIMEOUT:
                    # A frozen Redis keeps the connection open and says nothing: that is down too.
                    raise TimeoutError(f"no answer to PING in {SILENCE_TIMEOUT:g} s")
                elif pinged is None and now - last_heard > HEALTH_CHECK_INTERVAL:
                    await asyncio.wait_for(self._pubsub.ping(), PING_TIMEOUT)
                    pinged = now
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("redis pub/sub connection lost (%r); reconnecting", exc)
                await self._close_pubsub()
                # Subscribers read PostgreSQL now, then every second while the broker is down.
                await self._queue.put(Event(RESYNC_CHANNEL, ""))
                continue
            if message is None:
                continue
            kind = message["type"]
            channel = _text(message["channel"])
            if kind == "subscribe":
                if channel in self._confirmed:
                    self._confirmed[channel].set()
                if self._awaiting is not None:
                    self._awaiting.discard(channel)
                    if not self._awaiting:
                        self._awaiting = None
                        self.reconnects += 1
                        metrics.BROKER_RECONNECTS.inc()
                        log.info("redis pub/sub connected again; subscribers resynchronise from PostgreSQL")
                        await self._queue.put(Event(RESYNC_CHANNEL, ""))
            elif kind == "message" and channel != RESYNC_CHANNEL:
                await self._queue.put(Event(channel, _text(message["data"])))

    async def subscribe(self, channel: str) -> None:
        if channel == RESYNC_CHANNEL:
            return
        self._channels.add(channel)
        confirmed = self._confirmed[channel] = asyncio.Event()
        try:
            await self._connected.wait()
            # If the connection drops now, the reconnect subscribes every channel again and confirms.
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.subscribe(channel)
            # Returning before Redis confirms would let a publish slip between a subscriber's
            # database read and its first live message.
            await confirmed.wait()
        except BaseException:
            self._channels.discard(channel)
            self._confirmed.pop(channel, None)
            raise

    async def unsubscribe(self, channel: str) -> None:
        if channel == RESYNC_CHANNEL:
            return
        self._channels.discard(channel)
        self._confirmed.pop(channel, None)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(channel)

    async def publish(self, channel: str, message: Any) -> None:
        await self._client.publish(channel, message)

    async def next_published(self) -> Event:
        return await self._queue.get()

    async def ping(self) -> bool:
        """A frozen Redis (connections open, nothing answering) is down too: bounded."""
        try:
            pong = await asyncio.wait_for(self._client.ping(), PING_TIMEOUT)  # type: ignore[arg-type]
            return bool(pong) and self.connected
        except (RedisError, OSError, TimeoutError):
            return False


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Resync:
    """Queue marker: the subscriber may have missed messages and must read the database."""

    def __repr__(self) -> str:
        return "RESYNC"


RESYNC = _Resync()

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Delivery:
    """One bus message as the hub hands it to every local subscriber of its channel: the payload,
    decoded once, and what the subscribers make of it, made once for all of them (`shared`)."""

    payload: Any
    _made: dict[Callable[[Any], Any], Any] = field(default_factory=dict, repr=False)

    def shared(self, make: Callable[[Any], T]) -> T:
        """`make(payload)`, made by the first subscriber in this process that asks and handed to every
        other one (a live event rendered once for all its subscribers: `app.api.sharing`).

        `make` is the key: pass a module-level function (a lambda made per subscriber shares nothing)."""
        if make not in self._made:
            self._made[make] = make(self.payload)
        return cast(T, self._made[make])


@dataclass(eq=False)
class Subscription:
    """One subscriber's view of a channel, bounded by the bytes of the messages it holds."""

    channel: str
    max_bytes: int
    _items: deque[tuple[Delivery | _Resync, int]] = field(default_factory=deque)
    _bytes: int = 0
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    overflows: int = 0
    high_water: int = 0
    # False while its subscriber still reads where it starts (`Hub.subscribe(starts_later=True)`):
    # a message published meanwhile may be one it counts as already seen.
    started: bool = True

    def start(self) -> None:
        """The subscriber knows where it starts: every message published from now on is news to it."""
        self.started = True

    def offer(self, item: Delivery | _Resync, size: int = 0) -> None:
        if item is RESYNC or (self._items and self._bytes + size > self.max_bytes):
            if item is not RESYNC:
                self.overflows += 1
                metrics.OVERFLOWS.inc()
            # Everything queued is now redundant: one read of the database replaces it.
            self._items.clear()
            self._items.append((RESYNC, 0))
            self._bytes = 0
        else:
            self._items.append((item, size))
            self._bytes += size
            self.high_water = max(self.high_water, self._bytes)
        self._wakeup.set()

    async def receive(self) -> Delivery | _Resync:
        """The next delivery, or RESYNC."""
        while not self._items:
            self._wakeup.clear()
            await self._wakeup.wait()
        item, size = self._items.popleft()
        self._bytes -= size
        return item

    async def get(self) -> Any:
        """The next message's payload, or RESYNC."""
        item = await self.receive()
        return item.payload if isinstance(item, Delivery) else item

    def __len__(self) -> int:
        return len(self._items)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            yield await self.get()


class Hub:
    """Per-process fan-out: one bus subscription per channel, many bounded local subscribers.

    Messages are JSON (orjson: UUIDs and datetimes encode natively); each is decoded once and the
    same `Delivery` is handed to every subscriber.
    """

    def __init__(self, url: str, *, queue_bytes: int = 1 << 20, confirm_timeout: float = 3.0) -> None:
        self.url = url
        self._backend: BroadcastBackend = _backend_for(url)
        self._broadcast = Broadcast(backend=self._backend)
        self._queue_bytes = queue_bytes
        self._local: dict[str, set[Subscription]] = {}
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._lock = asyncio.Lock()
        self._confirm_timeout = confirm_timeout
        self._resync_pump: asyncio.Task[None] | None = None
        self.published = 0
        self.publish_failures = 0
        self._publish_paused_until = 0.0
        self._publish_failing = False

    async def connect(self) -> None:
        await self._broadcast.connect()
        ready = asyncio.Event()
        self._resync_pump = asyncio.create_task(self._pump(RESYNC_CHANNEL, ready), name="lodge-hub-resync")
        await ready.wait()

    async def disconnect(self) -> None:
        tasks = [*self._pumps.values(), *([self._resync_pump] if self._resync_pump else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._pumps.clear()
        await self._broadcast.disconnect()

    @property
    def connected(self) -> bool:
        backend = self._backend
        return backend.connected if isinstance(backend, RedisBackend) else True

    @property
    def reconnects(self) -> int:
        backend = self._backend
        return backend.reconnects if isinstance(backend, RedisBackend) else 0

    async def ping(self) -> bool:
        backend = self._backend
        return await backend.ping() if isinstance(backend, RedisBackend) else True

    async def publish(self, channel: str, payload: Any, *, essential: bool = False) -> bool:
        """Publish after commit. A broker failure is logged, not raised: the data is already stored.

        After a failure, publishing pauses for PUBLISH_BACKOFF seconds (a request must not wait
        for a broker that does not answer), and this process's own subscribers of the channel are
        told to read PostgreSQL at once; other processes' subscribers poll while theirs is down.
        An `essential` message (a credential's end, for other processes' memory of callers) is
        tried even during the pause."""
        now = time.monotonic()
        if now < self._publish_paused_until and not essential:
            self._resync_local(channel)
            self.publish_failures += 1
            metrics.PUBLISH_FAILURES.inc()
            return False
        try:
            # Enveloped with the time it was sent, so that receivers can measure the fan-out lag.
            message = _encode({ENVELOPE_SENT: time.time(), ENVELOPE_DATA: payload})
            await asyncio.wait_for(self._broadcast.publish(channel, message), timeout=PUBLISH_TIMEOUT)
        except (RedisError, OSError, TimeoutError) as exc:
            self.publish_failures += 1
            metrics.PUBLISH_FAILURES.inc()
            self._publish_paused_until = time.monotonic() + PUBLISH_BACKOFF
            self._resync_local(channel)
            if not self._publish_failing:
                self._publish_failing = True
                log.warning("publishing failed (%r); subscribers catch up from PostgreSQL until it works", exc)
            return False
        if self._publish_failing:
            self._publish_failing = False
            log.info("publishing works again")
        self.published += 1
        return True

    def _resync_local(self, channel: str) -> None:
        for sub in list(self._local.get(channel, ())):
            sub.offer(RESYNC)

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str, *, starts_later: bool = False) -> AsyncIterator[Subscription]:
        """Yield once the bus subscription for `channel` is confirmed, so nothing published later is missed.

        `starts_later`: the subscriber reads its starting point after this (a tail from "now") and
        calls `Subscription.start()` once it has; until then `subscribers()` does not list it.

        With the broker down it yields after `confirm_timeout` anyway: the subscriber then reads
        PostgreSQL on its own schedule, and gets RESYNC once the broker is back.
        """
        sub = Subscription(channel=channel, max_bytes=self._queue_bytes, started=not starts_later)
        try:
            async with self._lock:
                self._local.setdefault(channel, set()).add(sub)
                if channel not in self._pumps:
                    ready = self._ready[channel] = asyncio.Event()
                    self._pumps[channel] = asyncio.create_task(self._pump(channel, ready), name=f"lodge-hub:{channel}")
            ready = self._ready[channel]
            try:
                await asyncio.wait_for(ready.wait(), self._confirm_timeout)
            except TimeoutError:
                log.warning("bus subscription to %s not confirmed yet; the subscriber polls meanwhile", channel)
            yield sub
        finally:
            await self._leave(channel, sub)

    async def _leave(self, channel: str, sub: Subscription) -> None:
        # Gone at once, before any wait: a leave cancelled while it waits for the lock leaves no
        # subscriber behind (the channel's pump then stops when its next subscriber leaves).
        self._local.get(channel, set()).discard(sub)
        async with self._lock:
            if self._local.get(channel):
                return
            self._local.pop(channel, None)
            self._ready.pop(channel, None)
            pump = self._pumps.pop(channel) if channel in self._pumps else None
            if pump is not None:
                # Still under the lock: a newcomer must not subscribe while this one unsubscribes.
                pump.cancel()
                await _outlast(pump)

    def subscribers(self, channel: str) -> set[Subscription]:
        """The subscriptions for which a message published now is news: the bus has confirmed the
        channel's subscription and each knows where it starts (what a test waits for before it
        publishes)."""
        ready = self._ready.get(channel)
        if ready is None or not ready.is_set():
            return set()
        return {sub for sub in self._local.get(channel, ()) if sub.started}

    def subscriber_counts(self) -> dict[str, int]:
        """Local subscribers by channel kind (the channel's name up to its first colon)."""
        counts: dict[str, int] = {}
        for channel, members in list(self._local.items()):
            kind = channel.partition(":")[0]
            counts[kind] = counts.get(kind, 0) + len(members)
        return counts

    async def _pump(self, channel: str, ready: asyncio.Event) -> None:
        async with self._broadcast.subscribe(channel) as bus:
            ready.set()
            while True:
                event = await bus.get()
                if channel == RESYNC_CHANNEL:
                    for members in list(self._local.values()):
                        for sub in list(members):
                            sub.offer(RESYNC)
                    continue
                try:
                    item = orjson.loads(event.message)
                except orjson.JSONDecodeError:
                    log.warning("dropping a malformed message on %s", channel)
                    continue
                if type(item) is dict and len(item) == 2 and ENVELOPE_SENT in item and ENVELOPE_DATA in item:
                    sent = item[ENVELOPE_SENT]
                    item = item[ENVELOPE_DATA]
                    if isinstance(sent, float):
                        metrics.FANOUT_LAG.observe(max(0.0, time.time() - sent))
                size = len(event.message)
                delivery = Delivery(item)
                receivers = list(self._local.get(channel, ()))
                for sub in receivers:
                    sub.offer(delivery, size)
                _LIVE_DELIVERIES.inc(len(receivers))


# How long a leaver waits for a cancelled pump's UNSUBSCRIBE before going on without it.
OUTLAST_SECONDS = 5.0


async def _outlast(pump: asyncio.Task[None]) -> None:
    """Wait until the (cancelled) pump has finished unsubscribing, even if the waiting task is
    cancelled meanwhile; that cancellation is raised once the pump is done.

    `await pump` would pass the waiter's cancellation on to the pump, cutting its UNSUBSCRIBE
    short; `asyncio.wait` alone would return at once, and the caller release the hub's lock
    while the pump still unsubscribes, so that a newcomer could subscribe to the channel then."""
    cancelled = False
    deadline = time.monotonic() + OUTLAST_SECONDS
    while not pump.done():
        left = deadline - time.monotonic()
        if left <= 0:
            # An UNSUBSCRIBE that does not return (a broker that stopped answering) must not
            # hold every leaver, and the server's shutdown, forever: go on without it.
            log.warning("a bus pump did not stop within %.0f s; leaving it behind", OUTLAST_SECONDS)
            break
        try:
            await asyncio.wait({pump}, timeout=left)
        except asyncio.CancelledError:
            cancelled = True
    if pump.done() and not pump.cancelled() and (exc := pump.exception()) is not None:
        # broadcaster 0.3.1 raises KeyError when a subscription is cancelled before it is confirmed
        log.debug("pump ended with %r", exc)
    if cancelled:
        raise asyncio.CancelledError


def _encode(message: Any) -> str:
    try:
        return orjson.dumps(message, default=str).decode()
    except TypeError:  # an integer beyond 64 bits: the standard library writes it
        return json.dumps(message, default=str)


def _backend_for(url: str) -> BroadcastBackend:
    scheme = urlparse(url).scheme
    if scheme in ("redis", "rediss"):
        return RedisBackend(url)
    if scheme == "memory":
        return MemoryBackend(url)
    raise ValueError(f"unsupported BROADCAST_URL scheme {scheme!r}: use memory:// or redis://")
