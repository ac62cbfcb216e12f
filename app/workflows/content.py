"""File contents: signed upload and download URLs served by Lodge, and where the bytes are kept.

`createFileUpload` registers a file and returns a URL to PUT its bytes to; `File.downloadUrl`
gives a URL to GET them. Both carry a token signed with the server's key (a JWT naming the file
and what it allows), so the bytes never pass through GraphQL and the URLs can be handed to any
HTTP client. An upload must match what was registered (size, content type, checksum when given)
or nothing is kept; a file's content is written once and never changes.

The bytes are kept by a `Storage`: `LocalStorage`, files under LODGE_FILES_DIR, is the one Lodge
ships (an S3-compatible one would implement the same three methods).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
from sqlalchemy import text
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response

from app.api.errors import BAD_USER_INPUT, CONFLICT, FORBIDDEN, INTERNAL, NOT_FOUND
from app.audit import recorder
from app.audit.recorder import AuditEntry
from app.deps import Deps

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
PUT = "file-put"
GET = "file-get"
CHUNK = 1024 * 1024
# Digests a registered checksum may name (`sha256:<hex>`, or bare hex of a digest's length).
DIGESTS_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}
NAMED = re.compile(r"^([a-z0-9-]+):([0-9a-f]+)$")


class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# -- signed URLs -----------------------------------------------------------------------------------


def _key(secret: str) -> bytes:
    """A key of its own, so a file URL's token can never pass for an access token."""
    return hmac.new(secret.encode(), b"lodge file urls", hashlib.sha256).digest()


