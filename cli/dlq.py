"""``webhook-dlq``: list, show, replay and purge dead letters.

Reading never changes a queue (see :mod:`control.dead_letters`).  Replay and purge
ask for confirmation (or ``--yes``) and each writes one structured audit line.
Nothing printed ever contains a subscriber secret: every configured secret is
masked in whatever is shown, payloads included.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import socket
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

import structlog

from cli.arguments import OneLineParser, UsageError, positive_int
from cli.exit_codes import report_error
from cli.terminal import LiveStderr
from config.errors import BrokerError, ConfigError, PublishError, WebhookError
from config.logs import configure_logging
from config.settings import Settings, load_settings
from config.topology import dead_letter_queue, subscriber_of_queue, work_queue
from control.dead_letters.filters import Filters, parse_duration, parse_since
from control.dead_letters.model import DeadLetter, jsonable
from control.dead_letters.purge import default_backup_path, purge
from control.dead_letters.reader import (
    MAX_WINDOW,
    ScanReport,
    dead_letter_depths,
    find,
    list_dead_letters,
)
from control.dead_letters.replay import replay

PROG = "webhook-dlq"

EXIT_FAILED = 1  # not found, aborted, or some dead letters could not be moved
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_BROKER = 4

EPILOG = f"""\
Dead-letter queues read: those of the subscriber file's subscribers (WEBHOOK_CONFIG),
plus any --queue webhooks.<id>.dlq of a subscriber since removed from the file.
Filters: --subscriber, --event (exact, prefix such as 'order', or topic pattern such as
'order.*'), --since ISO-TIME or --older-than DURATION (30m, 2h, 7d), --id EVENT_ID.
exit codes: 0 ok, {EXIT_FAILED} not found / aborted / not all moved, {EXIT_USAGE} bad arguments,
{EXIT_CONFIG} bad configuration, {EXIT_BROKER} RabbitMQ unavailable or refused."""

_LAST_ERROR_CHARS = 40
_SENSITIVE_KEYS = ("secret", "password", "passwd", "token", "authorization", "api-key", "apikey")
# Bidirectional overrides can make a terminal show text other than what it is.
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

audit = structlog.get_logger("webhook-dlq")


# ------------------------------------------------------------------ arguments


def _positive_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _duration(text: str) -> Any:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _since(text: str) -> Any:
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
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        help="JSON lines file to append to (default ./dlq-backup-<time>.jsonl)",
    )
    return parser


# ------------------------------------------------------------------ output safety


@dataclass(frozen=True)
class _Redactor:
    """Masks every configured subscriber secret, and values of secret-looking headers."""

    secrets: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> _Redactor:
        values = {s.secret.get_secret_value() for s in settings.subscribers}
        # Longest first, so a secret containing another is masked whole.
        return cls(tuple(sorted((v for v in values if v), key=len, reverse=True)))

    def text(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, "***")
        return value

    def data(self, value: Any, key: str = "") -> Any:
        if key and any(word in key.lower() for word in _SENSITIVE_KEYS):
            return "***"
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.data(v) for v in value]
        return value


def _printable(text: str, *, newlines: bool = False) -> str:
    """Escape control characters: payloads are untrusted and land on a terminal."""
    out = []
    for char in text:
        if (newlines and char == "\n") or (
            unicodedata.category(char) != "Cc" and char not in _BIDI_CONTROLS
        ):
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _json_text(document: Any) -> str:
    """JSON for stdout: readable Unicode, but no raw control or bidi characters."""
    text = json.dumps(document, ensure_ascii=False, indent=2)
    # json.dumps escapes C0 controls but not C1 ones; raw newlines are indentation.
    return "".join(
        f"\\u{ord(c):04x}"
        if c != "\n" and (unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS)
        else c
        for c in text
    )


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else _printable(str(value))


def _short(text: str | None, width: int = _LAST_ERROR_CHARS) -> str | None:
    if text is None:
        return None
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _when(letter: DeadLetter) -> str:
    at = letter.summary()["dead_lettered_at"]
    return at[:19] + "Z" if isinstance(at, str) else "-"


# ------------------------------------------------------------------ context


@dataclass
class _Run:
    """What every command needs: settings, the queues to read, and the filters."""

    settings: Settings
    redactor: _Redactor
    subscribers: list[str]
    explicit: list[str]  # asked for by name: must exist
    filters: Filters = field(default_factory=Filters)

    @property
    def queues(self) -> list[str]:
        return [dead_letter_queue(s) for s in self.subscribers]


def _prepare(args: argparse.Namespace) -> _Run:
    settings = load_settings(require_subscriber_file=not args.queue)
    configured = [s.id for s in settings.subscribers]
    # --subscriber narrows the file's list; --queue always adds to what is read.
    chosen = args.subscriber or configured
    subscribers = list(dict.fromkeys([*chosen, *args.queue]))
    explicit = [s for s in subscribers if s not in configured]
    filters = Filters()
    if hasattr(args, "limit"):
        filters = Filters(
            event=args.event,
            since=args.since,
            older_than=args.older_than,
            event_ids=frozenset(args.ids),
        )
    return _Run(settings, _Redactor.from_settings(settings), subscribers, explicit, filters)


def _check_queues(run: _Run) -> dict[str, int | None]:
    if not run.subscribers:
        raise UsageError(
            f"no dead-letter queues to read: {run.settings.config_path} has no subscribers "
            "(name one with --queue webhooks.<id>.dlq)"
        )
    depths = dead_letter_depths(run.settings.broker, run.subscribers)
    missing = [dead_letter_queue(s) for s in run.explicit if depths.get(s) is None]
    if missing:
        raise _NotFound(f"no such dead-letter queue: {', '.join(missing)}")
    return depths


class _NotFound(Exception):
    """Nothing to act on where something was named explicitly."""


def _warn_incomplete(report: ScanReport) -> None:
    for queue, unread in report.incomplete.items():
        print(
            f"{PROG}: warning: {unread} message(s) of {queue} were not examined "
            f"(read at most {MAX_WINDOW} unacked at a time, or another client holds them)",
            file=sys.stderr,
        )


def _filters_for_audit(run: _Run, args: argparse.Namespace) -> dict[str, Any]:
    described = run.filters.describe()
    if args.subscriber:
        described["subscribers"] = list(args.subscriber)
    if args.queue:
        described["queues"] = [dead_letter_queue(s) for s in args.queue]
    if args.limit is not None:
        described["limit"] = args.limit
    return described


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a container uid without a passwd entry
        return os.environ.get("USER") or "unknown"


def _confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{question.rstrip('?')}: not confirmed (no terminal); pass --yes")
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


@contextmanager
def _progress(total: int, description: str) -> Iterator[Callable[[], None]]:
    """A rich progress bar on a terminal; a no-op otherwise."""
    if total < 2 or not sys.stdout.isatty():
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)


def _row(letter: DeadLetter) -> str:
    return (
        f"{_cell(letter.event_id)}  {_cell(letter.subscriber)}  {_cell(letter.event_type)}  "
        f"{letter.queue} -> {work_queue(subscriber_of_queue(letter.queue) or '?')}"
    )


# ------------------------------------------------------------------ commands


def cmd_list(run: _Run, args: argparse.Namespace) -> int:
    """``list``: rows, plus the depth of every DLQ when no filter narrows the view."""
    depths = _check_queues(run)
    report = ScanReport()
    letters = list_dead_letters(
        run.settings.broker, run.subscribers, run.filters, args.limit, report=report
    )
    unfiltered = run.filters.is_empty() and not args.subscriber and not args.queue
    if args.format == "json":
        document = {
            "dead_letters": [run.redactor.data(letter.summary()) for letter in letters],
            "counts": depths if unfiltered else None,
            "incomplete": report.incomplete,
        }
        print(_json_text(document))
        _warn_incomplete(report)
        return 0
    if letters:
        rows = [("EVENT ID", "SUBSCRIBER", "EVENT", "ATTEMPTS", "STATUS", "LAST ERROR", "DEAD AT")]
        for letter in letters:
            rows.append(
                (
                    _cell(letter.event_id),
                    _cell(letter.subscriber),
                    _cell(letter.event_type),
                    _cell(letter.attempts),
                    _cell(letter.last_status),
                    _cell(_short(run.redactor.text(letter.last_error or ""))),
                    _when(letter),
                )
            )
        print(_table(rows))
    else:
        print("no dead letters match" if not unfiltered else "no dead letters")
    if unfiltered:
        print()
        count_rows = [("SUBSCRIBER", "DEAD LETTERS", "QUEUE")]
        for subscriber, depth in depths.items():
            shown = "-" if depth is None else str(depth)
            queue = dead_letter_queue(subscriber) + (" (not declared)" if depth is None else "")
            count_rows.append((subscriber, shown, queue))
        print(_table(count_rows))
        total = sum(d for d in depths.values() if d)
        if args.limit is not None and total > len(letters):
            print(f"\nshowing {len(letters)} of {total} (--limit {args.limit})")
    _warn_incomplete(report)
    return 0


def cmd_show(run: _Run, args: argparse.Namespace) -> int:
    """``show``: every dead letter with this event id, headers and pretty payload."""
    _check_queues(run)
    letters = find(run.settings.broker, run.subscribers, args.event_id)
    if not letters:
        raise _NotFound(
            f"no dead letter with event id {args.event_id!r} in {', '.join(run.queues)}"
        )
    if args.format == "json":
        records = [run.redactor.data(_with_payload(letter.to_json())) for letter in letters]
        print(_json_text(records))
        return 0
    blocks = [_show_text(letter, run.redactor) for letter in letters]
    print("\n\n".join(blocks))
    return 0


def _with_payload(record: dict[str, Any]) -> dict[str, Any]:
    body = record.get("body")
    if isinstance(body, str):
        with suppress(ValueError):
            record["payload"] = json.loads(body)
    return record


def _show_text(letter: DeadLetter, redactor: _Redactor) -> str:
    summary = redactor.data(letter.summary())
    lines = [
        f"event id:          {_cell(summary['event_id'])}",
        f"event:             {_cell(summary['event_type'])}",
        f"subscriber:        {_cell(summary['subscriber'])}",
        f"queue:             {letter.queue}",
        f"attempts:          {_cell(summary['attempts'])}",
        f"last status:       {_cell(summary['last_status'])}",
        f"last error:        {_cell(summary['last_error'])}",
        f"reason:            {_cell(summary['reason'])}",
        f"dead-lettered at:  {_cell(summary['dead_lettered_at'])}",
        "properties:",
    ]
    for key, value in redactor.data(jsonable(letter.properties)).items():
        lines.append(f"  {_printable(key)}: {_cell(value)}")
    lines.append("headers:")
    headers = redactor.data(jsonable(letter.headers))
    for key in sorted(headers):
        value = headers[key]
        shown = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        lines.append(f"  {_printable(key)}: {_cell(shown)}")
    lines.append(f"payload ({len(letter.body)} bytes):")
    lines.append(_printable(redactor.text(_pretty(letter.body, redactor)), newlines=True))
    return "\n".join(lines)


def _pretty(body: bytes, redactor: _Redactor) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "(not UTF-8; base64) " + base64.b64encode(body).decode("ascii")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return json.dumps(redactor.data(document), ensure_ascii=False, indent=2)


def cmd_replay(run: _Run, args: argparse.Namespace, outcome: dict[str, Any]) -> int:
    """``replay``: confirm, then move; ``outcome`` collects the audit line's fields."""
    _check_queues(run)
    broker = run.settings.broker
    preview = list_dead_letters(broker, run.subscribers, run.filters, args.limit)
    outcome["counts"] = {"matched": len(preview), "replayed": 0}
    if not preview:
        print("no dead letters match; nothing to replay")
        outcome["outcome"] = "nothing"
        return 0
    print(f"{_count(len(preview))} match{'es' if len(preview) == 1 else ''}:")
    if args.dry_run:
        for letter in preview:
            print(f"would move {_row(letter)}")
        print(f"dry run: {_count(len(preview))} would be replayed; nothing was moved")
        outcome["outcome"] = "dry_run"
        return 0
    if not _confirm(f"Replay {_count(len(preview))} to their work queues?", args.yes):
        print("aborted; nothing was moved")
        outcome["outcome"] = "aborted"
        return EXIT_FAILED

    moved = 0
    with _progress(len(preview), "replaying") as advance:

        def on_moved(letter: DeadLetter) -> None:
            nonlocal moved
            moved += 1
            outcome["counts"]["replayed"] = moved
            print(f"moved {_row(letter)}", flush=True)
            advance()

        result = replay(
            broker,
            run.subscribers,
            run.filters,
            limit=args.limit,
            rate=args.rate,
            on_moved=on_moved,
        )
    print(f"replayed {_count(len(result.moved))}")
    _warn_incomplete(result.report)
    if result.failed:
        outcome["outcome"] = "partial"
        outcome["failed_queues"] = result.failed
        reasons = "; ".join(f"{queue}: {why}" for queue, why in result.failed.items())
        raise PublishError(f"not everything was replayed: {reasons}")
    outcome["outcome"] = "done"
    return 0


