"""File metadata (the bytes live in object storage). Functions flush; the caller owns the transaction.

A file's stored path is `<owner id>/<relative path>`: a filename or path is relative (no leading
`/`, drive letter or `..`), so no owner can name another's files or anything outside their folder.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.api.errors import BadUserInput, NotFound
from app.api.validation import required_text
from app.workflows import models

log = logging.getLogger(__name__)

MIME_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")
# Hex digests (MD5 up to SHA-512), optionally prefixed with the algorithm: "sha256:ab12...".
CHECKSUM = re.compile(r"^(?:[a-z0-9-]{2,16}:)?[0-9a-fA-F]{32,128}$")
MAX_FILENAME = 255
MAX_PATH = 1024
MAX_MIME_TYPE = 255
MAX_CHECKSUM = 255
DRIVE = re.compile(r"^[A-Za-z]:")
# Bidirectional overrides and isolates: they make `exe.pdf` of `fdp.exe` on screen.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _printable(value: str, field: str) -> None:
    if any(unicodedata.category(ch) == "Cc" or ch in BIDI_CONTROLS for ch in value):
        raise BadUserInput(f"{field} may not contain control characters", field=field)


def relative_path(value: str, field: str, *, limit: int) -> str:
    """A relative path of `/`-separated names, none of them empty, `.` or `..`."""
    path = required_text(value, field, limit=limit)
    _printable(path, field)
    if "\\" in path:
        raise BadUserInput(f"{field} may not contain a backslash: separate names with `/`", field=field)
    if path.startswith("/") or DRIVE.match(path):
        raise BadUserInput(f"{field} must be a relative path, not an absolute one", field=field)
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise BadUserInput(f"{field} may not hold empty, `.` or `..` path segments", field=field)
    return path


def display_name(value: str, field: str) -> str:
    """A name as the user's machine had it: one name, no path."""
    name = required_text(value, field, limit=MAX_FILENAME)
    _printable(name, field)
    if "/" in name or "\\" in name:
        raise BadUserInput(f"{field} is a name, without `/` or `\\`", field=field)
    return name


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
    mime = required_text(mime_type, "mimeType", limit=MAX_MIME_TYPE).lower()
    if not MIME_TYPE.match(mime):
        raise BadUserInput("mimeType must look like type/subtype", field="mimeType")
    if checksum is not None and not CHECKSUM.match(checksum):
        raise BadUserInput("checksum must be a hex digest, optionally `algorithm:` first", field="checksum")
    name = relative_path(filename, "filename", limit=MAX_FILENAME)
    stored = relative_path(path, "path", limit=MAX_PATH) if path is not None else name
    file = models.File(
        user_id=owner_id,
        filename=name,
        original_filename=display_name(original_filename, "originalFilename"),
        mime_type=mime,
        file_size=size,
        file_path=f"{owner_id}/{stored}",
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


# A deleted file's content is kept this long: a download that began just before the deletion
# (its row read, its bytes not yet opened) still finds them.
CONTENT_GRACE = timedelta(minutes=1)
SWEEP_BATCH = 100


async def sweep_deleted_contents(
    session: AsyncSession, *, delete: Callable[[str], Awaitable[None]], batch: int = SWEEP_BATCH
) -> int:
    """Remove the stored content of up to `batch` files deleted more than `CONTENT_GRACE` ago, with
    `delete(storage key)`, and forget their keys; how many were removed. Rows are locked SKIP
    LOCKED, so any number of instances sweep at once; the content goes before the key, so a sweep
    cut short is finished by the next (deleting a content twice is nothing). A content that cannot
    be deleted is logged and keeps its key, to be tried again; the others go on."""
    f = models.File
    rows = (
        await session.execute(
            select(col(f.id), col(f.storage_key))
            .where(col(f.deleted_at) < func.now() - CONTENT_GRACE, col(f.storage_key).is_not(None))
            .order_by(col(f.deleted_at))
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    ).all()
    removed = []
    for file_id, key in rows:
        assert key is not None  # selected so
        try:
            await delete(key)
        except Exception:
            log.warning("could not remove the content of deleted file %s", file_id, exc_info=True)
            continue
        removed.append(file_id)
    if removed:
        await session.execute(update(f).where(col(f.id).in_(removed)).values(storage_key=None))
    return len(removed)


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
