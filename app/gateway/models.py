"""Gateway accounting (DOMAIN.md, seeds/pandora-gateway.md): clients, services, environments,
the services a project offers and an environment enables, request logs and quota reservations."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

from app.columns import created_at, text_col, updated_at, uuid_fk, uuid_pk

REQUEST_LOG_ID = text("'rl_' || replace(gen_random_uuid()::text, '-', '')")
RESERVATION_ID = text("'rsv_' || replace(gen_random_uuid()::text, '-', '')")


class Client(SQLModel, table=True):
    __tablename__ = "clients"

    id: uuid.UUID = uuid_pk()
    name: str = text_col(nullable=False)
    email: str | None = text_col()
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()


class Service(SQLModel, table=True):
    __tablename__ = "services"

    id: uuid.UUID = uuid_pk()
    name: str = text_col(nullable=False, unique=True)
    description: str | None = text_col()
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()


class ProjectService(SQLModel, table=True):
    __tablename__ = "project_services"
    __table_args__ = (PrimaryKeyConstraint("project_id", "service_id"),)

    project_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    )
    service_id: uuid.UUID = Field(
        sa_column=Column(UUID(as_uuid=True), ForeignKey("services.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()


class Environment(SQLModel, table=True):
    __tablename__ = "environments"
    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        # Target of the composite foreign keys that keep keys and enabled services in the project.
        UniqueConstraint("id", "project_id"),
    )

    id: uuid.UUID = uuid_pk()
    project_id: uuid.UUID = uuid_fk("projects.id", ondelete="CASCADE")
    name: str = text_col(nullable=False)  # never updatable: a trigger refuses it
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()


class EnvironmentService(SQLModel, table=True):
    __tablename__ = "environment_services"
    __table_args__ = (
        PrimaryKeyConstraint("environment_id", "service_id"),
        ForeignKeyConstraint(
            ["environment_id", "project_id"], ["environments.id", "environments.project_id"], ondelete="CASCADE"
        ),
        # The service must be one of the environment's project: PostgreSQL refuses anything else.
        ForeignKeyConstraint(
            ["project_id", "service_id"],
            ["project_services.project_id", "project_services.service_id"],
            ondelete="CASCADE",
        ),
        CheckConstraint("reserved_requests >= 0 AND available_requests >= reserved_requests", name="quota"),
        Index("ix_environment_services_project_id_service_id", "project_id", "service_id"),
    )

    environment_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    service_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    project_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    available_requests: int = Field(sa_column=Column(Integer, nullable=False))
    reserved_requests: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))
    created_at: datetime = created_at()
    updated_at: datetime = updated_at()


ACCEPTED = "accepted"
REFUSED = "refused"


class RequestLog(SQLModel, table=True):
    """Every request a gateway made with an environment's key, refused ones too (`outcome`, and the
    refusal's error code as `reason`). A log outlives the quota row it was counted on (a service
    disabled or detached later): it belongs to its environment and its service."""

    __tablename__ = "request_logs"
    __table_args__ = (
        Index("ix_request_logs_environment_id_created_at", "environment_id", "created_at"),
        CheckConstraint("outcome IN ('accepted', 'refused')", name="outcome"),
    )

    id: str = Field(default=None, sa_column=Column(Text, primary_key=True, server_default=REQUEST_LOG_ID))
    api_key_id: uuid.UUID = uuid_fk("api_keys.id", ondelete="CASCADE", index=True)
    environment_id: uuid.UUID = uuid_fk("environments.id", ondelete="CASCADE")
    service_id: uuid.UUID = uuid_fk("services.id", ondelete="CASCADE", index=True)
    outcome: str = Field(default=ACCEPTED, sa_column=Column(Text, nullable=False, server_default=text("'accepted'")))
    reason: str | None = text_col()
    endpoint: str | None = text_col()
    start_point: str | None = Field(
        default=None,
        sa_column=Column(Text, ForeignKey("request_logs.id", ondelete="CASCADE"), nullable=True, index=True),
    )
    status: str = text_col(nullable=False)
    # clock_timestamp(), not now(): several steps recorded in one transaction keep their order.
    created_at: datetime = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()")),
    )


class Reservation(SQLModel, table=True):
    __tablename__ = "reservations"
    __table_args__ = (
        ForeignKeyConstraint(
            ["environment_id", "service_id"],
            ["environment_services.environment_id", "environment_services.service_id"],
            ondelete="CASCADE",
        ),
        CheckConstraint("amount > 0", name="amount"),
        CheckConstraint("steps >= 0 AND steps <= amount", name="steps"),
        Index("ix_reservations_environment_id_service_id", "environment_id", "service_id"),
    )

    id: str = Field(default=None, sa_column=Column(Text, primary_key=True, server_default=RESERVATION_ID))
    environment_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    service_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    start_point: str = Field(
        sa_column=Column(Text, ForeignKey("request_logs.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    amount: int = Field(sa_column=Column(Integer, nullable=False))
    # Steps recorded under the hold: a flow of `amount` admits `amount` steps, counted by the
    # conditional UPDATE that records each one.
    steps: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default=text("0")))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=True))
    created_at: datetime = created_at()
