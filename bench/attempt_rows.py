"""A PostgreSQL delivery log filled with millions of realistic attempts, server-side.

One ``INSERT ... SELECT`` over ``generate_series`` (nothing crosses the wire),
into the table the migrations created, with its indexes dropped first and
rebuilt from their own definitions afterwards (a bulk load then an index build
is several times faster than maintaining six indexes row by row); then
``VACUUM ANALYZE``, as autovacuum would leave a table of this age.

The spread: events over the last 7 days in time order (as the recorder
appends them), each sent to one endpoint; 5 hot endpoints get a quarter of
the events between them, the other endpoints a skewed share (the busiest of
them ~70 times the quietest); accounts own several endpoints each.  85% of
events succeed at once, the rest retry (HTTP 5xx, timeouts, refused
connections) up to 6 attempts and dead-letter; 2% are refused once with a
4xx and dead-letter.  Response excerpts and headers of typical sizes; event
bodies are not generated (no listing reads them).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from control.store.database import Database

HOT_ENDPOINTS = 5
HOT_SHARE = 0.25
# Rows per event the generator yields on average (the attempt mix below).
_ROWS_PER_EVENT = 0.83 * 1 + 0.02 * 1 + 0.10 * 2 + 0.03 * 3 + 0.02 * 6

_FILL = """
INSERT INTO delivery_attempts (
    event_id, account_id, endpoint_id, event_type, attempt, started_at, ended_at,
    duration_seconds, outcome, status, error, response_headers, response_excerpt,
    disposition, next_attempt, dead_letter_reason, recorded_at)
SELECT
    a.event_id, a.account_id, a.endpoint_id, a.event_type, a.attempt, a.started_at,
    a.started_at + make_interval(secs => a.duration), a.duration, a.outcome, a.status,
    CASE a.outcome WHEN 'http_error' THEN 'HTTP ' || a.status
                   WHEN 'timeout' THEN 'no answer within 10.0 s'
                   WHEN 'connection_error' THEN 'connection refused' END,
    CASE WHEN a.status IS NULL THEN '{}'::json
         ELSE json_build_object('content-type', 'application/json', 'server', 'nginx',
                                'x-request-id', md5(a.event_id || a.attempt)) END,
    CASE WHEN a.outcome = 'success'
         THEN convert_to(json_build_object('received', true, 'id', a.event_id)::text, 'UTF8')
         WHEN a.status IS NULL THEN ''::bytea
         ELSE convert_to(repeat('{"error":"upstream unavailable, try again later"}', 4),
                         'UTF8') END,
    CASE WHEN a.attempt < a.attempts THEN 'retry'
         WHEN a.outcome = 'success' THEN 'delivered' ELSE 'dead_lettered' END,
    CASE WHEN a.attempt < a.attempts THEN a.attempt + 1 END,
    CASE WHEN a.attempt = a.attempts AND a.outcome <> 'success'
         THEN CASE WHEN a.attempts = 1 THEN 'rejected' ELSE 'attempts_exhausted' END END,
    a.started_at + make_interval(secs => a.duration + 0.5)
