"""Reading the audit trail (audit:read). Nothing here, or anywhere, changes it."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import strawberry

from app.accounts.permissions import require_permission
from app.api.compiled import declare as c
from app.api.context import Info
from app.api.errors import BadUserInput
from app.api.pagination import (
    Connection,
    paginate,
)
from app.api.scalars import utc
from app.api.validation import json_object, parse_id
from app.audit import service
from app.audit.recorder import LODGE_ACTIONS, audited
from app.audit.types import AuditEventInput, AuditLog, AuditLogFilter, AuditStat, RecordedAuditEvent

AUDIT_CURSOR = "audit"
READ = "audit:read"
WRITE = "audit:write"  # apps recording their own events
ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
RESOURCE_TYPE = re.compile(r"[a-z][a-z0-9_]*")


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


def _filter_param(value: dict[str, Any]) -> str:
    """The `filter` argument (graphql-core's coerced input object) as one JSON parameter for the
    compiled statement, through `_spec`, as the resolver reads it (a bad userId raises there)."""
    spec = _spec(
        AuditLogFilter(
            user_id=value.get("userId"),
            action=value.get("action"),
            resource_type=value.get("resourceType"),
            resource_id=value.get("resourceId"),
            since=value.get("since"),
            until=value.get("until"),
            success=value.get("success"),
        )
    )
    return json.dumps(
        {
            "userId": str(spec.user_id) if spec.user_id is not None else None,
            "action": spec.action,
            "resourceType": spec.resource_type,
            "resourceId": spec.resource_id,
            "since": spec.since.isoformat() if spec.since is not None else None,
            "until": spec.until.isoformat() if spec.until is not None else None,
            "success": spec.success,
        }
    )


def _filter_sql(t: str, param: Any) -> str:
    """`AuditFilterSpec.clauses` over the JSON parameter: a member that is null filters nothing."""
    f = f"({param}::text::jsonb)"

    def test(name: str, condition: str) -> str:
        return f"({f}->>'{name}' IS NULL OR {condition})"

    return " AND ".join(
        (
            test("userId", f"{t}.user_id = ({f}->>'userId')::uuid"),
            test("action", f"{t}.action = {f}->>'action'"),
            test("resourceType", f"{t}.resource_type = {f}->>'resourceType'"),
            test("resourceId", f"{t}.resource_id = {f}->>'resourceId'"),
            test("since", f"{t}.created_at >= ({f}->>'since')::timestamptz"),
            test("until", f"{t}.created_at < ({f}->>'until')::timestamptz"),
            test("success", f"{t}.success = ({f}->>'success')::boolean"),
        )
    )


# audit:read only: anyone else, API keys included, bails to the resolver's UNAUTHENTICATED or
# FORBIDDEN. Query.auditLogStats (counts and averages by action) keeps its resolver.
c.root(
    "Query.auditLogs",
    c.Connection(
        "AuditLog",
        order=c.Keyset("created_at", "id", AUDIT_CURSOR),
        filters={"filter": c.Filter(_filter_sql, bind=_filter_param)},
        guard=c.Rule(permissions=(READ,)),
    ),
)


@strawberry.type
class AuditQuery:
    @strawberry.field(description="Newest first (audit:read).")
    async def audit_logs(
        self, info: Info, filter: AuditLogFilter | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[AuditLog]:
        await require_permission(info.context, READ)
        return await paginate(
            info,
            first=first,
            after=after,
            kind=AUDIT_CURSOR,
            to_node=AuditLog.from_model,
            fetch=lambda position, limit, count: service.list_audit_logs(
                info.context.session, spec=_spec(filter), before=position, limit=limit, count=count
            ),
        )

    @strawberry.field(description="Counts and success rates by action, computed in PostgreSQL (audit:read).")
    async def audit_log_stats(
        self, info: Info, since: datetime | None = None, until: datetime | None = None
    ) -> list[AuditStat]:
        await require_permission(info.context, READ)
        stats = await service.audit_stats(info.context.session, since=utc(since), until=utc(until))
        return [AuditStat(action=s.action, count=s.count, success_rate=s.success_rate) for s in stats]


def _recorded(event: RecordedAuditEvent) -> tuple[str, str, str | None, dict[str, Any] | None]:
    return event.action, event.resource_type or "app", event.resource_id, event.details  # type: ignore[return-value]


@strawberry.type
class AuditMutation:
    @strawberry.mutation(
        description="Record an app's own event in the audit trail (`audit:write`): one row, with the caller, "
        "address and request like Lodge's own; immutable like them.",
        extensions=[audited("audit.record", "app", describe=_recorded)],
    )
    async def record_audit_event(self, info: Info, input: AuditEventInput) -> RecordedAuditEvent:
        await require_permission(info.context, WRITE)
        if ACTION.fullmatch(input.action) is None:
            raise BadUserInput("action must read `noun.verb`, lowercase letters, digits and _", field="action")
        if input.action in LODGE_ACTIONS:
            raise BadUserInput(f"`{input.action}` is one of Lodge's own actions", field="action")
        if input.resource_type is not None and RESOURCE_TYPE.fullmatch(input.resource_type) is None:
            raise BadUserInput("resourceType must be lowercase letters, digits and _", field="resourceType")
        details = json_object(input.details, "details") if input.details is not None else None
        return RecordedAuditEvent(
            action=input.action,
            resource_type=input.resource_type,
            resource_id=input.resource_id,
            details=details,  # type: ignore[arg-type]  # a JSON object
        )
