"""Queries, mutations and live subscriptions of the workflows domain."""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import strawberry

from app.accounts import authentication
from app.accounts.permissions import permits
from app.accounts.service import require_user_exists
from app.api.compiled import declare as c
from app.api.context import Info
from app.api.errors import BadUserInput, Conflict, Forbidden, NotFound
from app.api.lengths import max_length
from app.api.pagination import (
    Connection,
    decode_int_cursor,
    paginate,
)
from app.api.scalars import JSON
from app.api.validation import MAX_SEARCH, given, like_pattern, parse_id
from app.audit.recorder import audited, note_changes, snapshot
from app.logs.types import LogLevel
from app.pubsub import RESYNC, Delivery
from app.tail import Page, resumable_tail
from app.workflows import access, content, events, models
from app.workflows.reads import WORKFLOW_CURSOR, workflows_page
from app.workflows.service import executions, files, workflows
from app.workflows.types import (
    EXECUTION_LOG_CURSOR,
    EXECUTION_READ,
    FILE_READ,
    WORKFLOW_READ,
    EdgeInput,
    Execution,
    ExecutionLog,
    ExecutionLogInput,
    ExecutionStatus,
    File,
    FileInput,
    FileUpload,
    NodeInput,
    NodeUpdate,
    Workflow,
    WorkflowConnection,
    WorkflowEdge,
    WorkflowInput,
    WorkflowNode,
    WorkflowStatus,
    WorkflowUpdate,
)

CATCH_UP_PAGE = 500
FILE_CURSOR = "file"
KEY = max_length(workflows.MAX_KEY)  # node keys and tags
# A runner's report (updateExecutionStatus, appendExecutionLog) names the runner sending it.
RunnerReport = Annotated[
    str | None,
    strawberry.argument(
        description="A runner's report: it counts only while this runner holds the execution (else CONFLICT).",
        metadata=max_length(executions.MAX_RUNNER),
    ),
]


async def _writable(info: Info, workflow_id: strawberry.ID) -> models.Workflow:
    workflow = await workflows.get_workflow_or_raise(info.context.session, workflow_id=parse_id(workflow_id))
    await access.require_write(info, workflow)
    return workflow


async def _execution(info: Info, execution_id: uuid.UUID) -> models.Execution:
    """An execution the caller may see and report on."""
    session = info.context.session
    execution = await executions.get_execution_or_raise(session, execution_id=execution_id)
    workflow = await session.get(models.Workflow, execution.workflow_id)
    if workflow is None or not await access.can_report(info, execution, workflow):
        raise Forbidden("this execution is not yours")
    return execution


async def _own_file(info: Info, id: strawberry.ID, doing: str) -> models.File:
    """A live file of the caller's (NOT_FOUND if none, FORBIDDEN if someone else's)."""
    ctx = info.context
    user_id = await authentication.require_user_id(ctx, ctx.session)
    row = await files.get_file_or_raise(ctx.session, file_id=parse_id(id))
    if row.user_id != user_id:
        raise Forbidden(f"only the file's owner can {doing}")
    return row


async def _register_file(info: Info, input: FileInput) -> models.File:
    ctx = info.context
    owner_id = await authentication.require_user_id(ctx, ctx.session)
    if not (0 <= input.size <= 2**53) or input.size != int(input.size):
        raise BadUserInput("size must be a whole number of bytes, at most 2^53", field="size")
    return await files.register_file(
        ctx.session,
        owner_id=owner_id,
        filename=input.filename,
        original_filename=input.original_filename,
        mime_type=input.mime_type,
        size=int(input.size),
        checksum=input.checksum,
        path=input.path,
        is_public=input.is_public,
    )


def _upload(info: Info, row: models.File) -> FileUpload:
    settings = info.context.deps.settings
    url, expires = content.signed_url(
        row.id,
        action=content.PUT,
        secret=info.context.deps.secret_key,
        seconds=settings.file_url_seconds,
        user_id=row.user_id,
    )
    return FileUpload(file=File.from_model(row), upload_url=url, expires_at=datetime.fromtimestamp(expires, UTC))


def _enum_value(member: Any) -> Any:
    return member.value if isinstance(member, enum.Enum) else member


