"""File contents through signed URLs: uploaded once, exactly as registered, downloaded by whoever may
see the file, and nothing kept of an upload that does not match."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jwt
from sqlalchemy import text

from app.settings import Settings
from app.workflows import content
from tests.support import LiveServer, live_server, new_user

UPLOAD = """mutation($input: FileInput!) { createFileUpload(input: $input) {
  uploadUrl expiresAt file { id storedAt downloadUrl checksum } } }"""
FILE = "query($id: ID!) { file(id: $id) { id storedAt downloadUrl checksum size } }"
RENEW = "mutation($id: ID!) { renewFileUpload(id: $id) { uploadUrl file { id } } }"
BODY = "héllo, lodge\n".encode() * 1000


def _input(body: bytes = BODY, **extra: Any) -> dict[str, Any]:
    return {
        "filename": "reports/q1.txt",
        "originalFilename": "Rapport été.txt",
        "mimeType": "text/plain",
        "size": len(body),
        **extra,
    }


async def _register(server: LiveServer, token: str, body: bytes = BODY, **extra: Any) -> dict[str, Any]:
    created: dict[str, Any] = (await server.data(UPLOAD, {"input": _input(body, **extra)}, token=token))[
        "createFileUpload"
    ]
    return created


async def test_a_file_is_uploaded_once_and_downloaded_as_registered(server: LiveServer) -> None:
    owner = await new_user(server)
    digest = hashlib.sha256(BODY).hexdigest()
    created = await _register(server, owner, checksum=f"sha256:{digest}")
    file_id = created["file"]["id"]
    assert created["file"]["storedAt"] is None and created["file"]["downloadUrl"] is None
    assert created["uploadUrl"].startswith(f"/files/{file_id}/content?token=")

    put = await server.http.put(created["uploadUrl"], content=BODY, headers={"content-type": "text/plain"})
    assert put.status_code == 201, put.text
    assert put.json() == {"id": file_id, "size": len(BODY), "checksum": f"sha256:{digest}"}
    found = (await server.data(FILE, {"id": file_id}, token=owner))["file"]
    assert found["storedAt"] is not None and found["downloadUrl"].startswith(f"/files/{file_id}/content?token=")

    got = await server.http.get(found["downloadUrl"])
    assert got.status_code == 200 and got.content == BODY
    assert got.headers["content-type"].startswith("text/plain")
    assert "attachment" in got.headers["content-disposition"] and "Rapport" in got.headers["content-disposition"]
    assert got.headers["etag"] == f'"sha256:{digest}"'

    # The content never changes: a second upload, or a new URL for it, is refused.
    again = await server.http.put(
        created["uploadUrl"], content=b"x" * len(BODY), headers={"content-type": "text/plain"}
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "CONFLICT"
    assert await server.error_code(RENEW, {"id": file_id}, token=owner) == "CONFLICT"
    assert (await server.http.get(found["downloadUrl"])).content == BODY

    # With no checksum registered, Lodge records the content's.
    plain = await _register(server, owner)
    assert (
        await server.http.put(plain["uploadUrl"], content=BODY, headers={"content-type": "text/plain"})
    ).status_code == 201
    assert (await server.data(FILE, {"id": plain["file"]["id"]}, token=owner))["file"]["checksum"] == f"sha256:{digest}"
    async with server.deps.db.session() as session:
        audited = await session.scalar(
            text("SELECT count(*) FROM audit_logs WHERE action = 'file.upload' AND resource_id = :id AND success"),
            {"id": file_id},
        )
    assert audited == 1


async def test_an_upload_that_does_not_match_keeps_nothing(server: LiveServer) -> None:
    owner = await new_user(server)
    created = await _register(server, owner, checksum=hashlib.md5(BODY).hexdigest())
    url, file_id = created["uploadUrl"], created["file"]["id"]

    async def put(body: bytes, content_type: str = "text/plain", to: str = url) -> tuple[int, str]:
        response = await server.http.put(to, content=body, headers={"content-type": content_type})
        return response.status_code, response.json()["error"]["code"]

    assert await put(BODY, "application/pdf") == (415, "BAD_USER_INPUT")
    assert await put(BODY[:-1]) == (400, "BAD_USER_INPUT")
    assert await put(BODY + b"!") == (400, "BAD_USER_INPUT")
    tampered = BODY[:-1] + b"?"
    assert await put(tampered) == (400, "BAD_USER_INPUT")  # same size, another checksum
    assert await put(BODY, to=url[:-2] + ("A" if url[-2] != "A" else "B") + url[-1]) == (403, "FORBIDDEN")
    other = await _register(server, owner)
    assert await put(BODY, to=other["uploadUrl"].replace(other["file"]["id"], file_id)) == (403, "FORBIDDEN")
    expired = jwt.encode(
        {"sub": file_id, "typ": content.PUT, "exp": int(time.time()) - 5}, content._key(server.deps.secret_key), "HS256"
    )
    assert await put(BODY, to=f"/files/{file_id}/content?token={expired}") == (403, "FORBIDDEN")
    assert (await server.data(FILE, {"id": file_id}, token=owner))["file"]["storedAt"] is None

    # A download URL does not upload, and there is nothing to download yet.
    download = jwt.encode(
        {"sub": file_id, "typ": content.GET, "exp": int(time.time()) + 60},
        content._key(server.deps.secret_key),
        "HS256",
    )
    assert await put(BODY, to=f"/files/{file_id}/content?token={download}") == (403, "FORBIDDEN")
    missing = await server.http.get(f"/files/{file_id}/content?token={download}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"

    # Nothing partial was left behind, and the right bytes are still taken (through a renewed URL).
    files_dir = server.deps.settings.resolved_files_dir()
    assert not list(files_dir.rglob("*.partial"))
    renewed = (await server.data(RENEW, {"id": file_id}, token=owner))["renewFileUpload"]
    assert (
        await server.http.put(renewed["uploadUrl"], content=BODY, headers={"content-type": "text/plain"})
    ).status_code == 201

    stranger = await new_user(server)
    assert await server.error_code(RENEW, {"id": other["file"]["id"]}, token=stranger) == "FORBIDDEN"
    too_big = _input(size=server.deps.settings.file_max_bytes + 1)
    assert await server.error_code(UPLOAD, {"input": too_big}, token=owner) == "BAD_USER_INPUT"
    assert await server.error_code(UPLOAD, {"input": _input()}) == "UNAUTHENTICATED"


async def test_concurrent_uploads_keep_exactly_one(server: LiveServer) -> None:
    owner = await new_user(server)
    created = await _register(server, owner)
    bodies = [bytes([65 + n]) * len(BODY) for n in range(6)]
    responses = await asyncio.gather(
        *(server.http.put(created["uploadUrl"], content=b, headers={"content-type": "text/plain"}) for b in bodies)
    )
    assert Counter(r.status_code for r in responses) == {201: 1, 409: 5}
    winner = next(b for b, r in zip(bodies, responses, strict=True) if r.status_code == 201)
    found = (await server.data(FILE, {"id": created["file"]["id"]}, token=owner))["file"]
    assert (await server.http.get(found["downloadUrl"])).content == winner
    # The losers' bytes are gone: one content file for this upload.
    async with server.deps.db.session() as session:
        key = await session.scalar(text("SELECT storage_key FROM files WHERE id = :id"), {"id": created["file"]["id"]})
    assert content.LocalStorage(server.deps.settings.resolved_files_dir()).path(key).read_bytes() == winner


async def test_who_may_download(server: LiveServer) -> None:
    owner = await new_user(server)
    stranger = await new_user(server)
    private = await _register(server, owner)
    public = await _register(server, owner, isPublic=True)
    for created in (private, public):
        assert (
            await server.http.put(created["uploadUrl"], content=BODY, headers={"content-type": "text/plain"})
        ).status_code == 201
    # A stranger sees the public file (and its URL), not the private one.
    seen = await server.gql(FILE, {"id": public["file"]["id"]}, token=stranger)
    assert seen["data"]["file"]["downloadUrl"] is not None
    hidden = await server.gql(FILE, {"id": private["file"]["id"]}, token=stranger)
    assert not (hidden.get("data") or {}).get("file")
    # A deleted file's URL stops working.
    url = (await server.data(FILE, {"id": private["file"]["id"]}, token=owner))["file"]["downloadUrl"]
    await server.data("mutation($id: ID!) { deleteFile(id: $id) }", {"id": private["file"]["id"]}, token=owner)
    gone = await server.http.get(url)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "NOT_FOUND"
    # The owner's list carries URLs for stored files (a hybrid answer on the compiled path).
    listed = await server.data("{ files(first: 50) { nodes { id downloadUrl storedAt } } }", token=owner)
    by_id = {n["id"]: n for n in listed["files"]["nodes"]}
    assert by_id[public["file"]["id"]]["downloadUrl"] is not None


async def test_a_file_larger_than_the_request_body_limit_is_taken(settings: Settings, database_url: str) -> None:
    """LODGE_MAX_BODY_BYTES bounds GraphQL bodies; a file's content is bounded by its own size."""
    async with live_server(settings.model_copy(update={"max_body_bytes": 1024}), database_url) as server:
        owner = await new_user(server)
        big = b"0123456789abcdef" * 4096  # 64 KiB
        created = await _register(server, owner, big, mimeType="application/octet-stream")
        put = await server.http.put(
            created["uploadUrl"], content=big, headers={"content-type": "application/octet-stream"}
        )
        assert put.status_code == 201, put.text
        found = (await server.data(FILE, {"id": created["file"]["id"]}, token=owner))["file"]
        assert (await server.http.get(found["downloadUrl"])).content == big


