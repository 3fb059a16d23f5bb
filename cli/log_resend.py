"""``webhook-log resend`` and ``webhook-log recover``: the API's resend and recover, at a shell.

Same names as the API (``POST .../endpoints/{id}/resend`` and ``/recover``):
``--account`` and ``--endpoint`` name the endpoint, ``--event-id`` one event, or
``--event-ids``, ``--outcome``, ``--status``, ``--since``, ``--until`` and
``--limit`` a filter.  The endpoint is looked up in the endpoint store, else in
the subscriber file; another account's endpoint or event is not found.  Each
run writes one audit line (``delivery_resent``, see
:mod:`control.delivery_log.resend_audit`), to stderr or, at a terminal, to the
audit file beside the dead-letter backups.

Exit codes: 0 every selected event published (or nothing to resend), 1 an
event not found or the run cut short (limit, broker lost midway), 2 bad
arguments, 4 RabbitMQ or the database unreachable, 5 a copy refused (the
endpoint's queue is gone).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from datetime import datetime
from typing import Any

from cli.arguments import UsageError, positive_int
from cli.dlq_audit import configure_audit_log
from cli.exit_codes import ExitCode
from cli.terminal import PipeOutput, format_table, operator_name
from config.errors import NotFoundError
from config.settings import Settings, load_settings
from control.dead_letters.filters import parse_since
from control.delivery_log.resend_audit import audited_resend
from control.delivery_log.resend_request import (
    DEFAULT_LIMIT,
    Matching,
    OneEvent,
    Recovery,
    ResendReport,
    ResendRequest,
)
from control.store.database import Database, DatabaseUrl
from control.store.resend_selection import EventFilter, ResendScope, endpoint_scope

OUTCOMES = ("success", "http_error", "timeout", "connection_error", "forbidden_address")


def _moment(text: str) -> datetime:
    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _status(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 100 <= value <= 599:
        raise argparse.ArgumentTypeError(f"must be an HTTP status 100-599, got {value}")
    return value


def add_commands(commands: Any) -> None:
    """Add ``resend`` and ``recover`` to ``commands`` (an argparse subparsers object).

    Each sets ``run(args, environment)`` returning the exit code, as cli.log expects;
    these commands read their own full settings (the subscriber file included).
    """
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("--account", required=True, help="the endpoint's account")
    target.add_argument("--endpoint", required=True, metavar="ID", help="the endpoint's id")
    target.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N events, oldest first (default {DEFAULT_LIMIT}, at most 10000)",
    )
    target.add_argument("--format", choices=("table", "json"), default="table")

    resend = commands.add_parser(
        "resend",
        parents=[target],
        help="send logged events to an endpoint again (attempt 1, same event id)",
        description="Send one event (--event-id), or every event with an attempt at the "
        "endpoint matching the filter, to the endpoint again: attempt 1, the same "
        "X-Webhook-Id, signed with its current secret.",
    )
    resend.add_argument("--event-id", metavar="EVENT_ID", help="this one event")
    resend.add_argument(
        "--event-ids", nargs="+", action="extend", metavar="EVENT_ID", help="only these events"
    )
    resend.add_argument("--outcome", choices=OUTCOMES, help="an attempt with this outcome")
    resend.add_argument("--status", type=_status, help="an attempt answered with this status")
    resend.add_argument("--since", type=_moment, metavar="ISO", help="attempt started at/after")
    resend.add_argument("--until", type=_moment, metavar="ISO", help="attempt started before")
    resend.set_defaults(run=run_resend, writes_audit_line=True)

    recover = commands.add_parser(
        "recover",
        parents=[target],
        help="resend what failed at an endpoint since a time and was not delivered since",
        description="Resend every event whose attempts at the endpoint since --since failed "
        "(retried or dead-lettered) and that has not been delivered there after its last "
        "failure. An event still waiting for a retry is resent too.",
    )
    recover.add_argument("--since", type=_moment, required=True, metavar="ISO")
    recover.set_defaults(run=run_recover, writes_audit_line=True)


def run_resend(args: argparse.Namespace, _environment: object) -> int:
    """``webhook-log resend``."""
    return _run(args, _resend_request(args))


def run_recover(args: argparse.Namespace, _environment: object) -> int:
    """``webhook-log recover``."""
    return _run(args, Recovery(args.since, args.limit))


def _resend_request(args: argparse.Namespace) -> ResendRequest:
    if args.event_id is not None:
        given = [f"--{name.replace('_', '-')}" for name in _FILTERS if getattr(args, name)]
        if given:
            raise UsageError(f"--event-id: give either --event-id or a filter ({given[0]})")
        return OneEvent(args.event_id)
    where = EventFilter(
        event_ids=frozenset(args.event_ids or ()),
        outcome=args.outcome,
        status=args.status,
        since=args.since,
        until=args.until,
    )
    return Matching(where, args.limit)


_FILTERS = ("event_ids", "outcome", "status", "since", "until")


def _run(args: argparse.Namespace, request: ResendRequest) -> int:
    settings = load_settings(require_subscriber_file=False, require_secrets=False)
    audit_file = configure_audit_log(settings)
    database = Database(DatabaseUrl.parse(settings.store_database_url()))
    try:
        scope = _scope(settings, database, args.account, args.endpoint)
        report = audited_resend(
            settings.broker,
            database,
            scope,
            request,
            actor=operator_name(),
            via="cli",
            host=socket.gethostname(),
        )
    finally:
        database.dispose()
        if audit_file is not None:
            print(f"audit line appended to {audit_file}", file=sys.stderr)
    _print(report, args.format)
    return _exit_code(report)


def _scope(settings: Settings, database: Database, account: str, endpoint_id: str) -> ResendScope:
    """The endpoint from the subscriber file if it is there, else from the endpoint store."""
    for subscriber in settings.subscribers:
        if subscriber.id == endpoint_id and subscriber.receives_account(account):
            return ResendScope(endpoint_id, account, subscriber.all_accounts)
    path = database.url.sqlite_path
    if path is not None and not path.exists():
        # Opening it would create an empty database where there is none.
        raise NotFoundError(f"account {account!r} has no endpoint {endpoint_id!r}")
    return endpoint_scope(database, account, endpoint_id)


def _print(report: ResendReport, output_format: str) -> None:
    out = PipeOutput()
    if output_format == "json":
        out.line(json.dumps(report.as_document(), indent=2))
        return
    if report.events:
        rows = [["EVENT_ID", "ACCOUNT", "EVENT", "RESULT", "REASON"]]
        rows += [
            [e.event_id, e.account or "-", e.event_type or "-", e.result, e.reason or ""]
            for e in report.events
        ]
        out.line(format_table(rows))
    counts = report.counts()
    summary = (
        f"{counts['published']} published, {counts['not_found']} not found, "
        f"{counts['refused']} refused (endpoint {report.endpoint_id})"
    )
    if not report.events:
        summary = f"nothing to resend (endpoint {report.endpoint_id})"
    out.line(summary)
    if report.limit_reached:
        print(
            "more events match than --limit: the oldest were resent; narrow --since/--until "
            "or raise --limit to resend the rest",
            file=sys.stderr,
        )
    if report.stopped:
        print(report.stopped, file=sys.stderr)


def _exit_code(report: ResendReport) -> int:
    if report.count("refused"):
        return ExitCode.REFUSED
    if report.count("not_found") or not report.complete:
        return ExitCode.FAILED
    return ExitCode.OK
