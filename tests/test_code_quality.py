"""The code is linted, formatted and type-checked as CI checks it: ruff (lint and format) and mypy in
strict mode (pyproject.toml holds their settings), over everything Lodge ships and tests."""

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
    ],
    ids=["ruff check", "ruff format", "mypy --strict"],
)
def test_the_code_is_clean(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"`uv run {' '.join(command)}` fails:\n{result.stdout}\n{result.stderr}"
