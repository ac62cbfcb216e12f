"""Who is calling, remembered per process (issue 15): a request makes no database round trip just to
know its caller.

What is remembered, each for at most `LODGE_AUTH_CACHE_SECONDS` and never past its own expiry:

- that an access token's login is live (`credentials.login_is_live`), by (user, login);
- an opaque session token's session (`credentials.find_session`), by a digest of the token;
- an API key's row (`logs.service.authenticate_api_key`), by a digest of the secret.

Each entry is tagged with the channels of `app.accounts.events` that announce its end (the user's,
the session's, the key's, the login's). Whatever ends a credential announces it on those channels
after its commit (`authentication.announce`), and also on `AUTH_CHANGES`, which every process listens to:
the announcing process forgets the entries at once, before the mutation's answer is sent; the
others as soon as the broker delivers the message. A generation counter keeps a read that started
before an announcement from storing what it read. When the broker is down the cache is bypassed
(nothing could tell this process of a revocation elsewhere), and after a broker outage (the hub's
RESYNC) it is emptied. A change made in PostgreSQL by hand, outside the API, is seen within
`LODGE_AUTH_CACHE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any

from app.accounts.events import AUTH_CHANGES
from app.pubsub import RESYNC

if TYPE_CHECKING:
    from app.pubsub import Hub

log = logging.getLogger(__name__)

MISSING: Any = object()


class Principals:
    # Where credential changes are announced to every process: the operation that announces one
    # forgets at once (`announce`) and publishes it even while publishing is paused.
    channel = AUTH_CHANGES

    def __init__(self, *, seconds: float, capacity: int = 10_000) -> None:
        self.seconds = seconds
        self.capacity = capacity
        self.generation = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[float, Any, tuple[str, ...]]] = OrderedDict()
        self._by_tag: dict[str, set[Hashable]] = {}
        self._hub: Hub | None = None

    @staticmethod
    def key_of(kind: str, secret: str) -> tuple[str, bytes]:
        """The entry key of a credential: a digest, so that memory holds no secret."""
        return (kind, hashlib.blake2b(secret.encode(), digest_size=16).digest())

    @property
    def enabled(self) -> bool:
        hub = self._hub
        return self.seconds > 0 and hub is not None and hub.connected

    def get(self, key: Hashable) -> Any:
        """The value remembered for `key`, or MISSING."""
        if not self.enabled:
            return MISSING
        found = self._entries.get(key)
        if found is None or found[0] <= time.monotonic():
            if found is not None:
                self._forget(key)
            self.misses += 1
            return MISSING
        self._entries.move_to_end(key)
        self.hits += 1
        return found[1]

    def put(
        self, key: Hashable, value: Any, *, tags: Iterable[str], generation: int, until: float | None = None
    ) -> None:
        """Remember `value` (read when the generation was `generation`) until `until` (a
        `time.time()`, such as the credential's expiry) or for `seconds`, whichever is sooner."""
        if not self.enabled or generation != self.generation:
            return  # an announcement came in while it was read: it may be stale already
        expires = time.monotonic() + self.seconds
        if until is not None:
            expires = min(expires, time.monotonic() + (until - time.time()))
        self._forget(key)
        tagged = tuple(tags)
        self._entries[key] = (expires, value, tagged)
        for tag in tagged:
            self._by_tag.setdefault(tag, set()).add(key)
        while len(self._entries) > self.capacity:
            oldest = next(iter(self._entries))
            self._forget(oldest)

    def announce(self, channel: str) -> None:
        """`channel`'s credential ended or changed: forget every entry it tags."""
        self.generation += 1
        for key in self._by_tag.pop(channel, set()):
            self._forget(key)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._by_tag.clear()

    def _forget(self, key: Hashable) -> None:
        found = self._entries.pop(key, None)
        if found is None:
            return
        for tag in found[2]:
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[tag]

    async def listen(self, hub: Hub) -> None:
        """Forget what other processes announce (run for the app's lifetime)."""
        self._hub = hub
        while True:
            try:
                async with hub.subscribe(AUTH_CHANGES) as sub:
                    # Anything announced before the subscription was confirmed was missed.
                    self.clear()
                    while True:
                        message = await sub.get()
                        if message is RESYNC:
                            self.clear()  # the broker was away: announcements may be lost
                        elif isinstance(message, dict) and isinstance(message.get("channel"), str):
                            self.announce(message["channel"])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("auth cache: listening failed; emptied, listening again", exc_info=True)
                self.clear()
                with contextlib.suppress(Exception):
                    await asyncio.sleep(1.0)
