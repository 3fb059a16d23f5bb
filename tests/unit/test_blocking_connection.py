"""Every failure to open a blocking connection is the project's error (and retried where
the caller retries), a handshake timed out by a busy broker included."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout

from broker.change_notices import ChangeNotice, ChangeNoticePublisher
from broker.connection import blocking_connection
from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError
from producer.publisher import Publisher
from wire.samples import sample_data


@pytest.mark.parametrize(
    "failure",
    [
        AMQPConnectorStackTimeout("Timeout during AMQP handshake"),  # a busy broker
        pika.exceptions.AMQPConnectionError("refused"),
    ],
)
def test_a_failed_connect_is_broker_unavailable(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    def connect(*_args: Any, **_kwargs: Any) -> None:
        raise failure

    monkeypatch.setattr(pika, "BlockingConnection", connect)
    broker = BrokerUrl.parse("amqp://guest:hunter2@127.0.0.1:1/")
    with (
        pytest.raises(BrokerUnavailableError, match="cannot connect") as raised,
        blocking_connection(broker, name="t", operation="declaring"),
    ):
        pass
    assert "hunter2" not in str(raised.value)


def _timed_out_handshake(*_args: Any, **_kwargs: Any) -> None:
    raise AMQPConnectorStackTimeout("Timeout during AMQP handshake")


def test_a_publisher_retries_a_timed_out_handshake_then_reports_the_broker_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def connect(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        _timed_out_handshake(*args, **kwargs)

    monkeypatch.setattr(pika, "BlockingConnection", connect)
    broker = BrokerUrl.parse("amqp://guest:hunter2@127.0.0.1:1/")
    publisher = Publisher(
        broker, connect_attempts=3, max_retry_seconds=5.0, backoff_initial_seconds=0.01
    )
    with pytest.raises(BrokerUnavailableError) as raised:
        publisher.publish("order.created", sample_data("order.created"), account="acme")
    # Retried as any other transient connect failure, not escaped on the first.
    assert len(calls) == 3
    assert "hunter2" not in str(raised.value)


def test_a_change_notice_publisher_turns_a_timed_out_handshake_into_broker_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pika, "BlockingConnection", _timed_out_handshake)
    publisher = ChangeNoticePublisher(BrokerUrl.parse("amqp://guest:hunter2@127.0.0.1:1/"))
    with pytest.raises(BrokerUnavailableError, match="change notice") as raised:
        publisher.publish(ChangeNotice(1, "acme", "ep-1", "created"))
    assert "hunter2" not in str(raised.value)
