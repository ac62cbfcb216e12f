"""Reading the audit trail (audit:read). Nothing here, or anywhere, changes it."""

from __future__ import annotations

from datetime import datetime

import strawberry

from app.api.context import Info
from app.api.pagination import (
    Connection,
    build_connection,
    decode_time_uuid_cursor,
    page_size,
    time_cursor,
    wants_total,
)
from app.api.permissions import parse_id, require_permission
from app.api.scalars import utc
from app.audit import service
from app.audit.types import AuditLog, AuditLogFilter, AuditStat

AUDIT_CURSOR = "audit"


def _spec(filter: AuditLogFilter | None) -> service.AuditFilterSpec:
    if filter is None:
        return service.AuditFilterSpec()
    return service.AuditFilterSpec(
        user_id=parse_id(filter.user_id, "userId") if filter.user_id else None,
        action=filter.action,
        resource_type=filter.resource_type,
        resource_id=filter.resource_id,
        since=utc(filter.since),
        until=utc(filter.until),
        success=filter.success,
    )


@strawberry.type
class AuditQuery:
    @strawberry.field(description="Newest first (audit:read).")  # type: ignore[untyped-decorator]
    async def audit_logs(
        self, info: Info, filter: AuditLogFilter | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[AuditLog]:
        await require_permission(info.context, "audit:read")
        size = page_size(first)
        rows, total = await service.list_audit_logs(
            info.context.session,
            spec=_spec(filter),
            before=decode_time_uuid_cursor(AUDIT_CURSOR, after),
            limit=size,
            count=wants_total(info),
        )
        return build_connection(
            rows,
            size=size,
            cursor_of=lambda row: time_cursor(AUDIT_CURSOR, row.created_at, row.id),
            to_node=AuditLog.from_model,
            total_count=total,
            has_more_before=after is not None,
        )

    @strawberry.field(description="Counts and success rates by action, computed in PostgreSQL (audit:read).")  # type: ignore[untyped-decorator]
    async def audit_log_stats(
        self, info: Info, since: datetime | None = None, until: datetime | None = None
    ) -> list[AuditStat]:
        await require_permission(info.context, "audit:read")
        stats = await service.audit_stats(info.context.session, since=utc(since), until=utc(until))
        return [AuditStat(action=s.action, count=s.count, success_rate=s.success_rate) for s in stats]
