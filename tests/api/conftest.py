"""Fixtures of the API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.settings import Settings
from tests.support import LiveServer, live_server


@pytest.fixture(scope="module")
async def resolver_server(settings: Settings, database_url: str) -> AsyncIterator[LiveServer]:
    """A second server on the shared database with compiled reads off: the reference answers
    (tests/api/compiled_support.py)."""
    async with live_server(settings.model_copy(update={"compiled_reads": False}), database_url) as live:
        yield live