async def test_a_deleted_files_content_is_removed_after_a_minute(settings: Settings, database_url: str) -> None:
    """deleteFile hides the file at once; the sweeper (LODGE_FILE_SWEEP_SECONDS) removes its stored
    content once the deletion is a minute old, and leaves live files' and newer deletions' alone. A
    content that cannot be removed keeps its key and holds up nothing else."""
    delete = "mutation($id: ID!) { deleteFile(id: $id) }"
    async with live_server(settings.model_copy(update={"file_sweep_seconds": 0.2}), database_url) as server:
        owner = await new_user(server)
        paths = {}
        for name in ("stuck", "old", "recent", "live"):
            created = await _register(server, owner)
            put = await server.http.put(created["uploadUrl"], content=BODY, headers={"content-type": "text/plain"})
            assert put.status_code == 201, put.text
            paths[name] = (created["file"]["id"], await _stored_path(server, created["file"]["id"]))
            assert paths[name][1].read_bytes() == BODY
        for name in ("stuck", "old", "recent"):
            assert await server.data(delete, {"id": paths[name][0]}, token=owner) == {"deleteFile": True}
            assert await server.data(FILE, {"id": paths[name][0]}, token=owner) == {"file": None}
        # A content that cannot be removed (a directory where its file was) must not hold up the others.
        stuck = paths["stuck"][1]
        stuck.unlink()
        stuck.mkdir()
        async with server.deps.db.session() as session:  # deleted minutes ago, the stuck one first
            for name, minutes in (("stuck", 3), ("old", 2)):
                await session.execute(
                    text("UPDATE files SET deleted_at = now() - make_interval(mins => :m) WHERE id = :id"),
                    {"id": paths[name][0], "m": minutes},
                )
            await session.commit()
        async with asyncio.timeout(15):
            while paths["old"][1].exists():
                await asyncio.sleep(0.05)
        async with server.deps.db.session() as session:
            key = await session.scalar(text("SELECT storage_key FROM files WHERE id = :id"), {"id": paths["old"][0]})
        assert key is None
        async with server.deps.db.session() as session:
            kept = await session.scalar(text("SELECT storage_key FROM files WHERE id = :id"), {"id": paths["stuck"][0]})
        assert kept is not None and stuck.is_dir()  # tried again at the next sweep
        # Within the minute, and not deleted: kept.
        assert paths["recent"][1].read_bytes() == BODY and paths["live"][1].read_bytes() == BODY
        found = (await server.data(FILE, {"id": paths["live"][0]}, token=owner))["file"]
        assert (await server.http.get(found["downloadUrl"])).content == BODY


async def _stored_path(server: LiveServer, file_id: str) -> Path:
    async with server.deps.db.session() as session:
        key = await session.scalar(text("SELECT storage_key FROM files WHERE id = :id"), {"id": file_id})
    return content.storage_of(server.deps).path(key)
