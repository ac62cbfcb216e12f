"""Foundation: users, projects, api_keys, logs and the shared updated_at trigger.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"
TABLES_WITH_UPDATED_AT = ("users", "projects", "api_keys")


# Called in autocommit mode, so the per-project lock is held for the database's own work only and
# never while Python waits on anything: a project's logs commit in seq order, which is what lets
# live tail resume with no gap. `prev` is the project's head seq before this batch; each statement
# of a plpgsql function takes a new snapshot, so it is read after the lock is granted. Rows come
# back in input order (seq follows ordinality), without the text the caller already has.
INGEST_LOGS_FUNCTION = """
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


def _uuid_pk() -> sa.Column:
    return sa.Column("id", postgresql.UUID(as_uuid=True), server_default=sa.text("gen_random_uuid()"), nullable=False)


def _ts(name: str, *, nullable: bool = True, now: bool = False) -> sa.Column:
    default = sa.text("now()") if now else None
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=nullable)


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at := now();
            RETURN NEW;
        END $$
        """
    )

    op.create_table(
        "users",
        _uuid_pk(),
        sa.Column("email", sa.Text()),
        sa.Column("password_hash", sa.Text()),
        sa.Column("name", sa.Text()),
        sa.Column("first_name", sa.Text()),
        sa.Column("last_name", sa.Text()),
        sa.Column("username", sa.Text()),
        sa.Column("global_name", sa.Text()),
        sa.Column("discord_id", sa.Text()),
        sa.Column("clerk_id", sa.Text()),
        sa.Column("avatar_url", sa.Text()),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        _ts("email_verified_at"),
        _ts("last_login_at"),
        _ts("created_at", nullable=False, now=True),
        _ts("updated_at", nullable=False, now=True),
        _ts("deleted_at"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.CheckConstraint(f"email IS NULL OR email ~* '{EMAIL_PATTERN}'", name="ck_users_email_format"),
        sa.CheckConstraint("email IS NULL OR email = lower(email)", name="ck_users_email_lowercase"),
        sa.CheckConstraint(
            "email IS NOT NULL OR discord_id IS NOT NULL OR clerk_id IS NOT NULL", name="ck_users_has_identity"
        ),
        sa.UniqueConstraint("discord_id", name="uq_users_discord_id"),
        sa.UniqueConstraint("clerk_id", name="uq_users_clerk_id"),
    )
    op.create_index(
        "uq_users_email_live", "users", ["email"], unique=True, postgresql_where=sa.text("deleted_at IS NULL")
    )

    op.create_table(
        "projects",
        _uuid_pk(),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("owner_id", postgresql.UUID(as_uuid=True), nullable=False),
        _ts("created_at", nullable=False, now=True),
        _ts("updated_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_projects_owner_id_users", ondelete="CASCADE"),
    )
    op.create_index("ix_projects_owner_id", "projects", ["owner_id"])

    op.create_table(
        "api_keys",
        _uuid_pk(),
        sa.Column("project_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        _ts("created_at", nullable=False, now=True),
        _ts("updated_at", nullable=False, now=True),
        _ts("last_used_at"),
        _ts("expires_at"),
        _ts("revoked_at"),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_api_keys_project_id_projects", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_project_id", "api_keys", ["project_id"])

    op.create_table(
        "logs",
        _uuid_pk(),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("project_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("api_key_id", postgresql.UUID(as_uuid=True)),
        sa.Column("log", sa.Text(), nullable=False),
        sa.Column("level", sa.Text(), nullable=False),
        sa.Column("attributes", postgresql.JSONB()),
        sa.Column("idempotency_key", sa.Text()),
        _ts("created_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name="pk_logs"),
        sa.CheckConstraint("level IN ('DEBUG', 'INFO', 'WARN', 'ERROR')", name="ck_logs_level"),
        sa.UniqueConstraint("seq", name="uq_logs_seq"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_logs_project_id_projects", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name="fk_logs_api_key_id_api_keys", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_logs_project_id_seq", "logs", ["project_id", "seq"])
    op.create_index("ix_logs_api_key_id_seq", "logs", ["api_key_id", "seq"])
    op.create_index(
        "uq_logs_project_id_idempotency_key",
        "logs",
        ["project_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )

    op.execute(INGEST_LOGS_FUNCTION)

    for table in TABLES_WITH_UPDATED_AT:
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
        )


def downgrade() -> None:
    op.execute("DROP FUNCTION ingest_logs(uuid, uuid, text[], text[], text[], text[])")
    op.drop_table("logs")
    op.drop_table("api_keys")
    op.drop_table("projects")
    op.drop_table("users")
    op.execute("DROP FUNCTION set_updated_at()")
