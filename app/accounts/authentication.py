"""Who is calling: a user's access token or opaque session, checked live against the database
(through this process's memory of recent answers, `Principals`), and their permissions.

Everything here is read at most once per operation: the answers live in its `OperationScope`."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import credentials, roles
from app.accounts.events import AUTH_CHANGES, login_channel, session_channel, user_channel
from app.accounts.principals import MISSING
from app.accounts.security import decode_access_token
from app.api.context import Context, Viewer, current_scope
from app.api.errors import Unauthenticated


async def viewer(ctx: Context, session: AsyncSession | None = None) -> Viewer | None:
    """The signed-in user (checked live against the database), or None for anonymous and API keys."""
    scope = current_scope()
    if scope is None:
        return await authenticate(ctx, session)
    if scope.viewer_known:
        return scope.viewer
    found = await scope.once("viewer", lambda: authenticate(ctx, session))
    scope.viewer, scope.viewer_known = found, True
    if found is not None:
        ctx.caller["user_id"] = str(found.user_id)
    return found


async def user_id(ctx: Context, session: AsyncSession | None = None) -> uuid.UUID | None:
    """The signed-in user's id, or None when the caller is anonymous or uses an API key."""
    found = await viewer(ctx, session)
    return found.user_id if found else None


async def require_user_id(ctx: Context, session: AsyncSession | None = None) -> uuid.UUID:
    found = await user_id(ctx, session)
    if found is None:
        raise Unauthenticated("sign in: send `Authorization: Bearer <access token or session token>`")
    return found


async def permissions(ctx: Context, session: AsyncSession | None = None) -> frozenset[str]:
    """The signed-in user's permission strings (from their roles), read once per operation."""
    scope = current_scope()
    if scope is not None and scope.permissions is not None:
        return scope.permissions

    async def read() -> frozenset[str]:
        found = await user_id(ctx, session)
        if found is None:
            return frozenset()
        async with ctx.reader(session) as reader:
            return await roles.permissions_of(reader, user_id=found)

    if scope is None:
        return await read()
    granted = await scope.once("permissions", read)
    scope.permissions = granted
    return granted


async def authenticate(ctx: Context, given: AsyncSession | None = None, *, fresh: bool = False) -> Viewer | None:
    """The caller's bearer credential checked, from memory unless `fresh` (a websocket re-checking
    its credential because its channel announced a change: that announcement may reach this
    process's memory later). None: no bearer credential."""
    creds = ctx.credentials
    if creds is None or creds.scheme != "bearer":
        return None
    principals = ctx.deps.principals
    generation = principals.generation
    if creds.value.startswith(credentials.SESSION_PREFIX):
        key = principals.key_of("session", creds.value)
        found = MISSING if fresh else principals.get(key)
        if found is MISSING:
            async with ctx.reader(given) as session:
                found = await credentials.find_session(session, token=creds.value)
            if found is not None:
                tags = (user_channel(found.user_id), session_channel(found.session_id))
                principals.put(key, found, tags=tags, generation=generation, until=found.expires_at.timestamp())
        if found is None:
            raise Unauthenticated("the session is invalid or expired")
        ctx.deps.limiter.vouch(creds.value)
        return Viewer(user_id=found.user_id, session_id=found.session_id, expires_at=found.expires_at)
    claims = decode_access_token(creds.value, secret=ctx.deps.secret_key)
    if claims is None:
        raise Unauthenticated("the access token is invalid or expired")
    login = ("login", claims.user_id, claims.login_id)
    if fresh or principals.get(login) is MISSING:
        async with ctx.reader(given) as session:
            live = await credentials.login_is_live(session, user_id=claims.user_id, login_id=claims.login_id)
        if not live:
            raise Unauthenticated("this login has ended (logged out, or the account is no longer active)")
        login_tags = [user_channel(claims.user_id)]
        if claims.login_id is not None:
            login_tags.append(login_channel(claims.login_id))
        principals.put(login, True, tags=login_tags, generation=generation, until=claims.expires_at.timestamp())
    return Viewer(user_id=claims.user_id, session_id=None, expires_at=claims.expires_at, login_id=claims.login_id)


def bearer_bucket(token: str, *, secret_key: str) -> str | None:
    """For the rate limiter, from the token alone: "session" for an opaque session token (its
    bucket is its own once a request has checked it), "user:<id>" for a well-signed access token,
    None for anything else (the caller is counted as anonymous)."""
    if token.startswith(credentials.SESSION_PREFIX):
        return "session"
    claims = decode_access_token(token, secret=secret_key)
    return None if claims is None else f"user:{claims.user_id}"


def announce(ctx: Context, channel: str, message: Any, *, on_failure: bool = False) -> None:
    """After commit (or, `on_failure`, after the failure is recorded), tell everyone holding a
    credential of `channel` (an `app.accounts.events` channel) that it ended or changed: its
    websockets, and every process's memory of who is calling (`Principals`, which listens on
    `AUTH_CHANGES`)."""
    scope = ctx.scope
    events = scope.failure_events if on_failure else scope.events
    events.append((channel, message))
    events.append((AUTH_CHANGES, {"channel": channel}))
