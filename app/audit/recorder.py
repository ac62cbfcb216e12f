"""One audit row per mutation field, written in the operation's transaction.

Each mutation field declares its row, `@strawberry.mutation(extensions=[audited()])`, and
`require_audited(Mutation)` refuses to build a schema with a mutation that does not; no resolver
writes audit rows itself. The field extension records what was attempted and how it
ended; `OperationScopeExtension` writes the rows: with the operation's own commit, or, when the
operation failed and was rolled back, alone in a transaction of their own (success = false).
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from strawberry.extensions import FieldExtension

from app.api.errors import LodgeError
from app.api.validation import MAX_JSON_DEPTH
from app.audit import models

# Any argument whose name contains one of these is redacted, whatever its case or nesting.
SENSITIVE = ("password", "secret", "token", "authorization", "apikey", "api_key")
# Arguments wrap a JSON value (at most MAX_JSON_DEPTH) in a few input objects and lists.
MAX_DETAILS_DEPTH = MAX_JSON_DEPTH + 8
# Where `noun.verb` from the field name would read badly.
ACTIONS: dict[str, tuple[str, str]] = {
    "register": ("user.register", "user"),
    "login": ("user.login", "user"),
    "logout": ("user.logout", "user"),
    "refresh": ("user.refresh", "user"),
    "update_me": ("user.update", "user"),
    "ingest_log": ("log.ingest", "log"),
    "ingest_logs": ("log.ingest", "log"),
    "upsert_discord_user": ("user.upsert_discord", "user"),
    "upsert_clerk_user": ("user.upsert_clerk", "user"),
    "assign_role": ("role.assign", "user"),
    "revoke_role": ("role.revoke", "user"),
    "delete_expired_sessions": ("session.delete_expired", "session"),
    "update_guild_settings": ("guild.update_settings", "guild"),
}


def action_for(python_name: str) -> tuple[str, str]:
    """`create_project` -> (`project.create`, `project`)."""
    if python_name in ACTIONS:
        return ACTIONS[python_name]
    verb, _, noun = python_name.partition("_")
    noun = noun or verb
    return f"{noun}.{verb}", noun


@dataclass
class AuditEntry:
    action: str
    resource_type: str
    resource_id: str | None
    details: dict[str, Any] | None
    success: bool = True
    error_message: str | None = None
    user_id: uuid.UUID | None = None  # who it was about when no viewer is known (login, register)
    # An update's changed fields, {"field": {"before": ..., "after": ...}} (note_changes): written
    # into details["changes"] when the update succeeded.
    changes: dict[str, Any] | None = None


# A field's own account of its row's details, from its arguments and its result (None until it
# has one, and on failure), recorded instead of the arguments: for fields whose arguments are
# content that readers of the trail may not see (ingested logs).
Details = Callable[[dict[str, Any], Any], dict[str, Any]]


# A field whose result says what the row records (recordAuditEvent: an app's own event): the
# (action, resource type, resource id, details) of the row once the field has succeeded.
Describe = Callable[[Any], tuple[str, str, str | None, dict[str, Any] | None]]
# The actions Lodge's own mutations write (audit_mutations): no app may record one of them.
LODGE_ACTIONS: set[str] = set()


class AuditField(FieldExtension):
    """A mutation field's audit row (see `audited`)."""

    def __init__(
        self,
        action: str | None = None,
        resource_type: str | None = None,
        *,
        details: Details | None = None,
        describe: Describe | None = None,
        unless: Callable[[Any], bool] | None = None,
    ) -> None:
        self.action = action or ""
        self.resource_type = resource_type or ""
        self.details = details
        self.describe = describe
        self.unless = unless

    def apply(self, field: Any) -> None:
        # Named after its field (`create_project` -> `project.create`) unless given a name.
        if not self.action:
            self.action, self.resource_type = action_for(field.python_name)

    async def resolve_async(
        self, next_: Callable[..., Awaitable[Any]], source: Any, info: strawberry.Info, **kwargs: Any
    ) -> Any:
        entry = AuditEntry(
            action=self.action,
            resource_type=self.resource_type,
            resource_id=_id_in(kwargs),
            details=self.details(kwargs, None)
            if self.details is not None
            else ({"arguments": _jsonable(kwargs)} if kwargs else None),
        )
        info.context.scope.audit.append(entry)
        try:
            result = await next_(source, info, **kwargs)
        except Exception as exc:
            entry.success = False
            entry.error_message = exc.message if isinstance(exc, LodgeError) else "internal error"
            raise
        if self.unless is not None and self.unless(result):
            info.context.scope.audit.remove(entry)  # a success that changed nothing worth a row
            return result
        if self.describe is not None:
            entry.action, entry.resource_type, entry.resource_id, entry.details = self.describe(result)
            return result
        entry.resource_id = _id_of(result) or entry.resource_id
        if self.details is not None:
            entry.details = self.details(kwargs, result)
        user = getattr(result, "user", None)
        if user is not None and getattr(user, "user_id", None) is not None:
            entry.user_id = user.user_id
        return result


