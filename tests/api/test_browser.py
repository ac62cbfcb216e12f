"""GraphiQL works in a real browser: headless Chromium (Debian's package, driven by Playwright) opens
`/graphql`, gets the server's schema, a query entered into GraphiQL's editor is run with its button,
and the result pane shows the answer the server read from the database.

GraphiQL's page loads its scripts and styles from unpkg.com, which the test machines cannot reach; the
test serves those exact files itself, from the packages' npm tarballs (fetched once from the npm
registry into `.lodge/graphiql-assets/`), so the page's subresource-integrity hashes still check them.
"""

from __future__ import annotations

import asyncio
import io
import json
import mimetypes
import os
import re
import shutil
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import Route, async_playwright, expect

from tests.support import LiveServer, need, new_user

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
# The network is closed but for package registries: without these, Chromium stalls on refused connections.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UNPKG = "https://unpkg.com/"
REGISTRY = "https://registry.npmjs.org"
ASSETS = ROOT / ".lodge" / "graphiql-assets"
TIMEOUT_MS = 30_000
# GraphiQL 3's editors are CodeMirror 5 instances: the element holds the editor as `.CodeMirror`.
QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
RESULT_PANE = ".graphiql-response .CodeMirror"
# unpkg.com/<package>@<version>/<file>, where a package may be scoped (@scope/name).
UNPKG_PATH = re.compile(r"(?P<package>(?:@[^/@]+/)?[^/@]+)@(?P<version>[^/]+)/(?P<file>.+)")


@dataclass(frozen=True)
class Asset:
    """One file GraphiQL's page asks unpkg.com for, and where its npm package is cached."""

    package: str
    version: str
    file: str

    @classmethod
    def parse(cls, url: str) -> Asset | None:
        if not url.startswith(UNPKG):
            return None
        match = UNPKG_PATH.fullmatch(urlsplit(url).path.lstrip("/"))
        return cls(match["package"], match["version"], match["file"]) if match else None

    @property
    def tarball_url(self) -> str:
        basename = self.package.rpartition("/")[2]
        return f"{REGISTRY}/{self.package}/-/{basename}-{self.version}.tgz"

    @property
    def directory(self) -> Path:
        return ASSETS / f"{self.package}@{self.version}"

    @property
    def path(self) -> Path | None:
        """The extracted file, if the package is cached and has it (never a path outside the package)."""
        path = (self.directory / self.file).resolve()
        return path if path.is_relative_to(self.directory.resolve()) and path.is_file() else None


