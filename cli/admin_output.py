"""What ``webhook-admin apply`` prints: one row per action, then one summary line.

Rows name endpoints as ``account/id`` and changes by field name only: a secret
is shown as the word ``secret``, a URL by its host (its path or query may hold
a token).
"""

from __future__ import annotations

from cli.terminal import format_table
from control.file_import.plan import ImportPlan


def describe_plan(plan: ImportPlan, *, dry_run: bool) -> list[str]:
    """The action table (empty when there is nothing to do) and the note on unlisted ones."""
    prefix = "would " if dry_run else ""
    rows: list[tuple[str, str, str]] = []
    for creation in plan.creations:
        events = ",".join(creation.data.events)
        rows.append((f"{prefix}create", str(creation.ref), f"host {creation.host}, {events}"))
    for change in plan.changes:
        rows.append((f"{prefix}change", str(change.ref), ", ".join(change.fields)))
    for ref in plan.deletions:
        rows.append((f"{prefix}delete", str(ref), "not in the file"))
    lines = format_table([("ACTION", "ENDPOINT", "WHAT"), *rows]).splitlines() if rows else []
    if plan.unlisted:
        listed = ", ".join(str(ref) for ref in plan.unlisted)
        lines.append(
            f"kept {len(plan.unlisted)} endpoint(s) of the file's accounts that it does not "
            f"list (--prune deletes them): {listed}"
        )
    return lines


def summary(plan: ImportPlan, *, source: str, dry_run: bool, version: int | None) -> str:
    """The last line: what was done (or would be), or that there is nothing to do."""
    if plan.empty:
        matching = len(plan.unchanged)
        return f"nothing to do: the store matches {source} ({matching} endpoint(s))"
    created, changed, deleted = len(plan.creations), len(plan.changes), len(plan.deletions)
    unchanged = len(plan.unchanged)
    if dry_run:
        return (
            f"dry run, nothing written: {created} to create, {changed} to change, "
            f"{deleted} to delete, {unchanged} unchanged"
        )
    return (
        f"applied {source}: {created} created, {changed} changed, {deleted} deleted, "
        f"{unchanged} unchanged (store version {version})"
    )
