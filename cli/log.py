"""``webhook-log``: the delivery log from the command line, as the API shows it.

Subcommands come from small modules, each with ``add_commands(subparsers)``
that sets ``run`` on its parsers: ``run(args, settings) -> exit code``.  Reading
commands live in :mod:`cli.log_commands`, resend and recover in
:mod:`cli.log_resend`; add a module to ``COMMAND_MODULES``
to add more.  Errors end as one ``webhook-log: error:`` line and the shared
exit codes (:mod:`cli.exit_codes`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, TextIO, cast

import structlog

from cli import log_commands, log_resend
from cli.arguments import OneLineParser
from cli.exit_codes import EXIT_CODES_HELP, run_command
from cli.terminal import LiveStderr, add_version
from config.logs import configure_logging
from config.settings import load_environment

PROG = "webhook-log"

AddCommands = Callable[["argparse._SubParsersAction[Any]"], None]
COMMAND_MODULES: tuple[AddCommands, ...] = (log_commands.add_commands, log_resend.add_commands)

EPILOG = f"""\
Reads the store that DATABASE_URL (or WEBHOOK_DATA_DIR) names, the one webhook-api and
webhook-recorder use. Without --account: every account's attempts (the operator's view).
Support's one command for "what happened to event X?":  {PROG} event X
{EXIT_CODES_HELP}"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = OneLineParser(
        prog=PROG,
        description="Search the delivery log (attempts, one event's deliveries, summaries); "
        "resend logged events, recover failed ones.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in COMMAND_MODULES:
        add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``webhook-log``; returns the exit code."""

    def command() -> int:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else 0
        settings = load_environment()
        # A command writing an audit line sets up its own log (cli.dlq_audit): set up
        # here first, at "warning", its info-level line would be lost.
        if not structlog.is_configured() and not getattr(args, "writes_audit_line", False):
            configure_logging(settings.log_format, "warning", stream=cast(TextIO, LiveStderr()))
        code: int = args.run(args, settings)
        return code

    return run_command(PROG, command)


if __name__ == "__main__":
    raise SystemExit(main())
