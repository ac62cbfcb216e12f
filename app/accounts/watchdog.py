"""Websockets live no longer than their credential.

A connection authenticated in `connection_init` (an access token, a session or an API key) is
closed with 4403 when its credential expires, or as soon as the end of its principal is announced
on the bus after commit (`app.accounts.events`): on every instance, whatever its subscriptions are
doing, rather than streaming on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.websockets import WebSocket

from app.accounts import authentication
from app.accounts.events import api_key_channel, ends, login_channel, session_channel, user_channel
from app.api.context import Context, Viewer
from app.api.errors import LodgeError
from app.logs.service import authenticate_api_key
from app.pubsub import RESYNC

log = logging.getLogger(__name__)
CLOSE_FORBIDDEN = 4403


@dataclass(frozen=True)
class Watched:
    """The channels that announce the end of a connection's principal, and when it expires."""

    channels: tuple[str, ...]
    expires_at: datetime | None

    @classmethod
    def viewer(cls, viewer: Viewer) -> Watched:
        channels = [user_channel(viewer.user_id)]
        if viewer.session_id is not None:
            channels.append(session_channel(viewer.session_id))
        if viewer.login_id is not None:
            channels.append(login_channel(viewer.login_id))  # ended when a spent refresh token is reused
        return cls(tuple(channels), viewer.expires_at)

    @classmethod
    def api_key(cls, key_id: uuid.UUID, expires_at: datetime | None) -> Watched:
        return cls((api_key_channel(key_id),), expires_at)


async def watch(context: Context, websocket: WebSocket, watched: Watched) -> None:
    try:
        await _until_revoked(context, watched)
    except asyncio.CancelledError:
        raise  # the connection ended first
    except Exception:
        log.warning("websocket watchdog failed; closing the connection", exc_info=True)
    with contextlib.suppress(Exception):
        await websocket.close(code=CLOSE_FORBIDDEN, reason="credential expired or revoked")


async def _until_revoked(context: Context, watched: Watched) -> None:
    hub = context.deps.hub
    async with contextlib.AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(hub.subscribe(channel)) for channel in watched.channels]
        # A revocation committed before the subscriptions were confirmed was not heard: look now.
        if not await _still_valid(context):
            return
        while True:
            remaining: float | None = None
            if watched.expires_at is not None:
                remaining = (watched.expires_at - datetime.now(UTC)).total_seconds()
                if remaining <= 0:
                    return
            getters = [asyncio.create_task(sub.get()) for sub in subs]
            try:
                done, _ = await asyncio.wait(getters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in getters:
                    task.cancel()
            if not done:
                return  # expired
            messages = [task.result() for task in done]
            if any(message is not RESYNC and ends(message) for message in messages):
                return
            # The broker reconnected (nothing may have been heard) or some logins of this user
            # ended: the credential itself says whether this connection goes on.
            if not await _still_valid(context):
                return


async def _still_valid(context: Context) -> bool:
    try:
        creds = context.credentials
        if creds is not None and creds.scheme == "apikey":
            async with context.deps.db.session() as session:
                await authenticate_api_key(session, secret=creds.value)
            return True
        return await authentication.authenticate(context, fresh=True) is not None
    except LodgeError:
        return False
    except Exception:
        log.warning("could not re-check a websocket's credential", exc_info=True)
        return True
