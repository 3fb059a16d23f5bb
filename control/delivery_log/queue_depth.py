"""How many batches wait in the delivery log queue (a passive declare on a short connection)."""

from __future__ import annotations

from broker.connection import blocking_connection
from broker.url import BrokerUrl
from config.topology import DELIVERY_LOG_QUEUE


def queue_depth(broker: BrokerUrl) -> int:
    """Messages ready in the delivery log queue; raises BrokerError if it cannot be read."""
    with blocking_connection(
        broker, name="webhook-recorder queue depth", operation="reading the queue depth"
    ) as connection:
        frame = connection.channel().queue_declare(DELIVERY_LOG_QUEUE, passive=True)
        return int(frame.method.message_count)
