"""Refresh tokens (rotated, with theft detection) and opaque sessions. Functions flush; the caller
owns the transaction."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.accounts import models
from app.api.errors import BadUserInput, Unauthenticated

REFRESH_PREFIX = "lodge_rt_"
SESSION_PREFIX = "lodge_sess_"
MAX_SESSION_TTL = 90 * 24 * 3600


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- refresh tokens --------------------------------------------------------------------------------


async def issue_refresh_token(
    session: AsyncSession, *, user_id: uuid.UUID, ttl_seconds: int, family_id: uuid.UUID
) -> str:
    """A refresh token of the login `family_id` (a new uuid for a new login)."""
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    session.add(
        models.RefreshToken(
            user_id=user_id,
            family_id=family_id,
            token_hash=_hash(token),
            expires_at=datetime.now(UTC) + timedelta(seconds=ttl_seconds),
        )
    )
    await session.flush()
    return token


_ROTATE = text(
    """
    UPDATE refresh_tokens t SET revoked_at = now()
    FROM users u
    WHERE t.token_hash = :hash AND t.revoked_at IS NULL AND t.expires_at > now()
      AND u.id = t.user_id AND u.deleted_at IS NULL AND u.is_active
    RETURNING t.user_id, t.family_id
    """
)


async def _lock_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    """Rotation, theft detection and logout of one login take turns: a token minted by a rotation
    still in flight is never missed by a revocation."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:f, 11))"), {"f": str(family_id)})


async def rotate_refresh_token(
    session: AsyncSession,
    *,
    token: str,
    ttl_seconds: int,
    on_failure: Callable[[Callable[[AsyncSession], Awaitable[None]]], None],
    on_reuse: Callable[[uuid.UUID], None] = lambda family: None,
) -> tuple[uuid.UUID, uuid.UUID, str]:
    """Spend `token` for a new one of the same family, in one conditional UPDATE.

    Presenting a token that was already spent means someone else holds the family: every token of
    the family is revoked. The operation fails, so that revocation is registered to run after its
    rollback, in the same transaction as its audit row (`on_failure`).
    """
    family = await session.scalar(
        select(col(models.RefreshToken.family_id)).where(col(models.RefreshToken.token_hash) == _hash(token))
    )
    if family is None:
        raise Unauthenticated("the refresh token is invalid, expired or revoked")
    await _lock_family(session, family)
    row = (await session.execute(_ROTATE, {"hash": _hash(token)})).first()
    if row is not None:
        new = await issue_refresh_token(session, user_id=row.user_id, ttl_seconds=ttl_seconds, family_id=row.family_id)
        return row.user_id, row.family_id, new
    spent = await session.scalar(
        select(col(models.RefreshToken.revoked_at)).where(col(models.RefreshToken.token_hash) == _hash(token))
    )
    if spent is not None:

        async def revoke(failure_session: AsyncSession) -> None:
            await revoke_family(failure_session, family_id=family)

        on_failure(revoke)
        on_reuse(family)
        raise Unauthenticated("this refresh token was already used: every token of its login is revoked")
    raise Unauthenticated("the refresh token is invalid, expired or revoked")


async def revoke_family(session: AsyncSession, *, family_id: uuid.UUID) -> None:
    await _lock_family(session, family_id)
    await session.execute(
        update(models.RefreshToken)
        .where(col(models.RefreshToken.family_id) == family_id, col(models.RefreshToken.revoked_at).is_(None))
        .values(revoked_at=func.now())
    )


async def revoke_refresh_family(session: AsyncSession, *, token: str) -> uuid.UUID | None:
    """Logout: the token, every token rotated from the same login and the access tokens issued
    for that login stop working. Returns the user whose login it was (None: no such token)."""
    row = (
        await session.execute(
            select(col(models.RefreshToken.family_id), col(models.RefreshToken.user_id)).where(
                col(models.RefreshToken.token_hash) == _hash(token)
            )
        )
    ).first()
    if row is None:
        return None
    await revoke_family(session, family_id=row.family_id)
    return uuid.UUID(str(row.user_id))


_LOGIN_IS_LIVE = text(
    """
    SELECT EXISTS (
        SELECT 1 FROM users u
        WHERE u.id = :user_id AND u.deleted_at IS NULL AND u.is_active
          AND (CAST(:login_id AS uuid) IS NULL OR EXISTS (
              SELECT 1 FROM refresh_tokens t
              WHERE t.family_id = CAST(:login_id AS uuid) AND t.user_id = u.id AND t.revoked_at IS NULL))
    )
    """
)


