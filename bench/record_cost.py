"""``python -m bench.record_cost``: what one delivery-log record costs the worker's thread.

Builds 20,000 attempt records as the worker does (``worker.attempt_capture``:
secrets masked), hands each to an ``AttemptLog`` (never started: no broker, the
buffer only), then encodes them in batches of 250 as its outbox does; prints
the best of 5 rounds in microseconds per record.  The answer carries the four
allow-listed headers nginx or aiohttp send and the event its ~700-byte body
(a first attempt).  A figure for comparing trees on one machine, back to
back: it says nothing of the broker or the network.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import sys
import time

from broker.url import BrokerUrl
from config.subscribers import Subscriber
from wire.queued_event import QueuedEvent
from worker import attempt_log
from worker.attempt_capture import capture
from worker.delivery import DeliveryResult

RECORDS = 20_000
ROUNDS = 5
BATCH = 250


def _inputs() -> tuple[Subscriber, QueuedEvent, DeliveryResult]:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    subscriber = Subscriber.model_validate(
        {
            "id": "shop",
            "account": "acme",
            "url": "https://shop.example/hooks",
            "secret": secret,
            "events": ["order.*"],
        }
    )
    body = b'{"type":"order.created","data":{' + b'"x":1,' * 110 + b'"y":2}}'
    event = QueuedEvent("evt_1", "order.created", 1, body, None, None, "acme")
    headers = (
        ("content-type", "application/json; charset=utf-8"),
        ("content-length", "11"),
        ("date", "Mon, 30 Nov 2026 08:00:00 GMT"),
        ("server", "Python/3.11 aiohttp/3.14"),
    )
    result = DeliveryResult(
        "success", 200, 0.002, None, response_excerpt=b'{"ok":true}', response_headers=headers
    )
    return subscriber, event, result


async def _round(
    subscriber: Subscriber, event: QueuedEvent, result: DeliveryResult
) -> tuple[float, float]:
    log = attempt_log.AttemptLog(BrokerUrl.parse("amqp://bench:bench@127.0.0.1:1/"))
    kept = []
    gc.collect()
    started = time.perf_counter()
    for _ in range(RECORDS):
        record = capture(subscriber, event, result, None)
        log.record(record)
        kept.append(record)
    built = time.perf_counter()
    for offset in range(0, RECORDS, BATCH):
        attempt_log.ROUTE.encode(kept[offset : offset + BATCH])
    encoded = time.perf_counter()
    # Never started: nothing to stop (the records go nowhere).
    return (built - started) / RECORDS * 1e6, (encoded - built) / RECORDS * 1e6


async def _main() -> None:
    inputs = _inputs()
    rounds = [await _round(*inputs) for _ in range(ROUNDS)]
    build = min(r[0] for r in rounds)
    encode = min(r[1] for r in rounds)
    print(
        f"build and hand over {build:.1f} us/record, encode {encode:.1f} us/record, "
        f"total {build + encode:.1f} us (best of {ROUNDS} x {RECORDS:,})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    asyncio.run(_main())
