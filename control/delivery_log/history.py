"""An event's attempt history from the delivery log, for tools that show one event.

Best effort by design: a tool showing a dead letter must still show it when the
log is off, its database unreachable or not migrated; the history then says why
it is missing instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from config.errors import ConfigError, StoreError
from config.settings import Settings
from control.store.attempts import AttemptStore, LoggedAttempt
from control.store.database import DatabaseUrl


@dataclass(frozen=True)
class History:
    """Attempts per (event id, endpoint id), or why there are none to show."""

    attempts: dict[tuple[str, str], list[LoggedAttempt]] = field(default_factory=dict)
    unavailable: str | None = None

    def of(self, event_id: str | None, endpoint_id: str | None) -> list[LoggedAttempt]:
        """The attempts of one event at one endpoint, oldest first (none if unknown)."""
        if event_id is None or endpoint_id is None:
            return []
        return self.attempts.get((event_id, endpoint_id), [])


def attempt_history(settings: Settings, keys: Iterable[tuple[str, str]]) -> History:
    """The logged attempts of each (event id, endpoint id) in ``keys``."""
    try:
        url = DatabaseUrl.parse(settings.store_database_url())
    except ConfigError as exc:  # the history is optional: never fatal
        return History(unavailable=str(exc))
    path = url.sqlite_path
    if path is not None and not path.exists():
        # Opening it would create an empty database where there is none.
        return History(unavailable=f"no store at {path} (DATABASE_URL, WEBHOOK_DATA_DIR)")
    store = AttemptStore.open(settings.store_database_url())
    try:
        found: dict[tuple[str, str], list[LoggedAttempt]] = {}
        for event_id, endpoint_id in dict.fromkeys(keys):
            found[(event_id, endpoint_id)] = store.attempts_of_event(
                event_id, endpoint_id=endpoint_id
            )
        return History(found)
    except StoreError as exc:
        return History(unavailable=str(exc))
    finally:
        store.close()
