"""Users and sign-in. Functions flush; the caller owns the transaction."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import models
from app.accounts.security import hash_password, verify_password
from app.api.errors import BadUserInput, Conflict, NotFound, Unauthenticated

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


async def get_active_user(session: AsyncSession, *, user_id: uuid.UUID) -> models.User | None:
    user = await session.get(models.User, user_id)
    if user is None or user.deleted_at is not None or not user.is_active:
        return None
    return user


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
