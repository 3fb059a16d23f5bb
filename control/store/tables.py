"""The store's tables as typed SQLAlchemy models.

They describe the schema that ``migrations/`` creates; a test compares the two,
so a change here without a migration fails.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ID_LENGTH = 64


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite keeps no time zone, so what it returns is naive; this puts UTC back.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store keeps UTC times only")
        return value.astimezone(UTC)

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], datetime | None] | None:
        if dialect.name == "sqlite":
            # SQLAlchemy's own SQLite reader parses each value with a regular
            # expression, then this class converts it again: ten times the cost
            # of fromisoformat, and a page of 100 endpoints reads 400 of them.
            return _sqlite_utc
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _sqlite_utc(value: str | None) -> datetime | None:
    """A datetime as SQLite keeps it (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC), aware."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class Base(DeclarativeBase):
    """The declarative base of the store's tables."""


class VersionCounterRow(Base):
    """One row: the last version handed out.

    A one-row table rather than a sequence because it works the same on SQLite
    and PostgreSQL, and because ``UPDATE ... value + 1`` row-locks it until the
    writing transaction commits: writers take versions one after another and
    commit in version order, so a reader that saw version N has seen every
    change up to N (a sequence hands out numbers that may commit out of order).
    """

    __tablename__ = "version_counter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class AccountRow(Base):
    """A merchant; created with its first endpoint."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Where this account's operational notices go (control.notifications), and
    # the secret they are signed with, encrypted like endpoint secrets.
    notification_url: Mapped[str | None] = mapped_column(Text)
    notification_secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    notification_updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class EndpointRow(Base):
    """A receiving endpoint of one account (or of all, when ``all_accounts``)."""

    __tablename__ = "endpoints"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("accounts.id", ondelete="CASCADE")
    )
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    previous_secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    enabled: Mapped[bool] = mapped_column(Boolean)
    paused: Mapped[bool] = mapped_column(Boolean)
    paused_reason: Mapped[str | None] = mapped_column(Text)
    paused_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    all_accounts: Mapped[bool] = mapped_column(Boolean)
    # Options: NULL means the subscriber default (config.subscribers.Subscriber).
    timeout_seconds: Mapped[float | None] = mapped_column(Float)
    connect_timeout_seconds: Mapped[float | None] = mapped_column(Float)
    max_in_flight: Mapped[int | None] = mapped_column(Integer)
    standard_webhooks: Mapped[bool | None] = mapped_column(Boolean)
    circuit_breaker: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        # Listing an account's endpoints, oldest first.
        Index("ix_endpoints_account_created", "account_id", "created_at"),
        # The workers' "what changed since version N"; unique, as each write takes its own.
        Index("ix_endpoints_version", "version", unique=True),
        Index("ix_endpoints_updated_at", "updated_at"),
    )


class EndpointDeletionRow(Base):
    """A deleted endpoint's tombstone, so "changed since N" can report deletions."""

    __tablename__ = "endpoint_deletions"

    endpoint_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    version: Mapped[int] = mapped_column(BigInteger)
    deleted_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_endpoint_deletions_version", "version", unique=True),)
