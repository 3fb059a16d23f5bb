"""Which dead letters an operation applies to: event type, age, event id."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from control.dead_letters.model import DeadLetter, assume_utc, iso_utc

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``7d``, ``1h30m`` (units s, m, h, d, w) as a timedelta."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION.sub("", compact):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 2h, 7d, 1h30m)")
    seconds = sum(
        float(amount) * _DURATION_UNITS[unit] for amount, unit in _DURATION.findall(compact)
    )
    return timedelta(seconds=seconds)


def parse_since(text: str) -> datetime:
    """An ISO-8601 date or time; without a zone it is taken as UTC."""
    try:
        return assume_utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise ValueError(
            f"not an ISO-8601 time: {text!r} (use e.g. 2026-01-31 or 2026-01-31T10:30:00Z)"
        ) from None


def event_matches(pattern: str, event_type: str | None) -> bool:
    """Exact type, a dotted prefix (``order`` matches ``order.created``) or a topic pattern."""
    if event_type is None:
        return False
    if "*" in pattern or "#" in pattern:
        return _topic_match(pattern.split("."), event_type.split("."))
    prefix = pattern if pattern.endswith(".") else pattern + "."
    return event_type == pattern or event_type.startswith(prefix)


def _topic_match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_topic_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _topic_match(rest, words[1:])


@dataclass(frozen=True)
class Filters:
    """Which dead letters an operation applies to (all given conditions must hold).

    Time filters use the dead-lettered-at time; a letter without one never matches
    them, so ``--older-than`` cannot purge something of unknown age.
    """

    event: str | None = None
    since: datetime | None = None
    older_than: timedelta | None = None
    event_ids: frozenset[str] = frozenset()

    def is_empty(self) -> bool:
        """True when every dead letter matches."""
        return (
            self.event is None
            and self.since is None
            and self.older_than is None
            and not self.event_ids
        )

    def matches(self, letter: DeadLetter, now: datetime | None = None) -> bool:
        """Whether ``letter`` passes every filter."""
        if self.event_ids and letter.event_id not in self.event_ids:
            return False
        if self.event is not None and not event_matches(self.event, letter.event_type):
            return False
        if self.since is not None or self.older_than is not None:
            at = letter.dead_lettered_at
            if at is None:
                return False
            if self.since is not None and at < self.since:
                return False
            if self.older_than is not None:
                cutoff = (now or datetime.now(UTC)) - self.older_than
                if at > cutoff:
                    return False
        return True

    def describe(self) -> dict[str, Any]:
        """The filters that are set, JSON-ready (for audit lines)."""
        described: dict[str, Any] = {}
        if self.event is not None:
            described["event_type"] = self.event
        if self.since is not None:
            described["since"] = iso_utc(self.since)
        if self.older_than is not None:
            described["older_than_seconds"] = self.older_than.total_seconds()
        if self.event_ids:
            described["event_ids"] = sorted(self.event_ids)
        return described
