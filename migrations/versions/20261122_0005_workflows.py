"""Workflows: versioned graphs of nodes and edges, executions with logs, files.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A published version is history: it never changes (deleting its workflow still removes it).
VERSIONS_IMMUTABLE = """
CREATE FUNCTION workflow_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a published workflow version cannot be changed' USING ERRCODE = 'check_violation';
END $$
"""

UPDATED_AT_TABLES = ("workflows", "workflow_nodes")


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("original_filename", sa.Text(), nullable=False),
        sa.Column("mime_type", sa.Text(), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("file_path", sa.Text(), nullable=False),
        sa.Column("checksum", sa.Text(), nullable=True),
        sa.Column("is_public", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("file_size >= 0", name=op.f("ck_files_size")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_files_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
    )
    op.create_index(
        "ix_files_checksum", "files", ["checksum"], unique=False, postgresql_where=sa.text("deleted_at IS NULL")
    )
    op.create_index(
        "ix_files_deleted_at", "files", ["deleted_at"], unique=False, postgresql_where=sa.text("deleted_at IS NOT NULL")
    )
    op.create_index(
        "ix_files_user_id_created_at_live",
        "files",
        ["user_id", "created_at", "id"],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "workflows",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'draft'"), nullable=False),
        sa.Column("is_template", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_public", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column(
            "configuration",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('draft', 'published', 'archived')", name=op.f("ck_workflows_status")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_workflows_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    op.create_index(
        "ix_workflows_created_at_live",
        "workflows",
        ["created_at", "id"],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index(
        "ix_workflows_deleted_at",
        "workflows",
        ["deleted_at"],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NOT NULL"),
    )
    op.create_index(
        "ix_workflows_is_public_live",
        "workflows",
        ["is_public"],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NULL AND is_public"),
    )
    op.create_index(
        "ix_workflows_is_template_live",
        "workflows",
        ["is_template"],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NULL AND is_template"),
    )
    op.create_index(
        "ix_workflows_description_trgm",
        "workflows",
        ["description"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"description": "gin_trgm_ops"},
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index(
        "ix_workflows_name_trgm",
        "workflows",
        ["name"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"name": "gin_trgm_ops"},
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index(
        "ix_workflows_status_live",
        "workflows",
        ["status"],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index(
        "ix_workflows_tags",
        "workflows",
        ["tags"],
        unique=False,
        postgresql_using="gin",
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index(
        "ix_workflows_user_id_created_at_live",
        "workflows",
        ["user_id", "created_at", "id"],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "workflow_nodes",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("workflow_id", sa.UUID(), nullable=False),
        sa.Column("node_key", sa.Text(), nullable=False),
        sa.Column("node_type", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("position_x", postgresql.REAL(), nullable=True),
        sa.Column("position_y", postgresql.REAL(), nullable=True),
        sa.Column(
            "configuration",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name=op.f("fk_workflow_nodes_workflow_id_workflows"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_nodes")),
        sa.UniqueConstraint("workflow_id", "node_key", name=op.f("uq_workflow_nodes_workflow_id_node_key")),
    )
    op.create_table(
        "workflow_versions",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("workflow_id", sa.UUID(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("configuration", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "nodes", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column(
            "edges", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_by", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_workflow_versions_created_by_users")),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_versions_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_versions")),
        sa.UniqueConstraint("workflow_id", "version", name=op.f("uq_workflow_versions_workflow_id_version")),
    )
    op.create_index(op.f("ix_workflow_versions_created_by"), "workflow_versions", ["created_by"], unique=False)
    op.create_table(
        "executions",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("workflow_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("workflow_version", sa.Integer(), nullable=True),
        sa.Column("log_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("input_data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("output_data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')", name=op.f("ck_executions_status")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_executions_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id", "workflow_version"],
            ["workflow_versions.workflow_id", "workflow_versions.version"],
            name=op.f("fk_executions_workflow_id_workflow_version_workflow_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name=op.f("fk_executions_workflow_id_workflows"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_executions")),
    )
    op.create_index("ix_executions_status", "executions", ["status"], unique=False)
    op.create_index("ix_executions_user_id_created_at", "executions", ["user_id", "created_at"], unique=False)
    op.create_index(
        "ix_executions_workflow_id_created_at", "executions", ["workflow_id", "created_at", "id"], unique=False
    )
    op.create_table(
        "workflow_edges",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("workflow_id", sa.UUID(), nullable=False),
        sa.Column("source_node_key", sa.Text(), nullable=False),
        sa.Column("target_node_key", sa.Text(), nullable=False),
        sa.Column("edge_type", sa.Text(), server_default=sa.text("'default'"), nullable=False),
        sa.Column(
            "configuration",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False
        ),
        sa.CheckConstraint("source_node_key <> target_node_key", name=op.f("ck_workflow_edges_different_nodes")),
        sa.ForeignKeyConstraint(
            ["workflow_id", "source_node_key"],
            ["workflow_nodes.workflow_id", "workflow_nodes.node_key"],
            name=op.f("fk_workflow_edges_workflow_id_source_node_key_workflow_nodes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id", "target_node_key"],
            ["workflow_nodes.workflow_id", "workflow_nodes.node_key"],
            name=op.f("fk_workflow_edges_workflow_id_target_node_key_workflow_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_edges")),
        sa.UniqueConstraint(
            "workflow_id",
            "source_node_key",
            "target_node_key",
            name=op.f("uq_workflow_edges_workflow_id_source_node_key_target_node_key"),
        ),
    )
    op.create_index(
        "ix_workflow_edges_workflow_id_target_node_key",
        "workflow_edges",
        ["workflow_id", "target_node_key"],
        unique=False,
    )
    op.create_table(
        "execution_logs",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("execution_id", sa.UUID(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("node_key", sa.Text(), nullable=True),
        sa.Column("log_level", sa.Text(), server_default=sa.text("'info'"), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False
        ),
        sa.CheckConstraint("log_level IN ('debug', 'info', 'warn', 'error')", name=op.f("ck_execution_logs_log_level")),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name=op.f("fk_execution_logs_execution_id_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_execution_logs")),
        sa.UniqueConstraint("execution_id", "number", name=op.f("uq_execution_logs_execution_id_number")),
        sa.UniqueConstraint("seq", name=op.f("uq_execution_logs_seq")),
    )
    op.create_index("ix_execution_logs_created_at", "execution_logs", ["created_at"], unique=False)
    op.create_index("ix_execution_logs_execution_id_seq", "execution_logs", ["execution_id", "seq"], unique=False)
    for table in UPDATED_AT_TABLES:
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
        )
    op.execute(VERSIONS_IMMUTABLE)
    op.execute(
        "CREATE TRIGGER trg_workflow_versions_immutable BEFORE UPDATE ON workflow_versions "
        "FOR EACH ROW EXECUTE FUNCTION workflow_versions_immutable()"
    )


def downgrade() -> None:
    op.drop_index("ix_execution_logs_execution_id_seq", table_name="execution_logs")
    op.drop_index("ix_execution_logs_created_at", table_name="execution_logs")
    op.drop_table("execution_logs")
    op.drop_index("ix_workflow_edges_workflow_id_target_node_key", table_name="workflow_edges")
    op.drop_table("workflow_edges")
    op.drop_index("ix_executions_workflow_id_created_at", table_name="executions")
    op.drop_index("ix_executions_user_id_created_at", table_name="executions")
    op.drop_index("ix_executions_status", table_name="executions")
    op.drop_table("executions")
    op.drop_index(op.f("ix_workflow_versions_created_by"), table_name="workflow_versions")
    op.drop_table("workflow_versions")
    op.drop_table("workflow_nodes")
    op.drop_index(
        "ix_workflows_user_id_created_at_live", table_name="workflows", postgresql_where=sa.text("deleted_at IS NULL")
    )
    op.drop_index(
        "ix_workflows_tags",
        table_name="workflows",
        postgresql_using="gin",
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.drop_index("ix_workflows_status_live", table_name="workflows", postgresql_where=sa.text("deleted_at IS NULL"))
    op.drop_index(
        "ix_workflows_name_trgm",
        table_name="workflows",
        postgresql_using="gin",
        postgresql_ops={"name": "gin_trgm_ops"},
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.drop_index(
        "ix_workflows_is_template_live",
        table_name="workflows",
        postgresql_where=sa.text("deleted_at IS NULL AND is_template"),
    )
    op.drop_index(
        "ix_workflows_is_public_live",
        table_name="workflows",
        postgresql_where=sa.text("deleted_at IS NULL AND is_public"),
    )
    op.drop_index("ix_workflows_deleted_at", table_name="workflows", postgresql_where=sa.text("deleted_at IS NOT NULL"))
    op.drop_index(
        "ix_workflows_created_at_live", table_name="workflows", postgresql_where=sa.text("deleted_at IS NULL")
    )
    op.drop_index("ix_workflows_description_trgm", table_name="workflows")
    op.drop_table("workflows")
    op.drop_index(
        "ix_files_user_id_created_at_live", table_name="files", postgresql_where=sa.text("deleted_at IS NULL")
    )
    op.drop_index("ix_files_deleted_at", table_name="files", postgresql_where=sa.text("deleted_at IS NOT NULL"))
    op.drop_index("ix_files_checksum", table_name="files", postgresql_where=sa.text("deleted_at IS NULL"))
    op.drop_table("files")
    op.execute("DROP FUNCTION workflow_versions_immutable()")
