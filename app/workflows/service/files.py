"""File metadata (the bytes live in object storage). Functions flush; the caller owns the transaction."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.api.errors import BadUserInput, NotFound
from app.api.validation import required_text
from app.workflows import models

MIME_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")
# Hex digests (MD5 up to SHA-512), optionally prefixed with the algorithm: "sha256:ab12...".
CHECKSUM = re.compile(r"^(?:[a-z0-9-]{2,16}:)?[0-9a-fA-F]{32,128}$")


async def register_file(
    session: AsyncSession,
    *,
    owner_id: uuid.UUID,
    filename: str,
    original_filename: str,
    mime_type: str,
    size: int,
    checksum: str | None,
    path: str | None,
    is_public: bool,
) -> models.File:
    if size < 0:
        raise BadUserInput("size must not be negative", field="size")
    mime = required_text(mime_type, "mimeType", limit=255).lower()
    if not MIME_TYPE.match(mime):
        raise BadUserInput("mimeType must look like type/subtype", field="mimeType")
    if checksum is not None and not CHECKSUM.match(checksum):
        raise BadUserInput("checksum must be a hex digest, optionally `algorithm:` first", field="checksum")
    name = required_text(filename, "filename", limit=255)
    file = models.File(
        user_id=owner_id,
        filename=name,
        original_filename=required_text(original_filename, "originalFilename", limit=255),
        mime_type=mime,
        file_size=size,
        file_path=required_text(path, "path", limit=1024) if path is not None else name,
        checksum=checksum.lower() if checksum else None,
        is_public=is_public,
    )
    session.add(file)
    await session.flush()
    await session.refresh(file)
    return file


async def get_file_or_raise(session: AsyncSession, *, file_id: uuid.UUID) -> models.File:
    file = await session.get(models.File, file_id)
    if file is None or file.deleted_at is not None:
        raise NotFound("file not found", id=str(file_id))
    return file


async def delete_file(session: AsyncSession, *, file: models.File) -> None:
    file.deleted_at = func.now()  # type: ignore[assignment]
    session.add(file)
    await session.flush()


async def list_files(
    session: AsyncSession, *, owner_id: uuid.UUID, before: tuple[datetime, uuid.UUID] | None, limit: int, count: bool
) -> tuple[Sequence[models.File], int]:
    """The owner's live files, newest first."""
    f = models.File
    live = select(f).where(col(f.user_id) == owner_id, col(f.deleted_at).is_(None))
    query = live
    if before is not None:
        query = query.where(tuple_(col(f.created_at), col(f.id)) < tuple_(*before))
    rows = (await session.scalars(query.order_by(col(f.created_at).desc(), col(f.id).desc()).limit(limit + 1))).all()
    total = 0
    if count:
        total = await session.scalar(select(func.count()).select_from(live.subquery())) or 0
    return rows, total
