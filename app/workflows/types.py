"""GraphQL types of the workflows domain."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from app.accounts import authentication
from app.accounts.permissions import permits
from app.accounts.types import load_owner
from app.api.compiled import declare as c
from app.api.context import Info
from app.api.cost import max_items
from app.api.errors import NotFound
from app.api.lengths import max_length
from app.api.loaders import PageKey
from app.api.pagination import (
    Connection,
    Edge,
    encode_cursor,
    int_position,
    page_size,
    paginate_nested,
)
from app.api.scalars import JSON, utc
from app.api.validation import MAX_DESCRIPTION
from app.logs.types import LogLevel
from app.workflows import access, content, loaders, models
from app.workflows.service import files as files_service
from app.workflows.service.executions import MAX_MESSAGE
from app.workflows.service.workflows import MAX_EDGES, MAX_KEY, MAX_LABEL, MAX_NODES

if TYPE_CHECKING:
    from app.accounts.types import User

UserType = Annotated["User", strawberry.lazy("app.accounts.types")]

EXECUTION_CURSOR = "execution"
EXECUTION_LOG_CURSOR = "execlog"

# Who changes a workflow and sees all its executions: its owner, or `workflows:write`.
WRITE_WORKFLOW = c.Rule(owner="user_id", permissions=(access.WRITE,))
# Who sees every live workflow in `workflows` (others: their own and public ones).
WORKFLOW_STAFF = c.Rule(permissions=(access.WRITE,))
# Who reads a workflow (access.can_read): anyone signed in when it is public, else WRITE_WORKFLOW.
WORKFLOW_READ = c.Rule(owner="user_id", permissions=(access.WRITE,), public="is_public")


def _owns_workflow_of(row: str, viewer: c.Viewer) -> str:
    """SQL: the caller owns the workflow of the execution `row`."""
    return (
        f"EXISTS (SELECT 1 FROM workflows lodge_w WHERE lodge_w.id = {row}.workflow_id "
        f"AND lodge_w.user_id = {viewer.user})"
    )


# Who sees an execution (access.can_report): who started it, or WRITE_WORKFLOW over its workflow.
# Its Python twin is access.can_report (and Workflow.executions' `only`); the suite holds them together.
EXECUTION_READ = c.Rule(owner="user_id", permissions=(access.WRITE,), custom=_owns_workflow_of)
# Who reads a file: its owner, or anyone signed in when it is public.
FILE_READ = c.Rule(owner="user_id", public="is_public")


@strawberry.enum
class WorkflowStatus(enum.Enum):
    DRAFT = "draft"
    PUBLISHED = "published"
    ARCHIVED = "archived"


@strawberry.enum
class ExecutionStatus(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


def _value(member: Any) -> Any:
    """An enum argument's stored value (graphql-core may hand over the member or its value)."""
    return member.value if isinstance(member, enum.Enum) else member


def execution_log_cursor(seq: int) -> str:
    return encode_cursor(EXECUTION_LOG_CURSOR, seq)


# Compiled: `configuration` is `or {}` in Python (a stored `[]`, `null`, `0` or `""` reads as `{}`).
@c.table(
    models.WorkflowNode,
    key=c.Col("node_key"),
    type=c.Col("node_type"),
    configuration=c.Col("configuration", expr=c.json_or_empty),
)
@strawberry.type(name="WorkflowNode")
class WorkflowNode:
    id: strawberry.ID
    key: str
    type: str
    label: str | None
    position_x: float | None
    position_y: float | None
    configuration: JSON

    @classmethod
    def from_model(cls, row: models.WorkflowNode) -> WorkflowNode:
        return cls.from_snapshot(
            {
                "id": str(row.id),
                "key": row.node_key,
                "type": row.node_type,
                "label": row.label,
                "position_x": row.position_x,
                "position_y": row.position_y,
                "configuration": row.configuration,
            }
        )

    @classmethod
    def from_snapshot(cls, item: dict[str, Any]) -> WorkflowNode:
        return cls(
            id=strawberry.ID(item["id"]),
            key=item["key"],
            type=item["type"],
            label=item.get("label"),
            position_x=item.get("position_x"),
            position_y=item.get("position_y"),
            configuration=item.get("configuration") or {},  # type: ignore[arg-type]
        )


