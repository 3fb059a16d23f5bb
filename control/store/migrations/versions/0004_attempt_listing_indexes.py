"""The delivery log's listings among millions of attempts: by endpoint or account and outcome.

Measured with ``python -m bench.attempt_listing`` on 10 million rows (see
docs/performance.md): an endpoint's attempts with a given outcome or status,
and an account's with a given outcome (its failures), were read through the
time index, filtering a busy endpoint's or account's other attempts one by
one (hundreds of milliseconds; seconds for a rare status); these three
indexes answer them in order.  On PostgreSQL, statistics that tell the
planner an endpoint belongs to one account: without them it multiplies the
two filters' selectivities, expects 20 times fewer rows than a busy
endpoint has, and may pick a plan that reads them all (seconds).

On a large table the index build holds writes to it (the recorder's batches
wait in the broker meanwhile, nothing is lost); docs/performance.md gives
the time it took on 10 million rows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_STATISTICS = "st_delivery_attempts_account_endpoint"
_INDEXES = {
    "ix_delivery_attempts_endpoint_outcome_time": ["endpoint_id", "outcome", "started_at", "id"],
    "ix_delivery_attempts_endpoint_status_time": ["endpoint_id", "status", "started_at", "id"],
    "ix_delivery_attempts_account_outcome_time": ["account_id", "outcome", "started_at", "id"],
}


def upgrade() -> None:
    """Add the indexes (both databases) and the planner statistics (PostgreSQL)."""
    for name, columns in _INDEXES.items():
        op.create_index(name, "delivery_attempts", columns)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE STATISTICS {_STATISTICS} (dependencies, ndistinct) "
            "ON account_id, endpoint_id FROM delivery_attempts"
        )
        op.execute("ANALYZE delivery_attempts")


def downgrade() -> None:
    """Drop what upgrade() created."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP STATISTICS IF EXISTS {_STATISTICS}")
    for name in _INDEXES:
        op.drop_index(name, table_name="delivery_attempts")
