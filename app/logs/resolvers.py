"""Queries, mutations and the live-tail subscription of the logs domain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from enum import Enum
from typing import Any

import strawberry

from app.accounts import authentication
from app.accounts.events import api_key_channel, end
from app.accounts.permissions import require_permission
from app.api.compiled import declare as c
from app.api.context import Info
from app.api.errors import NotFound
from app.api.pagination import (
    Connection,
    decode_int_cursor,
)
from app.api.scalars import utc
from app.api.sharing import SharedEvent
from app.api.validation import given, like_pattern, parse_id
from app.audit.recorder import action_for, audited, note_changes, snapshot
from app.gateway import models as gateway_models
from app.gateway import service as gateway
from app.logs import events, keys, models, service
from app.logs.access import require_project_access, require_scope
from app.logs.reads import PROJECT_CURSOR, filter_spec, logs_page, projects_of
from app.logs.types import (
    LOG_CURSOR,
    PROJECT_ACCESS,
    ApiKey,
    ApiKeyInput,
    CreatedApiKey,
    IngestResult,
    Log,
    LogFilter,
    LogInput,
    Project,
    ProjectInput,
    ProjectUpdate,
)
from app.observability import metrics
from app.pubsub import Delivery
from app.tail import Page, Poll, resumable_tail

CATCH_UP_PAGE = 500
# What logAdded yields: a Log read back from PostgreSQL, or a live one wrapped in a SharedEvent
# (rendered once for every subscriber asking the same thing).
Event = Log | SharedEvent


async def _client(info: Info, client_id: strawberry.ID) -> uuid.UUID:
    """Grouping projects under a client is the gateway administrators' business."""
    await require_permission(info.context, "gateway:admin")
    client = await gateway.get_or_raise(
        info.context.session, gateway_models.Client, parse_id(client_id, "clientId"), "client"
    )
    return uuid.UUID(str(client.id))


async def _owned_project(info: Info, project_id: strawberry.ID, *, write: bool = False) -> models.Project:
    """Readable by its owner (and projects:admin) or its own API keys; changed only by people:
    an API key may not mint or revoke keys, nor reach its siblings' environments."""
    ctx = info.context
    pid = parse_id(project_id, "projectId")
    if write:
        await authentication.require_user_id(ctx, ctx.session)
    await require_project_access(ctx, ctx.session, pid)
    return await service.get_project_or_raise(ctx.session, project_id=pid)


def ingestion_details(arguments: dict[str, Any], result: Any) -> dict[str, Any]:
    """What an ingestion's audit row holds: counts and ids, never a log's text or attributes (the
    trail's readers, audit:read, may not read the project's logs). `ingestLog` answers the log
    alone, so its row cannot tell a new log from a repeated idempotencyKey."""
    submitted = len(arguments["inputs"]) if "inputs" in arguments else 1
    if isinstance(result, IngestResult):
        return service.ingestion_audit(submitted, result.accepted, result.duplicates, result.ids)
    details: dict[str, Any] = {"submitted": submitted}
    if isinstance(result, Log):
        details["ids"] = [result.id]
    return details


async def ingest(info: Info, items: list[service.LogItem]) -> service.IngestOutcome:
    """Ingestion is one autocommit statement, not the operation's transaction: the project's write
    lock must never be held while this process serves other requests (see `service.ingest`)."""
    ctx = info.context
    settings = ctx.deps.settings
    keys.api_key_secret(ctx)
    batch = service.prepare_batch(items, max_batch=settings.max_batch_size, max_bytes=settings.max_log_bytes)
    async with ctx.deps.db.autocommit() as conn:
        api_key = await keys.require_api_key(ctx, conn)
        require_scope(api_key, models.INGEST)
        outcome = await service.ingest(conn, api_key=api_key, batch=batch)
    ctx.scope.stands(f"{len(outcome.inserted)} logs ingested")
    metrics.logs_ingested("graphql", new=len(outcome.inserted), duplicates=outcome.duplicates)
    if (event := outcome.event()) is not None:
        await ctx.deps.hub.publish(events.project_channel(api_key.project_id), event)
    return outcome


def _log_spec(value: dict[str, Any]) -> service.LogFilterSpec:
    """`filter_spec` of the coerced `filter` argument (an input object as graphql-core gives it)."""
    level = value.get("level")
    return service.LogFilterSpec(
        level=level.value if isinstance(level, Enum) else level,
        since=utc(value.get("since")),  # a time without an offset is taken as UTC
        until=utc(value.get("until")),
        search=value.get("search") or None,
        api_key_id=parse_id(value["apiKeyId"], "apiKeyId") if value.get("apiKeyId") else None,
    )


def _log_filter_sql(t: str, spec: Any) -> str:
    """`LogFilterSpec.clauses` in SQL: one parameter per member given."""
    given: service.LogFilterSpec = spec.value
    parts = []
    if given.level is not None:
        parts.append(f"{t}.level = {spec.part(given.level)}::text")
    if given.since is not None:
        parts.append(f"{t}.created_at >= {spec.part(given.since)}::timestamptz")
    if given.until is not None:
        parts.append(f"{t}.created_at < {spec.part(given.until)}::timestamptz")
    if given.search:
        parts.append(f"{t}.log ILIKE {spec.part(like_pattern(given.search))}::text")
    if given.api_key_id is not None:
        parts.append(f"{t}.api_key_id = {spec.part(given.api_key_id)}::uuid")
    return " AND ".join(parts) or "true"


