"""``Publisher.publish_many`` with pipelined confirms, and pipelined topology declaration."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pika
import pytest
from pydantic import SecretStr

from broker.declarer import declare_topology
from broker.url import BrokerUrl
from config.errors import PayloadError, TopologyError, UnroutableError
from config.subscribers import RetryPolicy, Subscriber
from config.topology import work_queue
from devtools.rabbitmq_inspection import queue_depth
from producer import Publisher
from tests.support.amqp import drain
from tests.support.worker_harness import ACCOUNT
from wire.samples import sample_data

RETRY = RetryPolicy(delays_seconds=(1.0, 2.0))
SHOP = Subscriber(
    id="shop",
    account=ACCOUNT,
    url="https://shop.example/webhook",
    secret=SecretStr("secret-shop"),
    events=("order.*",),
)


@pytest.fixture
def broker(vhost_url: str) -> BrokerUrl:
    return BrokerUrl.parse(vhost_url)


@pytest.fixture
def publisher(broker: BrokerUrl) -> Iterator[Publisher]:
    declare_topology(broker, [SHOP], RETRY)
    with Publisher(broker) as pub:
        yield pub


def orders(count: int) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for _ in range(count):
        yield ACCOUNT, "order.created", sample_data("order.created")


def test_more_events_than_the_window_keep_their_order(vhost_url: str, publisher: Publisher) -> None:
    ids = publisher.publish_many(orders(300), window=16)
    assert len(set(ids)) == 300
    got = drain(vhost_url, work_queue("shop"))
    assert [g.properties.message_id for g in got] == ids


def test_a_list_is_written_in_bursts_and_keeps_its_order(
    vhost_url: str, publisher: Publisher
) -> None:
    ids = publisher.publish_many(list(orders(300)), window=16)
    got = drain(vhost_url, work_queue("shop"))
    assert [g.properties.message_id for g in got] == ids
    assert len(set(ids)) == 300


def test_given_event_ids_are_used(vhost_url: str, publisher: Publisher) -> None:
    events = [
        (ACCOUNT, "order.created", sample_data("order.created"), f"ord-{i}") for i in range(5)
    ]
    assert publisher.publish_many(events) == [f"ord-{i}" for i in range(5)]
    got = drain(vhost_url, work_queue("shop"))
    assert [g.properties.message_id for g in got] == [f"ord-{i}" for i in range(5)]


def test_an_unroutable_event_stops_the_batch_after_the_ones_before_it(
    vhost_url: str, publisher: Publisher
) -> None:
    events = [
        (ACCOUNT, "order.created", sample_data("order.created"), "first"),
        (ACCOUNT, "message.sent", {"text": "nobody listens"}, "second"),
        (ACCOUNT, "order.created", sample_data("order.created"), "third"),
    ]
    with pytest.raises(UnroutableError, match=r"'message\.sent'.*event 2 of the batch"):
        publisher.publish_many(events)
    got = [g.properties.message_id for g in drain(vhost_url, work_queue("shop"))]
    assert got[0] == "first"
    assert "second" not in got
    # The publisher stays usable.
    assert len(publisher.publish_many(orders(3))) == 3


def test_an_invalid_event_publishes_the_ones_before_it_only(
    vhost_url: str, publisher: Publisher
) -> None:
    bad = sample_data("order.created")
    bad["items"][0]["quantity"] = 0
    events = [
        (ACCOUNT, "order.created", sample_data("order.created"), "a"),
        (ACCOUNT, "order.created", sample_data("order.created"), "b"),
        (ACCOUNT, "order.created", bad, "c"),
        (ACCOUNT, "order.created", sample_data("order.created"), "d"),
    ]
    with pytest.raises(PayloadError, match=r"quantity"):
        publisher.publish_many(events)
    got = drain(vhost_url, work_queue("shop"))
    assert [g.properties.message_id for g in got] == ["a", "b"]


def test_missing_exchange_is_unroutable(broker: BrokerUrl) -> None:
    with Publisher(broker) as publisher, pytest.raises(UnroutableError, match="does not exist"):
        publisher.publish_many(orders(3))


def test_a_lost_connection_mid_batch_resends_what_was_not_confirmed(
    vhost_url: str, publisher: Publisher
) -> None:
    def events() -> Iterator[tuple[str, str, dict[str, Any], str]]:
        for i in range(200):
            if i == 120:
                # Pull the link out from under the batch, as a broker restart would.
                publisher._connection.close()
            yield ACCOUNT, "order.created", sample_data("order.created"), f"ev-{i}"

    ids = publisher.publish_many(events(), window=64)
    assert ids == [f"ev-{i}" for i in range(200)]
    got = [g.properties.message_id for g in drain(vhost_url, work_queue("shop"))]
    # At least once: every event is there; unconfirmed ones may be there twice.
    assert set(got) == set(ids)
    assert len(got) <= 200 + 64


def test_pipelined_declaration_names_the_conflicting_queue(
    vhost_url: str, broker: BrokerUrl
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(vhost_url))
    try:
        # A classic queue where the topology wants a quorum queue: the broker refuses.
        connection.channel().queue_declare(work_queue("shop"), durable=True)
    finally:
        connection.close()
    with pytest.raises(TopologyError, match=r"queue webhooks\.shop\.work failed.*other arguments"):
        declare_topology(broker, [SHOP], RETRY)


def test_redeclaring_a_large_topology_is_idempotent(vhost_url: str, broker: BrokerUrl) -> None:
    subscribers = [
        SHOP.model_copy(update={"id": f"shop-{i}", "events": ("order.*", f"shop{i}.#")})
        for i in range(50)
    ]
    declare_topology(broker, subscribers, RETRY)
    with Publisher(broker) as publisher:
        publisher.publish_many(orders(2))
    declare_topology(broker, subscribers, RETRY)
    assert queue_depth(vhost_url, work_queue("shop-49")) == 2
