"""Who may read a project's logs and what an API key may do: the logs product's own access rules
(app/accounts/permissions.py keeps the rules every product shares)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import authentication
from app.accounts.permissions import require_permission
from app.api.context import Context
from app.api.errors import Forbidden
from app.logs import keys, service
from app.logs.models import READ, ApiKey, key_can


def require_scope(key: ApiKey, scope: str) -> None:
    """FORBIDDEN unless the API key was given `scope` (or ADMIN)."""
    if not key_can(key, scope):
        raise Forbidden(f"this API key lacks the {scope} scope", scope=scope)


async def require_project_access(ctx: Context, session: AsyncSession, project_id: uuid.UUID) -> None:
    """The project's owner, `projects:admin`, or an API key of that very project."""
    creds = ctx.credentials
    if creds is not None and creds.scheme == "apikey":
        key = await keys.api_key_now(ctx, session)
        if key.project_id != project_id:
            raise Forbidden("this API key belongs to another project")
        require_scope(key, READ)
        return
    await authentication.require_user_id(ctx, session)
    project = await service.get_project_or_raise(session, project_id=project_id)
    await require_permission(ctx, "projects:admin", owner_id=project.owner_id, session=session)
