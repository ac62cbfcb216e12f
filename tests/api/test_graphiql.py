"""GraphiQL's page names only files Lodge serves itself, served as pinned with long-lived caching;
the maintainers' tool fetches exactly those files again from the npm registry; the wheel carries them.
(tests/api/test_browser.py runs the page in Chromium with the internet cut off.)"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from app.api.graphiql import vendor
from app.api.graphiql.assets import PACKAGES, STATIC, sri
from tests.conftest import make_settings
from tests.support import LiveServer, live_server, need

ROOT = Path(__file__).resolve().parents[2]
TARBALLS = ROOT / ".lodge" / "npm-tarballs"
PINNED = {f"{package.folder}/{file}" for package in PACKAGES for file in package.files}
# A page's subresources: <script src>, <link href>.
REFERENCES = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""")
# The favicon is an inline SVG, whose XML namespace is a name, not an address anyone fetches.
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


async def graphiql_page(server: LiveServer) -> str:
    page = await server.http.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text
    return page.text


async def test_the_page_loads_every_file_from_lodge_pinned_and_cacheable(server: LiveServer) -> None:
    page = await graphiql_page(server)
    assert re.findall(r"(?:https?:)?//[^\s\"'<>]+", page.replace(SVG_NAMESPACE, "")) == []
    assert "unpkg" not in page
    references = REFERENCES.findall(page)
    local = [ref for ref in references if not ref.startswith("data:")]
    assert all(ref.startswith("/graphql/assets/") for ref in local), local
    assert {ref.removeprefix("/graphql/assets/") for ref in local} == PINNED

    for ref in local:
        integrity = re.search(rf'"{re.escape(ref)}" integrity="([^"]+)"', page)
        assert integrity is not None, f"{ref} has no integrity attribute"
        plain = await server.http.get(ref, headers={"accept-encoding": "identity"})
        assert plain.status_code == 200, ref
        assert "content-encoding" not in plain.headers
        kind = "text/css" if ref.endswith(".css") else "text/javascript"
        assert plain.headers["content-type"] == f"{kind}; charset=utf-8"
        assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert plain.headers["x-content-type-options"] == "nosniff"
        assert plain.headers["vary"].lower() == "accept-encoding"
        assert sri(plain.content) == integrity[1]
        assert plain.content == (STATIC / ref.removeprefix("/graphql/assets/")).read_bytes()

        packed = await server.http.get(ref, headers={"accept-encoding": "gzip"})
        assert packed.headers["content-encoding"] == "gzip"
        assert int(packed.headers["content-length"]) < len(plain.content)
        assert packed.content == plain.content  # httpx decompressed it
        assert packed.headers["cache-control"] == plain.headers["cache-control"]

        refused = await server.http.get(ref, headers={"accept-encoding": "gzip;q=0, identity"})
        assert "content-encoding" not in refused.headers and refused.content == plain.content


async def test_only_the_pinned_files_are_served(server: LiveServer) -> None:
    for path in (
        "/graphql/assets/graphiql@3.8.3/graphiql.min.js",  # a release not pinned
        "/graphql/assets/graphiql@3.9.0/LICENSE",  # shipped, not served
        "/graphql/assets/graphiql@3.9.0/",
        "/graphql/assets/..%2F..%2Fassets.py",
        "/graphql/assets/%2e%2e/%2e%2e/main.py",
    ):
        response = await server.http.get(path)
        assert response.status_code == 404, path
    posted = await server.http.post(f"/graphql/assets/{sorted(PINNED)[0]}")
    assert posted.status_code == 405


