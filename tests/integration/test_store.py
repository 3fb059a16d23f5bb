"""The endpoint store on real databases: SQLite and PostgreSQL, migrated from empty.

PostgreSQL comes from the session's ``postgres_url`` fixture (tests/conftest.py);
each test gets a database of its own on it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydantic import SecretStr, TypeAdapter
from sqlalchemy import Engine, inspect

from config.errors import ConflictError, NotFoundError, StoreError
from control.api.json_answers import endpoint_answer, page_answer
from control.api.schemas import EndpointPage
from control.store import attempt_tables  # noqa: F401 - the delivery log's tables in Base
from control.store.database import DatabaseUrl
from control.store.endpoints import EndpointStore
from control.store.key import SecretsKey
from control.store.migrator import current_revision, head_revision, migrate
from control.store.models import Endpoint, EndpointPatch
from control.store.tables import Base
from tests.support.store import START, ManualClock, sample_input

TABLES = {
    "accounts",
    "endpoints",
    "endpoint_deletions",
    "version_counter",
    "delivery_attempts",
    "delivery_event_bodies",
    "alembic_version",
}


@pytest.fixture
def key() -> SecretStr:
    return SecretStr(SecretsKey.generate().as_text())


@pytest.fixture
def store(database_url: str, key: SecretStr) -> Iterator[EndpointStore]:
    store = EndpointStore.open(database_url, secrets_key=key, migrate=True)
    yield store
    store.close()


def _engine(database_url: str) -> Engine:
    return DatabaseUrl.parse(database_url).create_engine()


def test_migrations_create_from_empty_the_schema_the_models_describe(database_url: str) -> None:
    assert current_revision(database_url) is None
    migrate(database_url)
    assert current_revision(database_url) == head_revision()
    engine = _engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) == TABLES
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
    finally:
        engine.dispose()


def test_migrating_twice_is_a_no_op(database_url: str, key: SecretStr) -> None:
    migrate(database_url)
    store = EndpointStore.open(database_url, secrets_key=key)
    endpoint, secret = store.create_endpoint("acct", sample_input())
    before = store.load_all()
    migrate(database_url)
    store.close()
    assert current_revision(database_url) == head_revision()
    again = EndpointStore.open(database_url, secrets_key=key, migrate=True)
    assert again.load_all() == before
    assert again.get_endpoint("acct", endpoint.id) == endpoint
    assert before.endpoints[0].secret == secret
    again.close()


def test_crud_round_trip(store: EndpointStore) -> None:
    created, secret = store.create_endpoint(
        "679d3f8a2e1b4c5d6e7f8a9b",
        sample_input(all_accounts=True, standard_webhooks=True, circuit_breaker={"enabled": False}),
    )
    account = created.account_id
    assert store.get_endpoint(account, created.id) == created
    assert created.circuit_breaker is not None and created.circuit_breaker.enabled is False
    second, _ = store.create_endpoint(account, sample_input(url="https://crm.example/in"))
    assert [e.id for e in store.list_endpoints(account)] == [created.id, second.id]

    patch = EndpointPatch.parse({"description": "renamed", "max_in_flight": 2})
    updated = store.update_endpoint(account, created.id, patch)
    assert (updated.description, updated.max_in_flight) == ("renamed", 2)
    paused = store.set_paused(account, created.id, True, "maintenance")
    rotated, new_secret = store.rotate_secret(account, created.id, 60)
    assert rotated.paused and rotated.paused_reason == "maintenance"
    assert rotated.version > paused.version > updated.version > second.version

    loaded = {e.endpoint.id: e for e in store.load_all().endpoints}
    assert loaded[created.id].secret == new_secret
    assert loaded[created.id].previous_secret == secret
    assert loaded[created.id].endpoint == store.get_endpoint(account, created.id)

    store.delete_endpoint(account, created.id)
    assert [e.id for e in store.list_endpoints(account)] == [second.id]
    with pytest.raises(NotFoundError):
        store.get_endpoint(account, created.id)


def test_an_account_cannot_reach_another_accounts_endpoint(store: EndpointStore) -> None:
    theirs, _ = store.create_endpoint("account-b", sample_input())
    mine, _ = store.create_endpoint("account-a", sample_input())
    attempts = [
        lambda: store.get_endpoint("account-a", theirs.id),
        lambda: store.update_endpoint("account-a", theirs.id, EndpointPatch(enabled=False)),
        lambda: store.delete_endpoint("account-a", theirs.id),
        lambda: store.rotate_secret("account-a", theirs.id, 0),
        lambda: store.set_paused("account-a", theirs.id, True),
    ]
    for attempt in attempts:
        with pytest.raises(NotFoundError) as caught:
            attempt()
        # Indistinguishable from an id that exists nowhere.
        assert "account-b" not in str(caught.value)
    assert store.list_endpoints("account-a") == (mine,)
    assert store.get_endpoint("account-b", theirs.id) == theirs  # untouched


def test_changed_since_reports_writes_and_deletions_in_order(store: EndpointStore) -> None:
    first, _ = store.create_endpoint("acct", sample_input())
    mark = store.load_all().version
    second, _ = store.create_endpoint("acct", sample_input())
    store.set_paused("acct", first.id, True)
    store.delete_endpoint("acct", second.id)
    changes = store.changed_since(mark)
    assert [e.endpoint.id for e in changes.endpoints] == [first.id]
    assert changes.endpoints[0].endpoint.paused
    assert changes.deleted == (second.id,)
    assert store.changed_since(changes.version).endpoints == ()


def test_a_given_id_can_be_deleted_and_created_again(store: EndpointStore) -> None:
    """webhook-admin apply reuses a file's ids: a taken one conflicts, a deleted one is free."""
    given = SecretStr("the-file's-secret")
    store.create_endpoint("acct", sample_input(), endpoint_id="shop", secret=given)
    with pytest.raises(ConflictError):
        store.create_endpoint("other", sample_input(), endpoint_id="shop")
    before = store.load_all().version
    store.delete_endpoint("acct", "shop")
    store.create_endpoint("acct", sample_input(), endpoint_id="shop", secret=given)
    changes = store.changed_since(before)
    assert changes.deleted == () and [e.endpoint.id for e in changes.endpoints] == ["shop"]
    assert changes.endpoints[0].secret == given
    again = store.load_all().version
    store.delete_endpoint("acct", "shop")
    assert store.changed_since(again).deleted == ("shop",)