def _is(column: str, kind: str) -> Callable[[str, Any], str]:
    return lambda t, value: f"{t}.{column} = {value}::{kind}"


_LIVE = lambda t: f"{t}.deleted_at IS NULL"  # noqa: E731

# Compiled reads (issue 16). Every root of the domain asks who calls before anything else the
# caller could see (UNAUTHENTICATED for anonymous callers and API keys): `signed_in`.
c.root(
    "Query.workflow",
    c.ById("Workflow", bind=parse_id, where=_LIVE, row_guard=WORKFLOW_READ, signed_in=True),  # else FORBIDDEN
)
c.root(
    "Query.workflows",
    c.Connection(
        "Workflow",
        order=c.Keyset("created_at", "id", WORKFLOW_CURSOR),
        where=_LIVE,
        filters={
            "status": c.Filter(_is("status", "text"), bind=_enum_value),
            "tag": c.Filter(lambda t, tag: f"{t}.tags @> ARRAY[{tag}::text]"),
            "search": c.Filter(
                lambda t, like: f"({t}.name ILIKE {like}::text OR {t}.description ILIKE {like}::text)",
                bind=like_pattern,
                truthy=True,
            ),
            "isTemplate": c.Filter(_is("is_template", "boolean")),
            "isPublic": c.Filter(_is("is_public", "boolean")),
            "ownerId": c.Filter(
                _is("user_id", "uuid"),
                bind=lambda owner: parse_id(owner, "ownerId"),
                truthy=True,
                guard=lambda owner: f"EXISTS (SELECT 1 FROM users WHERE id = {owner}::uuid AND deleted_at IS NULL)",
            ),
        },
        filter=WORKFLOW_READ,  # as `visible_to`: own and public ones, or all of them for WORKFLOW_STAFF
        signed_in=True,
    ),
)
# Not found: null (before the caller is asked, so an anonymous caller's unknown id bails, harmlessly).
# Under a user: their workflows the caller may see (workflows_page with the owner's filter).
c.relate(
    "User",
    workflows=c.Connection(
        "Workflow",
        order=c.Keyset("created_at", "id", WORKFLOW_CURSOR),
        child_key="user_id",
        where=_LIVE,
        filters={"status": c.Filter(_is("status", "text"), bind=_enum_value)},
        filter=WORKFLOW_READ,
        guard=c.SIGNED_IN,  # UNAUTHENTICATED for anonymous callers, as workflows_page says
    ),
)
c.root(
    "Query.execution",
    c.ById("Execution", bind=parse_id, row_guard=EXECUTION_READ, signed_in=True),  # else FORBIDDEN
)
c.root(
    "Query.files",
    c.Connection(
        "File",
        order=c.Keyset("created_at", "id", FILE_CURSOR),
        where=_LIVE,
        filter=c.Rule(owner="user_id"),  # the caller's own
        signed_in=True,
    ),
)
c.root("Query.file", c.ById("File", bind=parse_id, where=_LIVE, row_guard=FILE_READ, signed_in=True))
# An execution's status as it changed (the event's snapshot, not a newer row read back); its
# workflow, author and logs read by one statement.
c.root("Subscription.executionUpdated", c.Event("Execution"))


