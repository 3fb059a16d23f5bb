"""Verify Chatsvia webhooks in Python: standard library only, copy freely.

    WEBHOOK_SECRET=whsec_... python verify.py     # listens on :8000, POST /webhook

Header: ``X-Webhook-Signature: t=<unix ms>,v1=<hex HMAC-SHA256>``, the MAC
taken over ``b"<t>." + body``.  Verify the *raw* request bytes: we send the
body already in ``JSON.stringify`` form, so re-serialising it yourself (with
``json.dumps``) would only introduce differences (``1250`` vs ``1250.0``,
``\\u09b0`` vs raw Bengali...).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, HTTPServer

TOLERANCE_SECONDS = 300  # refuse replays of old deliveries
SEEN_LIMIT = 100_000  # in production: a unique key on X-Webhook-Id in your database

# Event ids already handled: every attempt and every replay carries the same one.
seen: OrderedDict[str, None] = OrderedDict()
# Per order, the newest updatedAt handled: events of one order may arrive out of order.
latest: dict[str, str] = {}


def verify_signature(raw_body: bytes, header: str, secrets: list[str]) -> bool:
    """True if any v1 entry matches any secret and t= is recent enough."""
    parts = [p.strip().partition("=") for p in header.split(",")]
    timestamps = [value for key, _, value in parts if key == "t"]
    signatures = [value for key, _, value in parts if key == "v1"]
    t = timestamps[0] if len(timestamps) == 1 else ""
    if not (t.isascii() and t.isdigit()) or not signatures:
        return False
    if abs(time.time() * 1000 - int(t)) > TOLERANCE_SECONDS * 1000:
        return False
    # Several secrets let you rotate: keep the old one until deliveries
    # signed with it have drained.
    for secret in secrets:
        expected = hmac.new(secret.encode(), t.encode() + b"." + raw_body, hashlib.sha256)
        for candidate in signatures:
            # compare_digest: constant time, so timing leaks nothing.
            if hmac.compare_digest(expected.hexdigest(), candidate):
                return True
    return False


def handle(event_type: str, order: dict[str, object]) -> None:
    """Your business logic; here, print what would change."""
    stamp = str(order.get("updatedAt") or order.get("createdAt") or "")
    order_id = str(order.get("id"))
    # ISO-8601 UTC strings compare correctly as text.
    if stamp < latest.get(order_id, ""):
        print("stale", event_type, order.get("orderNumber"), "(a newer update was handled)")
        return
    latest[order_id] = stamp
    print(event_type, order.get("orderNumber"), order.get("status"), flush=True)


class WebhookHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        secrets = os.environ["WEBHOOK_SECRET"].split(",")
        if not verify_signature(raw, self.headers.get("X-Webhook-Signature", ""), secrets):
            return self._reply(401, {"error": "Invalid signature"})
        event = json.loads(raw)  # parse only once the bytes are trusted
        if self.headers.get("X-Webhook-Test") == "true":
            # "Verify & Test" from the dashboard: answer 2xx, change nothing.
            return self._reply(200, {"received": True, "test": True})
        event_id = self.headers.get("X-Webhook-Id", "")
        if event_id in seen:
            # A retry after a lost answer, or a replay: already handled.
            return self._reply(200, {"received": True, "duplicate": True})
        handle(self.headers.get("X-Webhook-Event", ""), event["data"])
        seen[event_id] = None
        if len(seen) > SEEN_LIMIT:
            seen.popitem(last=False)
        self._reply(200, {"received": True})

    def _reply(self, status: int, payload: dict[str, object]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    print(f"listening on :{port}")
    HTTPServer(("", port), WebhookHandler).serve_forever()