LOG_FILTER = c.Filter(_log_filter_sql, bind=_log_spec)
# A project's logs, oldest first, pages either way; readers as require_project_access says.
c.root(
    "Query.logs",
    c.Connection(
        "Log",
        order=c.SeqKeyset("seq", LOG_CURSOR),
        filters={
            "projectId": c.Filter(
                lambda t, project: f"{t}.project_id = {project}::uuid",
                bind=lambda value: parse_id(value, "projectId"),
                access=lambda project, viewer: (
                    f"EXISTS (SELECT 1 FROM projects lp WHERE lp.id = {project}::uuid "
                    f"AND {PROJECT_ACCESS.sql('lp', viewer)})"
                ),
            ),
            "filter": LOG_FILTER,
        },
    ),
)
c.relate(
    "Project",
    logs=c.Connection(
        "Log",
        order=c.SeqKeyset("seq", LOG_CURSOR),
        child_key="project_id",
        filters={"filter": LOG_FILTER},
        guard=PROJECT_ACCESS,
    ),
)
# A project is its owner's and projects:admin's (and its own API keys', which go to the resolver).
c.root(
    "Query.project",
    c.ById(
        "Project",
        bind=lambda value: parse_id(value, "projectId"),
        signed_in=True,
        row_guard=c.Rule(owner="owner_id", permissions=("projects:admin",)),
    ),
)
c.root(
    "Query.projects",
    c.Connection(
        "Project",
        order=c.Keyset("created_at", "id", PROJECT_CURSOR, descending=False),
        filter=c.Rule(owner="owner_id"),
        signed_in=True,
    ),
)
# A live log: its fields as committed, its project and key (and below) read by one statement.
c.root("Subscription.logAdded", c.Event("Log"))
# Under a user: their projects for themselves; the empty connection for anyone else signed in.
c.relate(
    "User",
    projects=c.Connection(
        "Project",
        order=c.Keyset("created_at", "id", PROJECT_CURSOR, descending=False),
        child_key="owner_id",
        visible=c.Rule(owner="id"),
        guard=c.SIGNED_IN,
    ),
)


@strawberry.type
class LogsQuery:
    @strawberry.field
    async def project(self, info: Info, id: strawberry.ID) -> Project | None:
        try:
            return Project.from_model(await _owned_project(info, id))
        except NotFound:
            return None  # like every single-object lookup: an unknown id is null

    @strawberry.field
    async def projects(self, info: Info, first: int | None = None, after: str | None = None) -> Connection[Project]:
        owner_id = await authentication.require_user_id(info.context)
        return await projects_of(info, owner_id=owner_id, first=first, after=after)

    @strawberry.field
    async def logs(
        self,
        info: Info,
        project_id: strawberry.ID,
        filter: LogFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Log]:
        pid = parse_id(project_id, "projectId")
        return await logs_page(info, project_id=pid, filter=filter, first=first, after=after, last=last, before=before)


