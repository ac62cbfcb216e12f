"""Reads of the workflows product that other products' types use too (their resolvers' list fields):
kept here, below every resolvers module, so that imports point one way (resolvers -> types -> reads ->
service)."""

from __future__ import annotations

import dataclasses

from app.accounts import authentication
from app.accounts.permissions import permits
from app.api.context import Info
from app.api.pagination import paginate
from app.workflows.service import workflows
from app.workflows.types import (
    WORKFLOW_STAFF,
    Workflow,
    WorkflowConnection,
)

WORKFLOW_CURSOR = "workflow"


async def workflows_page(
    info: Info, spec: workflows.WorkflowFilter, *, first: int | None, after: str | None
) -> WorkflowConnection:
    """A page of the workflows `spec` selects among those the caller may see."""
    ctx = info.context
    user_id = await authentication.require_user_id(ctx, ctx.session)
    staff = await permits(ctx, WORKFLOW_STAFF, None)
    spec = dataclasses.replace(spec, visible_to=None if staff else user_id)
    page = await paginate(
        info,
        first=first,
        after=after,
        kind=WORKFLOW_CURSOR,
        fetch=lambda position, limit, count: workflows.list_workflows(
            ctx.session, spec=spec, before=position, limit=limit, count=count
        ),
        to_node=Workflow.from_model,
    )
    return page  # type: ignore[return-value]  # the same fields, under the connection's own name
