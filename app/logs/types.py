"""GraphQL types of the logs domain."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from app.accounts.types import load_owner
from app.api.compiled import declare as c
from app.api.context import Info
from app.api.inputs import built_by
from app.api.lengths import max_length
from app.api.pagination import Connection, encode_cursor
from app.api.scalars import JSON, utc
from app.api.validation import MAX_DESCRIPTION, MAX_NAME, MAX_SEARCH
from app.api.visibility import VIEWER_INDEPENDENT
from app.gateway import models as gateway_models
from app.logs import keys, models, service

if TYPE_CHECKING:
    from app.accounts.types import User
    from app.gateway.types import Client, Environment, Service

LOG_CURSOR = "log"


@strawberry.enum
class LogLevel(Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"


def log_cursor(seq: int) -> str:
    return encode_cursor(LOG_CURSOR, seq)


async def load_project(info: Info, project_id: uuid.UUID) -> Project:
    row = await info.context.loaders.by_id(models.Project).load(project_id)
    assert row is not None  # a NOT NULL foreign key
    return Project.from_model(row)


# Who reads a project's logs (require_project_access): its owner, projects:admin, or one of its
# own API keys.
PROJECT_ACCESS = c.Rule(
    owner="owner_id", permissions=("projects:admin",), custom=lambda row, viewer: f"{viewer.key_project} = {row}.id"
)


# Compiled reads (docs/compiled-reads.md). A declaration must hold for every caller, since sharing
# live renderings trusts it too (app/api/visibility.py): an API key confined to one environment sees
# that environment and its keys only (c.key_may_see). `logs` is declared with Query.logs
# (app/logs/resolvers.py).
@c.table(
    models.Project,
    owner=c.ManyToOne("User", key="owner_id"),  # non-null: a missing row bails (the resolver asserts)
    api_keys=c.Children(
        "ApiKey",
        child_key="project_id",
        order=lambda t: f"{t}.created_at, {t}.id",
        filter=c.key_may_see("environment_id"),
    ),
    client=c.ManyToOne("Client", key="client_id"),
    environments=c.Children(
        "Environment", child_key="project_id", order=lambda t: f"{t}.created_at, {t}.id", filter=c.key_may_see("id")
    ),
    services=c.Children("Service", via=("project_services", "project_id", "service_id"), order=lambda t: f"{t}.name"),
)
@strawberry.type(name="Project")
class Project:
    id: strawberry.ID
    name: str
    description: str | None
    created_at: datetime
    updated_at: datetime
    log_retention_days: int | None = strawberry.field(
        description="Logs stored longer ago than this many days are deleted; null keeps them for good."
    )
    row: strawberry.Private[models.Project]

    @classmethod
    def from_model(cls, row: models.Project) -> Project:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            description=row.description,
            created_at=utc(row.created_at),
            updated_at=utc(row.updated_at),
            log_retention_days=row.log_retention_days,
            row=row,
        )

    @strawberry.field
    async def owner(self, info: Info) -> Annotated[User, strawberry.lazy("app.accounts.types")]:
        return await load_owner(info, self.row.owner_id)

    @strawberry.field
    async def api_keys(self, info: Info) -> list[ApiKey]:
        rows = await info.context.loaders.children(models.ApiKey, "project_id").load(self.row.id)
        # An environment key sees its own environment's keys, never its siblings'.
        if (confined := await keys.key_environment(info.context)) is not None:
            rows = [row for row in rows if row.environment_id == confined]
        return [ApiKey.from_model(row) for row in rows]

    @strawberry.field
    async def client(self, info: Info) -> Annotated[Client, strawberry.lazy("app.gateway.types")] | None:
        from app.gateway.types import Client

        if self.row.client_id is None:
            return None
        row = await info.context.loaders.by_id(gateway_models.Client).load(self.row.client_id)
        return Client.from_model(row) if row else None

    @strawberry.field
    async def environments(self, info: Info) -> list[Annotated[Environment, strawberry.lazy("app.gateway.types")]]:
        from app.gateway.types import Environment

        rows = await info.context.loaders.children(gateway_models.Environment, "project_id").load(self.row.id)
        if (confined := await keys.key_environment(info.context)) is not None:
            rows = [row for row in rows if row.id == confined]
        return [Environment.from_model(row) for row in rows]

    @strawberry.field
    async def services(self, info: Info) -> list[Annotated[Service, strawberry.lazy("app.gateway.types")]]:
        from app.gateway.types import Service

        link = gateway_models.ProjectService
        rows = await info.context.loaders.through(
            link, "project_id", "service_id", gateway_models.Service, order="name"
        ).load(self.row.id)
        return [Service.from_model(row) for row in rows]

    @strawberry.field
    async def logs(
        self,
        info: Info,
        filter: LogFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Log]:
        from app.logs.reads import logs_page

        return await logs_page(
            info, project_id=self.row.id, filter=filter, first=first, after=after, last=last, before=before
        )


@strawberry.enum(description="What an API key may do.")
class ApiKeyScope(enum.Enum):
    INGEST = strawberry.enum_value(models.INGEST, description="store logs (ingestLog(s), POST /ingest)")
    READ = strawberry.enum_value(models.READ, description="read the project and its logs, and tail them")
    ADMIN = strawberry.enum_value(models.ADMIN, description="both, and all a key could do before scopes")


@c.table(
    models.ApiKey,
    environment=c.ManyToOne("Environment", key="environment_id"),
    project=c.ManyToOne("Project", key="project_id"),
)
@strawberry.type(name="ApiKey")
class ApiKey:
    id: strawberry.ID
    label: str
    description: str | None
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    scopes: list[ApiKeyScope]
    project_id: strawberry.Private[uuid.UUID]
    environment_id: strawberry.Private[uuid.UUID | None]

    @classmethod
    def from_model(cls, row: models.ApiKey) -> ApiKey:
        return cls(
            id=strawberry.ID(str(row.id)),
            label=row.label,
            description=row.description,
            prefix=row.prefix,
            created_at=utc(row.created_at),
            last_used_at=utc(row.last_used_at),
            expires_at=utc(row.expires_at),
            revoked_at=utc(row.revoked_at),
            scopes=[ApiKeyScope(scope) for scope in row.scopes],
            project_id=row.project_id,
            environment_id=row.environment_id,
        )

    @strawberry.field
    async def environment(self, info: Info) -> Annotated[Environment, strawberry.lazy("app.gateway.types")] | None:
        from app.gateway.types import Environment

        if self.environment_id is None:
            return None
        row = await info.context.loaders.by_id(gateway_models.Environment).load(self.environment_id)
        return Environment.from_model(row) if row else None

    @strawberry.field
    async def project(self, info: Info) -> Project:
        return await load_project(info, self.project_id)


@strawberry.type
class CreatedApiKey:
    api_key: ApiKey
    secret: str = strawberry.field(description="Shown once; Lodge keeps only its SHA-256.")


@c.table(
    models.Log,
    cursor=c.Expr(lambda t: f"lodge_cursor({c.literal(LOG_CURSOR)}, {t}.seq::text)"),
    project=c.ManyToOne("Project", key="project_id"),
    api_key=c.ManyToOne("ApiKey", key="api_key_id"),
)
@strawberry.type(name="Log")
class Log:
    id: strawberry.ID
    log: str
    level: LogLevel
    attributes: JSON | None
    occurred_at: datetime | None = strawberry.field(
        description="When the event happened, as its sender said (null if it did not); createdAt is when Lodge "
        "stored it."
    )
    created_at: datetime
    cursor: str
    project_id: strawberry.Private[uuid.UUID]
    api_key_id: strawberry.Private[uuid.UUID | None]
    row: strawberry.Private[models.Log]  # a live event's row, bound by its compiled rendering

    @classmethod
    def from_model(cls, row: models.Log) -> Log:
        return cls(
            id=strawberry.ID(str(row.id)),
            log=row.log,
            level=LogLevel(row.level),
            attributes=row.attributes,
            occurred_at=utc(row.occurred_at),
            created_at=utc(row.created_at),
            cursor=log_cursor(row.seq),
            project_id=row.project_id,
            api_key_id=row.api_key_id,
            row=row,
        )

    # Everyone who may receive a log may see its project (the stream checked that); what they may
    # see of the project is decided by its own fields.
    @strawberry.field(metadata=VIEWER_INDEPENDENT)
    async def project(self, info: Info) -> Project:
        return await load_project(info, self.project_id)

    @strawberry.field
    async def api_key(self, info: Info) -> ApiKey | None:
        if self.api_key_id is None:
            return None
        row = await info.context.loaders.by_id(models.ApiKey).load(self.api_key_id)
        return ApiKey.from_model(row) if row else None


@strawberry.type
class IngestResult:
    accepted: int
    duplicates: int
    ids: list[strawberry.ID]


@strawberry.input
class ProjectInput:
    name: str = strawberry.field(metadata=max_length(MAX_NAME))
    description: str | None = strawberry.field(default=None, metadata=max_length(MAX_DESCRIPTION))
    client_id: strawberry.ID | None = strawberry.field(default=None, description="Setting it needs gateway:admin.")


@strawberry.input
class ProjectUpdate:
    name: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_NAME))
    description: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_DESCRIPTION))
    client_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET, description="Setting it needs gateway:admin."
    )
    log_retention_days: int | None = strawberry.field(
        default=strawberry.UNSET,
        description=f"1 to {models.MAX_RETENTION_DAYS}: older logs are deleted; null keeps them for good.",
    )


@strawberry.input
class ApiKeyInput:
    project_id: strawberry.ID
    environment_id: strawberry.ID | None = None
    label: str = strawberry.field(metadata=max_length(MAX_NAME))
    description: str | None = strawberry.field(default=None, metadata=max_length(MAX_DESCRIPTION))
    expires_at: datetime | None = None
    scopes: list[ApiKeyScope] | None = strawberry.field(
        default=None,
        description="ADMIN for a project's key, INGEST for an environment's, unless given.",
        metadata=max_length(3),
    )


def _log_item_from_input(cls: type, value: Any, context: Any) -> service.LogItem:
    """A LogInput as the service's LogItem, built straight from graphql-core's coerced value: a
    batch of 1000 logs spent more time in strawberry's generic conversion than in PostgreSQL."""
    level = value.get("level", LogLevel.INFO)
    return service.LogItem(
        log=value["log"],
        level=level.value if isinstance(level, LogLevel) else str(level),
        attributes=value.get("attributes"),
        idempotency_key=value.get("idempotencyKey"),
        occurred_at=value.get("occurredAt"),  # the DateTime scalar has made it UTC
    )


@built_by(_log_item_from_input)  # resolvers receive a service.LogItem
@strawberry.input
class LogInput:
    # Also bounded in bytes, with the attributes, by the same setting (`prepare_batch`).
    log: str = strawberry.field(metadata=max_length("max_log_bytes"))
    level: LogLevel = LogLevel.INFO
    attributes: JSON | None = None
    idempotency_key: str | None = strawberry.field(default=None, metadata=max_length(service.MAX_IDEMPOTENCY_KEY))
    occurred_at: datetime | None = strawberry.field(
        default=None, description="When the event happened; no offset means UTC. Lodge keeps it beside createdAt."
    )


@strawberry.input
class LogFilter:
    level: LogLevel | None = None
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = strawberry.field(default=None, metadata=max_length(MAX_SEARCH))
    api_key_id: strawberry.ID | None = None
