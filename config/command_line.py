"""Pieces every command-line tool shares: one-line usage errors and a live stderr."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class UsageError(Exception):
    """Bad arguments (or a refused confirmation); reported as one line, like every failure."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise UsageError instead of printing the usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


class LiveStderr:
    """Writes to whatever ``sys.stderr`` is at the time (pytest swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def report_error(prog: str, message: str, code: int) -> int:
    """Print ``prog: error: message`` as one line on stderr; return ``code``."""
    # One line, whatever the message: scripts and log collectors read stderr by line.
    text = " ".join(message.replace("\n", "; ").split())
    print(f"{prog}: error: {text}", file=sys.stderr)
    return code
