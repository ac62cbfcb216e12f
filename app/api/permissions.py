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
from app.logs.models import READ, ApiKey, key_can


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


def require_scope(key: ApiKey, scope: str) -> None:
    """FORBIDDEN unless the API key was given `scope` (or ADMIN)."""
    if not key_can(key, scope):
        raise Forbidden(f"this API key lacks the {scope} scope", scope=scope)


async def require_project_access(ctx: Context, session: AsyncSession, project_id: uuid.UUID) -> None:
    """The project's owner, `projects:admin`, or an API key of that very project."""
    from app.logs import service

    creds = ctx.credentials
    if creds is not None and creds.scheme == "apikey":
        key = await ctx.api_key_now(session)
        if key.project_id != project_id:
            raise Forbidden("this API key belongs to another project")
        require_scope(key, READ)
        return
    await ctx.require_user_id(session)
    project = await service.get_project_or_raise(session, project_id=project_id)
    await require_permission(ctx, "projects:admin", owner_id=project.owner_id, session=session)


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
