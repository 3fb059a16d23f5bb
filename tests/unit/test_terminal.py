"""Tables line up by terminal cells, so Bengali and CJK names align with Latin ones."""

from __future__ import annotations

from rich.cells import cell_len

from cli.terminal import format_table


def test_columns_align_by_display_width() -> None:
    rows = [
        ("NAME", "CITY", "COUNT"),
        ("রহিম উদ্দিন", "ঢাকা", "3"),
        ("Rahim Uddin", "Dhaka", "12"),
        ("山田太郎", "東京", "100"),
    ]
    lines = format_table(rows, right_aligned=(2,)).splitlines()
    # Each column starts at the same cell offset on every line.
    starts = {cell_len(line[: line.index(row[1])]) for line, row in zip(lines, rows, strict=True)}
    assert len(starts) == 1
    widths = {cell_len(line) for line in lines}
    assert len(widths) == 1, lines  # the right-aligned last column ends in one place
    assert lines[1].endswith("  3") and lines[3].endswith("100")


def test_trailing_spaces_are_dropped_and_empty_is_empty() -> None:
    assert format_table([("A", "B"), ("long", "")]) == "A     B\nlong"
    assert format_table([]) == ""
