"""Who may do what: one check used by every resolver of every domain.

Permission strings are `domain:verb` (`gateway:admin`, `users:admin`, `audit:read`, ...); a role
holding `*` may do anything. Owners may always read and change their own rows.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import authentication
from app.accounts.roles import SUPERUSER
from app.api.compiled.declare import Rule
from app.api.context import Context
from app.api.errors import Forbidden


async def has_permission(ctx: Context, permission: str, session: AsyncSession | None = None) -> bool:
    granted = await authentication.permissions(ctx, session)
    return SUPERUSER in granted or permission in granted


async def require_permission(
    ctx: Context, permission: str, *, owner_id: uuid.UUID | None = None, session: AsyncSession | None = None
) -> uuid.UUID:
    """The caller's user id, if they hold `permission` or own the row (`owner_id`); else FORBIDDEN."""
    user_id = await authentication.require_user_id(ctx, session)
    if owner_id is not None and owner_id == user_id:
        return user_id
    if not await has_permission(ctx, permission, session):
        raise Forbidden(f"this needs the `{permission}` permission", permission=permission)
    return user_id


async def require_can_grant(ctx: Context, permissions: frozenset[str] | set[str]) -> uuid.UUID:
    """Nobody hands out more than they hold: granting `*` needs `*`, any other permission needs
    it too (and `users:admin` to grant anything at all)."""
    user_id = await require_permission(ctx, "users:admin")
    held = await authentication.permissions(ctx)
    if SUPERUSER in held:
        return user_id
    beyond = set(permissions) - set(held)
    if beyond:
        raise Forbidden(f"you cannot grant permissions you do not hold: {', '.join(sorted(beyond))}")
    return user_id


async def permits(ctx: Context, rule: Rule, owner_id: uuid.UUID | None, *, public: bool = False) -> bool:
    """`rule` in Python, for resolvers (its SQL twin is `Rule.sql`; a `custom` part is the
    resolver's own to check). Anonymous callers and API keys are neither owners nor holders."""
    if rule.public is not None and public:
        return True
    user_id = await authentication.user_id(ctx, ctx.session)
    if user_id is None:
        return False
    if rule.owner is not None and owner_id == user_id:
        return True
    for permission in rule.permissions:
        if await has_permission(ctx, permission, ctx.session):
            return True
    return False
