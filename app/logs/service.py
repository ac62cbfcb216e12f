"""Projects, API keys and log ingestion. Functions flush; the caller owns the transaction.

Ingestion serialises the commits of one project with a transaction-scoped advisory lock, so a
project's logs commit in `seq` order. That is what lets live tail resume from a cursor with no gap:
once a subscriber has seen `seq = n`, every log of the project with a smaller seq is committed.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.errors import BadUserInput, NotFound, Unauthenticated
from app.logs import models

KEY_PREFIX = "lodge_"
PREFIX_LENGTH = len(KEY_PREFIX) + 8
MAX_IDEMPOTENCY_KEY = 255
# A bus message carries the new rows only while it stays small; bigger batches are announced
# without rows and subscribers read them from PostgreSQL.
MAX_EVENT_ROWS_BYTES = 512 * 1024


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def project_lock_key(project_id: uuid.UUID) -> int:
    return (project_id.int >> 64) - (1 << 63)


# -- projects ------------------------------------------------------------------------------------

async def create_project(
    session: AsyncSession, *, owner_id: uuid.UUID, name: str, description: str | None
) -> models.Project:
    project = models.Project(owner_id=owner_id, name=_required(name, "name"), description=description)
    session.add(project)
    await session.flush()
    await session.refresh(project)
    return project


async def get_project_or_raise(session: AsyncSession, *, project_id: uuid.UUID) -> models.Project:
    project = await session.get(models.Project, project_id)
    if project is None:
        raise NotFound("project not found", id=str(project_id))
    return project


async def update_project(
    session: AsyncSession, *, project: models.Project, changes: dict[str, Any]
) -> models.Project:
    if "name" in changes:
        changes["name"] = _required(changes["name"], "name")
    for name, value in changes.items():
        setattr(project, name, value)
    await session.flush()
    await session.refresh(project)
    return project


async def delete_project(session: AsyncSession, *, project_id: uuid.UUID) -> None:
    await session.execute(delete(models.Project).where(models.Project.id == project_id))  # type: ignore[arg-type]


async def list_projects(
    session: AsyncSession, *, owner_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> tuple[Sequence[models.Project], int]:
    table = models.Project
    query = select(table).where(table.owner_id == owner_id)  # type: ignore[arg-type]
    if after is not None:
        query = query.where(func.row(table.created_at, table.id) > func.row(*after))
    rows = (await session.execute(query.order_by(table.created_at, table.id).limit(limit + 1))).scalars().all()
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
) -> tuple[models.ApiKey, str]:
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise BadUserInput("expiresAt must be in the future", field="expiresAt")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = models.ApiKey(
        project_id=project_id,
        label=_required(label, "label"),
        description=description,
        prefix=secret[:PREFIX_LENGTH],
        key_hash=hash_secret(secret),
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
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


async def authenticate_api_key(session: AsyncSession, *, secret: str) -> models.ApiKey:
    row = (await session.execute(_AUTHENTICATE, {"hash": hash_secret(secret)})).mappings().first()
    if row is None:
        raise Unauthenticated("unknown API key")
    if row["revoked_at"] is not None:
        raise Unauthenticated("this API key was revoked")
    if row["expired"]:
        raise Unauthenticated("this API key has expired")
    return models.ApiKey.model_validate({k: v for k, v in row.items() if k != "expired"})


async def list_api_keys(session: AsyncSession, *, project_id: uuid.UUID) -> Sequence[models.ApiKey]:
    query = select(models.ApiKey).where(models.ApiKey.project_id == project_id).order_by(models.ApiKey.created_at)  # type: ignore[arg-type]
    return (await session.execute(query)).scalars().all()


# -- ingestion -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LogItem:
    log: str
    level: str
    attributes: Any
    idempotency_key: str | None


@dataclass
class IngestOutcome:
    ids: list[uuid.UUID]
    inserted: list[models.Log]
    duplicates: int
    prev_seq: int

    def event(self) -> dict[str, Any] | None:
        """The bus message announcing this batch, or None when nothing new was stored."""
        if not self.inserted:
            return None
        rows: list[dict[str, Any]] | None = [log_to_event(row) for row in self.inserted]
        if len(json.dumps(rows, default=str)) > MAX_EVENT_ROWS_BYTES:
            rows = None
        return {"prev": self.prev_seq, "last": self.inserted[-1].seq, "logs": rows}


def validate_items(items: Sequence[LogItem], *, max_batch: int, max_bytes: int) -> None:
    if len(items) > max_batch:
        raise BadUserInput(f"at most {max_batch} logs per call, got {len(items)}", limit=max_batch)
    for index, item in enumerate(items):
        if item.level not in models.LOG_LEVELS:
            raise BadUserInput(f"unknown level {item.level!r}", index=index)
        if item.attributes is not None and not isinstance(item.attributes, dict):
            raise BadUserInput("attributes must be a JSON object", index=index)
        size = len(item.log.encode()) + (len(json.dumps(item.attributes)) if item.attributes is not None else 0)
        if size > max_bytes:
            raise BadUserInput(f"log {index} is {size} bytes; the limit is {max_bytes}", index=index, limit=max_bytes)
        if item.idempotency_key is not None and not 0 < len(item.idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise BadUserInput(f"idempotencyKey must be 1..{MAX_IDEMPOTENCY_KEY} characters", index=index)


_INSERT = text(
    """
    WITH prev AS (
        SELECT coalesce(max(seq), 0) AS seq FROM logs WHERE project_id = :project_id
    ), input AS (
        SELECT * FROM unnest(CAST(:logs AS text[]), CAST(:levels AS text[]), CAST(:attributes AS text[]),
                             CAST(:keys AS text[])) WITH ORDINALITY AS t(log, level, attributes, idempotency_key, ord)
    ), ins AS (
        INSERT INTO logs (project_id, api_key_id, log, level, attributes, idempotency_key)
        SELECT :project_id, :api_key_id, log, level, CAST(attributes AS jsonb), idempotency_key FROM input ORDER BY ord
        ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING id, seq, project_id, api_key_id, log, level, attributes, idempotency_key, created_at
    )
    SELECT (SELECT seq FROM prev) AS prev, ins.* FROM ins ORDER BY seq
    """
)


async def ingest(session: AsyncSession, *, api_key: models.ApiKey, items: Sequence[LogItem]) -> IngestOutcome:
    """Store `items` for the key's project; idempotency keys seen before return the stored log's id."""
    project_id = api_key.project_id
    if not items:
        return IngestOutcome(ids=[], inserted=[], duplicates=0, prev_seq=0)
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": project_lock_key(project_id)})
    result = await session.execute(
        _INSERT,
        {
            "project_id": project_id,
            "api_key_id": api_key.id,
            "logs": [item.log for item in items],
            "levels": [item.level for item in items],
            "attributes": [json.dumps(item.attributes) if item.attributes is not None else None for item in items],
            "keys": [item.idempotency_key for item in items],
        },
    )
    rows = result.mappings().all()
    prev_seq = int(rows[0]["prev"]) if rows else 0
    inserted = [models.Log.model_construct(**{k: v for k, v in row.items() if k != "prev"}) for row in rows]

    by_key = {log.idempotency_key: log.id for log in inserted if log.idempotency_key is not None}
    missing = {item.idempotency_key for item in items if item.idempotency_key and item.idempotency_key not in by_key}
    if missing:
        existing = await session.execute(
            select(models.Log.idempotency_key, models.Log.id).where(
                models.Log.project_id == project_id,  # type: ignore[arg-type]
                models.Log.idempotency_key.in_(missing),  # type: ignore[union-attr]
            )
        )
        by_key.update({key: log_id for key, log_id in existing.all()})

    ids: list[uuid.UUID] = []
    fresh = iter(inserted)
    inserted_keys = {log.idempotency_key for log in inserted if log.idempotency_key is not None}
    seen: set[str] = set()
    for item in items:
        key = item.idempotency_key
        if key is None or (key in inserted_keys and key not in seen):
            ids.append(next(fresh).id)
        else:
            ids.append(by_key[key])
        if key is not None:
            seen.add(key)
    return IngestOutcome(ids=ids, inserted=inserted, duplicates=len(items) - len(inserted), prev_seq=prev_seq)


def log_to_event(row: models.Log) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "seq": row.seq,
        "project_id": str(row.project_id),
        "api_key_id": str(row.api_key_id) if row.api_key_id else None,
        "log": row.log,
        "level": row.level,
        "attributes": row.attributes,
        "idempotency_key": row.idempotency_key,
        "created_at": row.created_at.isoformat(),
    }


def log_from_event(data: dict[str, Any]) -> models.Log:
    return models.Log.model_construct(
        id=uuid.UUID(data["id"]),
        seq=data["seq"],
        project_id=uuid.UUID(data["project_id"]),
        api_key_id=uuid.UUID(data["api_key_id"]) if data["api_key_id"] else None,
        log=data["log"],
        level=data["level"],
        attributes=data["attributes"],
        idempotency_key=data["idempotency_key"],
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
) -> tuple[Sequence[models.Log], int]:
    table = models.Log
    where = [table.project_id == project_id, *spec.clauses()]
    if after is not None:
        where.append(table.seq > after)
    if before is not None:
        where.append(table.seq < before)
    order = table.seq.desc() if backwards else table.seq.asc()  # type: ignore[attr-defined]
    rows = (await session.execute(select(table).where(and_(*where)).order_by(order).limit(limit + 1))).scalars().all()
    count_where = [table.project_id == project_id, *spec.clauses()]
    total = await session.scalar(select(func.count()).select_from(table).where(and_(*count_where)))
    return rows, int(total or 0)


async def logs_since(
    session: AsyncSession, *, project_id: uuid.UUID, after_seq: int, spec: LogFilterSpec, limit: int
) -> tuple[Sequence[models.Log], int]:
    """Up to `limit` matching logs after `after_seq`, and the project's head seq in the same snapshot."""
    table = models.Log
    head = (
        select(func.coalesce(func.max(table.seq), 0)).where(table.project_id == project_id).scalar_subquery()
    )
    query = (
        select(table, head.label("head"))
        .where(table.project_id == project_id, table.seq > after_seq, *spec.clauses())  # type: ignore[arg-type]
        .order_by(table.seq)  # type: ignore[arg-type]
        .limit(limit)
    )
    result = (await session.execute(query)).all()
    if result:
        return [row[0] for row in result], int(result[0][1])
    return [], await head_seq(session, project_id=project_id)


async def head_seq(session: AsyncSession, *, project_id: uuid.UUID) -> int:
    """The seq of the project's newest committed log (0 for none)."""
    table = models.Log
    head = await session.scalar(select(func.coalesce(func.max(table.seq), 0)).where(table.project_id == project_id))  # type: ignore[arg-type]
    return int(head or 0)