FROM (
    SELECT
        'evt_' || substr(md5(e.n::text), 1, 24) AS event_id,
        substr(md5('acct' || (e.ep % :accounts)), 1, 24) AS account_id,
        substr(md5('ep' || e.ep), 1, 24) AS endpoint_id,
        (ARRAY['order.created', 'order.paid', 'order.shipped', 'invoice.paid',
               'customer.updated'])[1 + e.n % 5] AS event_type,
        k.attempt, e.attempts,
        :start + make_interval(secs => e.n * :seconds_per_event
            + (ARRAY[0, 10, 70, 370, 1870, 5470])[k.attempt]) AS started_at,
        CASE WHEN k.attempt = e.attempts AND e.fate <> 'rejected' AND e.attempts < 6
             THEN 'success'
             WHEN e.fate = 'rejected' THEN 'http_error'
             ELSE (ARRAY['http_error', 'http_error', 'http_error', 'timeout',
                         'connection_error'])[1 + (e.n + k.attempt) % 5] END AS outcome,
        CASE WHEN k.attempt = e.attempts AND e.fate <> 'rejected' AND e.attempts < 6
             THEN (ARRAY[200, 200, 200, 204, 202])[1 + e.n % 5]
             WHEN e.fate = 'rejected' THEN (ARRAY[400, 404, 410, 422])[1 + e.n % 4]
             WHEN (e.n + k.attempt) % 5 < 3
             THEN (ARRAY[500, 502, 503])[1 + (e.n + k.attempt) % 3] END AS status,
        CASE WHEN (e.n + k.attempt) % 5 = 3
                  AND NOT (k.attempt = e.attempts AND e.attempts < 6) AND e.fate <> 'rejected'
             THEN 10.0 ELSE 0.02 + e.r * 0.4 END AS duration
    FROM (
        SELECT n, r,
            CASE WHEN r < :hot_share THEN (n % :hot)::int
                 ELSE :hot + floor(power(r3, 2) * (:endpoints - :hot))::int END AS ep,
            CASE WHEN r2 < 0.83 THEN 1 WHEN r2 < 0.85 THEN 1 WHEN r2 < 0.95 THEN 2
                 WHEN r2 < 0.98 THEN 3 ELSE 6 END AS attempts,
            CASE WHEN r2 >= 0.83 AND r2 < 0.85 THEN 'rejected' ELSE 'normal' END AS fate
        FROM (SELECT n, random() AS r, random() AS r2, random() AS r3
              FROM generate_series(1, :events) AS n) AS raw
    ) AS e
    CROSS JOIN LATERAL generate_series(1, e.attempts) AS k(attempt)
) AS a
LIMIT :rows
"""


@dataclass(frozen=True)
class Spread:
    """How many rows, endpoints and accounts, over how long."""

    rows: int
    endpoints: int = 5000
    accounts: int = 2000
    days: float = 7.0

    @property
    def events(self) -> int:
        # 1% over: the random mix may fall short of the average; LIMIT cuts the rest.
        return math.ceil(self.rows / _ROWS_PER_EVENT * 1.01)


def endpoint_id(index: int) -> str:
    """The id the generator gives endpoint ``index`` (0-4 are the hot ones)."""
    return hashlib.md5(f"ep{index}".encode(), usedforsecurity=False).hexdigest()[:24]


def account_of(index: int, spread: Spread) -> str:
    """The account that owns endpoint ``index``."""
    return hashlib.md5(
        f"acct{index % spread.accounts}".encode(), usedforsecurity=False
    ).hexdigest()[:24]


def fill(database: Database, spread: Spread, *, now: datetime | None = None) -> list[str]:
    """Load ``spread.rows`` attempts (table empty, migrated); returns the index definitions."""
    # The last events' retries (up to 1.5 h later) must not lie in the future.
    start = (now or datetime.now(UTC)) - timedelta(days=spread.days, hours=2)
    with database.engine.begin() as connection:
        connection.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
        connection.execute(text("SET LOCAL work_mem = '64MB'"))
        indexes = [
            (name, definition)
            for name, definition in connection.execute(
                text(
                    "SELECT indexname, indexdef FROM pg_indexes "
                    "WHERE tablename = 'delivery_attempts' AND indexname NOT LIKE '%pkey'"
                )
            )
        ]
        for name, _ in indexes:
            connection.execute(text(f'DROP INDEX "{name}"'))
        connection.execute(
            text(_FILL),
            {
                "rows": spread.rows,
                "events": spread.events,
                "accounts": spread.accounts,
                "endpoints": spread.endpoints,
                "hot": HOT_ENDPOINTS,
                "hot_share": HOT_SHARE,
                "start": start,
                "seconds_per_event": spread.days * 86400 / spread.events,
            },
        )
        for _, definition in indexes:
            connection.execute(text(definition))
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE delivery_attempts"))
    return sorted(definition for _, definition in indexes)
