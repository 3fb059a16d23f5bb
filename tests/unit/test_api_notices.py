"""Change notices: their JSON, and the background sender (in order, off the event loop,
best effort: a broker failure is logged and the request never sees it)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog

from broker.change_notices import ChangeNotice, ChangeNoticePublisher
from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError, PayloadError
from control.api.notices import BrokerChangeNotices


def test_notice_json_round_trip() -> None:
    notice = ChangeNotice(42, "acct_1", "ep-abc", "paused")
    assert notice.to_json() == (
        b'{"version":42,"account":"acct_1","endpoint_id":"ep-abc","change":"paused"}'
    )
    assert ChangeNotice.from_json(notice.to_json()) == notice


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"version":"1","account":"a","endpoint_id":"e","change":"created"}',
        b'{"version":true,"account":"a","endpoint_id":"e","change":"created"}',
        b'{"version":1,"account":2,"endpoint_id":"e","change":"created"}',
        b'{"version":1,"account":"a","endpoint_id":"e","change":"renamed"}',
    ],
)
def test_bad_notice_bodies_are_payload_errors(body: bytes) -> None:
    with pytest.raises(PayloadError, match="change notice"):
        ChangeNotice.from_json(body)


def test_publisher_reports_an_unreachable_broker_without_its_password() -> None:
    publisher = ChangeNoticePublisher(BrokerUrl.parse("amqp://user:pw-77x@127.0.0.1:1/%2F"))
    with pytest.raises(BrokerUnavailableError) as caught:
        publisher.publish(ChangeNotice(1, "a", "ep-a", "created"))
    assert "pw-77x" not in str(caught.value) and "pw-77x" not in repr(publisher)
    publisher.keep_alive()  # nothing to keep alive: no error
    publisher.close()


@dataclass
class FakePublisher:
    """Records what it published and on which thread; fails for chosen versions."""

    fail_versions: set[int] = field(default_factory=set)
    delay: float = 0.0
    published: list[ChangeNotice] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)
    keep_alives: int = 0
    closed: bool = False

    def publish(self, notice: ChangeNotice) -> None:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)  # blocking, as pika is
        if notice.version in self.fail_versions:
            raise BrokerUnavailableError("publishing a change notice failed: connection refused")
        self.published.append(notice)

    def keep_alive(self) -> None:
        self.keep_alives += 1

    def close(self) -> None:
        self.closed = True


def _notices(publisher: FakePublisher, **options: Any) -> BrokerChangeNotices:
    return BrokerChangeNotices(publisher, **options)


async def test_notices_go_out_in_order_on_one_thread_off_the_loop() -> None:
    publisher = FakePublisher(delay=0.02)
    notices = _notices(publisher)
    await notices.start()
    started = time.monotonic()
    for version in range(1, 6):
        notices.publish(ChangeNotice(version, "acct", f"ep-{version}", "updated"))
    assert time.monotonic() - started < 0.02  # handing over never waits for the broker
    await notices.stop()
    assert [n.version for n in publisher.published] == [1, 2, 3, 4, 5]
    assert len(publisher.threads) == 1
    assert threading.current_thread().name not in publisher.threads
    assert publisher.closed


async def test_a_failed_notice_is_logged_and_the_next_still_goes_out() -> None:
    publisher = FakePublisher(fail_versions={2})
    notices = _notices(publisher)
    await notices.start()
    with structlog.testing.capture_logs() as logs:
        for version in (1, 2, 3):
            notices.publish(ChangeNotice(version, "acct", "ep-a", "updated"))
        await notices.stop()
    assert [n.version for n in publisher.published] == [1, 3]
    (failed,) = [entry for entry in logs if entry["event"] == "change_notice_failed"]
    assert failed["version"] == 2 and failed["change"] == "updated"
    assert failed["log_level"] == "warning" and "connection refused" in failed["error"]


async def test_a_full_queue_drops_the_notice_with_a_log_line() -> None:
    publisher = FakePublisher()
    notices = _notices(publisher, max_pending=1)
    with structlog.testing.capture_logs() as logs:
        notices.publish(ChangeNotice(1, "acct", "ep-a", "created"))
        notices.publish(ChangeNotice(2, "acct", "ep-a", "deleted"))  # not started: no room
    assert [entry["version"] for entry in logs if entry["event"] == "change_notice_failed"] == [2]


async def test_idle_connections_are_kept_alive_and_stop_gives_up_after_a_while() -> None:
    publisher = FakePublisher(delay=0.3)
    notices = _notices(publisher, keep_alive_seconds=0.05, drain_seconds=0.1)
    await notices.start()
    await asyncio.sleep(0.2)
    assert publisher.keep_alives >= 2
    for version in range(1, 4):
        notices.publish(ChangeNotice(version, "acct", "ep-a", "updated"))
    with structlog.testing.capture_logs() as logs:
        await notices.stop()
    assert any(entry["event"] == "change_notices_dropped" for entry in logs)
    assert len(publisher.published) < 3
