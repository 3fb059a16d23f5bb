"""The one audit line of a ``webhook-dlq`` replay or purge: who, where, what, how many.

It records a command-line run (the operator at the terminal, the options as
given, whether they confirmed), so it lives with the tool; the library calls in
:mod:`control.dead_letters` write none.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, cast

import structlog

from cli.arguments import UsageError
from cli.terminal import LiveStderr, operator_name
from config.logs import configure_logging
from config.settings import Settings
from config.topology import dead_letter_queue
from control.dead_letters.filters import Filters
from control.dead_letters.purge import open_owner_only
from control.redaction import Redactor

audit = structlog.get_logger("webhook-dlq")


@contextmanager
def audit_line(
    args: argparse.Namespace, filters: Filters, queues: list[str], redactor: Redactor
) -> Iterator[dict[str, Any]]:
    """Write the audit line when the block ends, however it ends.

    The block fills the dict it is given: ``counts``, ``outcome`` and any other
    fields for the line.  An exception sets ``outcome`` (``refused`` for a refused
    confirmation, else ``error``) unless the block already had, and ``error``.
    """
    outcome: dict[str, Any] = {}
    try:
        yield outcome
    except BaseException as exc:
        outcome.setdefault("outcome", "refused" if isinstance(exc, UsageError) else "error")
        outcome["error"] = redactor.text(str(exc) or type(exc).__name__)
        raise
    finally:
        audit.info(
            "dlq_replayed" if args.command == "replay" else "dlq_purged",
            user=operator_name(),
            host=socket.gethostname(),
            filters=_filters_for_audit(filters, args),
            queues=queues,
            counts=outcome.get("counts", {}),
            dry_run=bool(args.dry_run),
            outcome=outcome.get("outcome", "error"),
            **{k: v for k, v in outcome.items() if k not in ("counts", "outcome")},
            **({"rate": args.rate} if args.command == "replay" and args.rate else {}),
        )


def _filters_for_audit(filters: Filters, args: argparse.Namespace) -> dict[str, Any]:
    described = filters.describe()
    if args.subscriber:
        described["subscribers"] = list(args.subscriber)
    if args.queue:
        described["queues"] = [dead_letter_queue(s) for s in args.queue]
    if args.limit is not None:
        described["limit"] = args.limit
    return described


def configure_audit_log(settings: Settings) -> Path | None:
    """Where the log (the audit lines) goes; returns the audit file when it is one.

    Shared by the tools that write audit lines (``webhook-dlq``, ``webhook-log resend``).

    In a container or a pipe the JSON lines go to stderr, for the log collector.
    At a terminal a raw JSON line means nothing to the person there: it is
    appended to an owner-only audit file beside the backups instead.
    """
    # An embedding program (or a test capturing logs) keeps its own set-up.
    if structlog.is_configured():
        return None
    if sys.stderr.isatty():
        path = settings.dlq_backup_dir.parent / "audit.jsonl"
        configure_logging("json", "info", stream=open_owner_only(path))
        return path
    configure_logging(settings.log_format, "info", stream=cast(TextIO, LiveStderr()))
    return None
