"""A local SQLite spool in front of :class:`Publisher`: accepted events survive a broker outage.

Without a spool, :meth:`Publisher.publish` raises ``BrokerUnavailableError`` when
the broker cannot be reached (or stays blocked by a memory or disk alarm), and
the caller still holds the event. With :class:`SpoolingPublisher`, such an event
is written to the spool file instead (WAL, fsync on every commit) and published
later, in the order it was accepted: by :meth:`SpoolingPublisher.flush`, and
automatically before the next event whenever :meth:`SpoolingPublisher.publish`
is called.

Rules worth knowing:

* Events are validated before they are spooled, so a spooled event can only
  fail on the broker side.
* Order: while anything is spooled, new events go behind it; nothing overtakes.
* An event the broker cannot route (no subscriber queue is bound for its type)
  is moved to the ``rejected`` table of the spool file with the reason and
  logged (``spooled_event_rejected``), instead of blocking the spool forever.
* Delivery is at least once: an event whose confirm was lost with the
  connection is published again under the same event id.
* The envelope's ``timestamp`` is set when the event reaches the broker, not
  when it was spooled; put the business time in ``data``.
* Metrics (:mod:`producer.metrics`): the depth of the open spools, and events
  spooled, flushed and rejected.

Like ``Publisher``, one instance per thread.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pika
import structlog

from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError, NackedError, PayloadError, UnroutableError
from producer import metrics
from producer.publisher import Publisher
from wire.envelope import build_envelope, new_event_id, validate_account, validate_event_id

log = structlog.get_logger("producer")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    data TEXT NOT NULL,
    spooled_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    account TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    data TEXT NOT NULL,
    spooled_at TEXT NOT NULL,
    rejected_at TEXT NOT NULL,
    error TEXT NOT NULL,
    account TEXT NOT NULL DEFAULT ''
);
"""


def _add_account_column(db: sqlite3.Connection) -> None:
    # Spool files written before events carried their account: their rows get ''
    # and are set aside as rejected (an invalid account) when flushed, never lost.
    for table in ("spool", "rejected"):
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if "account" not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN account TEXT NOT NULL DEFAULT ''")


@dataclass(frozen=True, repr=False)
class _BlockedTimeoutBroker(BrokerUrl):
    """The same broker URLs with a shorter ``blocked_connection_timeout``."""

    blocked_timeout_seconds: float = 60.0

    def parameters(
        self, *, heartbeat: int = 30, connection_name: str = "webhook-relay"
    ) -> list[pika.URLParameters]:
        result = super().parameters(heartbeat=heartbeat, connection_name=connection_name)
        for params in result:
            params.blocked_connection_timeout = self.blocked_timeout_seconds
        return result


def with_blocked_timeout(broker: BrokerUrl, seconds: float) -> BrokerUrl:
    """``broker`` whose connections give up after ``seconds`` blocked by a broker alarm.

    The default (60 s) makes a publisher wait a minute per attempt on a broker
    in a memory or disk alarm before it can spool; a spooling producer wants
    to know sooner.
    """
    return _BlockedTimeoutBroker(broker._urls, blocked_timeout_seconds=seconds)