async def test_the_files_are_not_rate_limited(database_url: str) -> None:
    settings = make_settings(rate_limit_anonymous_per_second=0.01, rate_limit_anonymous_burst=1)
    async with live_server(settings, database_url) as server:
        assert "errors" not in await server.gql("{ __typename }")
        limited = await server.http.post("/graphql", json={"query": "{ __typename }"})
        assert limited.status_code == 429
        # The address has no tokens left: the page and every file it loads still come.
        await graphiql_page(server)
        for name in sorted(PINNED):
            response = await server.http.get(f"/graphql/assets/{name}")
            assert response.status_code == 200, name
            assert response.headers["x-request-id"]  # the middleware stack still ran


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def test_the_tool_refuses_a_tarball_or_file_other_than_pinned() -> None:
    script = b"console.log('hello')"
    files = {"package.json": json.dumps({"license": "MIT"}).encode(), "LICENSE": b"MIT", "x.min.js": script}
    good = tarball(files)
    package = replace(PACKAGES[0], integrity=integrity(good), files={"x.min.js": sri(script)})
    assert vendor.unpack(package, good) == {"x.min.js": script, "LICENSE": b"MIT"}

    tampered = tarball({**files, "x.min.js": b"steal(document.cookie)"})
    with pytest.raises(vendor.VendorError, match="the tarball is sha512-"):
        vendor.unpack(package, tampered)
    # The registry's tarball is the pinned one, yet a file in it is not what the page's hash names.
    with pytest.raises(vendor.VendorError, match=r"x\.min\.js: the tarball's file is sha384-"):
        vendor.unpack(replace(package, integrity=integrity(tampered)), tampered)
    with pytest.raises(vendor.VendorError, match=r"declares licence 'GPL-3\.0'"):
        relicensed = tarball({**files, "package.json": b'{"license": "GPL-3.0"}'})
        vendor.unpack(replace(package, integrity=integrity(relicensed)), relicensed)
    with pytest.raises(vendor.VendorError, match="has no LICENSE"):
        unlicensed = tarball({name: data for name, data in files.items() if name != "LICENSE"})
        vendor.unpack(replace(package, integrity=integrity(unlicensed)), unlicensed)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_the_tool_fetches_exactly_the_shipped_files_from_npm(tmp_path: Path) -> None:
    # The tarballs are kept under .lodge/ (checked against their pins on every use): one download.
    try:
        unpacked = vendor.fetch_all(PACKAGES, cache=TARBALLS)
    except OSError as exc:
        pytest.fail(f"cannot reach {vendor.REGISTRY} ({exc!r}); this test needs the npm registry once")
    rebuilt = tmp_path / "static"
    (rebuilt / "stale@0.0.1").mkdir(parents=True)
    (rebuilt / "stale@0.0.1" / "old.js").write_text("gone")
    vendor.write(rebuilt, unpacked)
    assert tree(rebuilt) == tree(STATIC)


def test_the_wheel_carries_the_files(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    need(uv is not None, "uv is not on PATH")
    assert uv is not None
    # An sdist, then a wheel built from it, as `uv build` does: the files survive both.
    subprocess.run([uv, "build", "--quiet", "-o", str(tmp_path), str(ROOT)], check=True, timeout=300)
    [wheel] = tmp_path.glob("lodge-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name, data in tree(STATIC).items():
            assert archive.read(f"app/api/graphiql/static/{name}") == data, name
    assert "app/api/graphiql/page.html" in names
    assert "app/api/graphiql/static/graphiql@3.9.0/LICENSE" in names


def test_a_missing_or_altered_file_is_refused_at_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from app.api.graphiql import assets

    copy = tmp_path / "static"
    shutil.copytree(STATIC, copy)
    monkeypatch.setattr(assets, "STATIC", copy)
    assets.load.cache_clear()
    try:
        assert assets.load().assets.keys() == PINNED
        target = copy / sorted(PINNED)[0]
        target.write_bytes(target.read_bytes() + b"\n")
        assets.load.cache_clear()
        with pytest.raises(RuntimeError, match="differs from its pin"):
            assets.load()
        target.unlink()
        assets.load.cache_clear()
        with pytest.raises(FileNotFoundError):
            assets.load()
    finally:
        assets.load.cache_clear()
