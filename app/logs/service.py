"""Projects, API keys and log ingestion. Functions flush; the caller owns the transaction.

Ingestion serialises the commits of one project with a transaction-scoped advisory lock, so a
project's logs commit in `seq` order. That is what lets live tail resume from a cursor with no gap:
once a subscriber has seen `seq = n`, every log of the project with a smaller seq is committed.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import BigInteger, DateTime, Text, and_, column, delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import col

from app.accounts.events import api_key_channel
from app.accounts.principals import MISSING
from app.api.errors import BadUserInput, NotFound, Unauthenticated
from app.logs import models

if TYPE_CHECKING:
    from app.accounts.principals import Principals

KEY_PREFIX = "lodge_"
PREFIX_LENGTH = len(KEY_PREFIX) + 8
MAX_IDEMPOTENCY_KEY = 255
# A bus message carries the new rows only while it stays small; bigger batches are announced
# without rows and subscribers read them from PostgreSQL.
MAX_EVENT_ROWS_BYTES = 512 * 1024


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# -- projects ------------------------------------------------------------------------------------


async def create_project(
    session: AsyncSession,
    *,
    owner_id: uuid.UUID,
    name: str,
    description: str | None,
    client_id: uuid.UUID | None = None,
) -> models.Project:
    """One INSERT ... RETURNING (Core: the ORM's flush and refresh took two round trips and a third
    of the mutation's time)."""
    table: Any = models.Project.__table__  # type: ignore[attr-defined]
    values = {"owner_id": owner_id, "name": _required(name, "name"), "description": description, "client_id": client_id}
    row = (await session.execute(insert(table).values(values).returning(*table.c))).mappings().one()
    return models.Project.model_construct(**row)


async def get_project_or_raise(session: AsyncSession, *, project_id: uuid.UUID) -> models.Project:
    project = await session.get(models.Project, project_id)
    if project is None:
        raise NotFound("project not found", id=str(project_id))
    return project


async def update_project(session: AsyncSession, *, project: models.Project, changes: dict[str, Any]) -> models.Project:
    if "name" in changes:
        changes["name"] = _required(changes["name"], "name")
    days = changes.get("log_retention_days")
    if days is not None and not 1 <= days <= models.MAX_RETENTION_DAYS:
        raise BadUserInput(
            f"logRetentionDays must be between 1 and {models.MAX_RETENTION_DAYS}", field="logRetentionDays"
        )
    for name, value in changes.items():
        setattr(project, name, value)
    await session.flush()
    await session.refresh(project)
    return project


async def delete_project(session: AsyncSession, *, project_id: uuid.UUID) -> list[uuid.UUID]:
    """Deletes the project and its keys; returns the ids of the keys that went with it."""
    keys = await session.scalars(
        delete(models.ApiKey).where(col(models.ApiKey.project_id) == project_id).returning(col(models.ApiKey.id))
    )
    ended = list(keys.all())
    await session.execute(delete(models.Project).where(models.Project.id == project_id))  # type: ignore[arg-type]
    return ended


async def list_projects(
    session: AsyncSession, *, owner_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> tuple[Sequence[models.Project], int]:
    table = models.Project
    query = select(table).where(table.owner_id == owner_id)  # type: ignore[arg-type]
    if after is not None:
        query = query.where(func.row(table.created_at, table.id) > func.row(*after))
    rows = (
        (await session.execute(query.order_by(col(table.created_at), col(table.id)).limit(limit + 1))).scalars().all()
    )
    total = await session.scalar(select(func.count()).select_from(table).where(table.owner_id == owner_id))  # type: ignore[arg-type]
    return rows, int(total or 0)


def _required(value: str | None, field: str) -> str:
    if value is None or not value.strip():
        raise BadUserInput(f"{field} must not be empty", field=field)
    return value.strip()


# -- API keys ------------------------------------------------------------------------------------


async def create_api_key(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    label: str,
    description: str | None,
    expires_at: datetime | None,
    environment_id: uuid.UUID | None = None,
    scopes: Sequence[str] | None = None,
) -> tuple[models.ApiKey, str]:
    """A new key and its secret (shown once). Scopes by default: a project key may do anything
    (ADMIN); an environment's key, made for a gateway, ingests but reads no logs unless given READ."""
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise BadUserInput("expiresAt must be in the future", field="expiresAt")
    if scopes is None:
        scopes = [models.INGEST] if environment_id is not None else [models.ADMIN]
    scopes = sorted(set(scopes), key=models.SCOPES.index)
    if not scopes and environment_id is None:
        raise BadUserInput("a project's key needs at least one scope", field="scopes")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = models.ApiKey(
        project_id=project_id,
        environment_id=environment_id,
        label=_required(label, "label"),
        description=description,
        prefix=secret[:PREFIX_LENGTH],
        key_hash=hash_secret(secret),
        expires_at=expires_at,
        scopes=list(scopes),
    )
    session.add(key)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        # The composite foreign key (environment_id, project_id): not an environment of this project.
        raise BadUserInput("environmentId is not an environment of this project", field="environmentId") from None
    await session.refresh(key)
    return key, secret


async def get_api_key_or_raise(session: AsyncSession, *, key_id: uuid.UUID) -> models.ApiKey:
    key = await session.get(models.ApiKey, key_id)
    if key is None:
        raise NotFound("API key not found", id=str(key_id))
    return key


async def revoke_api_key(session: AsyncSession, *, key: models.ApiKey) -> models.ApiKey:
    await session.execute(
        update(models.ApiKey)
        .where(models.ApiKey.id == key.id, models.ApiKey.revoked_at.is_(None))  # type: ignore[arg-type,union-attr]
        .values(revoked_at=func.now())
    )
    await session.refresh(key)
    return key


_AUTHENTICATE = text(
    """
    WITH k AS (
        SELECT * FROM api_keys WHERE key_hash = :hash
    ), touched AS (
        -- lastUsedAt is kept to the minute: one write a minute per key, not one per request.
        UPDATE api_keys SET last_used_at = now()
        WHERE id = (SELECT id FROM k WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()))
          AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
        RETURNING id
    )
    SELECT k.*, (k.expires_at IS NOT NULL AND k.expires_at <= now()) AS expired FROM k
    """
)


async def authenticate_api_key(session: AsyncSession | AsyncConnection, *, secret: str) -> models.ApiKey:
    row = (await session.execute(_AUTHENTICATE, {"hash": hash_secret(secret)})).mappings().first()
    if row is None:
        raise Unauthenticated("unknown API key")
    if row["revoked_at"] is not None:
        raise Unauthenticated("this API key was revoked")
    if row["expired"]:
        raise Unauthenticated("this API key has expired")
    return models.ApiKey.model_construct(**{k: v for k, v in row.items() if k != "expired"})


def remembered_api_key(principals: Principals, secret: str) -> models.ApiKey | None:
    """The key of `secret` if this process remembers it as valid (app.accounts.principals)."""
    found = principals.get(principals.key_of("apikey", secret))
    if found is MISSING:
        return None
    assert isinstance(found, models.ApiKey)
    return found  # never past its expiry: it was remembered until then at most


async def authenticate_api_key_cached(
    principals: Principals, conn: AsyncSession | AsyncConnection, *, secret: str
) -> models.ApiKey:
    """`authenticate_api_key`, remembered for a while (app.accounts.principals) until the key's
    revocation is announced. A remembered key touches no `lastUsedAt`: it is still kept to the
    minute while the cache lasts less than a minute (LODGE_AUTH_CACHE_SECONDS)."""
    if (found := remembered_api_key(principals, secret)) is not None:
        return found
    generation = principals.generation
    row = await authenticate_api_key(conn, secret=secret)
    until = row.expires_at.timestamp() if row.expires_at is not None else None
    principals.put(
        principals.key_of("apikey", secret), row, tags=(api_key_channel(row.id),), generation=generation, until=until
    )
    return row


# -- ingestion -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogItem:
    log: str
    level: str
    attributes: Any
    idempotency_key: str | None
    occurred_at: datetime | None = None  # the event time its sender gives, in UTC


@dataclass
class IngestOutcome:
    ids: list[uuid.UUID]
    inserted: list[dict[str, Any]]  # stored rows, in seq order
    duplicates: int
    prev_seq: int
    approx_bytes: int
    existing: dict[str, models.Log] = field(default_factory=dict)  # earlier logs, by idempotency key

    def event(self) -> dict[str, Any] | None:
        """The bus message announcing this batch, or None when nothing new was stored."""
        if not self.inserted:
            return None
        rows = self.inserted if self.approx_bytes <= MAX_EVENT_ROWS_BYTES else None
        return {"prev": self.prev_seq, "last": self.inserted[-1]["seq"], "logs": rows}

    def first_log(self) -> models.Log:
        """The log stored for the first item: new, or the earlier one with its idempotency key."""
        if self.inserted and self.inserted[0]["id"] == self.ids[0]:
            return row_to_log(self.inserted[0])
        return next(log for log in self.existing.values() if log.id == self.ids[0])


@dataclass
class Batch:
    """Validated items, with each one's attributes already encoded as JSON text."""

    items: Sequence[LogItem]
    attributes_json: list[str | None]
    approx_bytes: int


def prepare_batch(
    items: Sequence[LogItem], *, max_batch: int, max_bytes: int, lines: Sequence[int] | None = None
) -> Batch:
    """Refuse the whole batch on any bad item (nothing is written).

    An error names the item by `index` (0-based, GraphQL's `inputs`), or by `line` when `lines`
    gives each item's 1-based line (`POST /ingest`)."""
    if len(items) > max_batch:
        raise BadUserInput(f"at most {max_batch} logs per call, got {len(items)}", limit=max_batch)
    encoded: list[str | None] = []
    total = 0
    for index, item in enumerate(items):
        position = {"line": lines[index]} if lines else {"index": index}
        where = f"line {lines[index]}" if lines else f"log {index}"
        if item.level not in models.LOG_LEVELS:
            raise BadUserInput(f"{where}: unknown level {item.level!r}", **position)
        if item.attributes is not None and not isinstance(item.attributes, dict):
            raise BadUserInput(f"{where}: attributes must be a JSON object", **position)
        try:
            attributes = orjson.dumps(item.attributes).decode() if item.attributes is not None else None
        except TypeError:
            message = f"{where}: attributes hold a value JSON cannot carry (an integer beyond 64 bits?)"
            raise BadUserInput(message, **position) from None

        size = len(item.log.encode()) + (len(attributes) if attributes is not None else 0)
        if size > max_bytes:
            raise BadUserInput(f"{where} is {size} bytes; the limit is {max_bytes}", **position, limit=max_bytes)
        if item.idempotency_key is not None and not 0 < len(item.idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise BadUserInput(f"{where}: idempotencyKey must be 1..{MAX_IDEMPOTENCY_KEY} characters", **position)
        encoded.append(attributes)
        total += size + 200
    return Batch(items=items, attributes_json=encoded, approx_bytes=total)


_INGEST = text(
    "SELECT * FROM ingest_logs(:project_id, :api_key_id, :logs, :levels, :attributes, :keys, :occurred_at)"
).columns(
    column("prev", BigInteger),
    column("id", PG_UUID(as_uuid=True)),
    column("seq", BigInteger),
    column("idempotency_key", Text),
    column("created_at", DateTime(timezone=True)),
)


# Ids an ingestion's audit row lists; past them, `idsOmitted` counts the rest.
MAX_AUDITED_IDS = 100


def ingestion_audit(submitted: int, accepted: int, duplicates: int, ids: Sequence[Any]) -> dict[str, Any]:
    """An ingestion's audit details (ingestLogs and POST /ingest): counts and ids, never a log's
    text or attributes (the trail's readers, audit:read, may not read the project's logs)."""
    details: dict[str, Any] = {
        "submitted": submitted,
        "accepted": accepted,
        "duplicates": duplicates,
        "ids": [str(i) for i in ids[:MAX_AUDITED_IDS]],
    }
    if len(ids) > MAX_AUDITED_IDS:
        details["idsOmitted"] = len(ids) - MAX_AUDITED_IDS
    return details


async def ingest(conn: AsyncConnection, *, api_key: models.ApiKey, batch: Batch) -> IngestOutcome:
    """Store a batch for the key's project in one statement on an autocommit connection.

    The `ingest_logs` function (see the foundation migration) holds the project's lock only while
    the database works, then commits. Idempotency keys seen before return the stored log's id.
    """
    items = batch.items
    project_id = api_key.project_id
    if not items:
        return IngestOutcome(ids=[], inserted=[], duplicates=0, prev_seq=0, approx_bytes=0)
    result = await conn.execute(
        _INGEST,
        {
            "project_id": project_id,
            "api_key_id": api_key.id,
            "logs": [item.log for item in items],
            "levels": [item.level for item in items],
            "attributes": batch.attributes_json,
            "keys": [item.idempotency_key for item in items],
            "occurred_at": [item.occurred_at for item in items],
        },
    )
    returned = result.all()
    prev_seq = int(returned[0].prev) if returned else 0
    inserted_keys = {row.idempotency_key for row in returned if row.idempotency_key is not None}
    missing = {
        item.idempotency_key for item in items if item.idempotency_key and item.idempotency_key not in inserted_keys
    }
    existing: dict[str, models.Log] = {}
    if missing:
        rows = await conn.execute(
            select(models.Log.__table__).where(  # type: ignore[attr-defined]
                models.Log.project_id == project_id,  # type: ignore[arg-type]
                models.Log.idempotency_key.in_(missing),  # type: ignore[union-attr]
            )
        )
        existing = {row["idempotency_key"]: row_to_log(dict(row)) for row in rows.mappings()}

    # Rows come back in input order: pair each with the item it stores.
    ids: list[uuid.UUID] = []
    inserted: list[dict[str, Any]] = []
    fresh = iter(returned)
    seen: dict[str, uuid.UUID] = {}
    for item in items:
        key = item.idempotency_key
        if key is not None and key in seen:
            ids.append(seen[key])
            continue
        if key is not None and key in existing:
            ids.append(existing[key].id)
            continue
        row = next(fresh)
        ids.append(row.id)
        if key is not None:
            seen[key] = row.id
        inserted.append(
            {
                "id": row.id,
                "seq": row.seq,
                "project_id": project_id,
                "api_key_id": api_key.id,
                "log": item.log,
                "level": item.level,
                "attributes": item.attributes,
                "idempotency_key": key,
                "occurred_at": item.occurred_at,
                "created_at": row.created_at,
            }
        )
    return IngestOutcome(
        ids=ids,
        inserted=inserted,
        duplicates=len(items) - len(inserted),
        prev_seq=prev_seq,
        approx_bytes=batch.approx_bytes,
        existing=existing,
    )


def row_to_log(row: dict[str, Any]) -> models.Log:
    return models.Log.model_construct(**row)


def log_from_event(data: dict[str, Any]) -> models.Log:
    """A bus message row (JSON: ids and times as strings) back into a model."""
    return models.Log.model_construct(
        id=uuid.UUID(data["id"]),
        seq=data["seq"],
        project_id=uuid.UUID(data["project_id"]),
        api_key_id=uuid.UUID(data["api_key_id"]) if data["api_key_id"] else None,
        log=data["log"],
        level=data["level"],
        attributes=data["attributes"],
        idempotency_key=data["idempotency_key"],
        # A message from a server older than the event time has none.
        occurred_at=datetime.fromisoformat(data["occurred_at"]) if data.get("occurred_at") else None,
        created_at=datetime.fromisoformat(data["created_at"]),
    )


# -- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogFilterSpec:
    level: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None
    api_key_id: uuid.UUID | None = None

    def clauses(self) -> list[Any]:
        table = models.Log
        out: list[Any] = []
        if self.level is not None:
            out.append(table.level == self.level)
        if self.since is not None:
            out.append(table.created_at >= self.since)
        if self.until is not None:
            out.append(table.created_at < self.until)
        if self.search:
            escaped = self.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            out.append(table.log.ilike(f"%{escaped}%", escape="\\"))  # type: ignore[attr-defined]
        if self.api_key_id is not None:
            out.append(table.api_key_id == self.api_key_id)
        return out

    def matches(self, row: models.Log) -> bool:
        """The same test as `clauses`, for rows that arrive on the bus."""
        if self.level is not None and row.level != self.level:
            return False
        if self.since is not None and row.created_at < self.since:
            return False
        if self.until is not None and row.created_at >= self.until:
            return False
        if self.search and self.search.lower() not in row.log.lower():
            return False
        return self.api_key_id is None or row.api_key_id == self.api_key_id


async def list_logs(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    spec: LogFilterSpec,
    after: int | None,
    before: int | None,
    limit: int,
    backwards: bool,
    count: bool = True,
) -> tuple[Sequence[models.Log], int]:
    table = models.Log
    where = [table.project_id == project_id, *spec.clauses()]
    if after is not None:
        where.append(table.seq > after)
    if before is not None:
        where.append(table.seq < before)
    order = table.seq.desc() if backwards else table.seq.asc()  # type: ignore[attr-defined]
    rows = (await session.execute(select(table).where(and_(*where)).order_by(order).limit(limit + 1))).scalars().all()
    if not count:
        return rows, 0
    count_where = [table.project_id == project_id, *spec.clauses()]
    total = await session.scalar(select(func.count()).select_from(table).where(and_(*count_where)))
    return rows, int(total or 0)


async def logs_since(
    session: AsyncSession, *, project_id: uuid.UUID, after_seq: int, spec: LogFilterSpec, limit: int
) -> tuple[Sequence[models.Log], int]:
    """Up to `limit` matching logs after `after_seq`, and a head seq safe to move a cursor to.

    The head is read first, in its own snapshot: every log at or below it is committed (commits
    are serialised per project) and so visible to the rows query that follows. Reading it after
    the rows would let a log committed in between move the cursor past it unseen.
    """
    head = await head_seq(session, project_id=project_id)
    table = models.Log
    query = (
        select(table)
        .where(table.project_id == project_id, table.seq > after_seq, *spec.clauses())  # type: ignore[arg-type]
        .order_by(table.seq)  # type: ignore[arg-type]
        .limit(limit)
    )
    rows = (await session.execute(query)).scalars().all()
    return rows, head


async def head_seq(session: AsyncSession, *, project_id: uuid.UUID) -> int:
    """The seq of the project's newest committed log (0 for none)."""
    table = models.Log
    head = await session.scalar(select(func.coalesce(func.max(table.seq), 0)).where(table.project_id == project_id))  # type: ignore[arg-type]
    return int(head or 0)


# -- retention -------------------------------------------------------------------------------------

_RETAINED = text("SELECT id, log_retention_days FROM projects WHERE log_retention_days IS NOT NULL")
_EXPIRE_BATCH = text(
    """
    -- The project's oldest `batch` logs by seq (the index's order, so no more than `batch` rows
    -- are read), those of them stored before the cutoff deleted.
    WITH oldest AS (
        SELECT seq FROM logs WHERE project_id = :project_id ORDER BY seq LIMIT :batch
    )
    DELETE FROM logs l USING oldest
    WHERE l.project_id = :project_id AND l.seq = oldest.seq
      AND l.created_at < now() - make_interval(days => :days)
    """
)


async def sweep_retention(conn: AsyncConnection, *, batch: int = 1000) -> int:
    """Delete, project by project and `batch` at a time (each batch its own short transaction on
    an autocommit connection), the logs older than their project's retention; returns how many.
    A batch that deletes fewer than it read has reached the logs the project keeps."""
    total = 0
    projects = (await conn.execute(_RETAINED)).all()
    for project_id, days in projects:
        while True:
            result: Any = await conn.execute(_EXPIRE_BATCH, {"project_id": project_id, "batch": batch, "days": days})
            deleted = int(result.rowcount or 0)
            total += deleted
            if deleted < batch:
                break
    return total
