"""Channel names and bus messages of live executions.

Status changes and logs of one execution share its channel, published after each commit:
`{"kind": "status", "execution": {...}}` and `{"kind": "log", "log": {...}}`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from app.workflows import models

STATUS = "status"
LOG = "log"
# Statuses only move forward: a subscriber ignores any event not past what it has shown.
RANK = {"pending": 0, "running": 1, "completed": 2, "failed": 2, "cancelled": 2}


def execution_channel(execution_id: uuid.UUID) -> str:
    return f"execution:{execution_id}"


def _stamp(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def status_changed(row: models.Execution) -> tuple[str, dict[str, Any]]:
    return execution_channel(row.id), {
        "kind": STATUS,
        "execution": {
            "id": str(row.id),
            "workflow_id": str(row.workflow_id),
            "user_id": str(row.user_id),
            "workflow_version": row.workflow_version,
            "status": row.status,
            "input_data": row.input_data,
            "output_data": row.output_data,
            "error_message": row.error_message,
            "started_at": _stamp(row.started_at),
            "completed_at": _stamp(row.completed_at),
            "created_at": _stamp(row.created_at),
            "runner": row.runner,
            "lease_expires_at": _stamp(row.lease_expires_at),
            "attempts": row.attempts,
        },
    }


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def execution_from_event(item: dict[str, Any]) -> models.Execution:
    return models.Execution(
        id=uuid.UUID(item["id"]),
        workflow_id=uuid.UUID(item["workflow_id"]),
        user_id=uuid.UUID(item["user_id"]),
        workflow_version=item["workflow_version"],
        status=item["status"],
        input_data=item["input_data"],
        output_data=item["output_data"],
        error_message=item["error_message"],
        started_at=_time(item["started_at"]),
        completed_at=_time(item["completed_at"]),
        created_at=_time(item["created_at"]),  # type: ignore[arg-type]
        # .get: a message published by an instance not yet upgraded has none of these.
        runner=item.get("runner"),
        lease_expires_at=_time(item.get("lease_expires_at")),
        attempts=item.get("attempts", 0),
    )


def log_appended(row: models.ExecutionLog) -> tuple[str, dict[str, Any]]:
    return execution_channel(row.execution_id), {
        "kind": LOG,
        "log": {
            "id": str(row.id),
            "seq": row.seq,
            "number": row.number,
            "execution_id": str(row.execution_id),
            "node_key": row.node_key,
            "log_level": row.log_level,
            "message": row.message,
            "data": row.data,
            "created_at": _stamp(row.created_at),
        },
    }


def log_from_event(item: dict[str, Any]) -> models.ExecutionLog:
    return models.ExecutionLog(
        id=uuid.UUID(item["id"]),
        seq=item["seq"],
        number=item["number"],
        execution_id=uuid.UUID(item["execution_id"]),
        node_key=item["node_key"],
        log_level=item["log_level"],
        message=item["message"],
        data=item["data"],
        created_at=_time(item["created_at"]),  # type: ignore[arg-type]
    )
