"""GraphQL types of the gateway domain."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated, Any, TypeVar

import strawberry
from sqlmodel import SQLModel

from app.accounts.permissions import permits, require_permission
from app.api.compiled import declare as c
from app.api.context import Info
from app.api.lengths import max_length
from app.api.scalars import utc
from app.api.validation import MAX_DESCRIPTION, MAX_EMAIL, MAX_NAME
from app.gateway import models
from app.logs import keys
from app.logs import models as logs_models
from app.logs.types import ApiKey, Project, load_project

ADMIN = "gateway:admin"  # the permission for platform objects: clients, services, quotas
# Who administers the platform's objects (a client's email, its projects): `gateway:admin` holders.
GATEWAY_ADMIN = c.Rule(permissions=(ADMIN,))

ProjectType = Annotated["Project", strawberry.lazy("app.logs.types")]
ApiKeyType = Annotated["ApiKey", strawberry.lazy("app.logs.types")]


M = TypeVar("M", bound=SQLModel)


async def load(info: Info, model: type[M], key: Any) -> M:
    row = await info.context.loaders.by_id(model).load(key)
    assert row is not None  # followed along a NOT NULL foreign key
    return row


async def _hidden_from_key(info: Info, environment_id: uuid.UUID) -> bool:
    """An environment key sees inside its own environment only."""
    confined = await keys.key_environment(info.context)
    return confined is not None and confined != environment_id


# Compiled reads (docs/compiled-reads.md). `projects` raises FORBIDDEN for others (a guard).
@c.table(
    models.Client,
    email=c.Masked(GATEWAY_ADMIN),
    projects=c.Children(
        "Project", child_key="client_id", order=lambda t: f"{t}.created_at, {t}.id", guard=GATEWAY_ADMIN
    ),
)
@strawberry.type(name="Client")
class Client:
    id: strawberry.ID
    name: str
    created_at: datetime
    updated_at: datetime
    client_id: strawberry.Private[uuid.UUID]
    stored_email: strawberry.Private[str | None]

    @classmethod
    def from_model(cls, row: models.Client) -> Client:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            stored_email=row.email,
            created_at=utc(row.created_at),
            updated_at=utc(row.updated_at),
            client_id=row.id,
        )

    @strawberry.field(description="Shown to `gateway:admin` only (a project's readers see its client's name).")
    async def email(self, info: Info) -> str | None:
        return self.stored_email if await permits(info.context, GATEWAY_ADMIN, None) else None

    @strawberry.field
    async def projects(self, info: Info) -> list[ProjectType]:
        await require_permission(info.context, "gateway:admin")
        rows = await info.context.loaders.children(logs_models.Project, "client_id").load(self.client_id)
        return [Project.from_model(row) for row in rows]


@c.table(models.Service)
@strawberry.type(name="Service")
class Service:
    id: strawberry.ID
    name: str
    description: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, row: models.Service) -> Service:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            description=row.description,
            created_at=utc(row.created_at),
            updated_at=utc(row.updated_at),
        )


# `apiKeys` and `services` are hidden from an API key of another environment (c.key_may_see).
@c.table(
    models.Environment,
    project=c.ManyToOne("Project", key="project_id"),
    api_keys=c.Children(
        "ApiKey",
        child_key="environment_id",
        order=lambda t: f"{t}.created_at, {t}.id",
        visible=c.key_may_see("id"),
    ),
    services=c.Children(
        "EnvironmentService",
        child_key="environment_id",
        # Loaders.children: creation order, then the primary key (environment_id, service_id).
        order=lambda t: f"{t}.created_at, {t}.environment_id, {t}.service_id",
        visible=c.key_may_see("id"),
    ),
)
@strawberry.type(name="Environment")
class Environment:
    id: strawberry.ID
    name: str
    created_at: datetime
    updated_at: datetime
    row: strawberry.Private[models.Environment]

    @classmethod
    def from_model(cls, row: models.Environment) -> Environment:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            created_at=utc(row.created_at),
            updated_at=utc(row.updated_at),
            row=row,
        )

    @strawberry.field
    async def project(self, info: Info) -> ProjectType:
        return await load_project(info, self.row.project_id)

    @strawberry.field
    async def api_keys(self, info: Info) -> list[ApiKeyType]:
        if await _hidden_from_key(info, self.row.id):
            return []
        rows = await info.context.loaders.children(logs_models.ApiKey, "environment_id").load(self.row.id)
        return [ApiKey.from_model(row) for row in rows]

    @strawberry.field
    async def services(self, info: Info) -> list[EnvironmentService]:
        if await _hidden_from_key(info, self.row.id):
            return []
        rows = await info.context.loaders.children(models.EnvironmentService, "environment_id").load(self.row.id)
        return [EnvironmentService.from_model(row) for row in rows]


@c.table(
    models.EnvironmentService,
    environment=c.ManyToOne("Environment", key="environment_id"),
    service=c.ManyToOne("Service", key="service_id"),
)
@strawberry.type(name="EnvironmentService")
class EnvironmentService:
    available_requests: int
    reserved_requests: int
    row: strawberry.Private[models.EnvironmentService]

    @classmethod
    def from_model(cls, row: models.EnvironmentService) -> EnvironmentService:
        return cls(available_requests=row.available_requests, reserved_requests=row.reserved_requests, row=row)

    @strawberry.field
    async def environment(self, info: Info) -> Environment:
        return Environment.from_model(await load(info, models.Environment, self.row.environment_id))

    @strawberry.field
    async def service(self, info: Info) -> Service:
        return Service.from_model(await load(info, models.Service, self.row.service_id))


@strawberry.enum(description="Whether the gateway let a request through.")
class RequestOutcome(enum.Enum):
    ACCEPTED = models.ACCEPTED
    REFUSED = models.REFUSED


@strawberry.type(name="RequestLog")
class RequestLog:
    id: strawberry.ID
    endpoint: str | None
    status: str
    outcome: RequestOutcome
    reason: str | None = strawberry.field(
        description="Why a refused request was refused: the error code its caller got "
        "(QUOTA_EXHAUSTED, FORBIDDEN for a service not enabled here, NOT_FOUND for a step of no running flow)."
    )
    created_at: datetime
    row: strawberry.Private[models.RequestLog]

    @classmethod
    def from_model(cls, row: models.RequestLog) -> RequestLog:
        return cls(
            id=strawberry.ID(row.id),
            endpoint=row.endpoint,
            status=row.status,
            outcome=RequestOutcome(row.outcome),
            reason=row.reason,
            created_at=utc(row.created_at),
            row=row,
        )

    @strawberry.field
    async def api_key(self, info: Info) -> ApiKeyType:
        return ApiKey.from_model(await load(info, logs_models.ApiKey, self.row.api_key_id))

    @strawberry.field
    async def environment(self, info: Info) -> Environment:
        return Environment.from_model(await load(info, models.Environment, self.row.environment_id))

    @strawberry.field
    async def service(self, info: Info) -> Service:
        return Service.from_model(await load(info, models.Service, self.row.service_id))

    @strawberry.field(description="The first request of this request's flow, if it is a step of one.")
    async def start_point(self, info: Info) -> RequestLog | None:
        if self.row.start_point is None:
            return None
        start = await info.context.loaders.by_id(models.RequestLog).load(self.row.start_point)  # type: ignore[arg-type]
        return RequestLog.from_model(start) if start else None

    @strawberry.field(description="The steps of the flow this request starts, in order (refused ones too).")
    async def steps(self, info: Info) -> list[RequestLog]:
        rows = await info.context.loaders.children(models.RequestLog, "start_point").load(self.row.id)  # type: ignore[arg-type]
        return [RequestLog.from_model(row) for row in rows]


@strawberry.type(name="Reservation")
class Reservation:
    id: strawberry.ID
    amount: int
    expires_at: datetime
    created_at: datetime
    row: strawberry.Private[models.Reservation]

    @classmethod
    def from_model(cls, row: models.Reservation) -> Reservation:
        return cls(
            id=strawberry.ID(row.id),
            amount=row.amount,
            expires_at=utc(row.expires_at),
            created_at=utc(row.created_at),
            row=row,
        )

    @strawberry.field
    async def environment(self, info: Info) -> Environment:
        return Environment.from_model(await load(info, models.Environment, self.row.environment_id))

    @strawberry.field
    async def service(self, info: Info) -> Service:
        return Service.from_model(await load(info, models.Service, self.row.service_id))

    @strawberry.field
    async def start_point(self, info: Info) -> RequestLog:
        return RequestLog.from_model(await load(info, models.RequestLog, self.row.start_point))


@strawberry.type
class FlowStart:
    request_log: RequestLog
    reservation: Reservation


@strawberry.input
class ClientInput:
    name: str = strawberry.field(metadata=max_length(MAX_NAME))
    email: str | None = strawberry.field(default=None, metadata=max_length(MAX_EMAIL))


@strawberry.input(description="What is given changes; an `email` given as null clears it.")
class ClientUpdate:
    name: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_NAME))
    email: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_EMAIL))


@strawberry.input(description="What is given changes; a `description` given as null clears it.")
class ServiceUpdate:
    name: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_NAME))
    description: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_DESCRIPTION))


@strawberry.input
class ServiceInput:
    name: str = strawberry.field(metadata=max_length(MAX_NAME))
    description: str | None = strawberry.field(default=None, metadata=max_length(MAX_DESCRIPTION))
