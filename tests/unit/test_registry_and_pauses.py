"""The subscriber registry's layout (one message of ids, merged, migrated) and the pause check.

No broker: an in-memory queue stands in for ``webhooks.registry`` (with the one
property that matters, a message held unacked by one reader is invisible to the
others), and a fake channel for the pause probe.  tests/integration/
test_registry_and_pauses.py runs both on a real RabbitMQ.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from broker.url import BrokerUrl
from config.subscribers import CircuitBreakerPolicy
from config.topology import pause_marker_queue
from tests.support.worker_harness import subscriber
from worker import pause_follower
from worker.change_notices import parse_notice
from worker.lanes import Lanes
from worker.pause import probe_markers
from worker.registry import FORMAT_HEADER, Contents, Entry, decode, encode, full_check
from worker.subscriber_source import ENABLED, SubscriberSpec

# ---------------------------------------------------------------- the registry


class FakeRegistry:
    """A queue shared by readers: each takes what is ready, acks some, returns the rest."""

    def __init__(self, work_queues: dict[str, int] | None = None) -> None:
        self.ready: list[tuple[bytes, dict[str, Any] | None]] = []
        self.work_queues = dict(work_queues or {})
        self._tags: Iterator[int] = itertools.count(1)

    def put_legacy(self, subscriber_id: str) -> None:
        self.ready.append((subscriber_id.encode(), None))

    def reader(self) -> Reader:
        return Reader(self)

    def all_ids(self) -> set[str]:
        ids: set[str] = set()
        for body, headers in self.ready:
            found = decode(Entry(0, body, headers))
            assert found is not None
            ids |= found
        return ids


class Reader:
    """One worker's view of FakeRegistry during a full check (RegistryQueue)."""

    def __init__(self, queue: FakeRegistry) -> None:
        self.queue = queue
        self.held: dict[int, tuple[bytes, dict[str, Any] | None]] = {}

    def take_all(self) -> list[Entry]:
        entries = []
        for body, headers in self.queue.ready:
            tag = next(self.queue._tags)
            self.held[tag] = (body, headers)
            entries.append(Entry(tag, body, headers))
        self.queue.ready = []
        return entries

    def put(self, body: bytes, headers: dict[str, Any]) -> None:
        self.queue.ready.append((body, headers))

    def ack(self, tags: Collection[int]) -> None:
        for tag in tags:
            del self.held[tag]

    def queue_messages(self, subscriber_id: str) -> int | None:
        return self.queue.work_queues.get(subscriber_id)

    def close(self) -> None:
        """The channel closes: what it still holds goes back to the queue."""
        self.queue.ready.extend(self.held.values())
        self.held.clear()


def check(queue: FakeRegistry, configured: Collection[str]) -> dict[str, int]:
    reader = queue.reader()
    try:
        return full_check(reader, configured)
    finally:
        reader.close()


def test_a_message_holds_every_id_and_says_its_format() -> None:
    body, headers = encode(["b", "a", "b"])
    assert headers == {FORMAT_HEADER: 2}
    assert body == b'{"ids":["a","b"]}'
    assert decode(Entry(1, body, headers)) == {"a", "b"}
    # The same body without the header is not read as ids, nor is garbage with it.
    assert decode(Entry(1, body, None)) is None
    assert decode(Entry(1, b"not json", headers)) is None
    assert decode(Entry(1, b'{"ids": [1]}', headers)) is None
    assert decode(Entry(1, b"shop-1", None)) == {"shop-1"}  # the old layout


def test_the_full_check_leaves_one_message_and_reports_removed_ids_with_queues() -> None:
    queue = FakeRegistry(work_queues={"a": 0, "b": 0, "old": 3})
    assert check(queue, ["a", "b"]) == {}
    assert len(queue.ready) == 1 and queue.all_ids() == {"a", "b"}
    queue.ready.append(encode(["old"]))  # recorded by another worker's addition
    queue.ready.append(encode(["deleted"]))  # its work queue no longer exists
    assert check(queue, ["a", "b"]) == {"old": 3}
    assert len(queue.ready) == 1 and queue.all_ids() == {"a", "b", "old"}
    # Every check rewrites: no message goes back to the queue (delivery limits).
    check(queue, ["a", "b"])
    assert len(queue.ready) == 1


def test_the_old_one_message_per_id_layout_is_read_once_and_rewritten() -> None:
    queue = FakeRegistry(work_queues={"gone-with-events": 12})
    for subscriber_id in ("a", "b", "gone-with-events", "gone-for-good", "a"):
        queue.put_legacy(subscriber_id)
    assert check(queue, ["a", "b", "c"]) == {"gone-with-events": 12}
    [(_body, headers)] = queue.ready
    assert headers == {FORMAT_HEADER: 2}
    assert queue.all_ids() == {"a", "b", "c", "gone-with-events"}


def test_two_workers_starting_at_once_lose_no_id() -> None:
    queue = FakeRegistry(work_queues={"removed-1": 1, "only-in-registry": 0})
    queue.ready.append(encode(["shared", "removed-1", "only-in-registry"]))
    first = queue.reader()
    probe = first.queue_messages
    seen_by_second: list[dict[str, int]] = []

    def second_runs_meanwhile(subscriber_id: str) -> int | None:
        # While the first holds the message (unacked), the second sees an empty queue.
        if not seen_by_second:
            seen_by_second.append(check(queue, ["shared", "w2-only"]))
        return probe(subscriber_id)

    first.queue_messages = second_runs_meanwhile  # type: ignore[method-assign]
    assert full_check(first, ["shared", "w1-only"]) == {"removed-1": 1, "only-in-registry": 0}
    first.close()
    assert seen_by_second == [{}]  # it could not know: the next check reports them
    assert len(queue.ready) == 2  # both rewrites
    assert queue.all_ids() == {"shared", "w1-only", "w2-only", "removed-1", "only-in-registry"}
    assert check(queue, ["shared"]) == {"removed-1": 1, "only-in-registry": 0}
    assert len(queue.ready) == 1


