"""Who may see and change workflows, executions and files.

A workflow is its owner's: they, and holders of `workflows:write`, change it and see all its
executions. A public workflow can be read and run by any signed-in user, who then sees their own
executions of it. An execution is reported on (status, logs) by whoever started it, the
workflow's owner, or `workflows:write` (a runner service account).
"""

from __future__ import annotations

import uuid

from app.accounts import authentication
from app.accounts.permissions import has_permission
from app.api.context import Info
from app.api.errors import Forbidden
from app.workflows import models

WRITE = "workflows:write"


async def is_staff(info: Info) -> bool:
    return await has_permission(info.context, WRITE, info.context.session)


async def can_write(info: Info, workflow: models.Workflow) -> bool:
    user_id = await authentication.require_user_id(info.context, info.context.session)
    return workflow.user_id == user_id or await is_staff(info)


async def require_write(info: Info, workflow: models.Workflow) -> uuid.UUID:
    user_id = await authentication.require_user_id(info.context, info.context.session)
    if not await can_write(info, workflow):
        raise Forbidden("only the workflow's owner (or `workflows:write`) can change it")
    return user_id


async def can_read(info: Info, workflow: models.Workflow) -> bool:
    return workflow.is_public or await can_write(info, workflow)


async def require_read(info: Info, workflow: models.Workflow) -> uuid.UUID:
    user_id = await authentication.require_user_id(info.context, info.context.session)
    if not await can_read(info, workflow):
        raise Forbidden("this workflow is private")
    return user_id


async def can_report(info: Info, execution: models.Execution, workflow: models.Workflow) -> bool:
    user_id = await authentication.require_user_id(info.context, info.context.session)
    return execution.user_id == user_id or await can_write(info, workflow)
