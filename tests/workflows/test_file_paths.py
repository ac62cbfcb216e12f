"""registerFile: a filename or path is a relative path under its owner; anything else writes nothing."""

from __future__ import annotations

import uuid

import pytest

from tests.support import LiveServer, new_user

REGISTER = (
    "mutation($input: FileInput!) { registerFile(input: $input) { id filename originalFilename path owner { id } } }"
)
FILES = "{ files { totalCount } }"
BASE = {
    "filename": "reports/2026/q1.pdf",
    "originalFilename": "Q1 report.pdf",
    "mimeType": "application/pdf",
    "size": 1,
}


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("filename", "../../etc/passwd", "`..`"),
        ("filename", "a/../../b", "`..`"),
        ("filename", "..", "`..`"),
        ("filename", "a/./b", "`.`"),
        ("filename", "a//b", "empty"),
        ("filename", "a/", "empty"),
        ("filename", "/etc/passwd", "relative"),
        ("filename", "C:/Windows/win.ini", "relative"),
        ("filename", "..\\..\\boot.ini", "backslash"),
        ("filename", "a\\b", "backslash"),
        ("filename", "a\x01b", "control"),
        ("filename", "a\nb", "control"),
        ("filename", "a\x7fb", "control"),
        ("filename", "invoice\u202efdp.exe", "control"),
        ("filename", "x" * 256, "255"),
        ("path", "../other-owner/a.pdf", "`..`"),
        ("path", "/srv/files/a.pdf", "relative"),
        ("path", "x" * 1025, "1024"),
        ("originalFilename", "../a.pdf", "without"),
        ("originalFilename", "C:\\Users\\me\\a.pdf", "without"),
        ("originalFilename", "a\x1bb.pdf", "control"),
        ("originalFilename", "x" * 256, "255"),
    ],
)
async def test_bad_paths_are_bad_input_and_store_nothing(server: LiveServer, field: str, value: str, says: str) -> None:
    token = await new_user(server)
    body = await server.gql(REGISTER, {"input": {**BASE, field: value}}, token=token)
    error = body["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", body
    assert field in error["message"] and says in error["message"], error
    assert (await server.data(FILES, token=token))["files"]["totalCount"] == 0


async def test_nul_in_an_inline_filename_is_bad_input(server: LiveServer) -> None:
    token = await new_user(server)
    inline = (
        'mutation { registerFile(input: {filename: "a\\u0000b", originalFilename: "a", mimeType: "text/plain", '
        "size: 1}) { id } }"
    )
    assert await server.error_code(inline, token=token) == "BAD_USER_INPUT"
    assert (await server.data(FILES, token=token))["files"]["totalCount"] == 0


async def test_stored_paths_are_scoped_under_the_owner(server: LiveServer) -> None:
    one, two = await new_user(server), await new_user(server)
    first = (await server.data(REGISTER, {"input": BASE}, token=one))["registerFile"]
    second = (await server.data(REGISTER, {"input": BASE}, token=two))["registerFile"]
    assert first["filename"] == second["filename"] == "reports/2026/q1.pdf"
    assert first["originalFilename"] == "Q1 report.pdf"
    for stored in (first, second):
        owner = stored["owner"]["id"]
        assert stored["path"] == f"{uuid.UUID(owner)}/reports/2026/q1.pdf"
    assert first["path"] != second["path"]  # equal names of two owners never collide
    placed = (await server.data(REGISTER, {"input": {**BASE, "path": "bucket/k1"}}, token=one))["registerFile"]
    assert placed["path"] == f"{first['owner']['id']}/bucket/k1" and placed["filename"] == BASE["filename"]
