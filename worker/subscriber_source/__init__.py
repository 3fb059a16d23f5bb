"""Where a worker's subscribers come from: the subscriber file, or the endpoint store.

Both sources give a :class:`SourceSnapshot` (every subscriber, a version and a
fingerprint); worker.reconciler applies each new one to the running worker.
"""

from __future__ import annotations

from config.settings import Settings
from worker.subscriber_source.file_source import FileSource
from worker.subscriber_source.snapshot import (
    DISABLED,
    ENABLED,
    PAUSED,
    SourceSnapshot,
    SubscriberSource,
    SubscriberSpec,
)
from worker.subscriber_source.store_source import StoreSource

__all__ = [
    "DISABLED",
    "ENABLED",
    "PAUSED",
    "FileSource",
    "SourceSnapshot",
    "StoreSource",
    "SubscriberSource",
    "SubscriberSpec",
    "source_for",
]


def source_for(settings: Settings) -> SubscriberSource:
    """The endpoint store when DATABASE_URL is set, else the subscriber file."""
    if settings.uses_store:
        return StoreSource.from_settings(settings)
    return FileSource(settings)
