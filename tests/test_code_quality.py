"""The code is linted, formatted and type-checked as CI checks it: ruff (lint and format), mypy in
strict mode and import-linter's contracts (imports point one way; pyproject.toml holds all their
settings), over everything Lodge ships and tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["app", "tests", "bench", "migrations", "examples"]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", *CHECKED],
        ["ruff", "format", "--check", *CHECKED],
        ["mypy", "app", "tests", "bench", "examples/runner.py"],
        ["lint-imports"],
    ],
    ids=["ruff check", "ruff format", "mypy --strict", "lint-imports"],
)
def test_the_code_is_clean(command: list[str]) -> None:
    # Each tool as installed beside this interpreter (lint-imports has no `python -m` entry).
    program = (
        [str(Path(sys.executable).parent / command[0])]
        if command[0] == "lint-imports"
        else [sys.executable, "-m", command[0]]
    )
    result = subprocess.run(
        [*program, *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"`uv run {' '.join(command)}` fails:\n{result.stdout}\n{result.stderr}"
