"""What the API resends through: RabbitMQ and the delivery log's database, audited.

A protocol so the API's unit tests can stand in for the broker; the real one
(:class:`LogResender`) is built from the settings and closed with the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from broker.url import BrokerUrl
from config.settings import Settings
from control.delivery_log.resend_audit import audited_resend
from control.delivery_log.resend_request import ResendReport, ResendRequest
from control.store.database import Database, DatabaseUrl
from control.store.resend_selection import ResendScope


class Resender(Protocol):
    """Resends logged events to one endpoint (blocking; BrokerError/StoreError on failure)."""

    def resend(self, scope: ResendScope, request: ResendRequest, actor: str) -> ResendReport:
        """Resend, write the audit line, return the per-event report."""
        ...

    def close(self) -> None:
        """Release the database connections."""
        ...


@dataclass(frozen=True)
class LogResender:
    """Resends from the delivery log in ``database`` through ``broker``."""

    broker: BrokerUrl
    database: Database

    @classmethod
    def from_settings(cls, settings: Settings) -> LogResender:
        """RABBITMQ_URL, and the store that DATABASE_URL (or WEBHOOK_DATA_DIR) names."""
        return cls(settings.broker, Database(DatabaseUrl.parse(settings.store_database_url())))

    def resend(self, scope: ResendScope, request: ResendRequest, actor: str) -> ResendReport:
        return audited_resend(self.broker, self.database, scope, request, actor=actor, via="api")

    def close(self) -> None:
        self.database.dispose()
