"""The checked-in artifacts match the code: schema.graphql, graphql/*.graphql, docker-compose.yml."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from graphql import build_schema, parse, validate

from app.api.schema import create_schema

ROOT = Path(__file__).resolve().parents[2]


def test_schema_graphql_is_exported_from_the_code() -> None:
    exported = create_schema().as_str() + "\n"
    assert (ROOT / "schema.graphql").read_text() == exported, "run `uv run lodge export-schema -o schema.graphql`"


@pytest.mark.parametrize("document", sorted((ROOT / "graphql").glob("*.graphql")), ids=lambda p: p.name)
def test_operation_documents_validate(document: Path) -> None:
    schema = build_schema((ROOT / "schema.graphql").read_text())
    errors = validate(schema, parse(document.read_text()))
    assert not errors, [e.message for e in errors]


def test_graphql_folder_holds_no_python() -> None:
    assert not list((ROOT / "graphql").glob("*.py")), "graphql/ would shadow graphql-core"


def test_docker_compose_file_is_valid() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("LODGE_REQUIRE_SERVICES") == "1":
            pytest.fail("docker-compose (Debian package) is needed to validate docker-compose.yml")
        pytest.skip("docker-compose is not installed")
    env = {**os.environ, "SECRET_KEY": "a-real-secret-for-validation-only"}
    result = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    for service in ("app", "postgres", "redis"):
        assert f"  {service}:" in result.stdout
    assert "postgres:16" in result.stdout and "redis:7" in result.stdout
    assert result.stdout.count("healthcheck:") == 3


def test_every_name_clients_rely_on_is_in_the_schema() -> None:
    schema = build_schema((ROOT / "schema.graphql").read_text())
    lines = (ROOT / "tests" / "api" / "api_names.txt").read_text().splitlines()
    missing = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        type_name, _, field = line.partition(".")
        named = schema.type_map.get(type_name)
        fields = set(getattr(named, "fields", None) or {}) | set(getattr(named, "values", None) or {})
        if field not in fields:
            missing.append(line)
    assert not missing, f"API.md names missing from the schema: {missing}"
