"""Guilds and memberships. Functions flush; the caller owns the transaction.

A guild is found or created by its Discord id in one `INSERT ... ON CONFLICT` statement, and its
settings change only through `jsonb_merge_patch` inside one UPDATE, so concurrent writers never
lose each other's keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, func, literal, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from app.accounts import models as accounts
from app.api.errors import BadUserInput, Conflict, NotFound
from app.api.validation import json_object, like_pattern, required_text
from app.communities import models

# Members holding one of these roles administer their guild (members, settings, any analysis).
OWNER = "owner"
ADMIN_ROLES = frozenset({OWNER, "admin"})
MAX_ROLES = 100
MAX_DISCORD_ID = 64


def normalize_roles(roles: Sequence[str]) -> list[str]:
    cleaned: list[str] = []
    for role in roles:
        name = required_text(role, "roles", limit=100)
        if name not in cleaned:
            cleaned.append(name)
    if len(cleaned) > MAX_ROLES:
        raise BadUserInput(f"a member holds at most {MAX_ROLES} roles", field="roles")
    return cleaned


async def get_guild_or_raise(session: AsyncSession, *, guild_id: uuid.UUID, share: bool = False) -> models.Guild:
    """`share` holds a share lock until commit: the guild cannot be deleted under rows being added to it."""
    query = select(models.Guild).where(col(models.Guild.id) == guild_id)
    if share:
        query = query.with_for_update(read=True)
    guild = (await session.scalars(query)).first()
    if guild is None:
        raise NotFound("guild not found", id=str(guild_id))
    return guild


async def get_guild_by_discord_id(session: AsyncSession, *, discord_id: str) -> models.Guild | None:
    found: models.Guild | None = await session.scalar(
        select(models.Guild).where(col(models.Guild.discord_id) == discord_id)
    )
    return found


async def upsert_guild(
    session: AsyncSession, *, discord_id: str, name: str, settings: dict[str, Any] | None
) -> models.Guild:
    """Find or create by Discord id; an existing guild takes the new name and merges `settings`."""
    discord_id = required_text(discord_id, "discordId", limit=MAX_DISCORD_ID)
    values: dict[str, Any] = {"discord_id": discord_id, "name": required_text(name, "name")}
    if settings is not None:
        values["settings"] = json_object(settings, "settings")
    statement = insert(models.Guild).values(**values)
    table = models.Guild.__table__  # type: ignore[attr-defined]
    update: dict[str, Any] = {"name": statement.excluded.name}
    if settings is not None:
        update["settings"] = func.jsonb_merge_patch(table.c.settings, statement.excluded.settings, type_=JSONB)
    upsert = statement.on_conflict_do_update(index_elements=["discord_id"], set_=update).returning(models.Guild)
    guild: models.Guild = (await session.scalars(upsert, execution_options={"populate_existing": True})).one()
    return guild


async def update_guild_settings(session: AsyncSession, *, guild_id: uuid.UUID, patch: Any) -> models.Guild:
    """Apply an RFC 7396 merge patch in one UPDATE: concurrent patches of different keys all survive."""
    patch = json_object(patch, "settings")
    table = models.Guild.__table__  # type: ignore[attr-defined]
    statement = (
        table.update()
        .where(table.c.id == guild_id)
        .values(settings=func.jsonb_merge_patch(table.c.settings, literal(patch, type_=JSONB), type_=JSONB))
        .returning(table.c.id)
    )
    if await session.scalar(statement) is None:
        raise NotFound("guild not found", id=str(guild_id))
    guild = await session.get(models.Guild, guild_id, populate_existing=True)
    assert guild is not None
    return guild


async def delete_guild(session: AsyncSession, *, guild_id: uuid.UUID) -> bool:
    """Removes the guild with its memberships, analyses (images, metrics) and messages (cascades)."""
    table = models.Guild.__table__  # type: ignore[attr-defined]
    deleted = await session.scalar(table.delete().where(table.c.id == guild_id).returning(table.c.id))
    return deleted is not None


def guilds_query(
    *,
    search: str | None,
    member_id: uuid.UUID | None,
    after: tuple[str, uuid.UUID] | None,
    limit: int,
    shared_with: uuid.UUID | None = None,
) -> Any:
    """Guilds by name (then id); `member_id` limits them to one user's guilds, `shared_with` to
    those another user is also a member of."""
    guild = models.Guild
    query = select(guild)
    if member_id is not None:
        query = query.join(models.UserGuild, col(models.UserGuild.guild_id) == col(guild.id)).where(
            col(models.UserGuild.user_id) == member_id
        )
    if shared_with is not None:
        also = aliased(models.UserGuild)
        query = query.where(
            select(col(also.guild_id))
            .where(col(also.guild_id) == col(guild.id), col(also.user_id) == shared_with)
            .exists()
        )
    if search:
        query = query.where(col(guild.name).ilike(like_pattern(search)))
    if after is not None:
        query = query.where(tuple_(col(guild.name), col(guild.id)) > tuple_(*after))
    return query.order_by(col(guild.name), col(guild.id)).limit(limit + 1)


async def list_guilds(
    session: AsyncSession,
    *,
    search: str | None,
    member_id: uuid.UUID | None,
    after: tuple[str, uuid.UUID] | None,
    limit: int,
    count: bool,
    shared_with: uuid.UUID | None = None,
) -> tuple[Sequence[models.Guild], int]:
    query = guilds_query(search=search, member_id=member_id, after=after, limit=limit, shared_with=shared_with)
    rows = (await session.scalars(query)).all()
    total = 0
    if count:
        counted = (
            guilds_query(search=search, member_id=member_id, after=None, limit=0, shared_with=shared_with)
            .limit(None)
            .order_by(None)
        )
        total = await session.scalar(select(func.count()).select_from(counted.subquery())) or 0
    return rows, total


# -- memberships -------------------------------------------------------------------------------


async def get_membership(
    session: AsyncSession, *, guild_id: uuid.UUID, user_id: uuid.UUID, lock: bool = False
) -> models.UserGuild | None:
    """`lock`: hold the row until commit, so roles checked are the roles changed."""
    query = select(models.UserGuild).where(
        col(models.UserGuild.guild_id) == guild_id, col(models.UserGuild.user_id) == user_id
    )
    if lock:
        query = query.with_for_update()
    found: models.UserGuild | None = (await session.scalars(query.execution_options(populate_existing=True))).first()
    return found


async def require_another_owner(session: AsyncSession, *, guild_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """A guild keeps at least one owner. The guild's row lock makes concurrent departures take turns."""
    await session.execute(select(col(models.Guild.id)).where(col(models.Guild.id) == guild_id).with_for_update())
    others = await session.scalar(
        select(func.count()).where(
            col(models.UserGuild.guild_id) == guild_id,
            col(models.UserGuild.user_id) != user_id,
            col(models.UserGuild.roles).contains([OWNER]),
        )
    )
    if not others:
        raise Conflict("a guild keeps at least one owner: make another member owner first", guildId=str(guild_id))


