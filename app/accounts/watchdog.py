"""Websockets live no longer than their credential.

A connection authenticated in `connection_init` is closed with 4403 when its access token or
session expires, or as soon as its session is deleted or its user is deleted (announced on the
bus after commit), rather than streaming on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from starlette.websockets import WebSocket

from app.accounts.events import session_channel, user_channel
from app.api.context import Context, Viewer
from app.api.errors import LodgeError
from app.pubsub import RESYNC

log = logging.getLogger(__name__)
CLOSE_FORBIDDEN = 4403


async def watch(context: Context, websocket: WebSocket, viewer: Viewer) -> None:
    try:
        await _until_revoked(context, viewer)
    except asyncio.CancelledError:
        raise  # the connection ended first
    except Exception:
        log.warning("websocket watchdog failed; closing the connection", exc_info=True)
    with contextlib.suppress(Exception):
        await websocket.close(code=CLOSE_FORBIDDEN, reason="credential expired or revoked")


async def _until_revoked(context: Context, viewer: Viewer) -> None:
    hub = context.deps.hub
    channels = [user_channel(viewer.user_id)]
    if viewer.session_id is not None:
        channels.append(session_channel(viewer.session_id))
    async with contextlib.AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(hub.subscribe(channel)) for channel in channels]
        # A revocation committed before the subscriptions were confirmed was not heard: look now.
        if not await _still_valid(context):
            return
        while True:
            remaining = (viewer.expires_at - datetime.now(UTC)).total_seconds()
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
            if all(task.result() is RESYNC for task in done) and await _still_valid(context):
                continue  # the broker reconnected: nothing was announced, the credential holds
            return


async def _still_valid(context: Context) -> bool:
    try:
        return await context._authenticate(None) is not None
    except LodgeError:
        return False
    except Exception:
        log.warning("could not re-check a websocket's credential", exc_info=True)
        return True
