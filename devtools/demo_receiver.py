"""A demo merchant endpoint: verifies each webhook's signature and prints it.

``python -m devtools.demo_receiver`` serves ``POST /webhook`` on ``$HOST:$PORT``
(default 127.0.0.1:8080) with the secret from ``$WEBHOOK_SECRET``.  Set
``DEMO_FAIL_RATE=0.3`` to answer 500 to 30% of first attempts and watch retries
(never to a test delivery, ``X-Webhook-Test: true``: that one checks the endpoint).
It is what a receiver should do: verify first, reject on mismatch, answer fast.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

from aiohttp import web

from config.errors import SignatureError
from wire.contract import HTTP_TEST
from wire.signature import verify


def build_app(secret: str, *, fail_rate: float = 0.0, quiet: bool = False) -> web.Application:
    """The receiver as an aiohttp application (used by the demo and by the benchmark)."""
    seen: set[str] = set()
    # The fail decision is seeded, not cryptographic: this is a demo of retries.
    chooser = random.Random(7)

    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(secret, body, request.headers.get("X-Webhook-Signature", ""))
        except SignatureError as exc:
            print(f"REJECTED  {exc}", flush=True)
            return web.json_response({"error": "Invalid signature"}, status=401)
        attempt = request.headers.get("X-Webhook-Attempt", "?")
        event_id = request.headers.get("X-Webhook-Id", "?")
        testing = request.headers.get(HTTP_TEST) == "true"
        if attempt == "1" and fail_rate and not testing and chooser.random() < fail_rate:
            print(f"FAILING   {event_id} attempt {attempt} (demo failure)", flush=True)
            return web.json_response({"error": "demo failure"}, status=500)
        duplicate = event_id in seen
        seen.add(event_id)
        if not quiet:
            data = json.loads(body).get("data", {})
            print(
                f"VERIFIED  {request.headers.get('X-Webhook-Event')} {event_id} "
                f"attempt {attempt} order {data.get('orderNumber', '-')} "
                f"status {data.get('status', '-')}{' (duplicate)' if duplicate else ''}",
                flush=True,
            )
        return web.json_response({"received": True})

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo-receiver", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    args = parser.parse_args(argv)
    secret = os.environ.get("WEBHOOK_SECRET")
    if not secret:
        print("demo-receiver: error: set WEBHOOK_SECRET", file=sys.stderr)
        return 2
    fail_rate = float(os.environ.get("DEMO_FAIL_RATE", "0"))
    print(f"demo receiver on http://{args.host}:{args.port}/webhook", flush=True)
    web.run_app(
        build_app(secret, fail_rate=fail_rate),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
