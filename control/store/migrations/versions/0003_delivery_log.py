"""The delivery log: every delivery attempt, and each event's body once.

Revision ID: 0003
Revises: 0002_account_notifications
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002_account_notifications"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(64)
EVENT_ID = sa.String(255)
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the two tables and the indexes the listings and retention use."""
    op.create_table(
        "delivery_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", EVENT_ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("endpoint_id", ID, nullable=False),
        sa.Column("event_type", EVENT_ID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("ended_at", TIME, nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_headers", sa.JSON(), nullable=False),
        sa.Column("response_excerpt", sa.LargeBinary(), nullable=False),
        sa.Column("disposition", sa.String(16), nullable=False),
        sa.Column("next_attempt", sa.Integer(), nullable=True),
        sa.Column("dead_letter_reason", sa.String(64), nullable=True),
        sa.Column("recorded_at", TIME, nullable=False),
    )
    op.create_index(
        "ux_delivery_attempts_identity",
        "delivery_attempts",
        ["event_id", "endpoint_id", "attempt", "started_at"],
        unique=True,
    )
    op.create_index(
        "ix_delivery_attempts_endpoint_time",
        "delivery_attempts",
        ["endpoint_id", "started_at", "id"],
    )
    op.create_index(
        "ix_delivery_attempts_account_time",
        "delivery_attempts",
        ["account_id", "started_at", "id"],
    )
    op.create_index(
        "ix_delivery_attempts_outcome_time", "delivery_attempts", ["outcome", "started_at"]
    )
    op.create_index("ix_delivery_attempts_started", "delivery_attempts", ["started_at"])
    op.create_table(
        "delivery_event_bodies",
        sa.Column("account_id", ID, primary_key=True),
        sa.Column("event_id", EVENT_ID, primary_key=True),
        sa.Column("event_type", EVENT_ID, nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("first_attempt_at", TIME, nullable=False),
    )
    op.create_index(
        "ix_delivery_event_bodies_first_attempt", "delivery_event_bodies", ["first_attempt_at"]
    )


def downgrade() -> None:
    """Drop what upgrade() created."""
    op.drop_table("delivery_event_bodies")
    op.drop_table("delivery_attempts")
