"""Terminal output the tools share: aligned tables and a stderr that follows ``sys.stderr``."""

from __future__ import annotations

import argparse
import getpass
import importlib.metadata
import io
import os
import sys
from collections.abc import Sequence
from typing import Literal


class LiveStderr:
    """Writes to whatever ``sys.stderr`` is at the time (pytest swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def format_table(rows: Sequence[Sequence[str]], *, right_aligned: Sequence[int] = ()) -> str:
    """Rows (the first is the header) as plain aligned columns, two spaces apart.

    rich lays the table out: widths are terminal cells, not characters, so wide
    (CJK) and combining (Bengali) text lines up; ``right_aligned`` lists the
    numeric columns.  No colour, no borders: the output is for pipes as much as
    for people.
    """
    if not rows:
        return ""
    # Imported here: rich (with Pygments) is ~3 MB that a worker, which imports
    # this module for its ``status`` command, would otherwise carry while it runs.
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False, header_style=None)
    for index, title in enumerate(rows[0]):
        justify: Literal["left", "right"] = "right" if index in right_aligned else "left"
        table.add_column(title, justify=justify, no_wrap=True)
    for row in rows[1:]:
        table.add_row(*row)
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=1_000_000, color_system=None, markup=False, emoji=False, highlight=False
    )
    console.print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


class PipeOutput:
    """Lines on stdout that stop quietly when the reader goes away (``| head -1``).

    A closed pipe is not the tool's failure: the work (publishing, checking)
    goes on to the end and the exit code says how that went.
    """

    def __init__(self) -> None:
        self.closed = False
        self.is_terminal = sys.stdout.isatty()

    def line(self, text: str) -> None:
        """Print one line (flushed), unless the reader has gone."""
        if self.closed:
            return
        try:
            print(text, flush=True)
        except BrokenPipeError:
            self.closed = True
            silence_stdout()


def silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: the installed package's version."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {tool_version()}")


def tool_version() -> str:
    """This package's version, or 'unknown' when run from a checkout not installed."""
    try:
        return importlib.metadata.version("webhook-relay")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def operator_name() -> str:
    """Who runs the tool, for audit lines."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a container uid without a passwd entry
        return os.environ.get("USER") or "unknown"