def extract_package(tarball: bytes, directory: Path) -> None:
    """Unpack an npm tarball (its files sit under one top folder, usually `package/`) into `directory`,
    atomically: a half-written cache never serves."""

    def strip_top_folder(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        _top, _, rest = member.name.partition("/")
        # Renamed first, then vetted: no file lands outside `directory`.
        return tarfile.data_filter(member.replace(name=rest), dest) if rest else None

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=directory.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
            archive.extractall(staging, filter=strip_top_folder)
        try:
            staging.rename(directory)
        except OSError:
            if not directory.is_dir():  # not merely a concurrent run that cached it first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


async def cache_packages(assets: list[Asset]) -> None:
    """Fetch the npm tarball of every package the page uses that is not cached yet."""
    missing = {(a.package, a.version): a for a in assets if not a.directory.is_dir()}
    if not missing:
        return
    async with httpx.AsyncClient(timeout=60, follow_redirects=True) as client:
        for asset in missing.values():
            try:
                response = await client.get(asset.tarball_url)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                pytest.fail(
                    f"cannot fetch GraphiQL's assets from the npm registry ({asset.tarball_url}: {exc!r}); "
                    f"the browser test needs {REGISTRY} once, to cache them in {ASSETS}"
                )
            await asyncio.to_thread(extract_package, response.content, asset.directory)


async def graphiql_assets(server: LiveServer) -> list[Asset]:
    """Every unpkg.com file GraphiQL's page (as Lodge serves it) names, cached locally."""
    page = await server.http.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200, page.text
    urls = sorted(set(re.findall(r"""https://unpkg\.com/[^"'\s]+""", page.text)))
    assets = [asset for url in urls if (asset := Asset.parse(url)) is not None]
    assert len(assets) == len(urls) >= 1, f"unexpected unpkg.com addresses on GraphiQL's page: {urls}"
    await cache_packages(assets)
    for asset in assets:
        assert asset.path is not None, f"{asset.file} is not in the npm tarball {asset.tarball_url}"
    return assets


async def test_graphiql_runs_a_query_in_chromium(server: LiveServer) -> None:
    need(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing (Debian's chromium package; `.ci/run` installs it)")
    await graphiql_assets(server)

    name = f"browser-{uuid.uuid4().hex[:12]}"
    token = await new_user(server)
    await server.data("mutation($n: String!) { createVendor(input: {name: $n}) { id } }", {"n": name}, token=token)
    query = f'{{ vendors(search: "{name}", first: 1) {{ totalCount nodes {{ name }} }} }}'

    page_errors: list[str] = []
    refused: list[str] = []

    async def serve(route: Route) -> None:
        url = route.request.url
        if url == server.url or url.startswith(server.url + "/"):
            await route.continue_()
            return
        asset = Asset.parse(url)
        path = asset.path if asset is not None else None
        if path is None:
            refused.append(url)
            await route.abort()
            return
        await route.fulfill(
            path=path,
            content_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
            # The page's tags are `crossorigin`: without this header Chromium refuses the files.
            headers={"access-control-allow-origin": "*"},
        )

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            context.set_default_timeout(TIMEOUT_MS)
            await context.route("**/*", serve)
            page = await context.new_page()
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            # Shown by pytest if the test fails: a refused script (say, a wrong integrity hash) shows here.
            page.on("console", lambda message: print(f"console {message.type}: {message.text}"))

            await page.goto(f"{server.url}/graphql")
            editor = page.locator(QUERY_EDITOR)
            await expect(editor).to_be_visible(timeout=TIMEOUT_MS)

            # GraphiQL has the server's schema (its introspection query ran) and has wired up its editor.
            await page.wait_for_function(
                "selector => Boolean(document.querySelector(selector)?.CodeMirror?.getOption('lint')?.schema)",
                arg=QUERY_EDITOR,
            )

            # Replace the welcome text with the query, entered as one input event (as a paste or an IME
            # does). Not key by key: the page hands every edit back to GraphiQL as its `query` prop, and
            # on a slow machine a re-render with an earlier value resets the editor between keys.
            await editor.click()
            await page.keyboard.press("ControlOrMeta+A")
            await page.keyboard.insert_text(query)
            await page.wait_for_function(
                "([selector, q]) => document.querySelector(selector).CodeMirror.getValue() === q",
                arg=[QUERY_EDITOR, query],
            )
            # GraphiQL itself took the edit: the page records its query in the address (`?q=`).
            await page.wait_for_function("q => new URLSearchParams(location.search).get('q') === q", arg=query)
            assert parse_qs(urlsplit(page.url).query)["q"] == [query]

            async with page.expect_response(
                lambda r: r.url == f"{server.url}/graphql" and name in (r.request.post_data or "")
            ) as response_info:
                await page.locator(".graphiql-execute-button").click()
            response = await response_info.value
            assert response.ok, await response.text()

            result = page.locator(RESULT_PANE)
            await expect(result).to_contain_text('"totalCount": 1', timeout=TIMEOUT_MS)
            await expect(result).to_contain_text(f'"name": "{name}"', timeout=TIMEOUT_MS)
            pane = json.loads(await result.evaluate("el => el.CodeMirror.getValue()"))
        finally:
            await browser.close()

    assert pane == {"data": {"vendors": {"totalCount": 1, "nodes": [{"name": name}]}}}
    assert not page_errors, page_errors
    assert not refused, f"GraphiQL's page asked for files the test does not serve: {refused}"
