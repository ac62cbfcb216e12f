"""Who may read and change a guild and what hangs off it.

A guild is readable by its members and by holders of `guilds:write` (the bot and platform
staff). Members whose roles include `owner` or `admin` administer it; only owners (and
`guilds:write`) hand out or take away those two roles, or delete the guild.
"""

from __future__ import annotations

import uuid

from app.accounts import authentication
from app.accounts import service as accounts
from app.accounts.permissions import has_permission, require_permission
from app.api.context import Info
from app.api.errors import Forbidden, NotFound
from app.communities import loaders, models
from app.communities.service import guilds

WRITE = "guilds:write"


async def membership(info: Info, guild_id: uuid.UUID) -> models.UserGuild | None:
    """The caller's membership of `guild_id` (batched: one statement for all the guilds of a response)."""
    ctx = info.context
    user_id = await authentication.require_user_id(ctx, ctx.session)
    loader = ctx.loaders.batch(loaders.memberships_of(user_id), variant=user_id)
    found: models.UserGuild | None = await loader.load(guild_id)
    return found


async def is_staff(info: Info) -> bool:
    ctx = info.context
    await authentication.require_user_id(ctx, ctx.session)
    return await has_permission(ctx, WRITE, ctx.session)


async def can_read(info: Info, guild_id: uuid.UUID) -> bool:
    return await is_staff(info) or await membership(info, guild_id) is not None


async def require_reader(info: Info, guild_id: uuid.UUID) -> None:
    if not await can_read(info, guild_id):
        raise Forbidden("only members of this guild can see it", guildId=str(guild_id))


async def require_member(info: Info, guild_id: uuid.UUID) -> uuid.UUID:
    """The caller's user id, if they are a member (or staff)."""
    user_id = await authentication.require_user_id(info.context, info.context.session)
    await require_reader(info, guild_id)
    return user_id


async def require_admin(info: Info, guild_id: uuid.UUID, *, owner: bool = False) -> None:
    if await is_staff(info):
        return
    member = await membership(info, guild_id)
    allowed = guilds.OWNER in member.roles if owner and member else guilds.is_admin(member)
    if not allowed:
        needed = "an owner" if owner else "an owner or admin"
        raise Forbidden(f"only {needed} of this guild (or `{WRITE}`) can do this", guildId=str(guild_id))


# Bots credit what they post to the Discord user behind it (`onBehalfOfDiscordId`) with this.
ACT_AS = "communities:act_as"


async def credited_user(info: Info, on_behalf_of_discord_id: str | None) -> uuid.UUID | None:
    """The user a bot acts for (`communities:act_as`): live, found by Discord id (NOT_FOUND if
    none). None when the caller acts for themself. What the credited user may do is then checked
    as theirs (membership, ownership), not the bot's."""
    if on_behalf_of_discord_id is None:
        return None
    ctx = info.context
    await require_permission(ctx, ACT_AS, session=ctx.session)
    user = await accounts.find_by_discord_id(ctx.session, discord_id=on_behalf_of_discord_id.strip())
    if user is None or not user.is_active:
        raise NotFound("no live user has this Discord id", discordId=on_behalf_of_discord_id)
    return user.id


async def require_credited_member(info: Info, guild_id: uuid.UUID, credited: uuid.UUID | None) -> uuid.UUID:
    """The member credited in `guild_id`: the caller (a member, or staff), or the user a bot acts for,
    who must be a member themself (staff rights are the bot's, not theirs)."""
    if credited is None:
        return await require_member(info, guild_id)
    if await guilds.get_membership(info.context.session, guild_id=guild_id, user_id=credited) is None:
        raise Forbidden("the user acted for is not a member of this guild", guildId=str(guild_id))
    return credited