def test_concurrent_writers_get_distinct_versions(store: EndpointStore) -> None:
    errors: list[BaseException] = []

    def write(account: str) -> None:
        try:
            for _ in range(5):
                store.create_endpoint(account, sample_input())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"acct-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    snapshot = store.load_all()
    assert sorted(e.endpoint.version for e in snapshot.endpoints) == list(range(1, 21))
    assert snapshot.version == 20


def test_unmigrated_database_is_a_store_error_saying_to_migrate(
    database_url: str, key: SecretStr
) -> None:
    store = EndpointStore.open(database_url, secrets_key=key)
    with pytest.raises(StoreError, match="run the migrations"):
        store.list_endpoints("acct")
    store.close()


def test_the_api_reads_endpoints_as_the_writes_returned_them(
    database_url: str, key: SecretStr
) -> None:
    """The API's list and get read plain columns (control.store.views) and write them
    with orjson (control.api.json_answers): the same endpoints, byte for byte the JSON
    pydantic makes of them, whatever their options, pause and rotation."""
    clock = ManualClock(START + timedelta(microseconds=120))
    store = EndpointStore.open(database_url, secrets_key=key, migrate=True, clock=clock)
    try:
        written = [store.create_endpoint("acct", sample_input())[0]]
        clock.advance(1.5)
        full, _ = store.create_endpoint(
            "acct",
            sample_input(
                description='é \u2028 "quoted" <b>',
                events=["order.created", "message.*"],
                enabled=False,
                timeout_seconds=2.5,
                connect_timeout_seconds=1,
                max_in_flight=3,
                standard_webhooks=True,
                circuit_breaker={"failure_threshold": 3},
            ),
        )
        store.set_paused("acct", full.id, True, "maintenance")
        written.append(store.rotate_secret("acct", full.id, overlap_seconds=3600)[0])
        expired, _ = store.create_endpoint("acct", sample_input())
        store.rotate_secret("acct", expired.id, overlap_seconds=10)
        clock.advance(0.25)
        written.append(store.set_paused("acct", expired.id, False))
        clock.advance(20)  # the last one's overlap is over: its expiry is not shown
        written[-1] = written[-1].model_copy(update={"previous_secret_expires_at": None})

        assert written[1].paused and written[1].previous_secret_expires_at is not None
        assert written[1].circuit_breaker is not None
        for endpoint in written:
            shown = store.get_shown("acct", endpoint.id)
            assert store.get_endpoint("acct", endpoint.id) == endpoint
            assert endpoint_answer(shown).body == TypeAdapter(Endpoint).dump_json(endpoint)
        page = store.page_shown("acct", limit=10)
        ordered = sorted(written, key=lambda e: (e.created_at, e.id))
        assert store.page_endpoints("acct", limit=10) == tuple(ordered)
        expected = EndpointPage(data=ordered, next_cursor="next").model_dump_json()
        assert page_answer(page, "next").body == expected.encode()
    finally:
        store.close()
