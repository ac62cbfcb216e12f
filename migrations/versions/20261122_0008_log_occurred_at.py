"""Logs: the event time a sender gives (`occurred_at`), kept beside the time Lodge stored the log.

`ingest_logs` takes the event times as a seventh array. It defaults to NULL (every log without an
event time), so a caller of the six-array form keeps working during a rolling upgrade.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in the foundation revision (which says why it runs in autocommit mode and takes the lock),
# with the event times.
INGEST_LOGS_FUNCTION = """
CREATE FUNCTION ingest_logs(
    p_project_id uuid, p_api_key_id uuid, p_logs text[], p_levels text[], p_attributes text[], p_keys text[],
    p_occurred_at timestamptz[] DEFAULT NULL
) RETURNS TABLE (prev bigint, id uuid, seq bigint, idempotency_key text, created_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_prev bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_project_id::text, 7));
    SELECT coalesce(max(l.seq), 0) INTO v_prev FROM logs l WHERE l.project_id = p_project_id;
    RETURN QUERY
        WITH ins AS (
            INSERT INTO logs AS l (project_id, api_key_id, log, level, attributes, idempotency_key, occurred_at)
            SELECT p_project_id, p_api_key_id, t.log, t.level, t.attributes::jsonb, t.idempotency_key, t.occurred_at
            -- A NULL (or shorter) array of event times pads with NULLs.
            FROM unnest(p_logs, p_levels, p_attributes, p_keys, p_occurred_at)
                 WITH ORDINALITY AS t(log, level, attributes, idempotency_key, occurred_at, ord)
            ORDER BY t.ord
            ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING l.id, l.seq, l.idempotency_key, l.created_at
        )
        SELECT v_prev, ins.id, ins.seq, ins.idempotency_key, ins.created_at FROM ins ORDER BY ins.seq;
END $$
"""

# The foundation revision's function, restored on downgrade.
PREVIOUS_INGEST_LOGS_FUNCTION = """
CREATE FUNCTION ingest_logs(
    p_project_id uuid, p_api_key_id uuid, p_logs text[], p_levels text[], p_attributes text[], p_keys text[]
) RETURNS TABLE (prev bigint, id uuid, seq bigint, idempotency_key text, created_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_prev bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_project_id::text, 7));
    SELECT coalesce(max(l.seq), 0) INTO v_prev FROM logs l WHERE l.project_id = p_project_id;
    RETURN QUERY
        WITH ins AS (
            INSERT INTO logs AS l (project_id, api_key_id, log, level, attributes, idempotency_key)
            SELECT p_project_id, p_api_key_id, t.log, t.level, t.attributes::jsonb, t.idempotency_key
            FROM unnest(p_logs, p_levels, p_attributes, p_keys)
                 WITH ORDINALITY AS t(log, level, attributes, idempotency_key, ord)
            ORDER BY t.ord
            ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING l.id, l.seq, l.idempotency_key, l.created_at
        )
        SELECT v_prev, ins.id, ins.seq, ins.idempotency_key, ins.created_at FROM ins ORDER BY ins.seq;
END $$
"""


def upgrade() -> None:
    op.add_column("logs", sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("DROP FUNCTION ingest_logs(uuid, uuid, text[], text[], text[], text[])")
    op.execute(INGEST_LOGS_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION ingest_logs(uuid, uuid, text[], text[], text[], text[], timestamptz[])")
    op.execute(PREVIOUS_INGEST_LOGS_FUNCTION)
    op.drop_column("logs", "occurred_at")