async def add_member(
    session: AsyncSession, *, guild_id: uuid.UUID, user_id: uuid.UUID, roles: Sequence[str] | None
) -> models.UserGuild:
    """Join (or, for a member, replace the roles when `roles` is given), in one statement."""
    user = await session.get(accounts.User, user_id)
    if user is None or user.deleted_at is not None:
        raise NotFound("user not found", id=str(user_id))
    values: dict[str, Any] = {"guild_id": guild_id, "user_id": user_id}
    if roles is not None:
        values["roles"] = normalize_roles(roles)
    statement = insert(models.UserGuild).values(**values)
    table = models.UserGuild.__table__  # type: ignore[attr-defined]
    new_roles = statement.excluded.roles if roles is not None else table.c.roles
    upsert = statement.on_conflict_do_update(
        index_elements=["user_id", "guild_id"], set_={"roles": new_roles}
    ).returning(models.UserGuild)
    member: models.UserGuild = (await session.scalars(upsert, execution_options={"populate_existing": True})).one()
    return member


async def remove_member(session: AsyncSession, *, guild_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    table = models.UserGuild.__table__  # type: ignore[attr-defined]
    removed = await session.scalar(
        table.delete().where(and_(table.c.guild_id == guild_id, table.c.user_id == user_id)).returning(table.c.id)
    )
    return removed is not None


def live_members() -> Select[Any]:
    """Memberships whose user still exists (soft-deleted users leave their guilds' lists)."""
    return select(models.UserGuild).join(
        accounts.User,
        and_(col(accounts.User.id) == col(models.UserGuild.user_id), col(accounts.User.deleted_at).is_(None)),
    )


def is_admin(member: models.UserGuild | None) -> bool:
    return member is not None and any(role in ADMIN_ROLES for role in member.roles)


def touches_admin_roles(before: Sequence[str], after: Sequence[str]) -> bool:
    return bool(set(before).symmetric_difference(after) & ADMIN_ROLES)
