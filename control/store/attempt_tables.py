"""The delivery log's tables: every delivery attempt, and each event's body once.

Created by migration 0003; a test compares them with the migrations, like the
endpoint tables.  No foreign key to ``endpoints``: the log outlives a deleted
endpoint (support still asks what was sent to it), and the recorder must never
wait on the endpoint tables' locks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from control.store.tables import ID_LENGTH, Base, UtcDateTime

EVENT_ID_LENGTH = 255
# SQLite gives rowids only to INTEGER PRIMARY KEY columns; PostgreSQL needs 64 bits.
ATTEMPT_ID = BigInteger().with_variant(Integer(), "sqlite")


class AttemptRow(Base):
    """One HTTP attempt to deliver one event to one endpoint."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(ATTEMPT_ID, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID_LENGTH))
    account_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    endpoint_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    event_type: Mapped[str] = mapped_column(String(EVENT_ID_LENGTH))
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime] = mapped_column(UtcDateTime)
    duration_seconds: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(32))
    status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    response_headers: Mapped[dict[str, Any]] = mapped_column(JSON)
    response_excerpt: Mapped[bytes] = mapped_column(LargeBinary)
    disposition: Mapped[str] = mapped_column(String(16))
    next_attempt: Mapped[int | None] = mapped_column(Integer)
    dead_letter_reason: Mapped[str | None] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        # The record's identity: a record delivered twice (a recorder killed before
        # its ack, a batch published again) is one row.  started_at tells apart
        # attempts with the same number: a replay starts again at attempt 1.
        # Also one event's attempts, per endpoint, in order.
        Index(
            "ux_delivery_attempts_identity",
            "event_id",
            "endpoint_id",
            "attempt",
            "started_at",
            unique=True,
        ),
        # One endpoint's attempts by time (id breaks ties, for cursors).
        Index("ix_delivery_attempts_endpoint_time", "endpoint_id", "started_at", "id"),
        Index("ix_delivery_attempts_account_time", "account_id", "started_at", "id"),
        Index("ix_delivery_attempts_outcome_time", "outcome", "started_at"),
        # An endpoint's attempts of one outcome or status, an account's of one outcome
        # (migration 0004): filtered from the time index, a busy endpoint's rare status
        # took seconds among 10 million rows.
        Index(
            "ix_delivery_attempts_endpoint_outcome_time",
            "endpoint_id",
            "outcome",
            "started_at",
            "id",
        ),
        Index(
            "ix_delivery_attempts_endpoint_status_time", "endpoint_id", "status", "started_at", "id"
        ),
        Index(
            "ix_delivery_attempts_account_outcome_time", "account_id", "outcome", "started_at", "id"
        ),
        # Retention deletes the oldest first.
        Index("ix_delivery_attempts_started", "started_at"),
    )


class EventBodyRow(Base):
    """An event's body, kept once for inspection and resending."""

    __tablename__ = "delivery_event_bodies"

    account_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID_LENGTH), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(EVENT_ID_LENGTH))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    # The first attempt that carried it; retention keeps it while any attempt is kept.
    first_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_delivery_event_bodies_first_attempt", "first_attempt_at"),)
