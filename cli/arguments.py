"""Argument parsing every command-line tool shares: one-line usage errors, small types."""

from __future__ import annotations

import argparse
from typing import NoReturn


class UsageError(Exception):
    """Bad arguments (or a refused confirmation); reported as one line, like every failure."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise UsageError instead of printing the usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
