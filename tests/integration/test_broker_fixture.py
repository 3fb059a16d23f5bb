"""The broker fixtures themselves: real connections, real quorum queues, a real restart."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from devtools.rabbitmq_inspection import queue_depth
from devtools.rabbitmq_node import LocalRabbitMQ

QUORUM = {"x-queue-type": "quorum"}


@contextlib.contextmanager
def confirmed_channel(url: str) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        yield channel
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def publish_persistent(channel: BlockingChannel, queue: str, body: bytes) -> None:
    # With confirm_delivery(), basic_publish raises on nack or (mandatory) unroutable.
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        body=body,
        properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
        mandatory=True,
    )


def test_vhost_url_quorum_queue_publish_with_confirms(vhost_url: str, unique_name: str) -> None:
    queue = unique_name
    with confirmed_channel(vhost_url) as channel:
        channel.queue_declare(queue, durable=True, arguments=QUORUM)
        publish_persistent(channel, queue, b'{"id": 1}')
    assert queue_depth(vhost_url, queue) == 1


@pytest.mark.parametrize("attempt", [1, 2])
def test_vhost_url_is_fresh_for_every_test(vhost_url: str, rabbitmq_url: str, attempt: int) -> None:
    if vhost_url == rabbitmq_url:
        pytest.skip("external broker without management API: vhost_url is the shared vhost")
    # Same queue name in both runs: each must start from an empty vhost.
    queue = "same-name-every-time"
    with confirmed_channel(vhost_url) as channel:
        channel.queue_declare(queue, durable=True, arguments=QUORUM)
        assert queue_depth(vhost_url, queue) == 0
        publish_persistent(channel, queue, f"attempt {attempt}".encode())
    assert queue_depth(vhost_url, queue) == 1


def test_unroutable_publish_is_reported(vhost_url: str, unique_name: str) -> None:
    with confirmed_channel(vhost_url) as channel, pytest.raises(pika.exceptions.UnroutableError):
        publish_persistent(channel, unique_name, b"nobody listens")


def test_quorum_queue_message_survives_broker_restart(
    rabbitmq_node: LocalRabbitMQ, unique_name: str
) -> None:
    url = rabbitmq_node.url
    with confirmed_channel(url) as channel:
        channel.queue_declare(unique_name, durable=True, arguments=QUORUM)
        publish_persistent(channel, unique_name, b"survivor")
    assert queue_depth(url, unique_name) == 1

    rabbitmq_node.restart()

    assert rabbitmq_node.is_running
    assert rabbitmq_node.url == url  # same port after restart
    assert queue_depth(url, unique_name) == 1
    with confirmed_channel(url) as channel:
        method, _properties, body = channel.basic_get(unique_name, auto_ack=True)
        assert method is not None
        assert body == b"survivor"
    assert queue_depth(url, unique_name) == 0
    assert unique_name in rabbitmq_node.ctl("-q", "list_queues", "name")
