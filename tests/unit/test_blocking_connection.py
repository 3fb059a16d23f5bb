"""broker.connection.blocking_connection: every failure to connect is the project's error."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout

from broker.connection import blocking_connection
from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError


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
