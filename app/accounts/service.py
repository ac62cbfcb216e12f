"""Users and sign-in. Functions flush; the caller owns the transaction."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.accounts import models
from app.accounts.security import hash_password, verify_password
from app.api.errors import BadUserInput, Conflict, NotFound, Unauthenticated
from app.db import OperationSession

MIN_PASSWORD_LENGTH = 12
_EMAIL = re.compile(models.EMAIL_PATTERN)


def normalise_email(email: str) -> str:
    value = email.strip().lower()
    if not _EMAIL.match(value) or len(value) > 254:
        raise BadUserInput("malformed email address", field="email")
    return value


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadUserInput(f"passwords need at least {MIN_PASSWORD_LENGTH} characters", field="password")
    if len(password) > 1024:
        raise BadUserInput("passwords may not exceed 1024 characters", field="password")


_INSERT_USER = text(
    """
    INSERT INTO users (email, password_hash, name) VALUES (:email, :password_hash, :name)
    ON CONFLICT (email) WHERE deleted_at IS NULL DO NOTHING
    RETURNING id
    """
)


async def create_user(session: AsyncSession, *, email: str, password: str, name: str | None) -> models.User:
    """Sign up. A live user with the same email is a CONFLICT (checked by the unique index, not a read)."""
    email = normalise_email(email)
    check_password(password)
    password_hash = await hash_password(password)
    user_id = await session.scalar(_INSERT_USER, {"email": email, "password_hash": password_hash, "name": name})
    if user_id is None:
        raise Conflict("a user with this email already exists", field="email")
    return await get_user_or_raise(session, user_id=user_id)


async def get_user_or_raise(session: AsyncSession, *, user_id: uuid.UUID) -> models.User:
    user = await session.get(models.User, user_id)
    if user is None or user.deleted_at is not None:
        raise NotFound("user not found", id=str(user_id))
    return user


async def set_active(session: AsyncSession, *, user: models.User, active: bool) -> models.User:
    """Deactivated users cannot sign in or use any credential; their rows and ownership stay."""
    await session.execute(update(models.User).where(col(models.User.id) == user.id).values(is_active=active))
    await session.refresh(user)
    return user


async def find_by_discord_id(session: AsyncSession, *, discord_id: str) -> models.User | None:
    """The live user with this Discord id, if any."""
    found: models.User | None = await session.scalar(
        select(models.User).where(col(models.User.discord_id) == discord_id, col(models.User.deleted_at).is_(None))
    )
    return found


async def require_user_exists(session: AsyncSession, user_id: uuid.UUID, argument: str) -> uuid.UUID:
    """`user_id`, if it names a live user: an argument that names a parent is NOT_FOUND when there
    is none, rather than an empty list that reads like "this user has nothing"."""
    found = await session.scalar(
        select(col(models.User.id)).where(col(models.User.id) == user_id, col(models.User.deleted_at).is_(None))
    )
    if found is None:
        raise NotFound(f"no user has the id given as `{argument}`", argument=argument, id=str(user_id))
    return user_id


_USERS: Any = models.User.__table__  # type: ignore[attr-defined]


async def get_active_user(session: AsyncSession, *, user_id: uuid.UUID) -> models.User | None:
    """One Core SELECT, the row built without the ORM's identity map and loading (a third of a
    `me` request's time went to `Session.get`). The row is not attached to the session."""
    if isinstance(session, OperationSession) and session.reads_without_transaction:
        rows = await session.fetch_raw(_ACTIVE_USER, user_id)
        return models.User.model_construct(**rows[0]) if rows else None
    query = select(_USERS).where(_USERS.c.id == user_id, _USERS.c.deleted_at.is_(None), _USERS.c.is_active)
    row = (await session.execute(query)).mappings().first()
    return models.User.model_construct(**row) if row is not None else None


_ACTIVE_USER = "SELECT * FROM users WHERE id = $1 AND deleted_at IS NULL AND is_active"


async def authenticate(session: AsyncSession, *, email: str, password: str) -> models.User:
    """The user with these credentials; the same error, and the same time spent, for any mismatch."""
    query = select(models.User).where(
        models.User.email == email.strip().lower(),  # type: ignore[arg-type]
        models.User.deleted_at.is_(None),  # type: ignore[union-attr]
    )
    user = (await session.execute(query)).scalars().first()
    ok = await verify_password(user.password_hash if user else None, password)
    if user is None or not ok or not user.is_active:
        raise Unauthenticated("wrong email or password")
    await session.execute(
        update(models.User).where(models.User.id == user.id).values(last_login_at=func.now())  # type: ignore[arg-type]
    )
    await session.refresh(user)
    return user


