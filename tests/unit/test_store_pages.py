"""What the HTTP API needs from the store: pages of endpoints, one endpoint's secrets,
the version of a deletion, and the names of the fields an input error is about."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from config.errors import InvalidInputError, NotFoundError
from control.store.endpoints import EndpointStore
from control.store.models import Endpoint, EndpointInput, EndpointPatch
from tests.support.store import ManualClock, open_sqlite_store, sample_input


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> Iterator[EndpointStore]:
    store = open_sqlite_store(tmp_path, clock)
    yield store
    store.close()


def test_pages_follow_creation_order_and_ids_within_one_instant(
    store: EndpointStore, clock: ManualClock
) -> None:
    made: list[Endpoint] = []
    for index in range(7):
        made.append(store.create_endpoint("acct", sample_input())[0])
        if index % 3 == 0:
            clock.advance(1)  # some share a created_at, some do not
    store.create_endpoint("other", sample_input())
    expected = sorted(made, key=lambda e: (e.created_at, e.id))
    seen: list[Endpoint] = []
    after: tuple[datetime, str] | None = None
    while True:
        page = store.page_endpoints("acct", limit=3, after=after)
        seen.extend(page)
        if len(page) < 3:
            break
        after = (page[-1].created_at, page[-1].id)
    assert [e.id for e in seen] == [e.id for e in expected]
    assert list(store.list_endpoints("acct")) == seen


def test_a_page_may_follow_a_deleted_endpoint(store: EndpointStore) -> None:
    first, second, third = (store.create_endpoint("acct", sample_input())[0] for _ in range(3))
    ordered = sorted([first, second, third], key=lambda e: (e.created_at, e.id))
    store.delete_endpoint("acct", ordered[0].id)
    page = store.page_endpoints("acct", limit=10, after=(ordered[0].created_at, ordered[0].id))
    assert [e.id for e in page] == [e.id for e in ordered[1:]]


def test_pages_of_an_unknown_account_are_not_found(store: EndpointStore) -> None:
    endpoint, _ = store.create_endpoint("acct", sample_input())
    for account in ("nobody", "bad account"):
        with pytest.raises(NotFoundError):
            store.page_endpoints(account, limit=10)
    store.delete_endpoint("acct", endpoint.id)
    assert store.page_endpoints("acct", limit=10) == ()  # known account, no endpoints


def test_one_endpoint_with_its_secret_only_for_its_account(store: EndpointStore) -> None:
    endpoint, secret = store.create_endpoint("acct", sample_input())
    loaded = store.get_endpoint_with_secrets("acct", endpoint.id)
    assert loaded.endpoint == endpoint and loaded.secret == secret
    assert loaded.subscriber().id == endpoint.id
    with pytest.raises(NotFoundError):
        store.get_endpoint_with_secrets("other", endpoint.id)


def test_delete_returns_the_version_the_workers_see(store: EndpointStore) -> None:
    endpoint, _ = store.create_endpoint("acct", sample_input())
    version = store.delete_endpoint("acct", endpoint.id)
    assert version == endpoint.version + 1 == store.load_all().version


def test_input_errors_name_their_fields() -> None:
    with pytest.raises(InvalidInputError) as caught:
        EndpointInput.parse({"url": "ftp://x", "events": [], "retries": 1})
    assert caught.value.fields == ("url", "events", "retries")
    with pytest.raises(InvalidInputError) as caught:
        EndpointPatch.parse({"circuit_breaker": {"failure_threshold": 0}})
    assert caught.value.fields == ("circuit_breaker.failure_threshold",)


def test_store_refusals_name_their_fields(store: EndpointStore) -> None:
    endpoint, _ = store.create_endpoint("acct", sample_input())
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: store.create_endpoint("a b", sample_input()), "account"),
        (lambda: store.rotate_secret("acct", endpoint.id, -1), "overlap_seconds"),
        (lambda: store.set_paused("acct", endpoint.id, True, "x" * 501), "reason"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidInputError) as caught:
            call()
        assert caught.value.fields == (field,)
