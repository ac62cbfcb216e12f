"""Channel names and bus messages of the logs domain.

A message is `{"prev": p, "last": l, "logs": [...] | null}`: the project's head seq before and
after one committed batch. A subscriber at cursor c can use the rows when p <= c < l; when c < p it
missed something, and when the rows were too big to send it must read them from PostgreSQL.
"""

from __future__ import annotations

import uuid
from typing import Any

from app.logs import models, service


def project_channel(project_id: uuid.UUID) -> str:
    return f"logs:{project_id}"


def rows_after(message: dict[str, Any], cursor: int) -> list[models.Log] | None:
    """Rows of `message` newer than `cursor`; None when the subscriber must catch up from the database."""
    last = int(message["last"])
    if last <= cursor:
        return []
    if int(message["prev"]) > cursor or message.get("logs") is None:
        return None
    return [row for row in map(service.log_from_event, message["logs"]) if row.seq > cursor]
