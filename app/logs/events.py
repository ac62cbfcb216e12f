"""Channel names and bus messages of the logs domain.

A message is `{"prev": p, "last": l, "logs": [...] | null}`: the project's head seq before and
after one committed batch. A subscriber at cursor c can use the rows when p <= c < l; when c < p it
missed something, and when the rows were too big to send it must read them from PostgreSQL.
"""

from __future__ import annotations

import uuid
from typing import Any

from app.api.sharing import SharedEvent
from app.logs import models, service
from app.pubsub import Delivery


def project_channel(project_id: uuid.UUID) -> str:
    return f"logs:{project_id}"


def rows_after(delivery: Delivery, cursor: int) -> list[tuple[models.Log, SharedEvent]] | None:
    """Rows of a message newer than `cursor`; None when the subscriber must catch up from the database.

    The hub hands one delivery to every subscriber, so each row is turned into a model and a
    `SharedEvent` once (`Delivery.shared`) and executed once per distinct document.
    """
    message = delivery.payload
    last = int(message["last"])
    if last <= cursor:
        return []
    if int(message["prev"]) > cursor or message.get("logs") is None:
        return None
    return [pair for pair in delivery.shared(_shared_rows) if pair[0].seq > cursor]


def _shared_rows(message: dict[str, Any]) -> list[tuple[models.Log, SharedEvent]]:
    from app.logs.types import Log

    rows = [service.log_from_event(row) for row in message["logs"]]
    return [(row, SharedEvent(Log.from_model(row))) for row in rows]