def _expiry(seconds: int, now: float | None = None) -> int:
    """The end of the next window of `seconds`: a URL works for between `seconds` and twice that,
    and every URL of a file made in one window is the same (caches and browsers can reuse it)."""
    now = time.time() if now is None else now
    return (int(now) // seconds + 2) * seconds


def signed_url(
    file_id: uuid.UUID, *, action: str, secret: str, seconds: int, user_id: uuid.UUID | None = None
) -> tuple[str, int]:
    """A path (relative to the server: clients resolve it against the API's origin) and when it expires."""
    expires = _expiry(seconds)
    claims: dict[str, Any] = {"sub": str(file_id), "typ": action, "exp": expires}
    if user_id is not None:
        claims["uid"] = str(user_id)
    token = jwt.encode(claims, _key(secret), algorithm=ALGORITHM)
    return f"/files/{file_id}/content?token={token}", expires


def _verify(request: Request, *, action: str, secret: str) -> tuple[uuid.UUID, dict[str, Any]]:
    token = request.query_params.get("token", "")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, _key(secret), algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise Refusal(403, FORBIDDEN, "this URL has expired: ask for a new one") from None
    except jwt.InvalidTokenError:
        raise Refusal(403, FORBIDDEN, "this URL's signature is not valid") from None
    if claims.get("typ") != action or claims["sub"] != request.path_params["file_id"]:
        raise Refusal(403, FORBIDDEN, "this URL is not for this")
    return uuid.UUID(claims["sub"]), claims


# -- storage ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    key: str
    size: int
    digests: dict[str, str]  # algorithm -> hex digest


class Storage(Protocol):
    async def save(self, chunks: AsyncIterator[bytes], *, limit: int, algorithms: set[str]) -> Stored: ...

    def path(self, key: str) -> Path: ...

    async def delete(self, key: str) -> None: ...


class TooLarge(Exception):
    pass


class LocalStorage:
    """Contents as files under one directory, each under a key of its own (never a client's name)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    async def save(self, chunks: AsyncIterator[bytes], *, limit: int, algorithms: set[str]) -> Stored:
        key = uuid.uuid4().hex
        target = self.path(key)
        partial = target.with_suffix(".partial")
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        hashes = {name: hashlib.new(name) for name in algorithms | {"sha256"}}
        size = 0
        handle = await asyncio.to_thread(open, partial, "wb")
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise TooLarge
                for h in hashes.values():
                    h.update(chunk)
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(handle.flush)
            await asyncio.to_thread(os.fsync, handle.fileno())
        except BaseException:
            handle.close()
            await asyncio.to_thread(partial.unlink, missing_ok=True)
            raise
        handle.close()
        await asyncio.to_thread(os.replace, partial, target)
        return Stored(key=key, size=size, digests={name: h.hexdigest() for name, h in hashes.items()})

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)


def storage_of(deps: Deps) -> Storage:
    return LocalStorage(deps.settings.resolved_files_dir())


def wanted_digest(checksum: str | None) -> tuple[str, str] | None:
    """(algorithm, hex) that a registered checksum promises, if Lodge can check it."""
    if checksum is None:
        return None
    checksum = checksum.lower()
    if match := NAMED.match(checksum):
        name, digest = match.groups()
        return (name, digest) if name in hashlib.algorithms_guaranteed else None
    name = DIGESTS_BY_LENGTH.get(len(checksum))
    return (name, checksum) if name else None


# -- the endpoints ---------------------------------------------------------------------------------

_FILE = text(
    "SELECT id, user_id, mime_type, file_size, checksum, storage_key, original_filename, deleted_at"
    " FROM files WHERE id = :id"
)
_STORE = text(
    """
    UPDATE files SET storage_key = :key, stored_at = clock_timestamp(), checksum = coalesce(checksum, :checksum)
    WHERE id = :id AND storage_key IS NULL AND deleted_at IS NULL
    RETURNING stored_at
    """
)


def _error(request: Request, exc: Refusal) -> JSONResponse:
    request_id = getattr(request.state, "request_id", "")
    return JSONResponse(
        {"error": {"message": exc.message, "code": exc.code, "requestId": request_id}}, status_code=exc.status
    )


async def _live_file(deps: Deps, file_id: uuid.UUID) -> Any:
    """The file's row (a mapping), unless it is missing or deleted: 404."""
    async with deps.db.autocommit() as conn:
        row = (await conn.execute(_FILE, {"id": file_id})).mappings().first()
    if row is None or row["deleted_at"] is not None:
        raise Refusal(404, NOT_FOUND, "file not found")
    return row


async def upload_endpoint(request: Request) -> Response:
    """PUT /files/{id}/content?token=...: the file's bytes, exactly as registered."""
    deps: Deps = request.app.state.deps
    try:
        file_id, claims = _verify(request, action=PUT, secret=deps.secret_key)
        row = await _live_file(deps, file_id)
        if row["storage_key"] is not None:
            raise Refusal(409, CONFLICT, "this file's content is already stored; it never changes")
        given_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if given_type != row["mime_type"]:
            raise Refusal(
                415, BAD_USER_INPUT, f"the file was registered as {row['mime_type']}, not {given_type or 'nothing'}"
            )
        size = int(row["file_size"])
        limit = deps.settings.file_max_bytes
        if size > limit:
            raise Refusal(413, BAD_USER_INPUT, f"files are at most {limit} bytes")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) != size):
            raise Refusal(400, BAD_USER_INPUT, f"the file was registered as {size} bytes, not {length}")
        wanted = wanted_digest(row["checksum"])
        storage = storage_of(deps)
        try:
            stored = await storage.save(request.stream(), limit=size, algorithms={wanted[0]} if wanted else set())
        except TooLarge:
            raise Refusal(400, BAD_USER_INPUT, f"the body is longer than the {size} bytes registered") from None
        problem = None
        if stored.size != size:
            problem = f"the body is {stored.size} bytes, not the {size} registered"
        elif wanted is not None and not hmac.compare_digest(stored.digests[wanted[0]], wanted[1]):
            problem = f"the body's {wanted[0]} is not the checksum registered"
        if problem is None:
            done = None
            try:
                async with deps.db.autocommit() as conn:
                    params = {"id": file_id, "key": stored.key, "checksum": f"sha256:{stored.digests['sha256']}"}
                    done = await conn.scalar(_STORE, params)
                    if done is not None:
                        entry = AuditEntry(
                            "file.upload",
                            "file",
                            str(file_id),
                            {"size": size},
                            user_id=uuid.UUID(claims["uid"]) if "uid" in claims else None,
                        )
                        await _audit(conn, request, entry)
            except BaseException:
                if done is None:  # no row names these bytes: they must not stay
                    await storage.delete(stored.key)
                raise
            if done is None:  # another upload of it got there first (or it was deleted meanwhile)
                await storage.delete(stored.key)
                raise Refusal(409, CONFLICT, "this file's content is already stored; it never changes")
        else:
            await storage.delete(stored.key)
            raise Refusal(400, BAD_USER_INPUT, f"{problem}; nothing was kept")
    except Refusal as exc:
        return _error(request, exc)
    except ClientDisconnect:
        return _error(
            request, Refusal(400, BAD_USER_INPUT, "the client disconnected before the whole body; nothing was kept")
        )
    except Exception:
        log.exception("file upload failed (request %s)", getattr(request.state, "request_id", ""))
        return _error(request, Refusal(500, INTERNAL, "Internal server error; nothing was kept"))
    return JSONResponse(
        {"id": str(file_id), "size": size, "checksum": f"sha256:{stored.digests['sha256']}"}, status_code=201
    )


async def _audit(conn: Any, request: Request, entry: AuditEntry) -> None:
    try:
        await recorder.write_for_request(
            conn, viewer=None, request=request, request_id=getattr(request.state, "request_id", ""), entries=[entry]
        )
    except Exception:
        log.exception("could not write the audit row of a file upload")


async def download_endpoint(request: Request) -> Response:
    """GET /files/{id}/content?token=...: the bytes, with the type and name they were registered with."""
    deps: Deps = request.app.state.deps
    try:
        file_id, _ = _verify(request, action=GET, secret=deps.secret_key)
        row = await _live_file(deps, file_id)
        if row["storage_key"] is None:
            raise Refusal(404, NOT_FOUND, "this file's content has not been uploaded")
    except Refusal as exc:
        return _error(request, exc)
    path = storage_of(deps).path(row["storage_key"])
    checksum = row["checksum"] or ""
    return FileResponse(
        path,
        media_type=row["mime_type"],
        filename=row["original_filename"],
        headers={"etag": f'"{checksum}"', "cache-control": "private, max-age=300", "x-content-type-options": "nosniff"},
    )