@strawberry.type
class WorkflowsQuery:
    @strawberry.field(description="A live workflow its owner, `workflows:write` or, when public, anyone can see.")
    async def workflow(self, info: Info, id: strawberry.ID) -> Workflow | None:
        try:
            workflow = await workflows.get_workflow_or_raise(info.context.session, workflow_id=parse_id(id))
        except NotFound:
            return None
        await authentication.require_user_id(info.context, info.context.session)
        if not await permits(info.context, WORKFLOW_READ, workflow.user_id, public=workflow.is_public):
            raise Forbidden("this workflow is private")
        return Workflow.from_model(workflow)

    @strawberry.field(description="Live workflows the caller can see (their own and public ones), newest first.")
    async def workflows(
        self,
        info: Info,
        status: WorkflowStatus | None = None,
        tag: Annotated[str | None, strawberry.argument(metadata=KEY)] = None,
        search: Annotated[str | None, strawberry.argument(metadata=max_length(MAX_SEARCH))] = None,
        is_template: bool | None = None,
        is_public: bool | None = None,
        owner_id: strawberry.ID | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> WorkflowConnection:
        owner = parse_id(owner_id, "ownerId") if owner_id else None
        if owner is not None:
            await authentication.require_user_id(
                info.context, info.context.session
            )  # who asks before whether it exists
            await require_user_exists(info.context.session, owner, "ownerId")
        spec = workflows.WorkflowFilter(
            status=status.value if status else None,
            tag=tag,
            search=search or None,
            is_template=is_template,
            is_public=is_public,
            owner_id=owner,
        )
        return await workflows_page(info, spec, first=first, after=after)

    @strawberry.field
    async def execution(self, info: Info, id: strawberry.ID) -> Execution | None:
        try:
            return Execution.from_model(await _execution(info, parse_id(id)))
        except NotFound:
            return None

    @strawberry.field(description="The caller's live files, newest first.")
    async def files(self, info: Info, first: int | None = None, after: str | None = None) -> Connection[File]:
        ctx = info.context
        user_id = await authentication.require_user_id(ctx, ctx.session)
        return await paginate(
            info,
            first=first,
            after=after,
            kind=FILE_CURSOR,
            to_node=File.from_model,
            fetch=lambda position, limit, count: files.list_files(
                ctx.session, owner_id=user_id, before=position, limit=limit, count=count
            ),
        )

    @strawberry.field(description="A file its owner, or anyone when it is public, can see.")
    async def file(self, info: Info, id: strawberry.ID) -> File | None:
        ctx = info.context
        await authentication.require_user_id(ctx, ctx.session)  # who asks, before whether the file exists
        try:
            row = await files.get_file_or_raise(ctx.session, file_id=parse_id(id))
        except NotFound:
            return None
        if not await permits(ctx, FILE_READ, row.user_id, public=row.is_public):
            raise Forbidden("this file is private")
        return File.from_model(row)


@strawberry.type
class WorkflowsMutation:
    @strawberry.mutation(extensions=[audited()])
    async def create_workflow(self, info: Info, input: WorkflowInput) -> Workflow:
        ctx = info.context
        owner_id = await authentication.require_user_id(ctx, ctx.session)
        row = await workflows.create_workflow(
            ctx.session,
            owner_id=owner_id,
            name=input.name,
            description=input.description,
            tags=input.tags,
            configuration=input.configuration,
            is_template=input.is_template,
            is_public=input.is_public,
        )
        return Workflow.from_model(row)

    @strawberry.mutation(extensions=[audited()])
    async def update_workflow(self, info: Info, id: strawberry.ID, input: WorkflowUpdate) -> Workflow:
        workflow = await _writable(info, id)
        changes = given(input)
        before = snapshot(workflow, changes)
        row = await workflows.update_workflow(info.context.session, workflow=workflow, changes=changes)
        note_changes(info, before, snapshot(row, before))
        return Workflow.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Soft delete: hidden from reads and runs until `restoreWorkflow`.",
    )
    async def delete_workflow(self, info: Info, id: strawberry.ID) -> bool:
        workflow = await _writable(info, id)
        await workflows.set_deleted(info.context.session, workflow=workflow, deleted=True)
        return True

    @strawberry.mutation(extensions=[audited()])
    async def restore_workflow(self, info: Info, id: strawberry.ID) -> Workflow:
        workflow = await workflows.get_workflow_or_raise(info.context.session, workflow_id=parse_id(id), deleted=True)
        await access.require_write(info, workflow)
        return Workflow.from_model(await workflows.set_deleted(info.context.session, workflow=workflow, deleted=False))

    @strawberry.mutation(extensions=[audited()])
    async def add_workflow_node(self, info: Info, workflow_id: strawberry.ID, input: NodeInput) -> WorkflowNode:
        workflow = await _writable(info, workflow_id)
        values: dict[str, Any] = {"node_key": input.key, "node_type": input.type, "label": input.label}
        values.update(position_x=input.position_x, position_y=input.position_y, configuration=input.configuration)
        row = await workflows.add_node(info.context.session, workflow=workflow, values=values)
        return WorkflowNode.from_model(row)

    @strawberry.mutation(extensions=[audited()])
    async def update_workflow_node(
        self,
        info: Info,
        workflow_id: strawberry.ID,
        key: Annotated[str, strawberry.argument(metadata=KEY)],
        input: NodeUpdate,
    ) -> WorkflowNode:
        workflow = await _writable(info, workflow_id)
        changes = given(input)
        if "type" in changes:
            changes["node_type"] = changes.pop("type")
        row = await workflows.update_node(info.context.session, workflow=workflow, node_key=key, values=changes)
        return WorkflowNode.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Remove a node and every edge that touches it.",
    )
    async def remove_workflow_node(
        self, info: Info, workflow_id: strawberry.ID, key: Annotated[str, strawberry.argument(metadata=KEY)]
    ) -> bool:
        workflow = await _writable(info, workflow_id)
        return await workflows.remove_node(info.context.session, workflow=workflow, node_key=key)

    @strawberry.mutation(
        extensions=[audited()],
        description="Join two nodes of the workflow. An edge that would close a cycle is BAD_USER_INPUT "
        "(extensions.cycle names it).",
    )
    async def add_workflow_edge(self, info: Info, workflow_id: strawberry.ID, input: EdgeInput) -> WorkflowEdge:
        workflow = await _writable(info, workflow_id)
        row = await workflows.add_edge(
            info.context.session,
            workflow=workflow,
            source=input.source,
            target=input.target,
            edge_type=input.type,
            configuration=input.configuration,
        )
        return WorkflowEdge.from_model(row)

    @strawberry.mutation(extensions=[audited()])
    async def remove_workflow_edge(self, info: Info, id: strawberry.ID) -> bool:
        edge = await workflows.get_edge_or_raise(info.context.session, edge_id=parse_id(id))
        await _writable(info, strawberry.ID(str(edge.workflow_id)))
        await workflows.remove_edge(info.context.session, edge=edge)
        return True

    @strawberry.mutation(
        extensions=[audited()],
        description="Snapshot the draft as the next version; versions never change.",
    )
    async def publish_workflow(self, info: Info, id: strawberry.ID) -> Workflow:
        workflow = await _writable(info, id)
        user_id = await authentication.require_user_id(info.context, info.context.session)
        return Workflow.from_model(
            await workflows.publish(info.context.session, workflow_id=workflow.id, user_id=user_id)
        )

    @strawberry.mutation(extensions=[audited()])
    async def archive_workflow(self, info: Info, id: strawberry.ID) -> Workflow:
        workflow = await _writable(info, id)
        return Workflow.from_model(await workflows.archive_workflow(info.context.session, workflow=workflow))

    @strawberry.mutation(
        extensions=[audited()],
        description="A PENDING execution of the latest published version.",
    )
    async def start_execution(self, info: Info, workflow_id: strawberry.ID, input: JSON | None = None) -> Execution:
        ctx = info.context
        workflow = await workflows.get_workflow_or_raise(ctx.session, workflow_id=parse_id(workflow_id, "workflowId"))
        user_id = await access.require_read(info, workflow)
        row = await executions.start_execution(ctx.session, workflow_id=workflow.id, user_id=user_id, input_data=input)
        ctx.publish_after_commit(*events.status_changed(row))
        return Execution.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="PENDING -> RUNNING -> COMPLETED | FAILED, or any unfinished status -> CANCELLED. "
        "Anything else is CONFLICT (extensions.currentStatus); of concurrent attempts one wins.",
    )
    async def update_execution_status(
        self,
        info: Info,
        id: strawberry.ID,
        status: ExecutionStatus,
        output: JSON | None = None,
        error_message: Annotated[str | None, strawberry.argument(metadata=max_length(executions.MAX_MESSAGE))] = None,
        runner: RunnerReport = None,
    ) -> Execution:
        ctx = info.context
        execution = await _execution(info, parse_id(id))
        if runner is not None:
            await executions.require_holder(ctx.session, execution_id=execution.id, runner=runner)
        row = await executions.transition(
            ctx.session, execution_id=execution.id, status=status.value, output=output, error_message=error_message
        )
        ctx.publish_after_commit(*events.status_changed(row))
        return Execution.from_model(row)

    @strawberry.mutation(
        extensions=[audited(unless=lambda claimed: claimed is None)],
        description="A runner takes the oldest PENDING execution (of `workflowId`) and runs it under a lease of "
        "`leaseSeconds`: RUNNING, `runner` set. Each execution goes to exactly one claimer; null when there is "
        "none. `workflows:write` claims any; a workflow's owner those of their own workflows.",
    )
    async def claim_execution(
        self,
        info: Info,
        runner: Annotated[str, strawberry.argument(metadata=max_length(executions.MAX_RUNNER))],
        workflow_id: strawberry.ID | None = None,
        lease_seconds: int = 60,
    ) -> Execution | None:
        ctx = info.context
        user_id = await authentication.require_user_id(ctx, ctx.session)
        staff = await access.is_staff(info)
        wanted = None
        if workflow_id is not None:
            workflow = await workflows.get_workflow_or_raise(
                ctx.session, workflow_id=parse_id(workflow_id, "workflowId")
            )
            await access.require_write(info, workflow)
            wanted = workflow.id
        row = await executions.claim(
            ctx.session,
            runner=runner,
            lease_seconds=lease_seconds,
            workflow_id=wanted,
            visible_to=None if staff or wanted is not None else user_id,
        )
        if row is None:
            return None
        ctx.publish_after_commit(*events.status_changed(row))
        return Execution.from_model(row)

    @strawberry.mutation(
        extensions=[audited(unless=lambda renewed: True)],
        description="Renew the lease of an execution this runner holds; CONFLICT once it does not (the runner "
        "must stop: the execution finished, or its lease ran out and it went to another runner).",
    )
    async def heartbeat_execution(
        self,
        info: Info,
        id: strawberry.ID,
        runner: Annotated[str, strawberry.argument(metadata=max_length(executions.MAX_RUNNER))],
        lease_seconds: int = 60,
    ) -> Execution:
        ctx = info.context
        execution = await _execution(info, parse_id(id))
        row = await executions.heartbeat(
            ctx.session, execution_id=execution.id, runner=runner, lease_seconds=lease_seconds
        )
        return Execution.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="A log line of an unfinished execution.",
    )
    async def append_execution_log(
        self,
        info: Info,
        execution_id: strawberry.ID,
        input: ExecutionLogInput,
        runner: RunnerReport = None,
    ) -> ExecutionLog:
        ctx = info.context
        execution = await _execution(info, parse_id(execution_id, "executionId"))
        if runner is not None:
            await executions.require_holder(ctx.session, execution_id=execution.id, runner=runner)
        row = await executions.append_log(
            ctx.session,
            execution_id=execution.id,
            node_key=input.node_key,
            level=input.level.value.lower(),
            message=input.message,
            data=input.data,
        )
        ctx.publish_after_commit(*events.log_appended(row))
        return ExecutionLog.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Register a stored file's metadata.",
    )
    async def register_file(self, info: Info, input: FileInput) -> File:
        return File.from_model(await _register_file(info, input))

    @strawberry.mutation(
        extensions=[audited()],
        description="Register a file and get a URL to PUT its bytes to (with its `mimeType` as Content-Type; "
        "they must match the size, and the checksum when one is given). See `File.downloadUrl`.",
    )
    async def create_file_upload(self, info: Info, input: FileInput) -> FileUpload:
        ctx = info.context
        limit = ctx.deps.settings.file_max_bytes
        if input.size > limit:
            raise BadUserInput(f"files are at most {limit} bytes", field="size", limit=limit)
        return _upload(info, await _register_file(info, input))

    @strawberry.mutation(
        extensions=[audited()],
        description="A new upload URL for a file of yours whose content has not arrived yet (CONFLICT once it has).",
    )
    async def renew_file_upload(self, info: Info, id: strawberry.ID) -> FileUpload:
        row = await _own_file(info, id, "upload its content")
        if row.storage_key is not None:
            raise Conflict("this file's content is already stored; it never changes")
        return _upload(info, row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Soft delete (the owner only).",
    )
    async def delete_file(self, info: Info, id: strawberry.ID) -> bool:
        row = await _own_file(info, id, "delete it")
        await files.delete_file(info.context.session, file=row)
        return True