def note_changes(info: Any, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    """Record on the running mutation's audit row the fields an update changed, before and after
    (values as in details: bounded, secrets redacted). Mutations run one after another, so the row
    is the last one begun."""
    entries: list[AuditEntry] = info.context.scope.audit
    if not entries:
        return
    changed = {
        name: {"before": _jsonable(before.get(name), name), "after": _jsonable(value, name)}
        for name, value in after.items()
        if before.get(name) != value
    }
    entries[-1].changes = changed


def snapshot(row: Any, fields: Iterable[str]) -> dict[str, Any]:
    """The values of `fields` on `row` now (what note_changes compares)."""
    return {name: getattr(row, name, None) for name in fields}


def audited(
    action: str | None = None,
    resource_type: str | None = None,
    *,
    details: Details | None = None,
    describe: Describe | None = None,
    unless: Callable[[Any], bool] | None = None,
) -> AuditField:
    """The audit row of a mutation field, declared on it: `@strawberry.mutation(extensions=[audited()])`.
    The action is `noun.verb` from the field's name unless given; `details` replaces the arguments
    as the row's details (for content the trail's readers may not see); `describe` takes the row's
    action, resource and details from the field's result (an app's own event); `unless(result)`
    true drops the row of a success that changed nothing worth recording (a runner polling for
    work and finding none, a lease renewed): refusals and failures are always recorded."""
    return AuditField(action, resource_type, details=details, describe=describe, unless=unless)


def require_audited(mutation: type) -> None:
    """Every mutation field writes an audit row (API.md): a field declared without `audited()` stops
    the schema from being built, rather than changing data unrecorded. Also collects LODGE_ACTIONS."""
    missing = []
    for field in mutation.__strawberry_definition__.fields:  # type: ignore[attr-defined]
        found = [ext for ext in field.extensions if isinstance(ext, AuditField)]
        if not found:
            missing.append(field.python_name)
        for ext in found:
            if not ext.action:
                ext.apply(field)
            LODGE_ACTIONS.add(ext.action)
    if missing:
        raise TypeError(f"mutations without an audit row: {', '.join(missing)} (declare extensions=[audited()])")


async def write(session: AsyncSession | AsyncConnection, *, ctx: Any, entries: list[AuditEntry]) -> None:
    """One multi-row INSERT (Core, not the ORM unit of work: this runs for every mutation)."""
    await write_for_request(
        session, viewer=ctx.scope.viewer, request=ctx.request, request_id=ctx.request_id, entries=entries
    )


async def write_for_request(
    session: AsyncSession | AsyncConnection, *, viewer: Any, request: Any, request_id: str, entries: list[AuditEntry]
) -> None:
    """The rows of `entries` for one HTTP request (its client address and user agent), made by
    `viewer` (None: an API key, or nobody known)."""
    client = getattr(request, "client", None)
    ip = _ip(client.host) if client else None
    user_agent = request.headers.get("user-agent")
    session_id = str(viewer.session_id) if viewer and viewer.session_id else None
    rows = [
        {
            "user_id": viewer.user_id if viewer else entry.user_id,
            "action": entry.action,
            "resource_type": entry.resource_type,
            # An id argument is the client's text (a NUL PostgreSQL refuses would lose the row).
            "resource_id": _text(entry.resource_id),
            "details": {**(entry.details or {}), "changes": entry.changes}
            if entry.changes and entry.success
            else entry.details,
            "ip_address": ip,
            "user_agent": user_agent,
            "session_id": session_id,
            "request_id": request_id,
            "success": entry.success,
            "error_message": _text(entry.error_message),
        }
        for entry in entries
    ]
    await session.execute(insert(models.AuditLog.__table__), rows)  # type: ignore[attr-defined]


def mark_rolled_back(entries: list[AuditEntry], reason: str) -> None:
    for entry in entries:
        # A user taken from the field's result (register, upsertDiscordUser) may have been created
        # by the transaction just undone: the row would point at nobody. The viewer, if any, stays.
        entry.user_id = None
        if entry.success:
            entry.success = False
            entry.error_message = f"rolled back with the operation: {reason}"


def _id_in(kwargs: dict[str, Any]) -> str | None:
    for key in ("id", "user_id", "project_id", "workflow_id", "execution_id", "vendor_id", "guild_id"):
        if kwargs.get(key):
            return str(kwargs[key])
    return None


def _id_of(result: Any) -> str | None:
    for attr in ("id", "user", "api_key", "session", "request_log", "reservation"):
        value = getattr(result, attr, None)
        if attr == "id" and value is not None:
            return str(value)
        if value is not None and getattr(value, "id", None) is not None:
            return str(value.id)
    return None


def _text(value: str | None) -> str | None:
    """Text as PostgreSQL keeps it: without NUL characters, and bounded."""
    if value is None:
        return None
    value = value.replace("\x00", "")
    return value if len(value) <= 500 else value[:500] + "…"


def _ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _jsonable(value: Any, key: str = "", depth: int = 0) -> Any:
    if any(word in key.lower() for word in SENSITIVE):
        return "[redacted]"
    if value is strawberry.UNSET:
        return None
    if depth > MAX_DETAILS_DEPTH and not isinstance(value, str | int | float | bool | None):
        # JSON arguments are bounded before they get here; this bounds the recursion regardless.
        return "[nested too deeply]"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _jsonable(getattr(value, f.name), f.name, depth + 1)
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not strawberry.UNSET
        }
    if isinstance(value, dict):
        return {str(k): _jsonable(v, str(k), depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, "", depth + 1) for v in value] if len(value) <= 20 else {"count": len(value)}
    if isinstance(value, str):
        value = value.replace("\x00", "")  # jsonb cannot hold U+0000
        return value if len(value) <= 200 else value[:200] + "…"
    if isinstance(value, uuid.UUID | datetime):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)
