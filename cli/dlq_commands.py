"""The four ``webhook-dlq`` commands: what each reads, asks, changes and prints.

Reading never changes a queue (see :mod:`control.dead_letters.reader`).  Replay
and purge ask for confirmation (or ``--yes``) and fill the fields of their audit
line (see :mod:`cli.dlq_audit`) as they go.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cli.arguments import UsageError
from cli.dlq_history import history_json, history_text
from cli.dlq_output import (
    count_phrase,
    delete_line,
    depth_table,
    incomplete_warning,
    list_json,
    list_table,
    move_line,
    note_line,
    show_json,
    show_text,
)
from cli.exit_codes import ExitCode
from config.errors import NotFoundError, PublishError
from config.settings import Settings, load_settings
from config.topology import dead_letter_queue
from control.dead_letters.filters import Filters
from control.dead_letters.model import DeadLetter
from control.dead_letters.purge import default_backup_path, purge
from control.dead_letters.reader import ScanReport, dead_letter_depths, find, list_dead_letters
from control.dead_letters.replay import replay
from control.delivery_log.history import attempt_history
from control.redaction import Redactor

PROG = "webhook-dlq"


@dataclass
class Run:
    """What every command needs: settings, the queues to read, and the filters."""

    settings: Settings
    redactor: Redactor
    subscribers: list[str]
    explicit: list[str]  # asked for by name: must exist
    filters: Filters = field(default_factory=Filters)

    @property
    def queues(self) -> list[str]:
        """The dead-letter queues this run reads, in order."""
        return [dead_letter_queue(s) for s in self.subscribers]


def prepare(args: argparse.Namespace) -> Run:
    """Load the settings and work out the queues and filters the arguments ask for."""
    # Reading and moving dead letters signs nothing: no subscriber secret is needed
    # (those that are set are still masked in everything shown).
    settings = load_settings(require_subscriber_file=not args.queue, require_secrets=False)
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
    return Run(settings, Redactor.from_settings(settings), subscribers, explicit, filters)


def _check_queues(run: Run) -> dict[str, int | None]:
    if not run.subscribers:
        raise UsageError(
            f"no dead-letter queues to read: {run.settings.config_path} has no subscribers "
            "(name one with --queue webhooks.<id>.dlq)"
        )
    depths = dead_letter_depths(run.settings.broker, run.subscribers)
    missing = [dead_letter_queue(s) for s in run.explicit if depths.get(s) is None]
    if missing:
        raise NotFoundError(f"no such dead-letter queue: {', '.join(missing)}")
    return depths


def _warn_incomplete(report: ScanReport) -> None:
    for queue, unread in report.incomplete.items():
        print(f"{PROG}: warning: {incomplete_warning(queue, unread)}", file=sys.stderr)


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


def cmd_list(run: Run, args: argparse.Namespace) -> int:
    """``list``: rows, plus the depth of every DLQ when no filter narrows the view."""
    depths = _check_queues(run)
    report = ScanReport()
    letters = list_dead_letters(
        run.settings.broker, run.subscribers, run.filters, args.limit, report=report
    )
    unfiltered = run.filters.is_empty() and not args.subscriber and not args.queue
    if args.format == "json":
        counts = depths if unfiltered else None
        print(list_json(letters, counts, report.incomplete, run.redactor))
        _warn_incomplete(report)
        return ExitCode.OK
    if letters:
        print(list_table(letters, run.redactor))
    else:
        print("no dead letters match" if not unfiltered else "no dead letters")
    if unfiltered:
        print()
        print(depth_table(depths))
        total = sum(d for d in depths.values() if d)
        if args.limit is not None and total > len(letters):
            print(f"\nshowing {len(letters)} of {total} (--limit {args.limit})")
    _warn_incomplete(report)
    return ExitCode.OK


def cmd_show(run: Run, args: argparse.Namespace) -> int:
    """``show``: every dead letter with this event id, headers and pretty payload."""
    _check_queues(run)
    letters = find(run.settings.broker, run.subscribers, args.event_id)
    if not letters:
        raise NotFoundError(
            f"no dead letter with event id {args.event_id!r} in {', '.join(run.queues)}"
        )
    keys = [(letter.event_id, letter.subscriber) for letter in letters]
    history = attempt_history(run.settings, [(e, s) for e, s in keys if e and s])
    if args.format == "json":
        print(show_json(letters, run.redactor, lambda d: history_json(history, d, run.redactor)))
    else:
        print(show_text(letters, run.redactor, lambda d: history_text(history, d, run.redactor)))
    return ExitCode.OK


def cmd_replay(run: Run, args: argparse.Namespace, outcome: dict[str, Any]) -> int:
    """``replay``: confirm, then move; ``outcome`` collects the audit line's fields."""
    _check_queues(run)
    broker = run.settings.broker
    preview = list_dead_letters(broker, run.subscribers, run.filters, args.limit)
    outcome["counts"] = {"matched": len(preview), "replayed": 0}
    if not preview:
        print("no dead letters match; nothing to replay")
        outcome["outcome"] = "nothing"
        return ExitCode.OK
    print(f"{count_phrase(len(preview))} match{'es' if len(preview) == 1 else ''}:")
    if args.dry_run:
        for letter in preview:
            print(f"would move {move_line(letter)}")
            if note := note_line(letter):
                print(note)
        print(f"dry run: {count_phrase(len(preview))} would be replayed; nothing was moved")
        outcome["outcome"] = "dry_run"
        return ExitCode.OK
    if not _confirm(f"Replay {count_phrase(len(preview))} to their work queues?", args.yes):
        print("aborted; nothing was moved")
        outcome["outcome"] = "aborted"
        return ExitCode.FAILED

    moved = 0
    with _progress(len(preview), "replaying") as advance:

        def on_moved(letter: DeadLetter) -> None:
            nonlocal moved
            moved += 1
            outcome["counts"]["replayed"] = moved
            print(f"moved {move_line(letter)}", flush=True)
            if note := note_line(letter):
                print(note, flush=True)
            advance()

        result = replay(
            broker,
            run.subscribers,
            run.filters,
            limit=args.limit,
            rate=args.rate,
            on_moved=on_moved,
        )
    print(f"replayed {count_phrase(len(result.moved))}")
    _warn_incomplete(result.report)
    if result.failed:
        outcome["outcome"] = "partial"
        outcome["failed_queues"] = result.failed
        reasons = "; ".join(f"{queue}: {why}" for queue, why in result.failed.items())
        raise PublishError(f"not everything was replayed: {reasons}")
    outcome["outcome"] = "done"
    return ExitCode.OK