def cmd_purge(run: _Run, args: argparse.Namespace, outcome: dict[str, Any]) -> int:
    """``purge``: say how many, confirm, back up, then delete."""
    _check_queues(run)
    broker = run.settings.broker
    preview = list_dead_letters(broker, run.subscribers, run.filters, args.limit)
    outcome["counts"] = {"matched": len(preview), "purged": 0}
    if not preview:
        print("no dead letters match; nothing to purge")
        outcome["outcome"] = "nothing"
        return 0
    by_queue: dict[str, int] = {}
    for letter in preview:
        by_queue[letter.queue] = by_queue.get(letter.queue, 0) + 1
    where = ", ".join(f"{queue}: {n}" for queue, n in by_queue.items())
    print(f"{_count(len(preview))} match ({where})")
    if args.dry_run:
        for letter in preview:
            print(
                f"would delete {_cell(letter.event_id)}  {_cell(letter.event_type)}  {letter.queue}"
            )
        print(f"dry run: {_count(len(preview))} would be purged; nothing was deleted")
        outcome["outcome"] = "dry_run"
        return 0
    backup = None if args.no_backup else (args.backup_file or default_backup_path())
    note = f" (backup: {backup})" if backup else " WITHOUT a backup"
    if not _confirm(f"Delete {_count(len(preview))}{note}?", args.yes):
        print("aborted; nothing was deleted")
        outcome["outcome"] = "aborted"
        return EXIT_FAILED
    outcome["backup_file"] = str(backup) if backup else None

    purged = 0
    with _progress(len(preview), "purging") as advance:

        def on_purged(_letter: DeadLetter) -> None:
            nonlocal purged
            purged += 1
            outcome["counts"]["purged"] = purged
            advance()

        result = purge(
            broker,
            run.subscribers,
            run.filters,
            limit=args.limit,
            backup_file=backup,
            on_purged=on_purged,
        )
    saved = f"; backed up to {backup}" if backup and result.purged else ""
    print(f"purged {_count(len(result.purged))}{saved}")
    _warn_incomplete(result.report)
    outcome["outcome"] = "done"
    return 0


