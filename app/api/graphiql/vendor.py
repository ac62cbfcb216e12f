"""Fetch GraphiQL's files again from the npm registry: `uv run python -m app.api.graphiql.vendor`.

For maintainers; the server never fetches anything. Every tarball must match the integrity pinned
in `assets.PACKAGES` (the registry's own sha512) and declare the pinned licence, and every file the
SRI hash the page checks it by; only then is `static/` rebuilt, whole, from the pins.

To move to another release: set its `version` and `integrity` (`npm view graphiql@X dist.integrity`),
run this; it names each file's new hash, to pin once you have looked at the release; run it again.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from app.api.graphiql.assets import PACKAGES, STATIC, Package, sri

REGISTRY = "https://registry.npmjs.org"


class VendorError(Exception):
    pass


def tarball_url(package: Package) -> str:
    basename = package.name.rpartition("/")[2]
    return f"{REGISTRY}/{package.name}/-/{basename}-{package.version}.tgz"


def check_tarball(package: Package, tarball: bytes) -> None:
    algorithm, _, expected = package.integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
    if actual != expected:
        raise VendorError(f"{package.folder}: the tarball is {algorithm}-{actual}, pinned {package.integrity}")


def download(package: Package, cache: Path | None = None) -> bytes:
    """The package's tarball, checked; from `cache` when it holds the pinned one."""
    cached = cache / f"{package.folder.replace('/', '+')}.tgz" if cache is not None else None
    if cached is not None and cached.is_file():
        tarball = cached.read_bytes()
        try:
            check_tarball(package, tarball)
            return tarball
        except VendorError:
            pass  # a stale or broken copy: fetch it again
    with urllib.request.urlopen(tarball_url(package), timeout=60) as response:
        tarball = bytes(response.read())
    check_tarball(package, tarball)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(tarball)
    return tarball


def unpack(package: Package, tarball: bytes) -> dict[str, bytes]:
    """The pinned files and the licence file of a checked tarball, each file checked by its hash."""
    check_tarball(package, tarball)
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member in archive.getmembers():
            extracted = archive.extractfile(member) if member.isfile() else None
            if extracted is not None:
                # npm puts a package's files under one top folder, usually `package/`.
                members[member.name.partition("/")[2]] = extracted.read()
    declared = json.loads(members["package.json"]).get("license")
    if declared != package.licence:
        raise VendorError(f"{package.folder}: package.json declares licence {declared!r}, pinned {package.licence!r}")
    files: dict[str, bytes] = {}
    wanted = dict(package.files)
    if package.licence_file is not None:
        wanted[package.licence_file] = ""
    for path, integrity in wanted.items():
        if path not in members:
            raise VendorError(f"{package.folder}: the tarball has no {path}")
        if integrity and sri(members[path]) != integrity:
            raise VendorError(
                f"{package.folder}/{path}: the tarball's file is {sri(members[path])}, pinned {integrity}"
            )
        files[path] = members[path]
    return files


def write(static: Path, unpacked: Sequence[tuple[Package, Mapping[str, bytes]]]) -> None:
    """Replace `static` with exactly these files: a release no longer pinned leaves nothing behind."""
    staging = Path(tempfile.mkdtemp(prefix=".static-", dir=static.parent))
    retired = static.with_name(".static-retired")
    try:
        for package, files in unpacked:
            for path, data in files.items():
                target = staging / package.folder / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        shutil.rmtree(retired, ignore_errors=True)
        if static.exists():
            static.rename(retired)
        staging.rename(static)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)


def fetch_all(packages: Sequence[Package], cache: Path | None = None) -> list[tuple[Package, dict[str, bytes]]]:
    return [(package, unpack(package, download(package, cache))) for package in packages]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.api.graphiql.vendor", description="Fetch GraphiQL's files again from the npm registry."
    )
    parser.add_argument("--into", type=Path, default=STATIC, help="the folder to rebuild (default: %(default)s)")
    parser.add_argument("--cache", type=Path, help="keep the tarballs here, and reuse them while they match")
    args = parser.parse_args(argv)
    try:
        unpacked = fetch_all(PACKAGES, args.cache)
    except (VendorError, OSError) as exc:
        print(f"vendor: {exc}", file=sys.stderr)
        return 1
    write(args.into, unpacked)
    for package, files in unpacked:
        for path, data in files.items():
            print(f"{len(data):>9}  {package.folder}/{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
