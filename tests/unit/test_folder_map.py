"""The README's folder map ("Design: where things live") matches the tree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Made by tools, not by us: never in the map.
GENERATED = {".git", ".ruff_cache", ".mypy_cache", ".pytest_cache", ".hypothesis", "build", "dist"}


def _map_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Design: where things live")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _mapped_folders() -> list[str]:
    folders: list[str] = []
    for line in _map_section().splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            folders += re.findall(r"`([^`]+)/`", first_cell)
    return folders


def _tree_folders() -> set[str]:
    return {
        entry.name
        for entry in ROOT.iterdir()
        if entry.is_dir()
        and entry.name not in GENERATED
        and not entry.name.startswith(".")
        and not entry.name.endswith(".egg-info")
        and entry.name != "__pycache__"
    }


def test_every_top_level_folder_is_in_the_map_once() -> None:
    mapped = _mapped_folders()
    assert sorted(set(mapped)) == sorted(mapped), "a folder has two rows in the map"
    assert set(mapped) == _tree_folders()
