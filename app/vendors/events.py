"""Channel names and bus messages of the live map.

Each recorded position is published after its commit on the vendor's channel and on the map
channel; a subscriber to a box listens to the map channel and keeps what falls in its box.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from app.api.sharing import SharedEvent
from app.pubsub import Delivery
from app.vendors import models

MAP_CHANNEL = "vendors:map"


def vendor_channel(vendor_id: uuid.UUID) -> str:
    return f"vendor:{vendor_id}"


def location_recorded(row: models.Location) -> list[tuple[str, dict[str, Any]]]:
    payload = {
        "id": str(row.id),
        "vendor_id": str(row.vendor_id),
        "lat": row.lat,
        "long": row.long,
        "timestamp": row.timestamp.isoformat(),
    }
    return [(vendor_channel(row.vendor_id), payload), (MAP_CHANNEL, payload)]


def shared_location(delivery: Delivery) -> tuple[models.Location, SharedEvent]:
    """The position of a message and its `SharedEvent`, made once per message: the hub hands one
    delivery to every subscriber in the process, and a selection that does not depend on the
    viewer (`app.api.visibility`) is then rendered once for all of them."""
    return delivery.shared(_shared_location)


def _shared_location(payload: dict[str, Any]) -> tuple[models.Location, SharedEvent]:
    from app.vendors.types import Location

    row = location_from_event(payload)
    return row, SharedEvent(Location.from_model(row))


def location_from_event(payload: dict[str, Any]) -> models.Location:
    return models.Location(
        id=uuid.UUID(payload["id"]),
        vendor_id=uuid.UUID(payload["vendor_id"]),
        lat=payload["lat"],
        long=payload["long"],
        timestamp=datetime.fromisoformat(payload["timestamp"]),
    )