def test_a_crash_between_rewrite_and_ack_leaves_a_union() -> None:
    queue = FakeRegistry()
    queue.ready.append(encode(["a"]))
    reader = queue.reader()

    def crash(_tags: Collection[int]) -> None:
        raise ConnectionError("worker died")

    reader.ack = crash  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        full_check(reader, ["b"])
    reader.close()
    assert len(queue.ready) == 2 and queue.all_ids() == {"a", "b"}
    check(queue, ["a", "b"])
    assert len(queue.ready) == 1 and queue.all_ids() == {"a", "b"}


def test_unreadable_messages_are_kept_and_logged() -> None:
    queue = FakeRegistry()
    queue.ready.append((b"\x00not an id\x00", None))
    queue.put_legacy("a")
    with capture_logs() as logs:
        check(queue, ["a"])
    assert (b"\x00not an id\x00", None) in queue.ready
    assert [e["messages"] for e in logs if e["event"] == "registry_message_unreadable"] == [1]


def test_contents_count_the_old_layout() -> None:
    body, headers = encode(["x"])
    contents = Contents.of([Entry(1, b"a", None), Entry(2, body, headers), Entry(3, b"%", None)])
    assert (contents.ids, contents.readable, contents.legacy, contents.unreadable) == (
        {"a", "x"},
        [1, 2],
        1,
        1,
    )


# ---------------------------------------------------------------- the pause check


class FakeChannel:
    """Returns a mandatory publish to a queue that does not exist, at the barrier."""

    def __init__(self, existing: set[str]) -> None:
        self.existing = existing
        self.published: list[str] = []
        self.pending: list[str] = []
        self.on_return: Any = None
        self.connection = self
        self.barriers = 0

    def add_on_return_callback(self, callback: Any) -> None:
        self.on_return = callback

    def basic_publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Any, mandatory: bool
    ) -> None:
        assert (exchange, body, mandatory) == ("", b"", True)
        assert properties.expiration == "0"  # never stays in a marker queue
        self.published.append(routing_key)
        if routing_key not in self.existing:
            self.pending.append(routing_key)

    def basic_qos(self, prefetch_count: int) -> None:
        self.barriers += 1

    def process_data_events(self, time_limit: float) -> None:
        method = type("Return", (), {})
        for queue in self.pending:
            returned = method()
            returned.routing_key = queue
            self.on_return(self, returned, None, b"")
        self.pending.clear()


def test_the_pause_check_is_one_pass_whatever_the_number_of_ids() -> None:
    ids = [f"ep-{n}" for n in range(500)]
    channel = FakeChannel({pause_marker_queue("ep-7"), pause_marker_queue("ep-499")})
    assert probe_markers(channel, ids) == {"ep-7", "ep-499"}  # type: ignore[arg-type]
    assert channel.barriers == 1 and len(channel.published) == 500


async def test_each_poll_follows_every_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A marker made elsewhere pauses the lane here; a marker removed resumes it."""
    marked: set[str] = set()
    monkeypatch.setattr(pause_follower, "paused_among", lambda _broker, ids: marked & set(ids))
    lanes = Lanes(BrokerUrl.parse("amqp://localhost/"), pause_poll_seconds=10)
    for name in ("a", "b"):
        spec = SubscriberSpec.of(subscriber(name, "https://x.example/"), CircuitBreakerPolicy())
        lanes.add(spec.subscriber, spec.breaker, ENABLED)
    marked.add("b")
    await lanes._poll_pauses()
    assert (lanes["a"].paused, lanes["b"].paused) == (False, True)
    assert lanes["b"].wanted_prefetch() == 0
    marked.clear()
    lanes["a"].marker_pending = True  # a 410 here, its marker not written yet
    lanes["a"].paused = True
    await lanes._poll_pauses()
    assert (lanes["a"].paused, lanes["b"].paused) == (True, False)


async def test_a_quick_poll_only_resumes_and_an_announcement_checks_one_marker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marked: set[str] = set()
    checked: list[list[str]] = []

    def paused_among(_broker: BrokerUrl, ids: list[str]) -> set[str]:
        checked.append(list(ids))
        return marked & set(ids)

    monkeypatch.setattr(pause_follower, "paused_among", paused_among)
    lanes = Lanes(BrokerUrl.parse("amqp://localhost/"), pause_poll_seconds=10)
    for name in ("a", "b", "c"):
        spec = SubscriberSpec.of(subscriber(name, "https://x.example/"), CircuitBreakerPolicy())
        lanes.add(spec.subscriber, spec.breaker, ENABLED)
    lanes["c"].paused = True
    marked.add("a")
    await lanes._poll_pauses(full=False)  # only the paused lane's marker is checked
    assert checked == [["c"]]
    assert [lanes[n].paused for n in "abc"] == [False, False, False]
    await lanes.check_marker("a")  # announced
    assert checked[-1] == ["a"] and lanes["a"].paused
    await lanes.check_marker("nobody")  # not one of ours: nothing to check
    assert len(checked) == 2


def test_a_pause_announcement_is_a_notice_that_never_wakes_the_reconciler() -> None:
    notice = parse_notice(b'{"version": 0, "pause_marker": "shop"}')
    assert (notice.version, notice.pause_marker) == (0, "shop")
    assert parse_notice(b'{"version": 3}').pause_marker is None
    with pytest.raises(ValueError, match="pause_marker"):
        parse_notice(b'{"version": 0, "pause_marker": 7}')
