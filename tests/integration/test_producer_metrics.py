"""The producer's metrics against a real RabbitMQ, read the way Prometheus reads them.

Events go to a real broker (published, unroutable), to no broker at all
(unavailable), and through a spool that fills while the broker is unreachable
and drains into the real one. The counters are read from the default registry
and from ``start_http_server``'s /metrics, the exposition the README documents.
"""

from __future__ import annotations

import contextlib
import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import start_http_server
from pydantic import SecretStr

from broker.declarer import declare_topology
from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError, UnroutableError
from config.subscribers import RetryPolicy, Subscriber
from config.topology import work_queue
from devtools.rabbitmq_inspection import queue_depth
from producer import Publisher
from producer.spool import SpoolingPublisher
from tests.support.worker_harness import ACCOUNT
from tests.unit.test_producer_metrics import Counts, calls, published
from wire.samples import sample_data

SHOP = Subscriber(
    id="shop",
    account=ACCOUNT,
    url="https://shop.example/webhook",
    secret=SecretStr("secret-shop"),
    events=("order.*",),
)
ORDER = sample_data("order.created")


@pytest.fixture
def broker(vhost_url: str) -> BrokerUrl:
    url = BrokerUrl.parse(vhost_url)
    declare_topology(url, [SHOP], RetryPolicy(delays_seconds=(1.0,)))
    return url


@pytest.fixture
def metrics_url() -> Iterator[str]:
    """/metrics of this process, served as a producer would serve it."""
    server, thread = start_http_server(0, addr="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _unreachable() -> BrokerUrl:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return BrokerUrl.parse(f"amqp://guest:guest@127.0.0.1:{port}/%2F")


def _quick(broker: BrokerUrl) -> Publisher:
    return Publisher(broker, connect_attempts=2, max_retry_seconds=2, backoff_max_seconds=0.1)


def _scraped(url: str) -> dict[str, float]:
    """``name{labels}`` -> value of every producer sample on ``url``."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(webhook_producer_\w+)(\{[^}]*\})? (\S+)", line)
        if match:
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def test_publish_outcomes_are_counted_and_exposed(
    vhost_url: str, broker: BrokerUrl, metrics_url: str
) -> None:
    before = _scraped(metrics_url)
    counts = Counts()
    with Publisher(broker) as publisher:
        publisher.publish("order.created", ORDER, account=ACCOUNT)
        with pytest.raises(UnroutableError):
            publisher.publish("note.added", {"n": 1}, account=ACCOUNT)  # shop takes order.*
        publisher.publish_many([(ACCOUNT, "order.created", ORDER)] * 5)
        with pytest.raises(UnroutableError):
            publisher.publish_many([(ACCOUNT, "order.created", ORDER), (ACCOUNT, "note.added", {})])
    with pytest.raises(BrokerUnavailableError):
        _quick(_unreachable()).publish("order.created", ORDER, account=ACCOUNT)

    assert queue_depth(vhost_url, work_queue("shop")) == 7
    assert counts.changes() == {
        published("order.created", "published"): 7,
        published("other", "unroutable"): 2,
        published("order.created", "unavailable"): 1,
        calls("publish"): 3,
        calls("publish_many"): 2,
    }

    # The same numbers on /metrics, under the names the alerts and panels use.
    after = _scraped(metrics_url)
    key = 'webhook_producer_events_published_total{event_type_class="%s",outcome="%s"}'

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert grew(key % ("order.created", "published")) == 7
    assert grew(key % ("other", "unroutable")) == 2
    assert grew(key % ("order.created", "unavailable")) == 1
    assert grew('webhook_producer_publish_duration_seconds_count{call="publish"}') == 3
    assert grew('webhook_producer_publish_duration_seconds_count{call="publish_many"}') == 2
    assert not [name for name in after if "acme" in name or "evt_" in name]


def test_spool_fills_while_the_broker_is_away_and_drains_into_it(
    vhost_url: str, broker: BrokerUrl, metrics_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "spool.db"
    depth = "webhook_producer_spool_depth"
    start = _scraped(metrics_url)[depth]
    counts = Counts()
    with SpoolingPublisher(_quick(_unreachable()), path) as spool:
        for n in range(3):
            spool.publish("order.created", {**ORDER, "id": f"ORD-{n}"}, account=ACCOUNT)
        assert _scraped(metrics_url)[depth] == start + 3
    assert _scraped(metrics_url)[depth] == start  # closed: no longer this process's
    assert counts.changes() == {
        "webhook_producer_spooled_total{reason=unavailable}": 1,
        "webhook_producer_spooled_total{reason=behind_spooled}": 2,
        # The first event tried the broker; each later one tried to flush the first.
        published("order.created", "unavailable"): 3,
        calls("publish"): 3,
    }

    counts = Counts()
    with contextlib.closing(SpoolingPublisher(Publisher(broker), path)) as spool:
        assert _scraped(metrics_url)[depth] == start + 3  # a restarted producer
        assert spool.flush() == 3
        assert _scraped(metrics_url)[depth] == start
    assert queue_depth(vhost_url, work_queue("shop")) == 3
    assert counts.changes() == {
        "webhook_producer_spool_flushed_total{}": 3,
        published("order.created", "published"): 3,
        calls("publish"): 3,
    }