def _count(n: int) -> str:
    return f"{n} dead letter{'' if n == 1 else 's'}"


# ------------------------------------------------------------------ entry point


def _fail(message: str, code: int) -> int:
    return report_error(PROG, message, code)


def _configure_logging(settings: Settings) -> None:
    # An embedding program (or a test capturing logs) keeps its own set-up; a
    # fresh process logs JSON lines to stderr so stdout stays the command's output.
    if not structlog.is_configured():
        configure_logging(settings.log_format, "info", stream=cast(TextIO, LiveStderr()))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``webhook-dlq``; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0

    outcome: dict[str, Any] = {}
    run: _Run | None = None
    try:
        run = _prepare(args)
        _configure_logging(run.settings)
        if args.command == "list":
            return cmd_list(run, args)
        if args.command == "show":
            return cmd_show(run, args)
        try:
            if args.command == "replay":
                return cmd_replay(run, args, outcome)
            return cmd_purge(run, args, outcome)
        except BaseException as exc:
            outcome.setdefault("outcome", "refused" if isinstance(exc, UsageError) else "error")
            outcome["error"] = run.redactor.text(str(exc) or type(exc).__name__)
            raise
        finally:
            _audit(run, args, outcome)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except _NotFound as exc:
        return _fail(str(exc), EXIT_FAILED)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except PublishError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except BrokerError as exc:
        return _fail(str(exc), EXIT_BROKER)
    except WebhookError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except OSError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted (whatever was not yet acked stays in its queue)", 130)


def _audit(run: _Run, args: argparse.Namespace, outcome: dict[str, Any]) -> None:
    """The one audit line of a replay or purge: who, where, what, how many."""
    audit.info(
        "dlq_replayed" if args.command == "replay" else "dlq_purged",
        user=_user(),
        host=socket.gethostname(),
        filters=_filters_for_audit(run, args),
        queues=run.queues,
        counts=outcome.get("counts", {}),
        dry_run=bool(args.dry_run),
        outcome=outcome.get("outcome", "error"),
        **{k: v for k, v in outcome.items() if k not in ("counts", "outcome")},
        **({"rate": args.rate} if args.command == "replay" and args.rate else {}),
    )


if __name__ == "__main__":
    raise SystemExit(main())
