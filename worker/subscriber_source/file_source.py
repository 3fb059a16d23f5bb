"""The subscriber file as a source: followed live, the last good content kept.

The worker polls the file every few seconds: its size and mtime, and a hash of
its bytes when those moved (or every half-minute, for an edit that kept both).
A new content is parsed with the start-up rules; if it is invalid, one
``subscriber_file_invalid`` error says why (never a value: see
config.subscribers) and the worker keeps the last good set until the file is
fixed.  The file-wide ``retry:`` and ``security:`` sections are read at
start-up only (the delay queues and the delivery client are built from them):
a change there is logged as ``subscriber_file_restart_needed``.  The file-wide
``circuit_breaker:`` applies live, like everything under ``subscribers:``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Mapping
from pathlib import Path

import structlog

from config.errors import ConfigError
from config.settings import Settings
from config.subscriber_file import parse_subscriber_file
from config.subscribers import SubscriberFile
from worker.subscriber_source.snapshot import SourceSnapshot, SubscriberSpec

log = structlog.get_logger("worker")

# Often enough that an edit shows within a second or two; a stat costs microseconds.
FILE_POLL_SECONDS = 1.0
# Re-hash even when size and mtime stand still: some tools keep the mtime.
REHASH_SECONDS = 30.0

_Stat = tuple[int, int]  # (size, mtime in ns)
_MISSING = "missing"


def _fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _stat(path: Path) -> _Stat | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


class FileSource:
    """Subscribers from the subscriber file, starting from what the settings loaded."""

    def __init__(
        self,
        settings: Settings,
        *,
        poll_seconds: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._path = settings.config_path
        self._environ = environ  # None: os.environ, for ${VAR} in the file
        self.poll_seconds = poll_seconds or min(FILE_POLL_SECONDS, settings.reconcile_seconds)
        self._file = SubscriberFile(
            subscribers=settings.subscribers,
            retry=settings.retry,
            security=settings.security,
            circuit_breaker=settings.circuit_breaker,
        )
        # The settings were loaded from the file as it is now: follow changes from
        # here on.  A program that built its settings itself (as the tests do) and
        # names a file that is not there keeps its own subscribers.
        self._stat = _stat(self._path)
        self._seen: str | None = None  # the fingerprint of the content last read
        if self._stat is not None:
            self._seen = _fingerprint(self._path.read_bytes())
        self._hashed_at = time.monotonic()
        self._reported: str | None = None  # the bad content already logged
        specs = [SubscriberSpec.of(s, self._file.circuit_breaker) for s in settings.subscribers]
        self._snapshot = SourceSnapshot.of(1, self._seen or "settings", specs, time.time())

    def describe(self) -> str:
        return f"subscriber file {self._path}"

    def close(self) -> None:
        """Nothing to release."""

    async def load(self) -> SourceSnapshot:
        """The file's subscribers; the last good ones while it is missing or invalid."""
        try:
            stat = await asyncio.to_thread(_stat, self._path)
            if stat is None:
                if self._seen is not None:  # it was there, and went away
                    self._invalid(f"{self._path}: subscriber file not found", _MISSING)
                return self._snapshot
            if stat == self._stat and time.monotonic() - self._hashed_at < REHASH_SECONDS:
                return self._unchanged()
            data = await asyncio.to_thread(self._path.read_bytes)
        except OSError as exc:
            self._invalid(f"{self._path}: cannot read subscriber file: {exc}", "unreadable")
            return self._snapshot
        self._stat, self._hashed_at = stat, time.monotonic()
        fingerprint = _fingerprint(data)
        if fingerprint in (self._seen, self._snapshot.fingerprint):
            self._seen = fingerprint
            return self._unchanged()
        self._seen = fingerprint
        try:
            text = data.decode("utf-8")
            file = parse_subscriber_file(text, source=str(self._path), environ=self._environ)
        except UnicodeDecodeError as exc:
            self._invalid(f"{self._path}: not UTF-8: {exc.reason}", fingerprint)
            return self._snapshot
        except ConfigError as exc:
            self._invalid(str(exc), fingerprint)
            return self._snapshot
        self._note_restart_needed(file)
        self._file, self._reported = file, None
        specs = [SubscriberSpec.of(s, file.circuit_breaker) for s in file.subscribers]
        self._snapshot = SourceSnapshot.of(
            self._snapshot.version + 1, fingerprint, specs, time.time()
        )
        log.info(
            "subscriber_file_loaded",
            path=str(self._path),
            subscribers=len(specs),
            version=self._snapshot.version,
        )
        return self._snapshot

    def _unchanged(self) -> SourceSnapshot:
        """The content did not change: if it is the good one, it was read fine just now."""
        if self._seen == self._snapshot.fingerprint:
            self._reported = None
            self._snapshot = dataclasses.replace(self._snapshot, loaded_at=time.time())
        return self._snapshot

    def _invalid(self, error: str, content: str) -> None:
        # Once per bad content (the file is polled every few seconds).
        if content != _MISSING:
            self._seen = content
        if self._reported == content:
            return
        self._reported = content
        log.error(
            "subscriber_file_invalid",
            path=str(self._path),
            error=error,
            keeping_version=self._snapshot.version,
            subscribers=len(self._snapshot.specs),
        )

    def _note_restart_needed(self, file: SubscriberFile) -> None:
        changed = [s for s in ("retry", "security") if getattr(file, s) != getattr(self._file, s)]
        if changed:
            log.warning(
                "subscriber_file_restart_needed",
                path=str(self._path),
                sections=changed,
                hint="these sections apply from the next start; the subscribers apply now",
            )