@strawberry.type
class LogsMutation:
    @strawberry.mutation(extensions=[audited()])
    async def create_project(self, info: Info, input: ProjectInput) -> Project:
        ctx = info.context
        owner_id = await authentication.require_user_id(ctx)
        client_id = await _client(info, input.client_id) if input.client_id is not None else None
        row = await service.create_project(
            ctx.session, owner_id=owner_id, name=input.name, description=input.description, client_id=client_id
        )
        return Project.from_model(row)

    @strawberry.mutation(extensions=[audited()])
    async def update_project(self, info: Info, id: strawberry.ID, input: ProjectUpdate) -> Project:
        project = await _owned_project(info, id, write=True)
        changes = given(input)
        if "client_id" in changes:
            changes["client_id"] = await _client(info, changes["client_id"]) if changes["client_id"] else None
            if changes["client_id"] is None:
                await require_permission(info.context, "gateway:admin")
        before = snapshot(project, changes)
        row = await service.update_project(info.context.session, project=project, changes=changes)
        note_changes(info, before, snapshot(row, before))
        return Project.from_model(row)

    @strawberry.mutation(extensions=[audited()])
    async def delete_project(self, info: Info, id: strawberry.ID) -> bool:
        project = await _owned_project(info, id, write=True)
        for key_id in await service.delete_project(info.context.session, project_id=project.id):
            authentication.announce(info.context, api_key_channel(key_id), end("project deleted"))
        return True

    @strawberry.mutation(extensions=[audited()])
    async def create_api_key(self, info: Info, input: ApiKeyInput) -> CreatedApiKey:
        project = await _owned_project(info, input.project_id, write=True)
        row, secret = await service.create_api_key(
            info.context.session,
            project_id=project.id,
            label=input.label,
            description=input.description,
            expires_at=input.expires_at,
            environment_id=parse_id(input.environment_id, "environmentId") if input.environment_id else None,
            scopes=[scope.name for scope in input.scopes] if input.scopes is not None else None,
        )
        return CreatedApiKey(api_key=ApiKey.from_model(row), secret=secret)

    @strawberry.mutation(extensions=[audited()])
    async def revoke_api_key(self, info: Info, id: strawberry.ID) -> ApiKey:
        ctx = info.context
        key = await service.get_api_key_or_raise(ctx.session, key_id=parse_id(id))
        await authentication.require_user_id(ctx, ctx.session)
        await require_project_access(ctx, ctx.session, key.project_id)
        revoked = await service.revoke_api_key(ctx.session, key=key)
        # Its websockets close on every instance, however busy their live tails are.
        authentication.announce(ctx, api_key_channel(key.id), end("revoked"))
        return ApiKey.from_model(revoked)

    @strawberry.mutation(
        description="Store one log (ApiKey auth). A repeated idempotencyKey returns the stored log.",
        extensions=[audited(*action_for("ingest_log"), details=ingestion_details)],
    )
    async def ingest_log(self, info: Info, input: LogInput) -> Log:
        outcome = await ingest(info, [input])  # type: ignore[list-item]  # LogInput arrives as a LogItem
        return Log.from_model(outcome.first_log())

    @strawberry.mutation(
        description="Store up to 1000 logs at once (ApiKey auth), all or nothing.",
        extensions=[audited(*action_for("ingest_logs"), details=ingestion_details)],
    )
    async def ingest_logs(self, info: Info, inputs: list[LogInput]) -> IngestResult:
        outcome = await ingest(info, inputs)  # type: ignore[arg-type]  # LogInputs arrive as LogItems
        return IngestResult(
            accepted=len(outcome.inserted),
            duplicates=outcome.duplicates,
            ids=[strawberry.ID(str(i)) for i in outcome.ids],
        )


@strawberry.type
class LogsSubscription:
    @strawberry.subscription(
        description="Every log of the project after `after` (a Log.cursor), then live ones, in order, "
        "with no gap and no duplicate."
    )
    async def log_added(
        self, info: Info, project_id: strawberry.ID, after: str | None = None, filter: LogFilter | None = None
    ) -> AsyncGenerator[Log, None]:
        ctx = info.context
        pid = parse_id(project_id, "projectId")
        spec = filter_spec(filter)
        last = decode_int_cursor(LOG_CURSOR, after)
        async with ctx.deps.db.session() as session:
            await require_project_access(ctx, session, pid)
        tail = resumable_tail(
            ctx.deps.hub,
            events.project_channel(pid),
            after=last,
            head=lambda: _head(ctx, pid),
            # Access is checked again whenever the database is read: a revoked key or a lost
            # ownership ends the stream.
            check=lambda: _check_access(ctx, pid),
            read=lambda cursor: _catch_up(ctx, pid, spec, cursor),
            receive=lambda delivery, cursor: _received(spec, delivery, cursor),
            poll=Poll(ctx.deps.settings.tail_poll_seconds, lambda cursor: _has_news(ctx, pid, cursor)),
            metered=True,
        )
        async with aclosing(tail):
            async for event in tail:
                async with ctx.event_scope():
                    yield event  # type: ignore[misc]  # a Log, or a SharedEvent wrapping one


async def _check_access(ctx: Any, project_id: uuid.UUID) -> None:
    async with ctx.deps.db.session() as session:
        await require_project_access(ctx, session, project_id)


async def _head(ctx: Any, project_id: uuid.UUID) -> int:
    async with ctx.deps.db.session() as session:
        return await service.head_seq(session, project_id=project_id)


async def _has_news(ctx: Any, project_id: uuid.UUID, cursor: int) -> bool:
    async with ctx.deps.db.session() as session:
        await require_project_access(ctx, session, project_id)
        return await service.head_seq(session, project_id=project_id) > cursor


async def _catch_up(ctx: Any, project_id: uuid.UUID, spec: service.LogFilterSpec, cursor: int) -> Page[int, Event]:
    """A page of matching logs after `cursor` from PostgreSQL."""
    async with ctx.deps.db.session() as session:
        rows, head = await service.logs_since(
            session, project_id=project_id, after_seq=cursor, spec=spec, limit=CATCH_UP_PAGE
        )
    found: list[Event] = [Log.from_model(row) for row in rows]
    if len(rows) < CATCH_UP_PAGE:
        # A short page holds every matching log up to the head read before it.
        return Page(found, max(head, rows[-1].seq if rows else cursor))
    return Page(found, rows[-1].seq, more=True)


def _received(spec: service.LogFilterSpec, delivery: Delivery, cursor: int) -> list[tuple[int, Event | None]] | None:
    """The logs of a bus message after `cursor` (None for those the filter passes over), up to the
    message's head; None when the subscriber must catch up from the database."""
    rows = events.rows_after(delivery, cursor)
    if rows is None:
        return None
    found: list[tuple[int, Event | None]] = [(row.seq, event if spec.matches(row) else None) for row, event in rows]
    found.append((int(delivery.payload["last"]), None))
    return found