# Compiled: every field (configuration is read as stored, unlike WorkflowNode's).
@c.table(
    models.WorkflowEdge,
    source=c.Col("source_node_key"),
    target=c.Col("target_node_key"),
    type=c.Col("edge_type"),
)
@strawberry.type(name="WorkflowEdge")
class WorkflowEdge:
    id: strawberry.ID
    source: str
    target: str
    type: str
    configuration: JSON

    @classmethod
    def from_model(cls, row: models.WorkflowEdge) -> WorkflowEdge:
        return cls(
            id=strawberry.ID(str(row.id)),
            source=row.source_node_key,
            target=row.target_node_key,
            type=row.edge_type,
            configuration=row.configuration,  # type: ignore[arg-type]
        )

    @classmethod
    def from_snapshot(cls, item: dict[str, Any]) -> WorkflowEdge:
        return cls(
            id=strawberry.ID(item["id"]),
            source=item["source"],
            target=item["target"],
            type=item["type"],
            configuration=item.get("configuration") or {},  # type: ignore[arg-type]
        )


@strawberry.type(name="WorkflowVersion", description="A published snapshot; it never changes.")
class WorkflowVersion:
    version: int
    name: str
    description: str | None
    configuration: JSON
    created_at: datetime
    nodes: list[WorkflowNode] = strawberry.field(metadata=max_items(MAX_NODES))
    edges: list[WorkflowEdge] = strawberry.field(metadata=max_items(MAX_EDGES))
    row: strawberry.Private[models.WorkflowVersion]

    @classmethod
    def from_model(cls, row: models.WorkflowVersion) -> WorkflowVersion:
        return cls(
            version=row.version,
            name=row.name,
            description=row.description,
            configuration=row.configuration,  # type: ignore[arg-type]
            created_at=utc(row.created_at),
            nodes=[WorkflowNode.from_snapshot(item) for item in row.nodes],
            edges=[WorkflowEdge.from_snapshot(item) for item in row.edges],
            row=row,
        )

    @strawberry.field
    async def created_by(self, info: Info) -> UserType:
        return await load_owner(info, self.row.created_by)


@c.table(
    models.ExecutionLog,
    level=c.Col("log_level", expr=lambda v: f"upper({v})"),  # LogLevel(row.log_level.upper())
    cursor=c.Expr(lambda t: f"lodge_cursor({c.literal(EXECUTION_LOG_CURSOR)}, {t}.seq::text)"),
)
@strawberry.type(name="ExecutionLog")
class ExecutionLog:
    id: strawberry.ID
    node_key: str | None
    level: LogLevel
    message: str
    data: JSON | None
    created_at: datetime
    cursor: str = strawberry.field(description="For `logs(after:)` and `executionLogAdded(after:)`.")
    seq: strawberry.Private[int]

    @classmethod
    def from_model(cls, row: models.ExecutionLog) -> ExecutionLog:
        return cls(
            id=strawberry.ID(str(row.id)),
            node_key=row.node_key,
            level=LogLevel(row.log_level.upper()),
            message=row.message,
            data=row.data,
            created_at=utc(row.created_at),
            cursor=execution_log_cursor(row.seq),
            seq=row.seq,
        )


