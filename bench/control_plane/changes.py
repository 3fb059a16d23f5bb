"""How soon a change made through the API reaches a running worker (store-backed workers only).

Each change is made through ``webhook-api`` (which commits it and sends a
change notice on ``webhooks.control``); the clock starts when the API has
answered.  Then an ``order.created`` event of the endpoint's account is
published every 20 ms (``Publisher.publish(..., account=...)``; while no
queue is bound for the account the broker returns it as unroutable) until the
receiver sees a delivery at the endpoint's URL.  Two kinds of change:

* **create**: a new endpoint for a new account; visible = its first delivery;
* **URL change**: PATCH that endpoint's ``url``; visible = the first delivery
  at the new URL.

So each figure is API answer to first delivery: the worker noticing the change
(notice or periodic reconciliation), declaring and binding or re-pointing the
lane, plus one publish-to-delivery hop and up to 20 ms of polling.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

from bench.control_plane.api_load import ApiServer
from bench.control_plane.plan import BenchError, percentile, say
from bench.control_plane.receiver import Receiver
from broker.url import BrokerUrl
from config.errors import UnroutableError
from producer import Publisher
from wire.samples import sample_data

EVENT = "order.created"
PUBLISH_EVERY = 0.02


@dataclass
class ChangeRow:
    change: str
    made: int = 0
    seen: int = 0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    note: str = ""


def _until_delivered(
    publisher: Publisher, account: str, receiver: Receiver, path: str, since: float, timeout: float
) -> float | None:
    """Seconds from ``since`` to the first delivery at ``path``; None after ``timeout``."""
    data = sample_data(EVENT)
    while time.monotonic() < since + timeout:
        with contextlib.suppress(UnroutableError):  # no queue of the account is bound yet
            publisher.publish(EVENT, data, account=account)
        look_until = time.monotonic() + PUBLISH_EVERY
        while True:
            hit = receiver.first_hit(path)
            if hit is not None:
                return hit - since
            if time.monotonic() > look_until:
                break
            time.sleep(0.002)
    return None


def _row(change: str, seconds: list[float | None], timeout: float) -> ChangeRow:
    seen = [s for s in seconds if s is not None]
    row = ChangeRow(change, len(seconds), len(seen))
    row.p50_ms, row.p99_ms, row.max_ms = (percentile(seen, q) * 1000 for q in (50, 99, 100))
    if len(seen) < len(seconds):
        row.note = f"{len(seconds) - len(seen)} not delivered within {timeout:.0f} s"
    return row


def measure_changes(
    api: ApiServer, broker: BrokerUrl, receiver: Receiver, count: int, timeout: float, tag: str
) -> list[ChangeRow]:
    """Make ``count`` creates and ``count`` URL changes; time each until it is delivered."""
    say(f"- {count} creates and {count} URL changes through the API ...")
    created: list[float | None] = []
    moved: list[float | None] = []
    publisher = Publisher(broker)
    try:
        publisher.connect()
        for index in range(count):
            account = f"chg-{tag}-{index}"
            path = f"/created/{tag}/{index}"
            status, body = api.request(
                "POST",
                f"/v1/accounts/{account}/endpoints",
                {"url": receiver.base_url + path, "events": ["order.*"]},
            )
            if status != 201:
                raise BenchError(f"creating an endpoint answered {status}: {body}")
            since = time.monotonic()
            created.append(_until_delivered(publisher, account, receiver, path, since, timeout))
            moved_path = f"/moved/{tag}/{index}"
            status, body = api.request(
                "PATCH",
                f"/v1/accounts/{account}/endpoints/{body['id']}",
                {"url": receiver.base_url + moved_path},
            )
            if status != 200:
                raise BenchError(f"changing an endpoint's URL answered {status}: {body}")
            since = time.monotonic()
            moved.append(_until_delivered(publisher, account, receiver, moved_path, since, timeout))
    finally:
        publisher.close()
    return [
        _row("create, until its first delivery", created, timeout),
        _row("URL change, until the first delivery there", moved, timeout),
    ]
