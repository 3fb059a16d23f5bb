"""Purge: deleting dead letters, each written to a JSON-lines backup file first.

A letter leaves its DLQ only once its backup line is on disk, and what stays
behind keeps its order (see :mod:`control.dead_letters.reader`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TextIO, cast

from broker.url import BrokerUrl
from control.dead_letters.filters import Filters
from control.dead_letters.model import DeadLetter, iso_utc
from control.dead_letters.reader import (
    QueueReader,
    ScanReport,
    broker_connection,
    dead_letter_queues,
)
from control.redaction import Redactor

# Purge acks only what is already fsynced to the backup file, this many at a time.
PURGE_BATCH = 200


@dataclass
class PurgeResult:
    """What a purge deleted (or, on a dry run, would delete)."""

    purged: list[DeadLetter] = field(default_factory=list)
    backup_file: Path | None = None
    report: ScanReport = field(default_factory=ScanReport)


def default_backup_path(directory: Path, now: datetime | None = None) -> Path:
    """``<directory>/dlq-backup-<UTC time>.jsonl``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return directory / f"dlq-backup-{stamp}.jsonl"


def open_owner_only(path: Path) -> TextIO:
    """Open ``path`` for appending, readable by its owner only (0600; its folder 0700).

    Backups hold customers' names, phones and addresses: the file must never be
    readable by others, not even for the moment between creating and chmod-ing it.
    """
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # an existing file created by someone else's umask
    except OSError as exc:
        raise OSError(f"cannot write {path}: {exc.strerror}") from None
    return cast(TextIO, os.fdopen(fd, "a", encoding="utf-8"))


def _backup_line(letter: DeadLetter, purged_at: datetime, redactor: Redactor) -> str:
    # Masked exactly as `show` masks: a configured secret inside a payload is
    # not written out in clear just because the letter is being deleted.
    record = letter.to_json()
    body = record.get("body")
    if isinstance(body, str):
        record["body"] = redactor.text(body)
    record["headers"] = redactor.data(record["headers"])
    record["properties"] = redactor.data(record["properties"])
    record["purged_at"] = iso_utc(purged_at)
    return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"


def purge(
    broker: BrokerUrl,
    subscribers: Sequence[str],
    filters: Filters | None = None,
    *,
    limit: int | None = None,
    backup_file: Path | None = None,
    redactor: Redactor | None = None,
    dry_run: bool = False,
    on_purged: Callable[[DeadLetter], None] | None = None,
) -> PurgeResult:
    """Delete matching dead letters, each appended to ``backup_file`` (JSON lines) first.

    A letter is acked only after its backup line is flushed and fsynced, so a crash
    leaves it in the queue (and maybe also in the file), never nowhere.
    ``backup_file=None`` deletes without a backup.  The backup is written with
    ``redactor``'s masking (configured secrets, secret-looking keys), mode 0600.
    """
    redactor = redactor or Redactor(())
    filters = filters or Filters()
    result = PurgeResult(backup_file=None if dry_run else backup_file)
    now = datetime.now(UTC)
    out: IO[str] | None = None
    if backup_file is not None and not dry_run:
        out = open_owner_only(backup_file)
    try:
        with broker_connection(broker) as connection:
            for queue in dead_letter_queues(subscribers):
                if limit is not None and len(result.purged) >= limit:
                    break
                with QueueReader(connection, queue) as reader:
                    pending: list[tuple[int, DeadLetter]] = []
                    for tag, letter in reader:
                        if not filters.matches(letter, now):
                            continue
                        if dry_run:
                            result.purged.append(letter)
                        else:
                            if out is not None:
                                out.write(_backup_line(letter, now, redactor))
                            pending.append((tag, letter))
                            if len(pending) >= PURGE_BATCH:
                                _settle(reader, out, pending, result, on_purged)
                        if limit is not None and len(result.purged) + len(pending) >= limit:
                            break
                    _settle(reader, out, pending, result, on_purged)
                result.report.note(reader)
    finally:
        if out is not None:
            out.close()
    return result


def _settle(
    reader: QueueReader,
    out: IO[str] | None,
    pending: list[tuple[int, DeadLetter]],
    result: PurgeResult,
    on_purged: Callable[[DeadLetter], None] | None,
) -> None:
    if not pending:
        return
    if out is not None:
        out.flush()
        os.fsync(out.fileno())
    for tag, letter in pending:
        reader.ack(tag)
        result.purged.append(letter)
        if on_purged is not None:
            on_purged(letter)
    pending.clear()
