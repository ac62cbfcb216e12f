"""Who may do what. Every resolver goes through these checks; issue #3 extends them with roles."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.api.context import Context
from app.api.errors import BadUserInput, Forbidden


def parse_id(value: str, field: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise BadUserInput(f"{field} is not a valid id", field=field) from None


async def require_project_access(ctx: Context, session: AsyncSession, project_id: uuid.UUID) -> None:
    """The project's owner, or an API key of that very project, may read and write its logs."""
    from app.logs import service

    creds = ctx.credentials
    if creds is not None and creds.scheme == "apikey":
        key = await service.authenticate_api_key(session, secret=creds.value)
        if key.project_id != project_id:
            raise Forbidden("this API key belongs to another project")
        return
    user_id = await ctx.require_user_id()
    project = await service.get_project_or_raise(session, project_id=project_id)
    if project.owner_id != user_id:
        raise Forbidden("only the project's owner may do this")
