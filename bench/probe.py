"""How fast the receiver alone answers: signed POSTs straight at it, no broker, no worker.

``python -m bench.probe URL --secret S --count N --seconds T --concurrency C`` prints
one JSON line ``{"requests": n, "seconds": s, "rate": r}``.  Bounded by both the
count and the time; loopback URLs only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from urllib.parse import urlsplit

import aiohttp

from wire.envelope import build_envelope, new_event_id
from wire.samples import sample_data
from wire.signature import now_ms, sign


async def _probe(
    url: str, secret: str, count: int, seconds: float, concurrency: int
) -> dict[str, float]:
    body = build_envelope("order.created", sample_data("order.created"))
    deadline = time.monotonic() + seconds
    sent = 0
    failures = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal sent, failures
        while sent < count and time.monotonic() < deadline:
            sent += 1
            headers = {
                "Content-Type": "application/json",
                "X-Webhook-Signature": sign(secret, body, now_ms()),
                "X-Webhook-Event": "order.created",
                "X-Webhook-Attempt": "1",
                "X-Webhook-Id": new_event_id(),
            }
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    failures += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"requests": sent, "failures": failures, "seconds": elapsed, "rate": sent / elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--secret", default=os.environ.get("BENCH_SECRET", ""))
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the probe only sends to loopback addresses")
    result = asyncio.run(_probe(args.url, args.secret, args.count, args.seconds, args.concurrency))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
