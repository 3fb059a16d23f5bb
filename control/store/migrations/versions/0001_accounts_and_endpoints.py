"""Accounts, their endpoints, deletion tombstones and the version counter.

Revision ID: 0001
Revises:
Create Date: 2025-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(64)
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the four tables, their indexes, and the counter's one row."""
    counter = op.create_table(
        "version_counter",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(counter, [{"id": 1, "value": 0}])
    op.create_table(
        "accounts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("notification_url", sa.Text(), nullable=True),
    )
    op.create_table(
        "endpoints",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "account_id",
            ID,
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("previous_secret_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("previous_secret_expires_at", TIME, nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("paused_at", TIME, nullable=True),
        sa.Column("all_accounts", sa.Boolean(), nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=True),
        sa.Column("connect_timeout_seconds", sa.Float(), nullable=True),
        sa.Column("max_in_flight", sa.Integer(), nullable=True),
        sa.Column("standard_webhooks", sa.Boolean(), nullable=True),
        sa.Column("circuit_breaker", sa.JSON(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_index("ix_endpoints_account_created", "endpoints", ["account_id", "created_at"])
    op.create_index("ix_endpoints_version", "endpoints", ["version"], unique=True)
    op.create_index("ix_endpoints_updated_at", "endpoints", ["updated_at"])
    op.create_table(
        "endpoint_deletions",
        sa.Column("endpoint_id", ID, primary_key=True),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", TIME, nullable=False),
    )
    op.create_index("ix_endpoint_deletions_version", "endpoint_deletions", ["version"], unique=True)


def downgrade() -> None:
    """Drop everything upgrade() created."""
    op.drop_table("endpoint_deletions")
    op.drop_table("endpoints")
    op.drop_table("accounts")
    op.drop_table("version_counter")
