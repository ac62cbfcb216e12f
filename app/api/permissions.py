"""Who may do what: one check used by every resolver of every domain.

Permission strings are `domain:verb` (`gateway:admin`, `users:admin`, `audit:read`, ...); a role
holding `*` may do anything. Owners may always read and change their own rows.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.roles import SUPERUSER
from app.api.context import Context
from app.api.errors import BadUserInput, Forbidden


def parse_id(value: str, field: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise BadUserInput(f"{field} is not a valid id", field=field) from None


async def has_permission(ctx: Context, permission: str, session: AsyncSession | None = None) -> bool:
    granted = await ctx.permissions(session)
    return SUPERUSER in granted or permission in granted


async def require_permission(
    ctx: Context, permission: str, *, owner_id: uuid.UUID | None = None, session: AsyncSession | None = None
) -> uuid.UUID:
    """The caller's user id, if they hold `permission` or own the row (`owner_id`); else FORBIDDEN."""
    user_id = await ctx.require_user_id(session)
    if owner_id is not None and owner_id == user_id:
        return user_id
    if not await has_permission(ctx, permission, session):
        raise Forbidden(f"this needs the `{permission}` permission", permission=permission)
    return user_id


async def require_can_grant(ctx: Context, permissions: frozenset[str] | set[str]) -> uuid.UUID:
    """Nobody hands out more than they hold: granting `*` needs `*`, any other permission needs
    it too (and `users:admin` to grant anything at all)."""
    user_id = await require_permission(ctx, "users:admin")
    held = await ctx.permissions()
    if SUPERUSER in held:
        return user_id
    beyond = set(permissions) - set(held)
    if beyond:
        raise Forbidden(f"you cannot grant permissions you do not hold: {', '.join(sorted(beyond))}")
    return user_id