async def login_is_live(session: AsyncSession, *, user_id: uuid.UUID, login_id: uuid.UUID | None) -> bool:
    """An access token's user is live and its login was not ended (logout, a password change
    elsewhere, a reused refresh token): one statement, the revocation list being the refresh
    tokens themselves (a login with no unrevoked token left is over)."""
    return bool(await session.scalar(_LOGIN_IS_LIVE, {"user_id": user_id, "login_id": login_id}))


# -- sessions --------------------------------------------------------------------------------------


async def create_session(session: AsyncSession, *, user_id: uuid.UUID, ttl_seconds: int) -> tuple[models.Session, str]:
    if not 0 < ttl_seconds <= MAX_SESSION_TTL:
        raise BadUserInput(f"ttlSeconds must be between 1 and {MAX_SESSION_TTL}", field="ttlSeconds")
    token = SESSION_PREFIX + secrets.token_urlsafe(32)
    row = models.Session(
        user_id=user_id, token_hash=_hash(token), expires_at=datetime.now(UTC) + timedelta(seconds=ttl_seconds)
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row, token


@dataclass(frozen=True)
class SessionIdentity:
    session_id: uuid.UUID
    user_id: uuid.UUID
    expires_at: datetime


async def find_session(session: AsyncSession, *, token: str) -> SessionIdentity | None:
    """The live session for `token`, if its user is live too."""
    row = (
        await session.execute(
            select(col(models.Session.id), col(models.Session.user_id), col(models.Session.expires_at))
            .join(models.User, col(models.User.id) == col(models.Session.user_id))
            .where(
                col(models.Session.token_hash) == _hash(token),
                col(models.Session.expires_at) > func.now(),
                col(models.User.deleted_at).is_(None),
                col(models.User.is_active),
            )
        )
    ).first()
    return SessionIdentity(row.id, row.user_id, row.expires_at) if row else None


async def list_sessions(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    count: bool,
) -> tuple[list[models.Session], int]:
    """A user's live sessions, newest first (`limit + 1` rows: one more says there is more)."""
    table = models.Session
    live = (col(table.user_id) == user_id, col(table.expires_at) > func.now())
    query = select(table).where(*live)
    if after is not None:
        query = query.where(func.row(col(table.created_at), col(table.id)) < func.row(*after))
    order = (col(table.created_at).desc(), col(table.id).desc())
    rows = list((await session.execute(query.order_by(*order).limit(limit + 1))).scalars().all())
    total = await session.scalar(select(func.count()).select_from(table).where(*live)) if count else 0
    return rows, int(total or 0)


async def delete_other_sessions(
    session: AsyncSession, *, user_id: uuid.UUID, keep: uuid.UUID | None
) -> list[uuid.UUID]:
    """End every session of a user but `keep` (the caller's own); the ids of those ended."""
    query = delete(models.Session).where(col(models.Session.user_id) == user_id)
    if keep is not None:
        query = query.where(col(models.Session.id) != keep)
    return list((await session.execute(query.returning(col(models.Session.id)))).scalars().all())


async def delete_session(session: AsyncSession, *, session_id: uuid.UUID) -> None:
    await session.execute(delete(models.Session).where(col(models.Session.id) == session_id))


async def delete_expired_sessions(session: AsyncSession) -> int:
    result = await session.execute(delete(models.Session).where(col(models.Session.expires_at) <= func.now()))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def end_all_credentials(session: AsyncSession, *, user_id: uuid.UUID) -> list[uuid.UUID]:
    """A deleted user's sessions go and refresh tokens are revoked; returns the ended session ids."""
    ended = (
        (
            await session.execute(
                delete(models.Session).where(col(models.Session.user_id) == user_id).returning(col(models.Session.id))
            )
        )
        .scalars()
        .all()
    )
    await session.execute(
        update(models.RefreshToken)
        .where(col(models.RefreshToken.user_id) == user_id, col(models.RefreshToken.revoked_at).is_(None))
        .values(revoked_at=func.now())
    )
    return list(ended)


async def end_other_logins(
    session: AsyncSession, *, user_id: uuid.UUID, keep_session: uuid.UUID | None, keep_login: uuid.UUID | None
) -> None:
    """After a password change: every other login (its refresh and access tokens) and every other
    session ends; the caller's own login or session goes on."""
    revoke = update(models.RefreshToken).where(
        col(models.RefreshToken.user_id) == user_id, col(models.RefreshToken.revoked_at).is_(None)
    )
    if keep_login is not None:
        revoke = revoke.where(col(models.RefreshToken.family_id) != keep_login)
    await session.execute(revoke.values(revoked_at=func.now()))
    query = delete(models.Session).where(col(models.Session.user_id) == user_id)
    if keep_session is not None:
        query = query.where(col(models.Session.id) != keep_session)
    await session.execute(query)
