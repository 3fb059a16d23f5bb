"""``webhook-log``'s read commands: ``attempts``, ``event`` and ``summary``.

The same questions, filters and JSON as the API's ``/attempts``,
``/events/{event_id}`` and ``/endpoints/{id}/summary``, asked of the store
that DATABASE_URL (or WEBHOOK_DATA_DIR) names.  Without ``--account`` the
operator sees every account's attempts; ``--account`` narrows to what that
account sees through the API.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from cli.arguments import positive_int
from cli.log_output import as_json, attempts_table, event_text, summary_table
from config.errors import ConfigError
from config.settings import Settings
from config.subscribers import SUBSCRIBER_ID
from control.dead_letters.filters import parse_duration
from control.delivery_log.filters import OUTCOMES, attempt_filter, parse_time
from control.delivery_log.views import AttemptPageView, EndpointSummary, EventView
from control.store.attempt_listing import MAX_PAGE
from control.store.attempt_reader import AttemptReader
from control.store.database import Database, DatabaseUrl
from wire.envelope import ACCOUNT_ID

DEFAULT_PAGE = 100


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``attempts``, ``event`` and ``summary``; each sets ``run(args, settings)``."""
    scope = argparse.ArgumentParser(add_help=False)
    scope.add_argument(
        "--account",
        type=_account,
        metavar="ACCOUNT",
        help="only what this account sees (attempts at its endpoints); default: everything",
    )

    listing = commands.add_parser(
        "attempts", parents=[scope], help="list attempts, newest first (filters combine)"
    )
    listing.add_argument("--endpoint", type=_endpoint, metavar="ID", help="this endpoint's")
    listing.add_argument("--event-id", metavar="EVENT_ID", help="this event's")
    listing.add_argument("--outcome", choices=OUTCOMES, help="this outcome's")
    listing.add_argument("--status", type=_status, metavar="CODE", help="this HTTP status's")
    listing.add_argument(
        "--since", type=_moment, metavar="TIME", help="started at or after (ISO time, or 2h: ago)"
    )
    listing.add_argument(
        "--until", type=_moment, metavar="TIME", help="started before (ISO time, or 30m: ago)"
    )
    listing.add_argument(
        "--limit", type=_limit, default=DEFAULT_PAGE, metavar="N", help="per page (max 1000)"
    )
    listing.add_argument("--cursor", metavar="CURSOR", help="the next page (printed after one)")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.set_defaults(run=run_attempts)

    event = commands.add_parser(
        "event",
        parents=[scope],
        help="what happened to one event: its body and every attempt, per endpoint",
    )
    event.add_argument("event_id", metavar="EVENT_ID")
    event.add_argument("--format", choices=("text", "json"), default="text")
    event.set_defaults(run=run_event)

    summary = commands.add_parser(
        "summary",
        parents=[scope],
        help="an endpoint's last hour and day: rates, p50/p99 latency, last success/failure",
    )
    summary.add_argument("endpoint", type=_endpoint, metavar="ENDPOINT_ID")
    summary.add_argument("--format", choices=("table", "json"), default="table")
    summary.set_defaults(run=run_summary)


@contextmanager
def open_reader(settings: Settings) -> Iterator[AttemptReader]:
    """The delivery log of the configured store (closed after); ConfigError when there is
    no store there."""
    url = DatabaseUrl.parse(settings.store_database_url())
    path = url.sqlite_path
    if path is not None and not path.exists():
        # Opening it would create an empty database where there is none.
        raise ConfigError(f"no store at {path} (set DATABASE_URL or WEBHOOK_DATA_DIR)")
    database = Database(url)
    try:
        yield AttemptReader(database)
    finally:
        database.dispose()


def run_attempts(args: argparse.Namespace, settings: Settings) -> int:
    """Print one page of attempts; the next page's cursor goes to stderr."""
    where = attempt_filter(
        endpoint=args.endpoint,
        event_id=args.event_id,
        outcome=args.outcome,
        status=args.status,
        since=args.since,
        until=args.until,
    )
    with open_reader(settings) as reader:
        page = reader.attempts(args.account, where, limit=args.limit, cursor=args.cursor)
    view = AttemptPageView.of(page)
    print(as_json(view) if args.format == "json" else attempts_table(view))
    if args.format != "json" and view.next_cursor is not None:
        print(f"more: add --cursor {view.next_cursor}", file=sys.stderr)
    return 0


def run_event(args: argparse.Namespace, settings: Settings) -> int:
    """Print an event's story (several when accounts share the id, operator only)."""
    with open_reader(settings) as reader:
        views = [EventView.of(h) for h in reader.event(args.account, args.event_id)]
    if args.format == "json":
        print(as_json(views[0] if args.account is not None else views))
        return 0
    for index, view in enumerate(views):
        if index:
            print()
        print("\n".join(event_text(view)))
    return 0


def run_summary(args: argparse.Namespace, settings: Settings) -> int:
    """Print the endpoint's last hour and last day."""
    with open_reader(settings) as reader:
        figures = reader.summary(args.account, args.endpoint)
    view = EndpointSummary.of(args.endpoint, figures)
    print(as_json(view) if args.format == "json" else summary_table(view))
    return 0


def _account(text: str) -> str:
    if not ACCOUNT_ID.match(text):
        raise argparse.ArgumentTypeError(f"not an account id (1-64 of A-Z a-z 0-9 _ -): {text!r}")
    return text


def _endpoint(text: str) -> str:
    if not SUBSCRIBER_ID.match(text):
        raise argparse.ArgumentTypeError(f"not an endpoint id: {text!r}")
    return text


def _status(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an HTTP status: {text!r}") from None
    if not 100 <= value <= 999:
        raise argparse.ArgumentTypeError(f"not an HTTP status (100-999): {value}")
    return value


def _limit(text: str) -> int:
    value = positive_int(text)
    if value > MAX_PAGE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_PAGE}, got {value}")
    return value


def _moment(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as not_a_time:
        try:
            return datetime.now(UTC) - parse_duration(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{not_a_time} or a duration ago (30m, 2h, 7d)"
            ) from None
