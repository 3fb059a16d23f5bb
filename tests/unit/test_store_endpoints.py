"""The endpoint repository on SQLite: validation, versions, rotation, pause, delete, not found."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from config.errors import ConflictError, InvalidInputError, NotFoundError, StoreError
from config.subscriber_file import plain_message
from config.subscribers import SUBSCRIBER_ID, Subscriber
from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey
from control.store.migrator import current_revision, head_revision
from control.store.models import EndpointPatch, EndpointWithSecrets
from tests.support.store import START, ManualClock, open_sqlite_store, sample_input


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> Iterator[EndpointStore]:
    store = open_sqlite_store(tmp_path, clock)
    yield store
    store.close()


def _subscriber_message(**fields: object) -> str:
    """What the subscriber file's own model says about the same input."""
    data: dict[str, object] = {
        "id": "x",
        "url": "https://shop.example/",
        "secret": "s",
        "events": ["order.*"],
    }
    data.update(fields)
    with pytest.raises(ValidationError) as caught:
        Subscriber.model_validate(data)
    (error,) = caught.value.errors()
    return plain_message(error)


# --- validation is the subscriber file's ----------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", "ftp://shop.example/hook"),
        ("url", "https://user:pw@shop.example/hook"),
        ("url", "https://shop.example/hook#top"),
        ("events", ["order..created"]),
        ("events", ["order.*", "order.*"]),
        ("events", []),
        ("timeout_seconds", 0),
        ("connect_timeout_seconds", 301),
        ("max_in_flight", 1001),
        ("circuit_breaker", {"failure_threshold": 0}),
        ("circuit_breaker", {"no_such_key": 1}),
    ],
)
def test_bad_input_fails_with_the_subscriber_rules_message(field: str, value: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        sample_input(**{field: value})
    expected = _subscriber_message(**{field: value})
    assert str(caught.value).startswith(f"{field}")
    assert expected in str(caught.value)


def test_unknown_option_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="retries: unknown key"):
        sample_input(retries=3)
    with pytest.raises(InvalidInputError, match="secret: unknown key"):
        sample_input(secret="whsec_mine")  # secrets are generated, never chosen


def test_patch_refuses_null_for_required_fields_but_resets_options() -> None:
    with pytest.raises(InvalidInputError, match="url: must not be null"):
        EndpointPatch.parse({"url": None})
    assert EndpointPatch.parse({"timeout_seconds": None}).changes() == {"timeout_seconds": None}


def test_account_id_must_be_one_topic_word(store: EndpointStore) -> None:
    for account in ("", "a.b", "a b", "x" * 65, "acct#"):
        with pytest.raises(InvalidInputError, match="account"):
            store.create_endpoint(account, sample_input())
    endpoint, _ = store.create_endpoint("679d3f8a2e1b4c5d6e7f8a9b", sample_input())
    assert endpoint.account_id == "679d3f8a2e1b4c5d6e7f8a9b"


# --- create, read, update ----------------------------------------------------------------


def test_created_endpoint_has_a_queue_safe_id_and_defaults(store: EndpointStore) -> None:
    endpoint, secret = store.create_endpoint("acct", sample_input())
    assert SUBSCRIBER_ID.match(endpoint.id) and endpoint.id.startswith("ep-")
    assert len(endpoint.id) == 23
    assert endpoint.account_id == "acct"
    assert endpoint.events == ("order.*",)
    assert (endpoint.enabled, endpoint.paused, endpoint.all_accounts) == (True, False, False)
    assert endpoint.timeout_seconds is None and endpoint.circuit_breaker is None
    assert endpoint.created_at == endpoint.updated_at == START
    assert store.get_endpoint("acct", endpoint.id) == endpoint
    assert store.list_endpoints("acct") == (endpoint,)
    assert store.list_endpoints("someone-else") == ()
    (loaded,) = store.load_all().endpoints
    assert loaded.secret.get_secret_value() == secret.get_secret_value()


def test_worker_view_is_a_subscriber_with_defaults_for_unset_options(
    store: EndpointStore,
) -> None:
    store.create_endpoint(
        "acct", sample_input(max_in_flight=4, circuit_breaker={"failure_threshold": 2})
    )
    (loaded,) = store.load_all().endpoints
    subscriber = loaded.subscriber()
    assert subscriber.id == loaded.endpoint.id
    assert subscriber.max_in_flight == 4
    assert subscriber.timeout_seconds == Subscriber.model_fields["timeout_seconds"].default
    assert subscriber.circuit_breaker is not None
    assert subscriber.circuit_breaker.failure_threshold == 2
    assert subscriber.secret == loaded.secret