# Compiled: every field. `workflow` is the resolver's NOT_FOUND once deleted and FORBIDDEN once
# private to the caller; `logs` pages by an integer cursor.
@c.table(
    models.Execution,
    input=c.Col("input_data"),
    output=c.Col("output_data"),
    user=c.ManyToOne("User", key="user_id"),
    logs=c.Connection(
        "ExecutionLog",
        order=c.SeqKeyset("seq", EXECUTION_LOG_CURSOR),
        child_key="execution_id",
        filters={
            "level": c.Filter(
                lambda t, level: f"{t}.log_level = {level}::text", bind=lambda given: _value(given).lower()
            )
        },
    ),
    # NOT_FOUND once deleted, FORBIDDEN once private to the caller: the resolver's errors.
    workflow=c.ManyToOne(
        "Workflow", key="workflow_id", where=lambda t: f"{t}.deleted_at IS NULL", guard=WORKFLOW_READ, required=True
    ),
)
@strawberry.type(name="Execution")
class Execution:
    id: strawberry.ID
    workflow_version: int | None
    status: ExecutionStatus
    input: JSON | None
    output: JSON | None
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    runner: str | None = strawberry.field(description="The runner that claimed it last (claimExecution).")
    lease_expires_at: datetime | None = strawberry.field(
        description="While RUNNING under a runner: when it goes back to PENDING unless the runner sends a heartbeat."
    )
    attempts: int = strawberry.field(description="How many times a runner has claimed it.")
    row: strawberry.Private[models.Execution]

    @classmethod
    def from_model(cls, row: models.Execution) -> Execution:
        return cls(
            id=strawberry.ID(str(row.id)),
            workflow_version=row.workflow_version,
            status=ExecutionStatus(row.status),
            input=row.input_data,
            output=row.output_data,
            error_message=row.error_message,
            started_at=utc(row.started_at),
            completed_at=utc(row.completed_at),
            created_at=utc(row.created_at),
            runner=row.runner,
            lease_expires_at=utc(row.lease_expires_at),
            attempts=row.attempts,
            row=row,
        )

    @strawberry.field
    async def workflow(self, info: Info) -> Workflow:
        row = await info.context.loaders.by_id(models.Workflow).load(self.row.workflow_id)
        if row is None or row.deleted_at is not None:
            raise NotFound("the workflow has been deleted", id=str(self.row.workflow_id))
        await access.require_read(info, row)  # it may have turned private since this run
        return Workflow.from_model(row)

    @strawberry.field
    async def user(self, info: Info) -> UserType:
        return await load_owner(info, self.row.user_id)

    @strawberry.field(description="In order of appending.")
    async def logs(
        self, info: Info, level: LogLevel | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[ExecutionLog]:
        return await paginate_nested(
            info,
            parent=self.row.id,
            first=first,
            after=after,
            kind=EXECUTION_LOG_CURSOR,
            pages=loaders.execution_logs,
            counts=loaders.execution_log_counts,
            to_node=ExecutionLog.from_model,
            extra=level.value.lower() if level else None,
            position=int_position,
            cursor_of=lambda row: execution_log_cursor(row.seq),
        )


# Compiled: the columns, `owner`, `nodes` and `edges` (in Loaders.children's order: creation, then
# the primary key) and `executions`. `versions` (objects built from jsonb snapshots) is a Python
# field.
@c.table(
    models.Workflow,
    owner=c.ManyToOne("User", key="user_id"),
    nodes=c.Children("WorkflowNode", order=lambda t: f"{t}.created_at, {t}.id", child_key="workflow_id"),
    edges=c.Children("WorkflowEdge", order=lambda t: f"{t}.created_at, {t}.id", child_key="workflow_id"),
    # Others than the owner (and workflows:write) see their own. Anonymous callers would get the
    # resolver's UNAUTHENTICATED, which a nested connection cannot say: every root that reaches a
    # Workflow (workflow, workflows) is declared `signed_in`, so none gets this far.
    executions=c.Connection(
        "Execution",
        order=c.Keyset("created_at", "id", EXECUTION_CURSOR),
        child_key="workflow_id",
        filters={"status": c.Filter(lambda t, status: f"{t}.status = {status}::text", bind=lambda s: _value(s))},
        filter=EXECUTION_READ,
        guard=c.SIGNED_IN,  # the resolver asks who is calling: UNAUTHENTICATED for anonymous callers
    ),
)
@strawberry.type(name="Workflow")
class Workflow:
    id: strawberry.ID
    name: str
    description: str | None
    version: int = strawberry.field(description="The number the next publish takes (1 until the first).")
    status: WorkflowStatus
    is_template: bool
    is_public: bool
    tags: list[str]
    configuration: JSON
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    row: strawberry.Private[models.Workflow]

    @classmethod
    def from_model(cls, row: models.Workflow) -> Workflow:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            description=row.description,
            version=row.version,
            status=WorkflowStatus(row.status),
            is_template=row.is_template,
            is_public=row.is_public,
            tags=list(row.tags),
            configuration=row.configuration,  # type: ignore[arg-type]
            created_at=utc(row.created_at),
            updated_at=utc(row.updated_at),
            deleted_at=utc(row.deleted_at),
            row=row,
        )

    @strawberry.field
    async def owner(self, info: Info) -> UserType:
        return await load_owner(info, self.row.user_id)

    @strawberry.field(description="The draft's nodes, in creation order.", metadata=max_items(MAX_NODES))
    async def nodes(self, info: Info) -> list[WorkflowNode]:
        rows = await info.context.loaders.children(models.WorkflowNode, "workflow_id").load(self.row.id)
        return [WorkflowNode.from_model(row) for row in rows]

    @strawberry.field(description="The draft's edges, in creation order.", metadata=max_items(MAX_EDGES))
    async def edges(self, info: Info) -> list[WorkflowEdge]:
        rows = await info.context.loaders.children(models.WorkflowEdge, "workflow_id").load(self.row.id)
        return [WorkflowEdge.from_model(row) for row in rows]

    @strawberry.field(
        description="Published versions, oldest first: the newest `last` (50 unless given, at most 500), "
        "older than version number `before` when given (pass the first version returned for the page before)."
    )
    async def versions(self, info: Info, last: int | None = None, before: int | None = None) -> list[WorkflowVersion]:
        # Publishing has no limit, so neither has the number of versions: they come in pages.
        size = page_size(None, last)
        if size == 0:
            return []
        key = PageKey(self.row.id, size, None if before is None else (before,))
        rows = await info.context.loaders.batch(loaders.versions).load(key)
        return [WorkflowVersion.from_model(row) for row in reversed(rows)]

    @strawberry.field(description="Newest first. Others than the owner see their own executions only.")
    async def executions(
        self, info: Info, first: int | None = None, after: str | None = None, status: ExecutionStatus | None = None
    ) -> Connection[Execution]:
        page_size(first)  # a bad `first` is refused before anything is read
        ctx = info.context
        only = (
            None if await permits(ctx, WRITE_WORKFLOW, self.row.user_id) else await authentication.require_user_id(ctx)
        )
        return await paginate_nested(
            info,
            parent=self.row.id,
            first=first,
            after=after,
            kind=EXECUTION_CURSOR,
            pages=loaders.executions,
            counts=loaders.execution_counts,
            to_node=Execution.from_model,
            extra=(status.value if status else None, only),
        )


