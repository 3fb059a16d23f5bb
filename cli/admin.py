"""``webhook-admin``: operator commands on the endpoint store.

``apply -f FILE`` loads a subscriber file into the store declaratively
(:mod:`control.file_import`): each subscriber's ``id`` is an endpoint id; what
the store lacks is created, what differs is changed, and with ``--prune`` what
the file does not list is deleted.  It prints one line per action (field
names, never a secret, never a URL's path) and, after writing, one audit line
(``endpoints_applied``) on stderr.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO, cast

import structlog

from cli.admin_output import describe_plan, summary
from cli.arguments import OneLineParser
from cli.exit_codes import EXIT_CODES_HELP, run_command
from cli.terminal import LiveStderr, operator_name
from config.errors import ConfigError
from config.logs import configure_logging
from config.settings import Settings, load_environment
from config.subscriber_file import load_subscriber_file
from control.file_import.applier import apply_plan
from control.file_import.plan import DEFAULT_INTERNAL_ACCOUNT, ImportPlan, plan_import
from control.store.database import DatabaseUrl
from control.store.endpoints import EndpointStore
from control.store.migrator import current_revision
from control.store.models import MAX_OVERLAP_SECONDS
from wire.envelope import ACCOUNT_ID

PROG = "webhook-admin"

audit = structlog.get_logger(PROG)

APPLY_EPILOG = f"""\
Environment: DATABASE_URL (or WEBHOOK_DATA_DIR), SECRETS_KEY or SECRETS_KEY_FILE,
WEBHOOK_ALLOW_PRIVATE_NETWORKS (loopback/private targets), and the ${{VAR}} the file uses.
A secret changed in the file replaces the stored one at once unless --overlap is given.
{EXIT_CODES_HELP}"""


def _overlap(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if not 0 <= value <= MAX_OVERLAP_SECONDS:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_OVERLAP_SECONDS} (7 days)")
    return value


def _account(text: str) -> str:
    if not ACCOUNT_ID.match(text):
        raise argparse.ArgumentTypeError(f"not an account id (1-64 of A-Z a-z 0-9 _ -): {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = OneLineParser(
        prog=PROG, description="Manage the endpoint store.", epilog=EXIT_CODES_HELP
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    apply = commands.add_parser(
        "apply",
        help="load a subscriber file into the store (declarative; ids are endpoint ids)",
        description=(
            "Make the endpoint store match a subscriber file: create what it lacks, change "
            "what differs, and with --prune delete what the file does not list."
        ),
        epilog=APPLY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    apply.add_argument(
        "-f", "--file", required=True, type=Path, metavar="FILE", help="the subscriber file"
    )
    pruning = apply.add_mutually_exclusive_group()
    pruning.add_argument(
        "--prune",
        dest="prune",
        action="store_const",
        const="accounts",
        default="none",
        help="also delete endpoints of the file's accounts that the file does not list",
    )
    pruning.add_argument(
        "--prune-all",
        dest="prune",
        action="store_const",
        const="all",
        help="also delete every endpoint the file does not list, whatever its account",
    )
    apply.add_argument(
        "--dry-run", action="store_true", help="print what would change; write nothing"
    )
    apply.add_argument(
        "--overlap",
        type=_overlap,
        default=0,
        metavar="SECONDS",
        help="keep a replaced secret valid this long (default 0: replaced at once)",
    )
    apply.add_argument(
        "--internal-account",
        type=_account,
        default=DEFAULT_INTERNAL_ACCOUNT,
        metavar="ACCOUNT",
        help=f"where all_accounts: true subscribers are kept (default {DEFAULT_INTERNAL_ACCOUNT})",
    )
    return parser


def apply_file(args: argparse.Namespace, settings: Settings) -> int:
    """Plan, print and (unless ``--dry-run``) write; 0 when the store matches the file."""
    path: Path = args.file
    if not path.is_file():
        raise ConfigError(f"{path}: no such subscriber file")
    file = load_subscriber_file(path)
    store = _open_store(settings, dry_run=args.dry_run)
    try:
        stored = store.load_all().endpoints if store is not None else ()
        plan = plan_import(
            file,
            stored,
            source=str(path),
            prune=args.prune,
            internal_account=args.internal_account,
            allow_private_networks=settings.store_allows_private_networks,
        )
        for line in describe_plan(plan, dry_run=args.dry_run):
            print(line)
        version = None
        if store is not None and not args.dry_run and not plan.empty:
            version = apply_plan(store, plan, overlap_seconds=args.overlap)
            _audit(path, plan, version)
        print(summary(plan, source=str(path), dry_run=args.dry_run, version=version))
    finally:
        if store is not None:
            store.close()
    return 0


def _open_store(settings: Settings, *, dry_run: bool) -> EndpointStore | None:
    """The store, migrated; for a dry run, None when there is no store yet (nothing
    is created on disk or in the database just to look)."""
    if not dry_run:
        return EndpointStore.from_settings(settings, migrate=True)
    url = DatabaseUrl.parse(settings.store_database_url())
    sqlite_path = url.sqlite_path
    if sqlite_path is not None and not sqlite_path.exists():
        return None
    if current_revision(url) is None:
        return None
    return EndpointStore.from_settings(settings)


def _audit(path: Path, plan: ImportPlan, version: int) -> None:
    audit.info(
        "endpoints_applied",
        user=operator_name(),
        host=socket.gethostname(),
        file=str(path),
        created=[str(c.ref) for c in plan.creations],
        changed={str(c.ref): list(c.fields) for c in plan.changes},
        deleted=[str(ref) for ref in plan.deletions],
        version=version,
    )


def _configure_logging(settings: Settings) -> None:
    # stdout is the command's report; log lines (the audit, a new key file) go to stderr.
    if not structlog.is_configured():
        configure_logging(settings.log_format, "info", stream=cast(TextIO, LiveStderr()))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``webhook-admin``; returns the exit code."""

    def command() -> int:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return exc.code if isinstance(exc.code, int) else 0
        settings = load_environment()
        _configure_logging(settings)
        return apply_file(args, settings)

    return run_command(PROG, command)


if __name__ == "__main__":
    raise SystemExit(main())
