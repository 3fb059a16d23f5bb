"""Looking into a running RabbitMQ from the client side: exact queue depths over AMQP,
and calls to the management HTTP API.
"""

from __future__ import annotations

import base64
import contextlib
import json
import urllib.request
from typing import Any


def queue_depth(url: str, queue: str) -> int:
    """Exact number of ready messages in ``queue`` (passive declare over AMQP).

    Prefer this to ``rabbitmqctl list_queues`` or the management API: their
    quorum-queue counts are sampled statistics and lag by seconds.
    Raises pika.exceptions.ChannelClosedByBroker (404) if the queue does not exist.
    """
    import pika

    params = pika.URLParameters(url)
    params.connection_attempts = 3
    params.retry_delay = 0.5
    params.blocked_connection_timeout = 10
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        frame = channel.queue_declare(queue=queue, passive=True)
        return int(frame.method.message_count)
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def management_api(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    user: str = "guest",
    password: str = "guest",
    timeout: float = 10.0,
) -> Any:
    """Call the RabbitMQ management HTTP API (``base_url`` like ``http://127.0.0.1:15672``).

    ``path`` is relative to ``/api/`` and must already be percent-encoded
    (``vhosts/%2F``).  Returns the decoded JSON body, or None for an empty one.
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/api/{path.lstrip('/')}", data=data, method=method
    )
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None
