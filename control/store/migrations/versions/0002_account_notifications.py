"""Each account's own notification URL gets its signing secret (encrypted) and a change time.

``accounts.notification_url`` came with 0001; this adds what the notifier
(control.notifications) needs to sign notices for the account.

Revision ID: 0002_account_notifications
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_account_notifications"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Two nullable columns on ``accounts`` (no data to move: no URL was ever set)."""
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("notification_secret_ciphertext", sa.LargeBinary(), nullable=True)
        )
        batch.add_column(
            sa.Column("notification_updated_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    """Drop the two columns again."""
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("notification_updated_at")
        batch.drop_column("notification_secret_ciphertext")
