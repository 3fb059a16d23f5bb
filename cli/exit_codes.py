"""The one exit-code policy of every command-line tool, and the error that picks each code.

Scripts branch on these, so they mean the same in ``webhook-publish``,
``webhook-worker`` and ``webhook-dlq``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import IntEnum

from cli.arguments import UsageError
from cli.terminal import silence_stdout
from config.errors import (
    BrokerError,
    ConfigError,
    InvalidInputError,
    PayloadError,
    PublishError,
    StoreUnavailableError,
    WebhookError,
)


class ExitCode(IntEnum):
    """What a tool's exit status means."""

    OK = 0
    FAILED = 1  # ran, but did not get there: not found, aborted, test FAIL, not all moved
    USAGE = 2  # bad arguments, unreadable or invalid input data
    CONFIG = 3  # bad settings or subscriber file
    UNAVAILABLE = 4  # RabbitMQ or the database unreachable, or the topology conflicts
    REFUSED = 5  # the broker refused a message: unroutable or nacked
    INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


EXIT_CODES_HELP = (
    "exit codes: 0 ok, 1 failed (not found, aborted, test failed, not all moved), "
    "2 bad arguments or data, 3 bad configuration, 4 RabbitMQ or database unavailable, "
    "5 refused by RabbitMQ (unroutable or nacked), 130 interrupted."
)


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code an error ends a tool with (the most specific class wins)."""
    if isinstance(error, UsageError | PayloadError | InvalidInputError):
        return ExitCode.USAGE
    if isinstance(error, ConfigError):
        return ExitCode.CONFIG
    if isinstance(error, PublishError):
        return ExitCode.REFUSED
    if isinstance(error, BrokerError | StoreUnavailableError):
        return ExitCode.UNAVAILABLE
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return ExitCode.FAILED


def report_error(prog: str, message: str, code: int) -> int:
    """Print ``prog: error: <problem>`` on stderr, one line per problem; return ``code``.

    A message of several lines (a config file with several mistakes) gives one
    ``error:`` line each; whitespace inside a problem is folded, so scripts and
    log collectors can read stderr line by line.
    """
    for problem in message.splitlines() or [""]:
        text = " ".join(problem.split())
        if text:
            print(f"{prog}: error: {text}", file=sys.stderr)
    return code


def run_command(prog: str, command: Callable[[], int]) -> int:
    """Run ``command``; turn the project's errors into one stderr line and their exit code.

    Only expected failures are caught (the error tree, bad usage, file system
    errors, Ctrl-C): anything else is a bug and keeps its traceback.
    """
    try:
        return command()
    except BrokenPipeError:
        # The reader of our output went away (`| head`): as Unix tools do, stop
        # writing quietly; what was asked was done or is reported by the code.
        silence_stdout()
        return ExitCode.OK
    except KeyboardInterrupt:
        return report_error(prog, "interrupted", ExitCode.INTERRUPTED)
    except (UsageError, WebhookError, OSError) as exc:
        return report_error(prog, str(exc), exit_code_for(exc))