class SpoolingPublisher:
    """Publishes through ``publisher``; spools to ``path`` whatever the broker cannot take now."""

    def __init__(self, publisher: Publisher, path: str | Path) -> None:
        self.publisher = publisher
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL in WAL mode: every commit is fsynced, so an accepted event survives
        # a power cut, not only a crash of this process.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        _add_account_column(self._db)
        self._log = log.bind(spool=str(self.path))
        # This spool's share of the process-wide depth gauge (several may be open).
        self._exported_depth = 0
        self._sync_depth()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the spool file and the publisher's connection (spooled events stay on disk)."""
        self._adjust_depth(-self._exported_depth)
        self._db.close()
        self.publisher.close()

    def pending(self) -> int:
        """Events waiting in the spool."""
        (count,) = self._db.execute("SELECT COUNT(*) FROM spool").fetchone()
        return int(count)

    def rejected(self) -> list[dict[str, Any]]:
        """Spooled events the broker refused to route, with the reason, oldest first."""
        rows = self._db.execute(
            "SELECT event_id, account, event_type, data, spooled_at, rejected_at, error "
            "FROM rejected ORDER BY seq"
        ).fetchall()
        keys = ("event_id", "account", "event_type", "data", "spooled_at", "rejected_at", "error")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def publish(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        account: str,
        event_id: str | None = None,
    ) -> str:
        """Publish now, or spool if the broker is unavailable; return the event id.

        Raises PayloadError for an invalid event (nothing is spooled) and
        UnroutableError when no endpoint of ``account`` takes ``event_type``.
        Spooled events are flushed first, so this event never overtakes them.
        """
        event_id = new_event_id() if event_id is None else validate_event_id(event_id)
        validate_account(account)
        build_envelope(event_type, data)  # validate now: a spooled event must be publishable
        if self.pending() and self.flush() is None:
            why = "earlier events still spooled"
            self._spool(event_id, account, event_type, data, "behind_spooled", why)
            return event_id
        try:
            return self.publisher.publish(event_type, data, account=account, event_id=event_id)
        except (BrokerUnavailableError, NackedError) as exc:
            # outcome_of names these two "unavailable" and "nacked": the spool's reasons.
            self._spool(event_id, account, event_type, data, metrics.outcome_of(exc), str(exc))
            return event_id

    def flush(self) -> int | None:
        """Publish spooled events in order; return how many, or None if the broker is still away.

        Stops at the first event the broker cannot take (it stays at the head).
        """
        published = 0
        while True:
            row = self._db.execute(
                "SELECT seq, event_id, account, event_type, data, spooled_at "
                "FROM spool ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                self._sync_depth()  # cheap on an empty table, and corrects any drift
                if published:
                    self._log.info("spool_flushed", published=published)
                return published
            seq, event_id, account, event_type, data, spooled_at = row
            try:
                self.publisher.publish(
                    event_type, json.loads(data), account=account, event_id=event_id
                )
            except (BrokerUnavailableError, NackedError) as exc:
                self._log.warning(
                    "spool_flush_paused",
                    published=published,
                    pending=self._sync_depth(),
                    error=str(exc),
                )
                return None
            except (UnroutableError, PayloadError) as exc:
                row_values = (seq, event_id, account, event_type, data, spooled_at)
                self._reject(row_values, str(exc), metrics.outcome_of(exc))
                continue
            self._db.execute("DELETE FROM spool WHERE seq = ?", (seq,))
            metrics.SPOOL_FLUSHED.inc()
            self._adjust_depth(-1)
            published += 1

    def _spool(
        self,
        event_id: str,
        account: str,
        event_type: str,
        data: dict[str, Any],
        kind: str,
        reason: str,
    ) -> None:
        """Store one event; ``kind`` is the metric's reason label, ``reason`` the text kept."""
        # ASCII JSON: lone surrogates survive the round trip through SQLite's UTF-8.
        inserted = self._db.execute(
            "INSERT OR IGNORE INTO spool "
            "(event_id, account, event_type, data, spooled_at, reason) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (event_id, account, event_type, json.dumps(data), _now(), reason[:500]),
        ).rowcount
        if inserted:  # a caller retrying an id already spooled adds nothing
            metrics.SPOOLED.labels(kind).inc()
        self._log.warning(
            "event_spooled",
            event_id=event_id,
            event_type=event_type,
            pending=self._sync_depth(),
            reason=reason[:200],
        )

    def _sync_depth(self) -> int:
        """Export the spool's depth as counted in the file; return it."""
        depth = self.pending()
        self._adjust_depth(depth - self._exported_depth)
        return depth

    def _adjust_depth(self, change: int) -> None:
        # Counted, not re-read, while flushing: COUNT(*) reads the whole table.
        self._exported_depth += change
        metrics.SPOOL_DEPTH.inc(change)

    def _reject(self, row: tuple[int, str, str, str, str, str], error: str, kind: str) -> None:
        seq, event_id, account, event_type, data, spooled_at = row
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO rejected "
                "(seq, event_id, event_type, data, spooled_at, rejected_at, error, account) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, event_id, event_type, data, spooled_at, _now(), error[:500], account),
            )
            self._db.execute("DELETE FROM spool WHERE seq = ?", (seq,))
        metrics.SPOOL_REJECTED.labels(kind).inc()
        self._adjust_depth(-1)
        self._log.error(
            "spooled_event_rejected", event_id=event_id, event_type=event_type, error=error
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