async def update_user(
    session: AsyncSession, *, user: models.User, changes: dict[str, Any], current_password: str | None
) -> models.User:
    """Change a user's own profile. A new email or password needs the current password; a new
    password ends every other login (refresh tokens and sessions), a new email is unverified."""
    sensitive = {"email", "password"} & set(changes)
    if sensitive and user.password_hash is not None:
        if current_password is None or not await verify_password(user.password_hash, current_password):
            raise Unauthenticated("changing the email or password needs the current password", field="currentPassword")
    if "email" in changes:
        if changes["email"] is None:
            if user.discord_id is None and user.clerk_id is None:
                raise BadUserInput("an account without Discord or Clerk identity needs an email", field="email")
        else:
            changes["email"] = normalise_email(changes["email"])
        changes["email_verified_at"] = None
    if "password" in changes:
        password = changes.pop("password")
        if password is None:
            raise BadUserInput("the password cannot be removed", field="password")
        check_password(password)
        changes["password_hash"] = await hash_password(password)
    if not changes:
        return user
    statement = update(models.User).where(col(models.User.id) == user.id).values(**changes)
    try:
        async with session.begin_nested():
            await session.execute(statement)
    except IntegrityError:
        raise Conflict("a user with this email already exists", field="email") from None
    await session.refresh(user)
    return user


async def list_users(
    session: AsyncSession, *, search: str | None, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> tuple[Sequence[models.User], int]:
    table = models.User
    where: list[Any] = [col(table.deleted_at).is_(None)]
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(
            or_(
                *(
                    col(c).ilike(pattern, escape="\\")
                    for c in (table.email, table.name, table.username, table.global_name)
                )
            )
        )
    query = select(table).where(*where)
    if after is not None:
        query = query.where(func.row(col(table.created_at), col(table.id)) > func.row(*after))
    rows = (
        (await session.execute(query.order_by(col(table.created_at), col(table.id)).limit(limit + 1))).scalars().all()
    )
    total = await session.scalar(select(func.count()).select_from(table).where(*where))
    return rows, int(total or 0)


async def soft_delete_user(session: AsyncSession, *, user: models.User) -> None:
    """Hide the user, free their email, and end every session and refresh token (see credentials)."""
    await session.execute(
        update(models.User).where(col(models.User.id) == user.id).values(deleted_at=func.now(), is_active=False)
    )


_UPSERT_DISCORD = text(
    """
    INSERT INTO users (discord_id, username, global_name, avatar_url)
    VALUES (:discord_id, :username, :global_name, :avatar_url)
    ON CONFLICT (discord_id) DO UPDATE SET
        -- Find or create: a Discord user deleted here and seen again by the bot comes back.
        deleted_at = NULL,
        is_active = true,
        username = coalesce(EXCLUDED.username, users.username),
        global_name = coalesce(EXCLUDED.global_name, users.global_name),
        avatar_url = coalesce(EXCLUDED.avatar_url, users.avatar_url)
    RETURNING id
    """
)

_UPSERT_CLERK = text(
    """
    INSERT INTO users (clerk_id, email, first_name, last_name)
    VALUES (:clerk_id, :email, :first_name, :last_name)
    ON CONFLICT (clerk_id) DO UPDATE SET
        deleted_at = NULL,
        is_active = true,
        email = coalesce(EXCLUDED.email, users.email),
        first_name = coalesce(EXCLUDED.first_name, users.first_name),
        last_name = coalesce(EXCLUDED.last_name, users.last_name)
    RETURNING id
    """
)


async def upsert_discord_user(
    session: AsyncSession, *, discord_id: str, username: str | None, global_name: str | None, avatar_url: str | None
) -> models.User:
    """Find or create by Discord id in one statement: concurrent calls for one id make one user."""
    if not discord_id.strip():
        raise BadUserInput("discordId must not be empty", field="discordId")
    params = {
        "discord_id": discord_id.strip(),
        "username": username,
        "global_name": global_name,
        "avatar_url": avatar_url,
    }
    user_id = await session.scalar(_UPSERT_DISCORD, params)
    return await _fresh(session, user_id)


async def upsert_clerk_user(
    session: AsyncSession, *, clerk_id: str, email: str | None, first_name: str | None, last_name: str | None
) -> models.User:
    if not clerk_id.strip():
        raise BadUserInput("clerkId must not be empty", field="clerkId")
    params = {
        "clerk_id": clerk_id.strip(),
        "email": normalise_email(email) if email else None,
        "first_name": first_name,
        "last_name": last_name,
    }
    try:
        async with session.begin_nested():
            user_id = await session.scalar(_UPSERT_CLERK, params)
    except IntegrityError:
        raise Conflict("another user already has this email", field="email") from None
    return await _fresh(session, user_id)


async def _fresh(session: AsyncSession, user_id: uuid.UUID | None) -> models.User:
    assert user_id is not None
    user = await session.get(models.User, user_id, populate_existing=True)
    assert user is not None
    return user
