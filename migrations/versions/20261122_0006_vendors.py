"""Vendors: vendors, location history, billing subscriptions, integrations.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPDATED_AT_TABLES = ("vendors", "subscriptions", "integrations")


def upgrade() -> None:
    op.create_table(
        "integrations",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("service", sa.Text(), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=False),
        sa.Column("internal_id", sa.Text(), nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrations")),
        sa.UniqueConstraint("service", "external_id", name=op.f("uq_integrations_service_external_id")),
    )
    op.create_index("ix_integrations_external_id", "integrations", ["external_id"], unique=False)
    op.create_index("ix_integrations_service", "integrations", ["service"], unique=False)
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("product_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'active'"), nullable=False),
        sa.Column("start_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('active', 'cancelled', 'expired')", name=op.f("ck_subscriptions_status")),
        sa.CheckConstraint("end_date IS NULL OR end_date >= start_date", name=op.f("ck_subscriptions_dates")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_subscriptions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    op.create_index("ix_subscriptions_end_date", "subscriptions", ["end_date"], unique=False)
    op.create_index("ix_subscriptions_status", "subscriptions", ["status"], unique=False)
    op.create_index(op.f("ix_subscriptions_user_id"), "subscriptions", ["user_id"], unique=False)
    op.create_index(
        "ix_subscriptions_user_id_created_at", "subscriptions", ["user_id", "created_at", "id"], unique=False
    )
    op.create_table(
        "vendors",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("phone", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("website", sa.Text(), nullable=True),
        sa.Column("open", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("primary_image", sa.Text(), nullable=True),
        sa.Column("lat", sa.Double(), nullable=True),
        sa.Column("long", sa.Double(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("(lat IS NULL) = (long IS NULL)", name=op.f("ck_vendors_position_whole")),
        sa.CheckConstraint("lat IS NULL OR (lat >= -90 AND lat <= 90)", name=op.f("ck_vendors_lat_range")),
        sa.CheckConstraint("long IS NULL OR (long >= -180 AND long <= 180)", name=op.f("ck_vendors_long_range")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_vendors_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vendors")),
    )
    op.create_index("ix_vendors_created_at", "vendors", ["created_at"], unique=False)
    op.create_index("ix_vendors_location", "vendors", ["lat", "long"], unique=False)
    op.create_index(
        "ix_vendors_name_trgm",
        "vendors",
        ["name"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"name": "gin_trgm_ops"},
    )
    op.create_index(op.f("ix_vendors_user_id"), "vendors", ["user_id"], unique=False)
    op.create_table(
        "locations",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("vendor_id", sa.UUID(), nullable=False),
        sa.Column("lat", sa.Double(), nullable=False),
        sa.Column("long", sa.Double(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.CheckConstraint("lat IS NULL OR (lat >= -90 AND lat <= 90)", name=op.f("ck_locations_lat_range")),
        sa.CheckConstraint("long IS NULL OR (long >= -180 AND long <= 180)", name=op.f("ck_locations_long_range")),
        sa.ForeignKeyConstraint(
            ["vendor_id"], ["vendors.id"], name=op.f("fk_locations_vendor_id_vendors"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_locations")),
    )
    op.create_index("ix_locations_timestamp", "locations", ["timestamp"], unique=False)
    op.create_index(op.f("ix_locations_vendor_id"), "locations", ["vendor_id"], unique=False)
    op.create_index("ix_locations_vendor_id_timestamp", "locations", ["vendor_id", "timestamp", "id"], unique=False)
    for table in UPDATED_AT_TABLES:
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
        )


def downgrade() -> None:
    op.drop_index("ix_locations_vendor_id_timestamp", table_name="locations")
    op.drop_index(op.f("ix_locations_vendor_id"), table_name="locations")
    op.drop_index("ix_locations_timestamp", table_name="locations")
    op.drop_table("locations")
    op.drop_index(op.f("ix_vendors_user_id"), table_name="vendors")
    op.drop_index(
        "ix_vendors_name_trgm", table_name="vendors", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}
    )
    op.drop_index("ix_vendors_location", table_name="vendors")
    op.drop_index("ix_vendors_created_at", table_name="vendors")
    op.drop_table("vendors")
    op.drop_index("ix_subscriptions_user_id_created_at", table_name="subscriptions")
    op.drop_index(op.f("ix_subscriptions_user_id"), table_name="subscriptions")
    op.drop_index("ix_subscriptions_status", table_name="subscriptions")
    op.drop_index("ix_subscriptions_end_date", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_index("ix_integrations_service", table_name="integrations")
    op.drop_index("ix_integrations_external_id", table_name="integrations")
    op.drop_table("integrations")
