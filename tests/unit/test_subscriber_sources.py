"""Both subscriber sources, the same test bodies: the subscriber file and the store (SQLite).

Each body writes through tests.support.live_config (as an operator or the
control API would) and reads through the worker's source.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from config.errors import StoreUnavailableError
from config.settings import Settings
from tests.support.live_config import FileEndpoints, StoreEndpoints
from tests.support.worker_harness import make_settings, subscriber
from worker.subscriber_source import (
    DISABLED,
    ENABLED,
    PAUSED,
    FileSource,
    StoreSource,
    SubscriberSource,
    source_for,
)

BROKER = "amqp://guest:guest@127.0.0.1:1/%2F"  # never contacted
HOOK = "https://shop.example/hook"


@pytest.fixture(params=["file", "store"])
def endpoints(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[FileEndpoints | StoreEndpoints]:
    if request.param == "file":
        yield FileEndpoints(tmp_path / "subscribers.yaml", BROKER)
        return
    store = StoreEndpoints(f"sqlite:///{tmp_path / 'store.db'}", BROKER, kind="sqlite")
    yield store
    store.close()


def open_source(endpoints: FileEndpoints | StoreEndpoints) -> SubscriberSource:
    """The source a worker would pick for these settings (the file must exist first)."""
    settings: Settings = endpoints.settings(make_settings(BROKER, []), reconcile_seconds=5)
    return source_for(settings)


async def test_the_source_lists_each_subscriber_with_its_state(
    endpoints: FileEndpoints | StoreEndpoints,
) -> None:
    first, secret = await endpoints.create(HOOK, events=("order.created",), max_in_flight=3)
    second, _ = await endpoints.create(HOOK, account="globex")
    await endpoints.set_enabled(second, False)
    source = open_source(endpoints)
    try:
        snapshot = await source.load()
    finally:
        source.close()
    assert list(snapshot.specs) == [first, second]
    shop = snapshot.specs[first].subscriber
    assert (shop.account, shop.events, shop.max_in_flight) == ("acme", ("order.created",), 3)
    assert shop.secret.get_secret_value() == secret
    assert [s.state for s in snapshot.specs.values()] == [ENABLED, DISABLED]
    assert snapshot.loaded_at > 0


async def test_each_change_gives_a_new_version_and_no_change_the_same_fingerprint(
    endpoints: FileEndpoints | StoreEndpoints,
) -> None:
    endpoint_id, _ = await endpoints.create(HOOK)
    source = open_source(endpoints)
    try:
        before = await source.load()
        assert (await source.load()).fingerprint == before.fingerprint

        added, _ = await endpoints.create(HOOK, account="globex")
        with_added = await source.load()
        assert with_added.version > before.version
        assert list(with_added.specs) == [endpoint_id, added]

        new_secret = await endpoints.rotate(endpoint_id)
        await endpoints.update(endpoint_id, events=("order.cancelled",))
        changed = await source.load()
        assert changed.version > with_added.version
        assert changed.fingerprint != with_added.fingerprint
        shop = changed.specs[endpoint_id].subscriber
        assert shop.secret.get_secret_value() == new_secret
        assert shop.events == ("order.cancelled",)

        await endpoints.delete(added)
        assert list((await source.load()).specs) == [endpoint_id]
    finally:
        source.close()


async def test_an_unreadable_source_keeps_the_last_good_set_and_says_so_once(
    endpoints: FileEndpoints | StoreEndpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint_id, _ = await endpoints.create(HOOK)
    source = open_source(endpoints)
    try:
        good = await source.load()
        with structlog.testing.capture_logs() as logs:
            if isinstance(source, FileSource):
                assert isinstance(endpoints, FileEndpoints)
                await endpoints.write_text("subscribers: [oops")
                expected, recovered = "subscriber_file_invalid", "subscriber_file_loaded"
            else:
                assert isinstance(source, StoreSource)

                def down(*_args: object) -> None:
                    raise StoreUnavailableError("database is unavailable: connection refused")

                monkeypatch.setattr(source._store, "changed_since", down)
                expected, recovered = "store_unavailable", "store_available"
            for _ in range(3):
                kept = await source.load()
                assert kept.specs == good.specs and kept.version == good.version
            assert [e["event"] for e in logs].count(expected) == 1

            monkeypatch.undo()
            added, _ = await endpoints.create(HOOK, account="globex")
            back = await source.load()
        assert list(back.specs) == [endpoint_id, added]
        assert [e["event"] for e in logs].count(recovered) == 1
    finally:
        source.close()


# ---------------------------------------------------------------- the file only


def _file_settings(path: Path) -> Settings:
    return make_settings(BROKER, [subscriber("from-settings", HOOK)]).model_copy(
        update={"config_path": path}
    )


async def test_settings_built_without_a_file_keep_their_subscribers_quietly(
    tmp_path: Path,
) -> None:
    source = FileSource(_file_settings(tmp_path / "absent.yaml"))
    with structlog.testing.capture_logs() as logs:
        first, again = await source.load(), await source.load()
    assert list(first.specs) == ["from-settings"] and again == first
    assert logs == []


async def test_a_file_that_goes_away_keeps_the_last_good_set(tmp_path: Path) -> None:
    file = FileEndpoints(tmp_path / "subscribers.yaml", BROKER)
    endpoint_id, _ = await file.create(HOOK)
    source = FileSource(file.settings(make_settings(BROKER, [])))
    file.path.unlink()
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            assert list((await source.load()).specs) == [endpoint_id]
    [gone] = logs
    assert gone["event"] == "subscriber_file_invalid" and "not found" in gone["error"]


async def test_file_wide_retry_and_security_wait_for_a_restart(tmp_path: Path) -> None:
    file = FileEndpoints(tmp_path / "subscribers.yaml", BROKER)
    endpoint_id, _ = await file.create(HOOK)
    source = FileSource(file.settings(make_settings(BROKER, [])))
    text = file.path.read_text()
    await file.write_text(
        text.replace("- 0.5\n  - 0.5", "- 1\n  - 2").replace("true", "false")
        + "circuit_breaker:\n  failure_threshold: 2\n"
    )
    with structlog.testing.capture_logs() as logs:
        snapshot = await source.load()
    [warning] = [e for e in logs if e["event"] == "subscriber_file_restart_needed"]
    assert warning["sections"] == ["retry", "security"]
    # The file-wide breaker defaults apply at once.
    assert snapshot.specs[endpoint_id].breaker.failure_threshold == 2


async def test_an_edit_that_keeps_size_and_mtime_is_still_seen(tmp_path: Path) -> None:
    file = FileEndpoints(tmp_path / "subscribers.yaml", BROKER)
    endpoint_id, _ = await file.create(HOOK, max_in_flight=3)
    source = FileSource(file.settings(make_settings(BROKER, [])))
    stat = file.path.stat()
    file.path.write_text(file.path.read_text().replace("max_in_flight: 3", "max_in_flight: 4"))
    os.utime(file.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    source._hashed_at -= 60  # the periodic re-hash is due
    assert (await source.load()).specs[endpoint_id].subscriber.max_in_flight == 4


# ---------------------------------------------------------------- the store only


async def test_a_store_pause_is_its_own_state(tmp_path: Path) -> None:
    store = StoreEndpoints(f"sqlite:///{tmp_path / 'store.db'}", BROKER, kind="sqlite")
    try:
        endpoint_id, _ = await store.create(HOOK)
        await store.set_paused(endpoint_id, True)
        source = open_source(store)
        assert (await source.load()).specs[endpoint_id].state == PAUSED
        source.close()
    finally:
        store.close()


async def test_a_restored_database_behind_our_version_is_read_again_whole(
    tmp_path: Path,
) -> None:
    store = StoreEndpoints(f"sqlite:///{tmp_path / 'store.db'}", BROKER, kind="sqlite")
    try:
        endpoint_id, _ = await store.create(HOOK)
        source = open_source(store)
        assert isinstance(source, StoreSource)
        snapshot = await source.load()
        # As if the database had been restored from a backup older than what we read.
        source._snapshot = dataclasses.replace(snapshot, version=snapshot.version + 100)
        again = await source.load()
        assert again.version == snapshot.version and list(again.specs) == [endpoint_id]
        source.close()
    finally:
        store.close()