def cmd_purge(run: Run, args: argparse.Namespace, outcome: dict[str, Any]) -> int:
    """``purge``: say how many, confirm, back up, then delete."""
    _check_queues(run)
    broker = run.settings.broker
    preview = list_dead_letters(broker, run.subscribers, run.filters, args.limit)
    outcome["counts"] = {"matched": len(preview), "purged": 0}
    if not preview:
        print("no dead letters match; nothing to purge")
        outcome["outcome"] = "nothing"
        return ExitCode.OK
    by_queue: dict[str, int] = {}
    for letter in preview:
        by_queue[letter.queue] = by_queue.get(letter.queue, 0) + 1
    where = ", ".join(f"{queue}: {n}" for queue, n in by_queue.items())
    print(f"{count_phrase(len(preview))} match ({where})")
    if args.dry_run:
        for letter in preview:
            print(f"would delete {delete_line(letter)}")
        print(f"dry run: {count_phrase(len(preview))} would be purged; nothing was deleted")
        outcome["outcome"] = "dry_run"
        return ExitCode.OK
    backup = (
        None
        if args.no_backup
        else (args.backup_file or default_backup_path(run.settings.dlq_backup_dir))
    )
    note = f" (backup: {backup})" if backup else " WITHOUT a backup"
    if not _confirm(f"Delete {count_phrase(len(preview))}{note}?", args.yes):
        print("aborted; nothing was deleted")
        outcome["outcome"] = "aborted"
        return ExitCode.FAILED
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
            redactor=run.redactor,
            on_purged=on_purged,
        )
    saved = f"; backed up to {backup}" if backup and result.purged else ""
    print(f"purged {count_phrase(len(result.purged))}{saved}")
    _warn_incomplete(result.report)
    outcome["outcome"] = "done"
    return ExitCode.OK
