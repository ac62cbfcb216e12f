"""Gateway: clients, services, project and environment services, request logs, reservations.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# An environment's name is what its keys are handed out for; it never changes (the seed's rule).
ENVIRONMENT_NAME_FIXED = """
CREATE FUNCTION environments_name_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name IS DISTINCT FROM OLD.name THEN
        RAISE EXCEPTION 'an environment''s name cannot be changed' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clients")),
    )
    op.create_table(
        "services",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_services")),
        sa.UniqueConstraint("name", name=op.f("uq_services_name")),
    )
    op.create_table(
        "environments",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("project_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_environments_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environments")),
        sa.UniqueConstraint("id", "project_id", name=op.f("uq_environments_id_project_id")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_environments_project_id_name")),
    )
    op.create_table(
        "project_services",
        sa.Column("project_id", sa.UUID(), nullable=False),
        sa.Column("service_id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_project_services_project_id_projects"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_project_services_service_id_services"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("project_id", "service_id", name=op.f("pk_project_services")),
    )
    op.create_index(op.f("ix_project_services_service_id"), "project_services", ["service_id"], unique=False)
    op.create_table(
        "environment_services",
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("service_id", sa.UUID(), nullable=False),
        sa.Column("project_id", sa.UUID(), nullable=False),
        sa.Column("available_requests", sa.Integer(), nullable=False),
        sa.Column("reserved_requests", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "reserved_requests >= 0 AND available_requests >= reserved_requests",
            name=op.f("ck_environment_services_quota"),
        ),
        sa.ForeignKeyConstraint(
            ["environment_id", "project_id"],
            ["environments.id", "environments.project_id"],
            name=op.f("fk_environment_services_environment_id_project_id_environments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id", "service_id"],
            ["project_services.project_id", "project_services.service_id"],
            name=op.f("fk_environment_services_project_id_service_id_project_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("environment_id", "service_id", name=op.f("pk_environment_services")),
    )
    op.create_index(
        "ix_environment_services_project_id_service_id",
        "environment_services",
        ["project_id", "service_id"],
        unique=False,
    )
    op.create_table(
        "request_logs",
        sa.Column(
            "id",
            sa.Text(),
            server_default=sa.text("'rl_' || replace(gen_random_uuid()::text, '-', '')"),
            nullable=False,
        ),
        sa.Column("api_key_id", sa.UUID(), nullable=False),
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("service_id", sa.UUID(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=True),
        sa.Column("start_point", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_request_logs_api_key_id_api_keys"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["environment_id", "service_id"],
            ["environment_services.environment_id", "environment_services.service_id"],
            name=op.f("fk_request_logs_environment_id_service_id_environment_services"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["start_point"],
            ["request_logs.id"],
            name=op.f("fk_request_logs_start_point_request_logs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_logs")),
    )
    op.create_index(op.f("ix_request_logs_api_key_id"), "request_logs", ["api_key_id"], unique=False)
    op.create_index(
        "ix_request_logs_environment_id_created_at", "request_logs", ["environment_id", "created_at"], unique=False
    )
    op.create_index(op.f("ix_request_logs_start_point"), "request_logs", ["start_point"], unique=False)
    op.create_table(
        "reservations",
        sa.Column(
            "id",
            sa.Text(),
            server_default=sa.text("'rsv_' || replace(gen_random_uuid()::text, '-', '')"),
            nullable=False,
        ),
        sa.Column("environment_id", sa.UUID(), nullable=False),
        sa.Column("service_id", sa.UUID(), nullable=False),
        sa.Column("start_point", sa.Text(), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_reservations_amount")),
        sa.ForeignKeyConstraint(
            ["environment_id", "service_id"],
            ["environment_services.environment_id", "environment_services.service_id"],
            name=op.f("fk_reservations_environment_id_service_id_environment_services"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["start_point"],
            ["request_logs.id"],
            name=op.f("fk_reservations_start_point_request_logs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
    )
    op.create_index(
        "ix_reservations_environment_id_service_id", "reservations", ["environment_id", "service_id"], unique=False
    )
    op.create_index(op.f("ix_reservations_expires_at"), "reservations", ["expires_at"], unique=False)
    op.create_index(op.f("ix_reservations_start_point"), "reservations", ["start_point"], unique=False)
    op.add_column("api_keys", sa.Column("environment_id", sa.UUID(), nullable=True))
    op.create_index("ix_api_keys_environment_id", "api_keys", ["environment_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_api_keys_environment_id_project_id_environments"),
        "api_keys",
        "environments",
        ["environment_id", "project_id"],
        ["id", "project_id"],
        ondelete="CASCADE",
    )
    op.add_column("projects", sa.Column("client_id", sa.UUID(), nullable=True))
    op.create_index(op.f("ix_projects_client_id"), "projects", ["client_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_projects_client_id_clients"), "projects", "clients", ["client_id"], ["id"], ondelete="SET NULL"
    )
    for table in ("clients", "services", "project_services", "environments", "environment_services"):
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
        )
    op.execute(ENVIRONMENT_NAME_FIXED)
    op.execute(
        "CREATE TRIGGER trg_environments_name_fixed BEFORE UPDATE OF name ON environments "
        "FOR EACH ROW EXECUTE FUNCTION environments_name_fixed()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER trg_environments_name_fixed ON environments")
    op.execute("DROP FUNCTION environments_name_fixed()")
    op.drop_constraint(op.f("fk_projects_client_id_clients"), "projects", type_="foreignkey")
    op.drop_index(op.f("ix_projects_client_id"), table_name="projects")
    op.drop_column("projects", "client_id")
    op.drop_constraint(op.f("fk_api_keys_environment_id_project_id_environments"), "api_keys", type_="foreignkey")
    op.drop_index("ix_api_keys_environment_id", table_name="api_keys")
    op.drop_column("api_keys", "environment_id")
    op.drop_index(op.f("ix_reservations_start_point"), table_name="reservations")
    op.drop_index(op.f("ix_reservations_expires_at"), table_name="reservations")
    op.drop_index("ix_reservations_environment_id_service_id", table_name="reservations")
    op.drop_table("reservations")
    op.drop_index(op.f("ix_request_logs_start_point"), table_name="request_logs")
    op.drop_index("ix_request_logs_environment_id_created_at", table_name="request_logs")
    op.drop_index(op.f("ix_request_logs_api_key_id"), table_name="request_logs")
    op.drop_table("request_logs")
    op.drop_index("ix_environment_services_project_id_service_id", table_name="environment_services")
    op.drop_table("environment_services")
    op.drop_index(op.f("ix_project_services_service_id"), table_name="project_services")
    op.drop_table("project_services")
    op.drop_table("environments")
    op.drop_table("services")
    op.drop_table("clients")