@strawberry.type(name="WorkflowConnectionEdge")
class WorkflowConnectionEdge(Edge[Workflow]):
    """Named apart from the graph's `WorkflowEdge`."""


@strawberry.type(name="WorkflowConnection")
class WorkflowConnection(Connection[Workflow]):
    edges: list[WorkflowConnectionEdge]  # type: ignore[assignment]


# Compiled: every field.
@c.table(models.File, size=c.Col("file_size"), path=c.Col("file_path"), owner=c.ManyToOne("User", key="user_id"))
@strawberry.type(name="File")
class File:
    id: strawberry.ID
    filename: str
    original_filename: str
    mime_type: str
    size: float = strawberry.field(description="Bytes (a Float: files can pass 2 GiB).")
    checksum: str | None
    path: str
    is_public: bool
    created_at: datetime
    stored_at: datetime | None = strawberry.field(
        description="When its content arrived (createFileUpload); null until then, and for registered metadata only."
    )
    row: strawberry.Private[models.File]

    @classmethod
    def from_model(cls, row: models.File) -> File:
        return cls(
            id=strawberry.ID(str(row.id)),
            filename=row.filename,
            original_filename=row.original_filename,
            mime_type=row.mime_type,
            size=row.file_size,
            checksum=row.checksum,
            path=row.file_path,
            is_public=row.is_public,
            created_at=utc(row.created_at),
            stored_at=utc(row.stored_at),
            row=row,
        )

    @strawberry.field
    async def owner(self, info: Info) -> UserType:
        return await load_owner(info, self.row.user_id)

    @strawberry.field(
        description="A URL (relative to this server) to GET the content from, for whoever may see the file; it "
        "works for LODGE_FILE_URL_SECONDS to twice that. Null until the content has arrived."
    )
    def download_url(self, info: Info) -> str | None:
        if self.row.storage_key is None:
            return None
        deps = info.context.deps
        url, _ = content.signed_url(
            self.row.id, action=content.GET, secret=deps.secret_key, seconds=deps.settings.file_url_seconds
        )
        return url


