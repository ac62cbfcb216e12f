"""Who is calling with an API key: the key checked (through this process's memory of recent
answers, or against the database now), remembered for the rest of the operation."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.accounts import authentication
from app.api.compiled.planner import NOBODY, Caller
from app.api.context import Context, Slot, current_scope
from app.api.errors import Unauthenticated
from app.logs import service
from app.logs.models import READ, ApiKey, key_can

# The operation's API key, once checked.
API_KEY: Slot[ApiKey] = Slot("api key")


def api_key_secret(ctx: Context) -> str:
    creds = ctx.credentials
    if creds is None or creds.scheme != "apikey":
        raise Unauthenticated("an API key is required: send `Authorization: ApiKey <secret>` or `X-API-Key`")
    return creds.value


async def require_api_key(ctx: Context, conn: AsyncSession | AsyncConnection | None = None) -> ApiKey:
    """The caller's API key, checked on `conn` (an autocommit connection) or the operation's session."""
    secret = api_key_secret(ctx)
    scope = current_scope()
    key = API_KEY.get(scope)
    if key is None:
        key = await service.authenticate_api_key_cached(
            ctx.deps.principals, conn if conn is not None else ctx.session, secret=secret
        )
        API_KEY.put(scope, key)
    key_authenticated(ctx, key, secret)
    return key


async def api_key_now(ctx: Context, session: AsyncSession | None = None) -> ApiKey:
    """The caller's API key checked against the database now (on `session`, else the operation's),
    as project access checks it: a revocation counts at once, whatever this process remembers."""
    secret = api_key_secret(ctx)
    key = await service.authenticate_api_key(session if session is not None else ctx.session, secret=secret)
    key_authenticated(ctx, key, secret)
    return key


def key_authenticated(ctx: Context, key: ApiKey, secret: str) -> None:
    """For the access log, and for the rate limiter: this key has a bucket of its own now."""
    ctx.caller["api_key_id"] = str(key.id)
    ctx.deps.limiter.vouch(secret)


async def key_environment(ctx: Context) -> uuid.UUID | None:
    """The environment an environment key is confined to (None: not a key, or a project-wide one)."""
    creds = ctx.credentials
    if creds is None or creds.scheme != "apikey":
        return None
    return (await require_api_key(ctx)).environment_id


async def compiled_caller(ctx: Context) -> Caller:
    """Who is calling, as compiled plans bind it (`Deps.compiled_caller`): an API key's project and
    environment, checked now as `require_project_access` does (revocations count at once), or the
    signed-in user."""
    creds = ctx.credentials
    if creds is not None and creds.scheme == "apikey":
        key = await api_key_now(ctx)
        if not key_can(key, READ):  # reads nothing (an ingest-only key): every guard bails
            return NOBODY
        return Caller(key_environment=key.environment_id, key_project=key.project_id)
    return Caller(user_id=await authentication.user_id(ctx, ctx.session))