def test_update_changes_only_given_fields_and_bumps_the_version(
    store: EndpointStore, clock: ManualClock
) -> None:
    endpoint, _ = store.create_endpoint("acct", sample_input(timeout_seconds=3))
    clock.advance(10)
    patch = EndpointPatch.parse({"events": ["order.created", "refund.#"], "timeout_seconds": None})
    updated = store.update_endpoint("acct", endpoint.id, patch)
    assert updated.events == ("order.created", "refund.#")
    assert updated.timeout_seconds is None
    assert updated.url == endpoint.url and updated.description == endpoint.description
    assert updated.version > endpoint.version
    assert updated.updated_at == clock.now and updated.created_at == endpoint.created_at
    assert store.update_endpoint("acct", endpoint.id, EndpointPatch()) == updated  # no-op


def test_versions_increase_with_every_write(store: EndpointStore) -> None:
    first, _ = store.create_endpoint("acct", sample_input())
    second, _ = store.create_endpoint("other", sample_input())
    versions = [first.version, second.version]
    versions.append(store.set_paused("acct", first.id, True, "receiver down").version)
    versions.append(store.rotate_secret("acct", first.id, 0)[0].version)
    patch = EndpointPatch.parse({"enabled": False})
    versions.append(store.update_endpoint("other", second.id, patch).version)
    store.delete_endpoint("other", second.id)
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    changes = store.changed_since(versions[-1])
    assert changes.deleted == (second.id,) and changes.endpoints == ()
    assert changes.version == versions[-1] + 1 == store.load_all().version


def test_changed_since_a_future_version_asks_for_a_full_reload(store: EndpointStore) -> None:
    with pytest.raises(StoreError, match="load_all"):
        store.changed_since(5)


def test_pause_and_resume(store: EndpointStore, clock: ManualClock) -> None:
    endpoint, _ = store.create_endpoint("acct", sample_input())
    paused = store.set_paused("acct", endpoint.id, True, "receiver returns 500s")
    assert (paused.paused, paused.paused_reason, paused.paused_at) == (
        True,
        "receiver returns 500s",
        START,
    )
    clock.advance(5)
    again = store.set_paused("acct", endpoint.id, True, "still down")
    assert again.paused_at == START and again.paused_reason == "still down"
    resumed = store.set_paused("acct", endpoint.id, False)
    assert (resumed.paused, resumed.paused_reason, resumed.paused_at) == (False, None, None)


# --- rotation ---------------------------------------------------------------------------


def _secrets(store: EndpointStore) -> EndpointWithSecrets:
    (loaded,) = store.load_all().endpoints
    return loaded


def test_rotation_keeps_the_previous_secret_until_the_overlap_ends(
    store: EndpointStore, clock: ManualClock
) -> None:
    endpoint, old = store.create_endpoint("acct", sample_input())
    rotated, new = store.rotate_secret("acct", endpoint.id, overlap_seconds=3600)
    assert new.get_secret_value() != old.get_secret_value()
    assert rotated.previous_secret_expires_at == START.replace(hour=START.hour + 1)
    during = _secrets(store)
    assert during.secret == new
    assert during.previous_secret == old

    clock.advance(3599)
    assert _secrets(store).previous_secret == old
    clock.advance(1)
    after = _secrets(store)
    assert after.secret == new and after.previous_secret is None
    assert store.get_endpoint("acct", endpoint.id).previous_secret_expires_at is None


def test_rotation_without_overlap_drops_the_old_secret_at_once(store: EndpointStore) -> None:
    endpoint, _ = store.create_endpoint("acct", sample_input())
    store.rotate_secret("acct", endpoint.id, 3600)
    rotated, new = store.rotate_secret("acct", endpoint.id, 0)
    assert rotated.previous_secret_expires_at is None
    assert _secrets(store).previous_secret is None and _secrets(store).secret == new


@pytest.mark.parametrize("overlap", [-1, 8 * 24 * 3600])
def test_rotation_overlap_is_bounded(store: EndpointStore, overlap: float) -> None:
    endpoint, _ = store.create_endpoint("acct", sample_input())
    with pytest.raises(InvalidInputError, match="overlap_seconds"):
        store.rotate_secret("acct", endpoint.id, overlap)


