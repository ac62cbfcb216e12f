"""Workflows (DOMAIN.md, seeds/elysian-workflows.md): versioned graphs of nodes and edges,
executions with their logs, and files."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REAL, UUID
from sqlmodel import Field, SQLModel

from app.columns import created_at, text_col, timestamp, updated_at, uuid_fk, uuid_pk

LIVE = text("deleted_at IS NULL")
CLOCK = text("clock_timestamp()")

WORKFLOW_STATUSES = ("draft", "published", "archived")
EXECUTION_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
LOG_LEVELS = ("debug", "info", "warn", "error")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _json(default: str | None = "'{}'::jsonb", *, nullable: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=Column(JSONB, nullable=nullable, server_default=text(default) if default else None),
    )


def _clock() -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=False, server_default=CLOCK))


def _flag() -> Any:
    return Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false")))


class Workflow(SQLModel, table=True):
    __tablename__ = "workflows"
    __table_args__ = (
        CheckConstraint(_one_of("status", WORKFLOW_STATUSES), name="status"),
        # Partial indexes: reads never see soft-deleted workflows.
        Index("ix_workflows_user_id_created_at_live", "user_id", "created_at", "id", postgresql_where=LIVE),
        Index("ix_workflows_status_live", "status", postgresql_where=LIVE),
        Index("ix_workflows_created_at_live", "created_at", "id", postgresql_where=LIVE),
        Index("ix_workflows_tags", "tags", postgresql_using="gin", postgresql_where=LIVE),
        Index(
            "ix_workflows_name_trgm",
            "name",
            postgresql_using="gin",
            postgresql_ops={"name": "gin_trgm_ops"},
            postgresql_where=LIVE,
        ),
        Index(
            "ix_workflows_description_trgm",
            "description",
            postgresql_using="gin",
            postgresql_ops={"description": "gin_trgm_ops"},
            postgresql_where=LIVE,
        ),
        Index("ix_workflows_is_public_live", "is_public", postgresql_where=text("deleted_at IS NULL AND is_public")),
        Index(
            "ix_workflows_is_template_live", "is_template", postgresql_where=text("deleted_at IS NULL AND is_template")
        ),
        Index("ix_workflows_deleted_at", "deleted_at", postgresql_where=text("deleted_at IS NOT NULL")),
    )

    id: uuid.UUID = uuid_pk()
    user_id: uuid.UUID = uuid_fk("users.id", ondelete="CASCADE")
    name: str = text_col(nullable=False)
    description: str | None = text_col()
    # The number the next publish will take: a draft never published is at 1.
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default=text("1")))
    status: str = Field(default="draft", sa_column=Column(Text(), nullable=False, server_default=text("'draft'")))
    is_template: bool = _flag()
    is_public: bool = _flag()
    tags: list[str] = Field(
        default_factory=list, sa_column=Column(ARRAY(Text()), nullable=False, server_default=text("'{}'::text[]"))
    )
    configuration: dict[str, Any] = _json()
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()
    deleted_at: datetime | None = timestamp()


class WorkflowVersion(SQLModel, table=True):
    """An immutable snapshot (a trigger refuses UPDATE): configuration, nodes and edges as published."""

    __tablename__ = "workflow_versions"
    __table_args__ = (UniqueConstraint("workflow_id", "version"),)

    id: uuid.UUID = uuid_pk()
    workflow_id: uuid.UUID = uuid_fk("workflows.id", ondelete="CASCADE")
    version: int = Field(sa_column=Column(Integer, nullable=False))
    name: str = text_col(nullable=False)
    description: str | None = text_col()
    configuration: dict[str, Any] = _json(None)
    nodes: list[dict[str, Any]] = _json("'[]'::jsonb")
    edges: list[dict[str, Any]] = _json("'[]'::jsonb")
    created_at: datetime = created_at()
    # No cascade: deleting a user who published someone else's workflow must not erase its history.
    created_by: uuid.UUID = uuid_fk("users.id", ondelete=None, index=True)


class WorkflowNode(SQLModel, table=True):
    __tablename__ = "workflow_nodes"
    __table_args__ = (UniqueConstraint("workflow_id", "node_key"),)

    id: uuid.UUID = uuid_pk()
    workflow_id: uuid.UUID = uuid_fk("workflows.id", ondelete="CASCADE")
    node_key: str = text_col(nullable=False)
    node_type: str = text_col(nullable=False)
    label: str | None = text_col()
    position_x: float | None = Field(default=None, sa_column=Column(REAL(), nullable=True))
    position_y: float | None = Field(default=None, sa_column=Column(REAL(), nullable=True))
    configuration: dict[str, Any] = _json()
    created_at: datetime = _clock()  # several nodes made in one transaction keep their order
    updated_at: datetime = updated_at()


class WorkflowEdge(SQLModel, table=True):
    __tablename__ = "workflow_edges"
    __table_args__ = (
        CheckConstraint("source_node_key <> target_node_key", name="different_nodes"),
        UniqueConstraint("workflow_id", "source_node_key", "target_node_key"),
        # Both ends are nodes of the same workflow; removing a node removes its edges.
        ForeignKeyConstraint(
            ["workflow_id", "source_node_key"],
            ["workflow_nodes.workflow_id", "workflow_nodes.node_key"],
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["workflow_id", "target_node_key"],
            ["workflow_nodes.workflow_id", "workflow_nodes.node_key"],
            ondelete="CASCADE",
        ),
        Index("ix_workflow_edges_workflow_id_target_node_key", "workflow_id", "target_node_key"),
    )

    id: uuid.UUID = uuid_pk()
    workflow_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    source_node_key: str = text_col(nullable=False)
    target_node_key: str = text_col(nullable=False)
    edge_type: str = Field(
        default="default", sa_column=Column(Text(), nullable=False, server_default=text("'default'"))
    )
    configuration: dict[str, Any] = _json()
    created_at: datetime = _clock()  # several nodes made in one transaction keep their order


class Execution(SQLModel, table=True):
    __tablename__ = "executions"
    __table_args__ = (
        CheckConstraint(_one_of("status", EXECUTION_STATUSES), name="status"),
        # An execution runs a version that exists.
        ForeignKeyConstraint(
            ["workflow_id", "workflow_version"],
            ["workflow_versions.workflow_id", "workflow_versions.version"],
            ondelete="CASCADE",
        ),
        Index("ix_executions_workflow_id_created_at", "workflow_id", "created_at", "id"),
        Index("ix_executions_user_id_created_at", "user_id", "created_at"),
        Index("ix_executions_status", "status"),
        # What claimExecution looks for (oldest first) and what the lease sweeper looks for.
        Index("ix_executions_pending", "created_at", "id", postgresql_where=text("status = 'pending'")),
        Index("ix_executions_lease", "lease_expires_at", postgresql_where=text("status = 'running'")),
    )

    id: uuid.UUID = uuid_pk()
    workflow_id: uuid.UUID = uuid_fk("workflows.id", ondelete="CASCADE")
    user_id: uuid.UUID = uuid_fk("users.id", ondelete="CASCADE")
    workflow_version: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    # How many logs it has: raised under the row's lock by each append, which numbers its log.
    log_count: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))
    status: str = Field(default="pending", sa_column=Column(Text(), nullable=False, server_default=text("'pending'")))
    input_data: Any = _json(None, nullable=True)
    output_data: Any = _json(None, nullable=True)
    error_message: str | None = text_col()
    started_at: datetime | None = timestamp()
    completed_at: datetime | None = timestamp()
    created_at: datetime = created_at()
    # The runner protocol (claimExecution): who runs it, until when without a heartbeat, and how
    # many runners have claimed it (a lease that ran out hands it back to PENDING).
    runner: str | None = text_col()
    lease_expires_at: datetime | None = timestamp()
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))


class ExecutionLog(SQLModel, table=True):
    __tablename__ = "execution_logs"
    __table_args__ = (
        CheckConstraint(_one_of("log_level", LOG_LEVELS), name="log_level"),
        Index("ix_execution_logs_execution_id_seq", "execution_id", "seq"),
        UniqueConstraint("execution_id", "number"),
        Index("ix_execution_logs_created_at", "created_at"),
    )

    id: uuid.UUID = uuid_pk()
    # Strictly increasing: the order of a run's logs, and the cursor of `logs` and of live resume.
    seq: int = Field(default=None, sa_column=Column(BigInteger, Identity(always=True), nullable=False, unique=True))
    execution_id: uuid.UUID = uuid_fk("executions.id", ondelete="CASCADE")
    # 1, 2, 3, ... within its execution: a live subscriber tells a gap from a late message by it.
    number: int = Field(sa_column=Column(Integer, nullable=False))
    node_key: str | None = text_col()
    log_level: str = Field(default="info", sa_column=Column(Text(), nullable=False, server_default=text("'info'")))
    message: str = text_col(nullable=False)
    data: Any = _json(None, nullable=True)
    created_at: datetime = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=False, server_default=CLOCK)
    )


class File(SQLModel, table=True):
    __tablename__ = "files"
    __table_args__ = (
        CheckConstraint("file_size >= 0", name="size"),
        Index("ix_files_user_id_created_at_live", "user_id", "created_at", "id", postgresql_where=LIVE),
        Index("ix_files_checksum", "checksum", postgresql_where=LIVE),
        Index("ix_files_deleted_at", "deleted_at", postgresql_where=text("deleted_at IS NOT NULL")),
        # The file sweeper's: deleted, content still stored.
        Index(
            "ix_files_content_to_sweep",
            "deleted_at",
            postgresql_where=text("deleted_at IS NOT NULL AND storage_key IS NOT NULL"),
        ),
    )

    id: uuid.UUID = uuid_pk()
    user_id: uuid.UUID = uuid_fk("users.id", ondelete="CASCADE")
    filename: str = text_col(nullable=False)
    original_filename: str = text_col(nullable=False)
    mime_type: str = text_col(nullable=False)
    file_size: int = Field(sa_column=Column(BigInteger, nullable=False))
    file_path: str = text_col(nullable=False)
    checksum: str | None = text_col()
    is_public: bool = _flag()
    created_at: datetime = created_at()
    deleted_at: datetime | None = timestamp()
    # Its content, once uploaded (createFileUpload, then PUT to the signed URL): where the storage
    # keeps it, and when. The content never changes afterwards.
    storage_key: str | None = text_col()
    stored_at: datetime | None = timestamp()
