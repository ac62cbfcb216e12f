"""Gateway administration (gateway:admin, or a project's owner for its environments) and the
gateway's own calls, authenticated by an environment's API key.

Each check-and-change of a quota is one conditional statement. startFlow and completeFlow, the
calls a flow makes on its service's one quota row, are batched with their concurrent peers and
committed on a connection of their own (app/gateway/coalesce.py) when the operation is that one
field: the row is then locked for one statement per batch instead of for each operation's whole
transaction (bench/gateway.py). In an operation of several fields, or one whose transaction has
begun, they run inside the operation's transaction as before, so the operation stays all or
nothing and never waits for a batch while holding a pooled connection."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import strawberry
from graphql import FieldNode, InlineFragmentNode, SelectionSetNode
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import authentication
from app.accounts.events import api_key_channel, end
from app.accounts.permissions import has_permission, require_permission
from app.api.compiled import declare as c
from app.api.context import Context, Info
from app.api.errors import BadUserInput, Forbidden, NotFound
from app.api.lengths import max_length
from app.api.pagination import (
    Connection,
    decode_time_cursor,
    paginate,
    time_cursor,
)
from app.api.scalars import contains_nul
from app.api.validation import MAX_NAME, MAX_URL, given, parse_id
from app.audit.recorder import audited, note_changes, snapshot
from app.gateway import coalesce, models, service
from app.gateway import service as gateway  # for fields whose argument `service` hides the module
from app.gateway.types import (
    ADMIN,
    GATEWAY_ADMIN,
    Client,
    ClientInput,
    ClientUpdate,
    Environment,
    EnvironmentService,
    FlowStart,
    RequestLog,
    RequestOutcome,
    Reservation,
    Service,
    ServiceInput,
    ServiceUpdate,
)
from app.logs import keys
from app.logs import models as logs_models
from app.logs import service as logs_service
from app.logs.types import Project

CLIENT_CURSOR = "client"
SERVICE_CURSOR = "service"
ENVIRONMENT_CURSOR = "environment"
QUOTA_CURSOR = "quota"
RESERVATION_CURSOR = "reservation"

# Service names are looked up by name; an endpoint is a path or a URL.
NAME = max_length(MAX_NAME)
ENDPOINT = max_length(MAX_URL)


async def _project_owner_or_admin(info: Info, project_id: uuid.UUID) -> None:
    project = await logs_service.get_project_or_raise(info.context.session, project_id=project_id)
    await require_permission(info.context, ADMIN, owner_id=project.owner_id)


async def _environment(info: Info, environment_id: strawberry.ID) -> models.Environment:
    env: models.Environment = await service.get_or_raise(
        info.context.session, models.Environment, parse_id(environment_id, "environmentId"), "environment"
    )
    return env


def _batched(info: Info, *, depth: int) -> bool:
    """Whether this field may be committed on its own, in a batch (app/gateway/coalesce.py).

    Only when it is the operation's one root field (a failed sibling must still undo it, so an
    operation of several fields keeps its one transaction); when what it selects goes no deeper
    than `depth` (the result's own values: a nested field that could fail after the batch has
    committed would report "nothing was saved" of a saved change); and when the operation holds
    no connection yet: a caller waiting for its batch must not hold one, or callers could take
    the whole pool while the batch waits for a connection."""
    selections = info.operation.selection_set.selections
    if len(selections) != 1 or not isinstance(selections[0], FieldNode):
        return False
    if _depth(selections[0].selection_set, limit=depth) > depth:
        return False
    session = info.context.scope.session
    return session is None or not session.in_transaction()


def _depth(selection_set: SelectionSetNode | None, *, limit: int) -> int:
    """How deep a selection goes (a leaf's selection is 0), counted up to limit + 1; a named
    fragment counts as too deep (the batch is a fast path, not a rule: declining it is safe)."""
    if selection_set is None:
        return 0
    deepest = 1
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            inner = selection.selection_set
            deepest = max(deepest, 1 + _depth(inner, limit=limit) if inner is not None else 1)
        elif isinstance(selection, InlineFragmentNode):
            deepest = max(deepest, _depth(selection.selection_set, limit=limit))
        else:
            return limit + 1
        if deepest > limit:
            break
    return deepest


def _refuse_nul(**values: str | None) -> None:
    """Text PostgreSQL cannot hold, refused for its caller alone: in a batch it would fail the
    statement, and with it every other caller of the batch (variables are checked up front, an
    inline literal is not)."""
    for name, value in values.items():
        if value is not None and contains_nul(value):
            raise BadUserInput("text may not contain the NUL character (U+0000)", field=name)


def _log_refusal(
    ctx: Context, exc: Exception, *, service_name: str, endpoint: str | None, start_point: str | None
) -> None:
    """A refused request goes into the gateway's log even though its operation is rolled back."""
    key = keys.API_KEY.get(ctx.scope)
    if key is None or not isinstance(exc, service.LOGGED_REFUSALS):
        return
    reason = exc.code

    async def log_it(session: AsyncSession) -> None:
        await service.record_refusal(
            session, key=key, service=service_name, endpoint=endpoint, start_point=start_point, reason=reason
        )

    ctx.scope.on_failure.append(log_it)


def _authenticated(ctx: Context, secret: str) -> coalesce.Authenticated:
    """What `require_api_key` records, for a key its batch has checked."""

    def record(key: logs_models.ApiKey) -> None:
        keys.API_KEY.put(ctx.scope, key)
        keys.key_authenticated(ctx, key, secret)

    return record


# Compiled reads: gateway:admin only (anyone else, API keys included, bails to the resolvers'
# UNAUTHENTICATED or FORBIDDEN). Query.requestLogs keeps its resolver: its ids are text (the keyset
# is (created_at, text id)) and what it shows depends on the API key's environment.
c.root("Query.client", c.ById("Client", bind=parse_id, guard=GATEWAY_ADMIN))
c.root(
    "Query.clients",
    c.Connection("Client", order=c.Keyset("created_at", "id", CLIENT_CURSOR, descending=False), guard=GATEWAY_ADMIN),
)


@strawberry.type
class GatewayQuery:
    @strawberry.field
    async def client(self, info: Info, id: strawberry.ID) -> Client | None:
        await require_permission(info.context, ADMIN)
        row = await info.context.session.get(models.Client, parse_id(id))
        return Client.from_model(row) if row is not None else None

    @strawberry.field
    async def clients(self, info: Info, first: int | None = None, after: str | None = None) -> Connection[Client]:
        from sqlalchemy import func, select
        from sqlmodel import col

        await require_permission(info.context, ADMIN)
        session = info.context.session
        t = models.Client

        async def fetch(position: Any, limit: int, count: bool) -> tuple[Sequence[models.Client], int]:
            query = select(t)
            if position is not None:
                query = query.where(func.row(col(t.created_at), col(t.id)) > func.row(*position))
            rows = (await session.execute(query.order_by(col(t.created_at), col(t.id)).limit(limit + 1))).scalars()
            total = int(await session.scalar(select(func.count()).select_from(t)) or 0) if count else 0
            return rows.all(), total

        return await paginate(
            info, first=first, after=after, kind=CLIENT_CURSOR, fetch=fetch, to_node=Client.from_model
        )

    @strawberry.field(description="A service (`gateway:admin`).")
    async def service(self, info: Info, id: strawberry.ID) -> Service | None:
        await require_permission(info.context, ADMIN)
        row = await info.context.session.get(models.Service, parse_id(id))
        return Service.from_model(row) if row is not None else None

    @strawberry.field(description="Services, oldest first (`gateway:admin`).")
    async def services(self, info: Info, first: int | None = None, after: str | None = None) -> Connection[Service]:
        ctx = info.context
        await require_permission(ctx, ADMIN)
        return await paginate(
            info,
            first=first,
            after=after,
            kind=SERVICE_CURSOR,
            to_node=Service.from_model,
            fetch=lambda position, limit, count: service.list_services(
                ctx.session, after=position, limit=limit, count=count
            ),
        )

    @strawberry.field(description="A project's environments, oldest first (its owner, or `gateway:admin`).")
    async def environments(
        self, info: Info, project_id: strawberry.ID, first: int | None = None, after: str | None = None
    ) -> Connection[Environment]:
        ctx = info.context
        pid = parse_id(project_id, "projectId")
        await authentication.require_user_id(ctx, ctx.session)  # who asks before whether it exists
        await _project_owner_or_admin(info, pid)
        return await paginate(
            info,
            first=first,
            after=after,
            kind=ENVIRONMENT_CURSOR,
            to_node=Environment.from_model,
            fetch=lambda position, limit, count: service.list_environments(
                ctx.session, project_id=pid, after=position, limit=limit, count=count
            ),
        )

    @strawberry.field(
        description="Quotas: the services enabled in environments, in the order they were enabled. "
        "`gateway:admin` sees all; a project's owner those of an environment of theirs (`environmentId`); "
        "an environment's API key its own environment's."
    )
    async def environment_services(
        self,
        info: Info,
        environment_id: strawberry.ID | None = None,
        service_id: strawberry.ID | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[EnvironmentService]:
        ctx = info.context
        environments = await _environments_in_view(info, environment_id, what="quotas")
        wanted_service = await _service_named(info, service_id)
        return await paginate(
            info,
            first=first,
            after=after,
            kind=QUOTA_CURSOR,
            position=_decode_quota_cursor,
            to_node=EnvironmentService.from_model,
            cursor_of=lambda row: time_cursor(QUOTA_CURSOR, row.created_at, f"{row.environment_id}.{row.service_id}"),
            fetch=lambda position, limit, count: service.list_environment_services(
                ctx.session,
                environment_ids=environments,
                service_id=wanted_service,
                after=position,
                limit=limit,
                count=count,
            ),
        )

    @strawberry.field(
        description="Live holds (flows started, not completed, not expired), oldest first; who sees which "
        "as for `environmentServices`."
    )
    async def reservations(
        self,
        info: Info,
        environment_id: strawberry.ID | None = None,
        service_id: strawberry.ID | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Reservation]:
        ctx = info.context
        environments = await _environments_in_view(info, environment_id, what="reservations")
        wanted_service = await _service_named(info, service_id)
        return await paginate(
            info,
            first=first,
            after=after,
            kind=RESERVATION_CURSOR,
            position=decode_time_cursor,
            to_node=Reservation.from_model,
            fetch=lambda position, limit, count: service.list_reservations(
                ctx.session,
                environment_ids=environments,
                service_id=wanted_service,
                after=position,
                limit=limit,
                count=count,
            ),
        )

    @strawberry.field(
        description="Request logs, refused requests included (`outcome` filters); with an API key, only its own "
        "environment's."
    )
    async def request_logs(
        self,
        info: Info,
        environment_id: strawberry.ID | None = None,
        service_id: strawberry.ID | None = None,
        start_point: strawberry.ID | None = None,
        since: datetime | None = None,
        outcome: RequestOutcome | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[RequestLog]:
        ctx = info.context
        environments = await _environments_in_view(info, environment_id, what="request logs")
        wanted_service = await _service_named(info, service_id)
        spec = service.RequestLogSpec(
            environment_ids=environments,
            service_id=wanted_service,
            start_point=str(start_point) if start_point else None,
            since=since,  # DateTime inputs arrive in UTC (app.api.scalars)
            outcome=outcome.value if outcome is not None else None,
        )
        return await paginate(
            info,
            first=first,
            after=after,
            kind="request_log",
            position=decode_time_cursor,  # (time, text): request log ids are text
            fetch=lambda position, limit, count: service.list_request_logs(
                ctx.session, spec=spec, after=position, limit=limit, count=count
            ),
            to_node=RequestLog.from_model,
        )


async def _environments_in_view(
    info: Info, environment_id: strawberry.ID | None, *, what: str
) -> list[uuid.UUID] | None:
    """The environments whose rows the caller may list (None: every one): an API key its own; a
    user one environment of a project they own (`environmentId`), or all of their projects';
    `gateway:admin` any. An environment that does not exist is NOT_FOUND, once the caller is known."""
    ctx = info.context
    wanted = parse_id(environment_id, "environmentId") if environment_id else None
    creds = ctx.credentials
    if creds is not None and creds.scheme == "apikey":
        own = service.environment_of(await keys.require_api_key(ctx))
        if wanted is not None and wanted != own:
            raise Forbidden(f"an API key sees only its own environment's {what}")
        return [own]
    if wanted is not None:
        await authentication.require_user_id(ctx, ctx.session)  # who asks before whether it exists
        env = await service.get_or_raise(ctx.session, models.Environment, wanted, "environment")
        await _project_owner_or_admin(info, env.project_id)
        return [wanted]
    if await has_permission(ctx, ADMIN):
        return None
    return await _owned_environments(info)


async def _service_named(info: Info, service_id: strawberry.ID | None) -> uuid.UUID | None:
    """An argument naming a parent is NOT_FOUND when there is none (not an empty page)."""
    if not service_id:
        return None
    wanted = parse_id(service_id, "serviceId")
    await service.get_or_raise(info.context.session, models.Service, wanted, "service")
    return wanted


def _decode_quota_cursor(kind: str, cursor: str | None) -> tuple[datetime, uuid.UUID, uuid.UUID] | None:
    position = decode_time_cursor(kind, cursor)
    if position is None:
        return None
    created_at, pair = position
    environment_id, _, service_id = pair.partition(".")
    try:
        return created_at, uuid.UUID(environment_id), uuid.UUID(service_id)
    except ValueError:
        raise BadUserInput("malformed cursor", cursor=cursor) from None


async def _owned_environments(info: Info) -> list[uuid.UUID]:
    from sqlalchemy import select
    from sqlmodel import col

    user_id = await authentication.require_user_id(info.context)
    query = (
        select(col(models.Environment.id))
        .join(logs_models.Project, col(logs_models.Project.id) == col(models.Environment.project_id))
        .where(col(logs_models.Project.owner_id) == user_id)
    )
    return list((await info.context.session.execute(query)).scalars().all())


async def _start_flow(info: Info, service: str, endpoint: str | None, amount: int, ttl_seconds: int) -> FlowStart:
    """startFlow: batched with its concurrent peers when it stands alone (`_batched`)."""
    ctx = info.context
    if _batched(info, depth=2):  # flowStart { reservation { id } requestLog { id } }
        secret = keys.api_key_secret(ctx)
        reservation, start = await coalesce.start_flow(
            ctx.deps.db,
            secret=secret,
            service=service,
            endpoint=endpoint,
            amount=amount,
            ttl_seconds=ttl_seconds,
            authenticated=_authenticated(ctx, secret),
            lanes=ctx.deps.lanes,
        )
        ctx.scope.stands("a flow started (its hold, first log and reservation)")
    else:
        key = await keys.require_api_key(ctx)
        reservation, start = await gateway.start_flow(
            ctx.session, key=key, service=service, endpoint=endpoint, amount=amount, ttl_seconds=ttl_seconds
        )
    return FlowStart(request_log=RequestLog.from_model(start), reservation=Reservation.from_model(reservation))


@strawberry.type
class GatewayMutation:
    @strawberry.mutation(extensions=[audited()])
    async def create_client(self, info: Info, input: ClientInput) -> Client:
        await require_permission(info.context, ADMIN)
        return Client.from_model(await service.create_client(info.context.session, name=input.name, email=input.email))

    @strawberry.mutation(extensions=[audited()])
    async def create_service(self, info: Info, input: ServiceInput) -> Service:
        await require_permission(info.context, ADMIN)
        row = await service.create_service(info.context.session, name=input.name, description=input.description)
        return Service.from_model(row)

    @strawberry.mutation(extensions=[audited()])
    async def add_project_service(self, info: Info, project_id: strawberry.ID, service_id: strawberry.ID) -> Project:
        await require_permission(info.context, ADMIN)
        session = info.context.session
        project = await logs_service.get_project_or_raise(session, project_id=parse_id(project_id, "projectId"))
        await service.add_project_service(session, project_id=project.id, service_id=parse_id(service_id, "serviceId"))
        return Project.from_model(project)

    @strawberry.mutation(
        extensions=[audited()],
        description="The name is never updatable: keys are handed out for it.",
    )
    async def create_environment(
        self, info: Info, project_id: strawberry.ID, name: Annotated[str, strawberry.argument(metadata=NAME)]
    ) -> Environment:
        pid = parse_id(project_id, "projectId")
        await _project_owner_or_admin(info, pid)
        return Environment.from_model(await service.create_environment(info.context.session, project_id=pid, name=name))

    @strawberry.mutation(
        extensions=[audited()],
        description="Sets a service's request quota in an environment (gateway:admin).",
    )
    async def enable_environment_service(
        self, info: Info, environment_id: strawberry.ID, service_id: strawberry.ID, available_requests: int
    ) -> EnvironmentService:
        await require_permission(info.context, ADMIN)
        env = await _environment(info, environment_id)
        row = await service.enable_environment_service(
            info.context.session,
            environment_id=env.id,
            service_id=parse_id(service_id, "serviceId"),
            available=available_requests,
        )
        return EnvironmentService.from_model(row)

    @strawberry.mutation(extensions=[audited()])
    async def adjust_available_requests(
        self, info: Info, environment_id: strawberry.ID, service_id: strawberry.ID, delta: int
    ) -> EnvironmentService:
        await require_permission(info.context, ADMIN)
        row = await service.adjust_available(
            info.context.session,
            environment_id=parse_id(environment_id, "environmentId"),
            service_id=parse_id(service_id, "serviceId"),
            delta=delta,
        )
        return EnvironmentService.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Change a client (`gateway:admin`).",
    )
    async def update_client(self, info: Info, id: strawberry.ID, input: ClientUpdate) -> Client:
        await require_permission(info.context, ADMIN)
        changes = given(input)
        current = await service.get_or_raise(info.context.session, models.Client, parse_id(id), "client")
        before = snapshot(current, changes)
        row = await service.update_client(info.context.session, client=current, changes=changes)
        note_changes(info, before, snapshot(row, before))
        return Client.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Delete a client (`gateway:admin`); its projects stay, with no client.",
    )
    async def delete_client(self, info: Info, id: strawberry.ID) -> bool:
        await require_permission(info.context, ADMIN)
        if not await service.delete_client(info.context.session, client_id=parse_id(id)):
            raise NotFound("client not found", id=str(id))
        return True

    @strawberry.mutation(
        extensions=[audited()],
        description="Change a service (`gateway:admin`). Gateways call it by name: a new name is the one they "
        "must use.",
    )
    async def update_service(self, info: Info, id: strawberry.ID, input: ServiceUpdate) -> Service:
        await require_permission(info.context, ADMIN)
        changes = given(input)
        current = await service.get_or_raise(info.context.session, models.Service, parse_id(id), "service")
        before = snapshot(current, changes)
        row = await service.update_service(info.context.session, service=current, changes=changes)
        note_changes(info, before, snapshot(row, before))
        return Service.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Delete a service (`gateway:admin`) with its quotas and request logs; CONFLICT while a "
        "flow holds requests of it.",
    )
    async def delete_service(self, info: Info, id: strawberry.ID) -> bool:
        await require_permission(info.context, ADMIN)
        await service.delete_service(info.context.session, service_id=parse_id(id))
        return True

    @strawberry.mutation(
        extensions=[audited()],
        description="Detach a service from a project (`gateway:admin`): its quotas in the project's environments "
        "go, its request logs stay; CONFLICT while a flow holds requests of it there.",
    )
    async def remove_project_service(self, info: Info, project_id: strawberry.ID, service_id: strawberry.ID) -> Project:
        await require_permission(info.context, ADMIN)
        session = info.context.session
        project = await logs_service.get_project_or_raise(session, project_id=parse_id(project_id, "projectId"))
        await service.remove_project_service(
            session, project_id=project.id, service_id=parse_id(service_id, "serviceId")
        )
        return Project.from_model(project)

    @strawberry.mutation(
        extensions=[audited()],
        description="Delete an environment (its project's owner, or `gateway:admin`) with its API keys, quotas "
        "and request logs; CONFLICT while a flow holds requests in it. Its name is never updatable, so there "
        "is no updateEnvironment.",
    )
    async def delete_environment(self, info: Info, id: strawberry.ID) -> bool:
        env = await _environment(info, id)
        await _project_owner_or_admin(info, env.project_id)
        for key_id in await service.delete_environment(info.context.session, environment_id=env.id):
            # Its keys stop working at once on every instance, and their websockets close.
            authentication.announce(info.context, api_key_channel(key_id), end("environment deleted"))
        return True

    @strawberry.mutation(
        extensions=[audited()],
        description="Take a service's quota out of an environment (`gateway:admin`; its request logs stay); "
        "CONFLICT while a flow holds requests of it there.",
    )
    async def disable_environment_service(
        self, info: Info, environment_id: strawberry.ID, service_id: strawberry.ID
    ) -> bool:
        await require_permission(info.context, ADMIN)
        await service.disable_environment_service(
            info.context.session,
            environment_id=parse_id(environment_id, "environmentId"),
            service_id=parse_id(service_id, "serviceId"),
        )
        return True

    @strawberry.mutation(
        extensions=[audited()],
        description="Record one request (ApiKey); outside a flow it spends one request.",
    )
    async def record_request(
        self,
        info: Info,
        service: Annotated[str, strawberry.argument(metadata=NAME)],
        endpoint: Annotated[str | None, strawberry.argument(metadata=ENDPOINT)] = None,
        start_point: strawberry.ID | None = None,
    ) -> RequestLog:
        ctx = info.context
        key = await keys.require_api_key(ctx)
        point = str(start_point) if start_point else None
        try:
            row = await gateway.record_request(
                ctx.session, key=key, service=service, endpoint=endpoint, start_point=point
            )
        except Exception as exc:
            _log_refusal(ctx, exc, service_name=service, endpoint=endpoint, start_point=point)
            raise
        return RequestLog.from_model(row)

    @strawberry.mutation(
        extensions=[audited()],
        description="Hold `amount` requests for a multi-step flow (ApiKey).",
    )
    async def start_flow(
        self,
        info: Info,
        service: Annotated[str, strawberry.argument(metadata=NAME)],
        endpoint: Annotated[str | None, strawberry.argument(metadata=ENDPOINT)] = None,
        amount: int = 1,
        ttl_seconds: int = 300,
    ) -> FlowStart:
        ctx = info.context
        _refuse_nul(service=service, endpoint=endpoint)
        try:
            return await _start_flow(info, service, endpoint, amount, ttl_seconds)
        except Exception as exc:
            _log_refusal(ctx, exc, service_name=service, endpoint=endpoint, start_point=None)
            raise

    @strawberry.mutation(
        extensions=[audited()],
        description="Spend (success) or release the flow's hold; the reservation is deleted.",
    )
    async def complete_flow(self, info: Info, reservation_id: strawberry.ID, success: bool) -> EnvironmentService:
        ctx = info.context
        _refuse_nul(reservationId=str(reservation_id))
        if _batched(info, depth=1):  # environmentService { availableRequests }
            secret = keys.api_key_secret(ctx)
            row = await coalesce.complete_flow(
                ctx.deps.db,
                secret=secret,
                reservation_id=str(reservation_id),
                success=success,
                authenticated=_authenticated(ctx, secret),
                lanes=ctx.deps.lanes,
            )
            ctx.scope.stands("a flow completed (its hold spent or released)")
        else:
            key = await keys.require_api_key(ctx)
            row = await service.complete_flow(ctx.session, key=key, reservation_id=str(reservation_id), success=success)
        return EnvironmentService.from_model(row)
