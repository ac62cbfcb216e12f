"""GraphQL types of the audit trail."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from app.accounts.types import load_user
from app.api.compiled import declare as c
from app.api.context import Info
from app.api.lengths import max_length
from app.api.scalars import JSON, utc
from app.api.validation import MAX_NAME
from app.audit import models

if TYPE_CHECKING:
    from app.accounts.types import User


# Compiled reads (docs/compiled-reads.md): every field; `ipAddress` (inet) bails to the resolver
# for the addresses Python prints otherwise than PostgreSQL (a mask, an IPv6 dotted tail).
@c.table(models.AuditLog, user=c.ManyToOne("User", key="user_id"), timestamp=c.Col("created_at"))
@strawberry.type(name="AuditLog")
class AuditLog:
    id: strawberry.ID
    action: str
    resource_type: str | None
    resource_id: str | None
    details: JSON | None
    ip_address: str | None
    user_agent: str | None
    session_id: str | None
    request_id: str | None
    timestamp: datetime
    success: bool
    error_message: str | None
    user_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def from_model(cls, row: models.AuditLog) -> AuditLog:
        return cls(
            id=strawberry.ID(str(row.id)),
            action=row.action,
            resource_type=row.resource_type,
            resource_id=row.resource_id,
            details=row.details,
            ip_address=str(row.ip_address) if row.ip_address is not None else None,
            user_agent=row.user_agent,
            session_id=row.session_id,
            request_id=row.request_id,
            timestamp=utc(row.created_at),
            success=row.success,
            error_message=row.error_message,
            user_id=row.user_id,
        )

    @strawberry.field
    async def user(self, info: Info) -> Annotated[User, strawberry.lazy("app.accounts.types")] | None:
        return await load_user(info, self.user_id)


@strawberry.type
class AuditStat:
    action: str
    count: int
    success_rate: float


@strawberry.input
class AuditLogFilter:
    user_id: strawberry.ID | None = None
    action: str | None = strawberry.field(default=None, metadata=max_length(MAX_NAME))
    resource_type: str | None = strawberry.field(default=None, metadata=max_length(MAX_NAME))
    resource_id: str | None = strawberry.field(default=None, metadata=max_length(MAX_NAME))
    since: datetime | None = None
    until: datetime | None = None
    success: bool | None = None


@strawberry.input(description="An app's own audit event (`recordAuditEvent`).")
class AuditEventInput:
    action: Annotated[str, strawberry.argument(metadata=max_length(MAX_NAME))] = strawberry.field(
        description="`noun.verb`, lowercase (`order.refund`, `bot.command_run`); not one of Lodge's own actions."
    )
    resource_type: Annotated[str | None, strawberry.argument(metadata=max_length(MAX_NAME))] = None
    resource_id: Annotated[str | None, strawberry.argument(metadata=max_length(MAX_NAME))] = None
    details: JSON | None = strawberry.field(default=None, description="A JSON object, bounded like every JSON input.")


@strawberry.type(description="What `recordAuditEvent` wrote, with the caller, address and request of the call.")
class RecordedAuditEvent:
    action: str
    resource_type: str | None
    resource_id: str | None
    details: JSON | None
