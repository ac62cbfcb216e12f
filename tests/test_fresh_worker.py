"""A fresh process whose first request reads past the ORM (a row built with model_construct)
answers it: the mappers are configured when the app is built, not on the first ORM query."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import uuid
from app.main import create_app, build_deps
from app.settings import Settings
from app.accounts import models

create_app(build_deps(Settings.model_validate({"secret_key": "x" * 32}), "postgresql+asyncpg://nobody@127.0.0.1:1/none"))
row = models.User.model_construct(id=uuid.uuid4(), email="a@example.com")
print(row.email)
"""


def test_rows_built_without_the_orm_work_in_a_fresh_process() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "a@example.com"
