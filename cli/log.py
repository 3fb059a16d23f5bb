"""``webhook-log``: the delivery log at a shell.

This minimal entry point registers only ``resend`` and ``recover``
(:mod:`cli.log_resend`); the reading commands (attempts, event, summary) join
it through the same ``run`` convention: each subcommand sets ``run``, a
function of the parsed arguments that returns the exit code.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from cli import log_resend
from cli.arguments import OneLineParser, UsageError
from cli.exit_codes import EXIT_CODES_HELP, exit_code_for, report_error, run_command
from cli.terminal import add_version

PROG = "webhook-log"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = OneLineParser(
        prog=PROG,
        description="The delivery log: resend logged events, recover failed ones.",
        epilog=EXIT_CODES_HELP,
    )
    add_version(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    log_resend.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``webhook-log``; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return report_error(PROG, str(exc), exit_code_for(exc))
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    return run_command(PROG, lambda: int(args.run(args)))


if __name__ == "__main__":
    raise SystemExit(main())
