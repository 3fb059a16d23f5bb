"""``webhook-dlq``: list, show, replay and purge dead letters.

This module parses the arguments and runs the command (:mod:`cli.dlq_commands`).
Reading never changes a queue.  Replay and purge ask for confirmation (or
``--yes``) and each writes one structured audit line (:mod:`cli.dlq_audit`).
Nothing printed ever contains a subscriber secret: every configured secret is
masked in whatever is shown, payloads included (:mod:`control.redaction`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from cli.arguments import OneLineParser, UsageError, positive_int
from cli.dlq_audit import audit_line, configure_audit_log
from cli.dlq_commands import PROG, cmd_list, cmd_purge, cmd_replay, cmd_show, prepare
from cli.exit_codes import EXIT_CODES_HELP, ExitCode, exit_code_for, report_error, run_command
from cli.terminal import add_version
from config.topology import dead_letter_queue, subscriber_of_queue
from control.dead_letters.filters import parse_duration, parse_since

DLQ_EPILOG = f"""\
Dead-letter queues read: those of the subscriber file's subscribers (WEBHOOK_CONFIG),
plus any --queue webhooks.<id>.dlq of a subscriber since removed from the file.
Filters: --subscriber, --event (exact, prefix such as 'order', or topic pattern such as
'order.*'), --since ISO-TIME or --older-than DURATION (30m, 2h, 7d), --id EVENT_ID.
{EXIT_CODES_HELP}"""


def _positive_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _since(text: str) -> datetime:
    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dlq_name(text: str) -> str:
    subscriber = subscriber_of_queue(text)
    if subscriber is None or dead_letter_queue(subscriber) != text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a dead-letter queue name (webhooks.<subscriber>.dlq)"
        )
    return subscriber


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    sources = OneLineParser(add_help=False)
    sources.add_argument(
        "--subscriber",
        action="append",
        default=[],
        metavar="ID",
        help="only this subscriber's dead-letter queue (repeatable)",
    )
    sources.add_argument(
        "--queue",
        action="append",
        default=[],
        type=_dlq_name,
        metavar="QUEUE",
        help="also read this DLQ, e.g. of a subscriber removed from the file (repeatable)",
    )

    filters = OneLineParser(add_help=False)
    filters.add_argument("--event", metavar="EVENT", help="event type, prefix or topic pattern")
    when = filters.add_mutually_exclusive_group()
    when.add_argument("--since", type=_since, metavar="ISO", help="dead-lettered at or after")
    when.add_argument(
        "--older-than", type=_duration, metavar="DURATION", help="dead-lettered before now - D"
    )
    filters.add_argument(
        "--id",
        dest="ids",
        action="extend",
        nargs="+",
        default=[],
        metavar="EVENT_ID",
        help="only these event ids",
    )
    filters.add_argument("--limit", type=positive_int, metavar="N", help="at most N")

    parser = OneLineParser(
        prog=PROG,
        description="Inspect, replay and purge webhook dead letters.",
        epilog=DLQ_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser(
        "list", parents=[sources, filters], help="one row per dead letter (changes nothing)"
    )
    listing.add_argument("--format", choices=("table", "json"), default="table")

    show = commands.add_parser(
        "show", parents=[sources], help="headers and full payload of one event's dead letters"
    )
    show.add_argument("event_id", metavar="EVENT_ID")
    show.add_argument("--format", choices=("text", "json"), default="text")

    again = commands.add_parser(
        "replay",
        parents=[sources, filters],
        help="move dead letters back to their work queue (attempt 1, same event id)",
    )
    again.add_argument("--rate", type=_positive_rate, metavar="PER_SECOND", help="throttle")
    again.add_argument("--dry-run", action="store_true", help="print what would move")
    again.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    remove = commands.add_parser(
        "purge", parents=[sources, filters], help="delete dead letters (backed up first)"
    )
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    remove.add_argument("--dry-run", action="store_true", help="print what would be deleted")
    backup = remove.add_mutually_exclusive_group()
    backup.add_argument("--no-backup", action="store_true", help="delete without a backup")
    backup.add_argument(
        "--backup-file",
        type=Path,
        metavar="PATH",
        help="JSON lines file to append to (default $DLQ_BACKUP_DIR/dlq-backup-<time>.jsonl)",
    )
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    run = prepare(args)
    audit_file = configure_audit_log(run.settings)
    if args.command == "list":
        return cmd_list(run, args)
    if args.command == "show":
        return cmd_show(run, args)
    try:
        with audit_line(args, run.filters, run.queues, run.redactor) as outcome:
            if args.command == "replay":
                return cmd_replay(run, args, outcome)
            return cmd_purge(run, args, outcome)
    finally:
        if audit_file is not None:
            print(f"audit line appended to {audit_file}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        # What an operator most needs to hear after a Ctrl-C in a replay or purge.
        message = "interrupted (whatever was not yet acked stays in its queue)"
        return report_error(PROG, message, ExitCode.INTERRUPTED)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``webhook-dlq``; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return report_error(PROG, str(exc), exit_code_for(exc))
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    return run_command(PROG, lambda: _run(args))


if __name__ == "__main__":
    raise SystemExit(main())