@strawberry.type
class WorkflowsSubscription:
    @strawberry.subscription(
        description="The execution's current status at once, then each change; ends when it finishes."
    )
    async def execution_updated(self, info: Info, execution_id: strawberry.ID) -> AsyncGenerator[Execution, None]:
        ctx = info.context
        eid = parse_id(execution_id, "executionId")
        async with ctx.deps.hub.subscribe(events.execution_channel(eid)) as live:
            shown = -1
            fresh: models.Execution | None = None
            while True:
                if fresh is None:
                    # Read after subscribing: a change committed meanwhile is either in this row
                    # or still to come on the bus (and then skipped as not newer). The scope's
                    # session is short: a waiting subscriber holds no connection.
                    async with ctx.event_scope():
                        fresh = await _execution(info, eid)
                if events.RANK[fresh.status] > shown:
                    shown = events.RANK[fresh.status]
                    async with ctx.event_scope():
                        yield Execution.from_model(fresh)
                if fresh.status in executions.FINISHED:
                    return
                fresh = await _next_status(ctx, live)

    @strawberry.subscription(
        description="The execution's logs after `after` (all of them without it), then live ones, in "
        "order and without duplicates; ends when the execution finishes."
    )
    async def execution_log_added(
        self, info: Info, execution_id: strawberry.ID, after: str | None = None, level: LogLevel | None = None
    ) -> AsyncGenerator[ExecutionLog, None]:
        ctx = info.context
        eid = parse_id(execution_id, "executionId")
        cursor = decode_int_cursor(EXECUTION_LOG_CURSOR, after) or 0
        wanted = level.value.lower() if level else None
        tail = resumable_tail(
            ctx.deps.hub,
            events.execution_channel(eid),
            after=_At(-1, cursor),  # -1: the number of the last log sent is unknown until PostgreSQL says
            read=lambda at: _log_page(info, eid, wanted, at),
            receive=lambda delivery, at: _log_received(wanted, delivery, at),
        )
        async with aclosing(tail):
            async for log in tail:
                async with ctx.event_scope():
                    yield log


