"""Terminal output the tools share: aligned tables and a stderr that follows ``sys.stderr``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.cells import cell_len


class LiveStderr:
    """Writes to whatever ``sys.stderr`` is at the time (pytest swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def format_table(rows: Sequence[Sequence[str]], *, right_aligned: Sequence[int] = ()) -> str:
    """Rows (the first is the header) as plain aligned columns, two spaces apart.

    Widths are terminal cells, not characters, so wide (CJK) and combining
    (Bengali) text lines up; ``right_aligned`` lists the numeric columns.
    """
    if not rows:
        return ""
    widths = [max(cell_len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = []
        for i, (cell, width) in enumerate(zip(row, widths, strict=True)):
            pad = " " * (width - cell_len(cell))
            cells.append(pad + cell if i in right_aligned else cell + pad)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
