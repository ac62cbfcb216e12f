"""GraphiQL's files, pinned, read once per process, and served at `/graphql/assets/<package>@<version>/<file>`.

A file's address names its release and its bytes are pinned by hash, so a browser may keep it
for a year without asking again. The page (`page.html`) names each file by a marker that becomes
a tag with the file's address and its `integrity` hash: the hashes live only in `PACKAGES`.

The asset routes sit outside `/graphql` itself, so neither the rate limiter (which counts
`/graphql` and `/ingest` only) nor GraphQL's handling sees them: a page load is five cheap reads
from memory, like `/healthz`.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

ASSET_PATH = "/graphql/assets"
HERE = Path(__file__).parent
STATIC = HERE / "static"
CACHE_CONTROL = "public, max-age=31536000, immutable"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_MARKER = re.compile(r"<!-- asset: (?P<name>\S+) -->")


@dataclass(frozen=True)
class Package:
    """One npm release, as vendored: the files the page loads, and the licence shipped beside them."""

    name: str
    version: str
    integrity: str  # the tarball's, as the registry's `dist.integrity` states it
    licence: str  # what its package.json declares
    files: Mapping[str, str]  # path in the package -> the file's SRI hash (sha384), as the page checks it
    licence_file: str | None = "LICENSE"  # None: the tarball has none (NOTICE.md says what applies)

    @property
    def folder(self) -> str:
        return f"{self.name}@{self.version}"


# GraphiQL 3.9.0 rather than the 3.8.3 strawberry's page names: 3.8.3's `graphiql.min.js` is a
# webpack development build (3.5 MB); 3.9.0, the last 3.x release, ships a real minified one (1 MB)
# and keeps the same UMD interface (React 18, `GraphiQL.createFetcher`, `GraphiQL.React` for plugins).
PACKAGES = (
    Package(
        "react",
        "18.2.0",
        "sha512-/3IjMdb2L9QbBdWiW5e3P2/npwMBaU9mHCSCUzNln0ZCYbcfTsGbTJrU/kGemdH2IWmB2ioZ+zkxtmq6g09fGQ==",
        "MIT",
        {"umd/react.production.min.js": "sha384-tMH8h3BGESGckSAVGZ82T9n90ztNXxvdwvdM6UoR56cYcf+0iGXBliJ29D+wZ/x8"},
    ),
    Package(
        "react-dom",
        "18.2.0",
        "sha512-6IMTriUmvsjHUjNtEDudZfuDQUoWXVxKHhlEGSk81n4YFS+r/Kl99wXiwlVXtPBtJenozv2P+hxDsw9eA7Xo6g==",
        "MIT",
        {"umd/react-dom.production.min.js": "sha384-bm7MnzvK++ykSwVJ2tynSE5TRdN+xL418osEVF2DE/L/gfWHj91J2Sphe582B1Bh"},
    ),
    Package(
        "graphiql",
        "3.9.0",
        "sha512-rJYFlHdBbug9+YbFSwRVvgfPjCayC7wHecZkx/qB4XLuQPFQZw/yB9pmHFtOJV6RiNBBHro3u1GdocKa3YcGRA==",
        "MIT",
        {
            "graphiql.min.css": "sha384-QMux00XgRtwRLSYIY3kw2rj1ovk5AuuliAchk+HSQbqdbGFnz9GYuqIlOqxhwCE2",
            "graphiql.min.js": "sha384-8NGfVj4CVlqHajlZj+bPJT4thxPMHMJYn7DWK2CvtopLd02E7qsPHazniBYvVjOO",
        },
    ),
    Package(
        "@graphiql/plugin-explorer",
        "1.0.2",
        "sha512-9j+kg2UjtLZD5EBmGjeWHkoVVxtbShYg2DzbUVebibnZYZM/iMBEF4vaccXJIAm5KaomIPLx0aoNs4LbODyc3Q==",
        "MIT",
        {
            "dist/style.css": "sha384-5DFJlDPW2tSATRbM8kzoP1j194jexLswuNmClWoRr2Q0x7R68JIQzPHZ02Faktwi",
            "dist/index.umd.js": "sha384-2oonKe47vfHIZnmB6ZZ10vl7T0Y+qrHQF2cmNTaFDuPshpKqpUMGMc9jgj9MLDZ9",
        },
        licence_file=None,
    ),
)


def sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    media_type: str
    integrity: str


@dataclass(frozen=True)
class GraphiQLFiles:
    page: str
    assets: Mapping[str, Asset]  # by address below ASSET_PATH

    async def serve(self, request: Request) -> Response:
        asset = self.assets.get(request.path_params["name"])
        if asset is None:
            return PlainTextResponse("Not Found", status_code=404)
        headers = {"cache-control": CACHE_CONTROL, "vary": "accept-encoding", "x-content-type-options": "nosniff"}
        if _accepts_gzip(request.headers.get("accept-encoding", "")):
            headers["content-encoding"] = "gzip"
            return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)


@functools.cache
def load() -> GraphiQLFiles:
    """Read, check and compress the vendored files once per process. A file that is missing or
    differs from its pin stops the server here, rather than leaving a browser to refuse it."""
    assets: dict[str, Asset] = {}
    for package in PACKAGES:
        for file, integrity in package.files.items():
            name = f"{package.folder}/{file}"
            body = (STATIC / name).read_bytes()
            if sri(body) != integrity:
                raise RuntimeError(f"{STATIC / name} differs from its pin: run `python -m app.api.graphiql.vendor`")
            media_type = MEDIA_TYPES[Path(file).suffix]
            assets[name] = Asset(body, gzip.compress(body, compresslevel=6, mtime=0), media_type, integrity)
    template = (HERE / "page.html").read_text(encoding="utf-8")
    return GraphiQLFiles(page=_MARKER.sub(lambda match: _tag(match["name"], assets), template), assets=assets)


def _tag(name: str, assets: Mapping[str, Asset]) -> str:
    asset = assets.get(name)
    if asset is None:
        raise RuntimeError(f"page.html names {name}, which is not a pinned file")
    url = f"{ASSET_PATH}/{name}"
    if name.endswith(".css"):
        return f'<link rel="stylesheet" href="{url}" integrity="{asset.integrity}" />'
    return f'<script src="{url}" integrity="{asset.integrity}"></script>'


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.partition(";")
        if coding.strip() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
