"""Reads of the communities product that other products' types use too (their resolvers' list fields):
kept here, below every resolvers module, so that imports point one way (resolvers -> types -> reads ->
service)."""

from __future__ import annotations

import uuid

from app.accounts import authentication
from app.accounts.permissions import has_permission
from app.api.context import Info
from app.api.errors import BadUserInput
from app.api.pagination import (
    Connection,
    decode_cursor,
    encode_cursor,
    paginate,
)
from app.communities import access, models
from app.communities.service import guilds
from app.communities.types import (
    Guild,
)

GUILD_CURSOR = "guild"


def _decode_guild_cursor(cursor: str | None) -> tuple[str, uuid.UUID] | None:
    raw = decode_cursor(GUILD_CURSOR, cursor)
    if raw is None:
        return None
    key, _, name = raw.partition("|")
    if "\x00" in name:
        raise BadUserInput("malformed cursor", cursor=cursor)
    try:
        return name, uuid.UUID(key)
    except ValueError:
        raise BadUserInput("malformed cursor", cursor=cursor) from None


async def guilds_page(
    info: Info,
    *,
    search: str | None,
    member_id: uuid.UUID | None,
    first: int | None,
    after: str | None,
    shared_with: uuid.UUID | None = None,
) -> Connection[Guild]:
    return await paginate(
        info,
        first=first,
        after=after,
        kind=GUILD_CURSOR,
        position=lambda kind, cursor: _decode_guild_cursor(cursor),
        fetch=lambda position, limit, count: guilds.list_guilds(
            info.context.session,
            search=search or None,
            member_id=member_id,
            shared_with=shared_with,
            after=position,
            limit=limit,
            count=count,
        ),
        to_node=Guild.from_model,
        cursor_of=_guild_cursor,
    )


async def guilds_of(info: Info, *, user_id: uuid.UUID, first: int | None, after: str | None) -> Connection[Guild]:
    """`User.guilds`: all of them for the user themself, `users:admin` and `guilds:write`; for anyone
    else, the guilds both are members of (as Discord shows mutual servers)."""
    ctx = info.context
    caller = await authentication.require_user_id(ctx, ctx.session)
    everything = caller == user_id or await access.is_staff(info) or await has_permission(ctx, "users:admin")
    shared = None if everything else caller
    return await guilds_page(info, search=None, member_id=user_id, shared_with=shared, first=first, after=after)


def _guild_cursor(row: models.Guild) -> str:
    return encode_cursor(GUILD_CURSOR, f"{row.id}|{row.name}")