# --- a given id and secret (webhook-admin apply) --------------------------------------


def test_create_with_a_given_id_and_secret(store: EndpointStore) -> None:
    given = SecretStr("the-file's-secret")
    endpoint, secret = store.create_endpoint(
        "acct", sample_input(), endpoint_id="shop-orders", secret=given
    )
    assert endpoint.id == "shop-orders" and secret == given
    assert store.get_endpoint_with_secrets("acct", "shop-orders").secret == given


def test_a_taken_id_conflicts_and_takes_no_version(store: EndpointStore) -> None:
    endpoint, _ = store.create_endpoint("acct", sample_input(), endpoint_id="shop")
    with pytest.raises(ConflictError, match="'shop' is taken"):
        store.create_endpoint("other", sample_input(), endpoint_id="shop")
    assert store.load_all().version == endpoint.version
    assert store.list_endpoints("other") == ()


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"endpoint_id": "Not-A-Queue-Name"}, "id"), ({"secret": SecretStr("  ")}, "secret")],
)
def test_a_given_id_or_secret_is_checked(
    store: EndpointStore, changes: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        store.create_endpoint("acct", sample_input(), **changes)  # type: ignore[arg-type]
    assert caught.value.fields == (field,)


def test_an_id_deleted_and_created_again_is_not_reported_deleted(store: EndpointStore) -> None:
    store.create_endpoint("acct", sample_input(), endpoint_id="shop")
    before = store.load_all().version
    store.delete_endpoint("acct", "shop")
    store.create_endpoint("acct", sample_input(), endpoint_id="shop")
    changes = store.changed_since(before)
    assert changes.deleted == ()
    assert [e.endpoint.id for e in changes.endpoints] == ["shop"]
    # And it can be deleted again (its earlier tombstone is gone).
    again = store.load_all().version
    store.delete_endpoint("acct", "shop")
    assert store.changed_since(again).deleted == ("shop",)


def test_rotation_to_a_given_secret(store: EndpointStore) -> None:
    endpoint, old = store.create_endpoint("acct", sample_input())
    given = SecretStr("from-the-file")
    _, new = store.rotate_secret("acct", endpoint.id, 60, secret=given)
    assert new == given
    assert _secrets(store).secret == given and _secrets(store).previous_secret == old


# --- delete and not found -------------------------------------------------------------


def test_delete_removes_the_endpoint_and_reports_it_to_workers(store: EndpointStore) -> None:
    endpoint, _ = store.create_endpoint("acct", sample_input())
    before = store.load_all().version
    store.delete_endpoint("acct", endpoint.id)
    with pytest.raises(NotFoundError):
        store.get_endpoint("acct", endpoint.id)
    with pytest.raises(NotFoundError):
        store.delete_endpoint("acct", endpoint.id)
    assert store.list_endpoints("acct") == ()
    assert store.load_all().endpoints == ()
    assert store.changed_since(before).deleted == (endpoint.id,)


@pytest.mark.parametrize("endpoint_id", ["ep-doesnotexist000000", "EP-BAD", "", "../x"])
def test_unknown_endpoints_are_not_found(store: EndpointStore, endpoint_id: str) -> None:
    store.create_endpoint("acct", sample_input())
    calls = [
        lambda: store.get_endpoint("acct", endpoint_id),
        lambda: store.update_endpoint("acct", endpoint_id, EndpointPatch(enabled=False)),
        lambda: store.delete_endpoint("acct", endpoint_id),
        lambda: store.rotate_secret("acct", endpoint_id, 0),
        lambda: store.set_paused("acct", endpoint_id, True),
    ]
    for call in calls:
        with pytest.raises(NotFoundError):
            call()


def test_failed_write_takes_no_version(store: EndpointStore) -> None:
    endpoint, _ = store.create_endpoint("acct", sample_input())
    with pytest.raises(NotFoundError):
        store.set_paused("acct", "ep-doesnotexist000000", True)
    assert store.load_all().version == endpoint.version


def test_unmigrated_database_says_to_run_the_migrations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    store = EndpointStore.open(url, secrets_key=SecretStr(SecretsKey.generate().as_text()))
    with pytest.raises(StoreError, match="migrat"):
        store.list_endpoints("acct")
    store.close()
    assert current_revision(url) is None
    EndpointStore.open(url, migrate=True).close()
    assert current_revision(url) == head_revision()