@strawberry.type
class FileUpload:
    file: File
    upload_url: str = strawberry.field(
        description="PUT the bytes here (relative to this server), with the file's mimeType as Content-Type."
    )
    expires_at: datetime


@strawberry.input
class WorkflowInput:
    name: str = strawberry.field(metadata=max_length(MAX_LABEL))
    description: str | None = strawberry.field(default=None, metadata=max_length(MAX_DESCRIPTION))
    tags: list[str] | None = strawberry.field(default=None, metadata=max_length(MAX_KEY))
    configuration: JSON | None = None
    is_template: bool = False
    is_public: bool = False


@strawberry.input
class WorkflowUpdate:
    name: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_LABEL))
    description: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_DESCRIPTION))
    tags: list[str] | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_KEY))
    configuration: JSON | None = strawberry.UNSET
    is_template: bool | None = strawberry.UNSET
    is_public: bool | None = strawberry.UNSET


@strawberry.input
class NodeInput:
    key: str = strawberry.field(metadata=max_length(MAX_KEY))
    type: str = strawberry.field(metadata=max_length(MAX_KEY))
    label: str | None = strawberry.field(default=None, metadata=max_length(MAX_LABEL))
    position_x: float | None = None
    position_y: float | None = None
    configuration: JSON | None = None


@strawberry.input
class NodeUpdate:
    type: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_KEY))
    label: str | None = strawberry.field(default=strawberry.UNSET, metadata=max_length(MAX_LABEL))
    position_x: float | None = strawberry.UNSET
    position_y: float | None = strawberry.UNSET
    configuration: JSON | None = strawberry.UNSET


@strawberry.input
class EdgeInput:
    source: str = strawberry.field(metadata=max_length(MAX_KEY))
    target: str = strawberry.field(metadata=max_length(MAX_KEY))
    type: str | None = strawberry.field(default=None, metadata=max_length(MAX_KEY))
    configuration: JSON | None = None


@strawberry.input
class ExecutionLogInput:
    node_key: str | None = strawberry.field(default=None, metadata=max_length(MAX_KEY))
    level: LogLevel
    message: str = strawberry.field(metadata=max_length(MAX_MESSAGE))
    data: JSON | None = None


@strawberry.input
class FileInput:
    filename: str = strawberry.field(metadata=max_length(files_service.MAX_FILENAME))
    original_filename: str = strawberry.field(metadata=max_length(files_service.MAX_FILENAME))
    mime_type: str = strawberry.field(metadata=max_length(files_service.MAX_MIME_TYPE))
    size: float = strawberry.field(description="Bytes, a whole number >= 0.")
    checksum: str | None = strawberry.field(default=None, metadata=max_length(files_service.MAX_CHECKSUM))
    path: str | None = strawberry.field(
        default=None,
        description="Where the bytes are stored; the filename if omitted.",
        metadata=max_length(files_service.MAX_PATH),
    )
    is_public: bool = False
