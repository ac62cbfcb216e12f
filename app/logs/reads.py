"""Reads of the logs product that other products' types use too (their resolvers' list fields):
kept here, below every resolvers module, so that imports point one way (resolvers -> types -> reads ->
service)."""

from __future__ import annotations

import uuid

from app.accounts import authentication
from app.api.context import Info
from app.api.pagination import (
    Connection,
    build_connection,
    decode_int_cursor,
    page_size,
    paginate,
    paginate_both_ways,
)
from app.api.scalars import utc
from app.api.validation import parse_id
from app.logs import service
from app.logs.access import require_project_access
from app.logs.types import (
    LOG_CURSOR,
    Log,
    LogFilter,
    Project,
    log_cursor,
)

PROJECT_CURSOR = "project"


def filter_spec(filter: LogFilter | None) -> service.LogFilterSpec:
    if filter is None:
        return service.LogFilterSpec()
    return service.LogFilterSpec(
        level=filter.level.value if filter.level else None,
        since=utc(filter.since),  # a time without an offset is taken as UTC
        until=utc(filter.until),
        search=filter.search or None,
        api_key_id=parse_id(filter.api_key_id, "apiKeyId") if filter.api_key_id else None,
    )


async def logs_page(
    info: Info,
    *,
    project_id: uuid.UUID,
    filter: LogFilter | None,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
) -> Connection[Log]:
    ctx = info.context
    await require_project_access(ctx, ctx.session, project_id)
    page_size(first, last)  # a bad page size is refused before a bad filter, as ever
    spec = filter_spec(filter)
    return await paginate_both_ways(
        info,
        first=first,
        after=after,
        last=last,
        before=before,
        kind=LOG_CURSOR,
        position=decode_int_cursor,
        fetch=lambda after_seq, before_seq, limit, backwards, count: service.list_logs(
            ctx.session,
            project_id=project_id,
            spec=spec,
            after=after_seq,
            before=before_seq,
            limit=limit,
            backwards=backwards,
            count=count,
        ),
        to_node=Log.from_model,
        cursor_of=lambda row: log_cursor(row.seq),
    )


async def projects_of(info: Info, *, owner_id: uuid.UUID, first: int | None, after: str | None) -> Connection[Project]:
    ctx = info.context
    if await authentication.require_user_id(ctx) != owner_id:
        return build_connection([], size=0, cursor_of=str, to_node=Project.from_model, total_count=0)
    return await paginate(
        info,
        first=first,
        after=after,
        kind=PROJECT_CURSOR,
        to_node=Project.from_model,
        fetch=lambda position, limit, count: service.list_projects(
            ctx.session, owner_id=owner_id, after=position, limit=limit
        ),
    )