@dataclass(frozen=True, order=True)
class _At:
    """Where an execution's log tail is: the number of the last log sent (logs are numbered 1, 2, ...
    in commit order, so a gap shows) and the seq to read on from."""

    number: int
    seq: int = field(compare=False)


async def _log_page(info: Info, eid: uuid.UUID, wanted: str | None, at: _At) -> Page[_At, ExecutionLog]:
    ctx = info.context
    async with ctx.event_scope():
        execution = await _execution(info, eid)
        # Read before the logs: a finished execution takes no more (append_log refuses them), so
        # once it has finished, this page's logs are its last ones.
        finished = execution.status in executions.FINISHED
        rows, _ = await executions.list_logs(
            ctx.session, execution_id=eid, level=None, after=at.seq, limit=CATCH_UP_PAGE, count=False
        )
        if not rows and at.number < 0:
            at = _At(await executions.log_number_at(ctx.session, execution_id=eid, seq=at.seq), at.seq)
    page = rows[:CATCH_UP_PAGE]
    return Page(
        [log for row in page if (log := _wanted(wanted, row)) is not None],
        _At(page[-1].number, page[-1].seq) if page else at,
        more=len(rows) > CATCH_UP_PAGE,
        finished=finished,
    )


def _log_received(wanted: str | None, delivery: Delivery, at: _At) -> list[tuple[_At, ExecutionLog | None]] | None:
    """The log a bus message carries; None when PostgreSQL must be read: the status changed (at the
    end, every log is there) or a log was published late or lost."""
    message = delivery.payload
    if message.get("kind") == events.STATUS:
        return None
    log = events.log_from_event(message["log"])
    if log.number > at.number + 1:
        return None
    return [(_At(log.number, log.seq), _wanted(wanted, log))]


def _wanted(level: str | None, row: models.ExecutionLog) -> ExecutionLog | None:
    return ExecutionLog.from_model(row) if level is None or row.log_level == level else None


async def _next_status(ctx: Any, live: Any) -> models.Execution | None:
    """The next status change from the bus; None after a gap (the caller re-reads the row)."""
    while True:
        message = await live.get()
        if message is RESYNC:
            return None
        if message.get("kind") == events.STATUS:
            return events.execution_from_event(message["execution"])
        await asyncio.sleep(0)
