"""The runnable receivers in examples/receivers/ do what the README tells merchants:
verify, skip test events, deduplicate on X-Webhook-Id, and never let an older
update of an order overwrite a newer one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from wire.json_body import encode_body
from wire.samples import sample_data
from wire.signature import now_ms, sign

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_example_receiver_secret"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _command(kind: str) -> list[str]:
    if kind == "python":
        return [sys.executable, str(ROOT / "examples/receivers/verify.py")]
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is not installed (apt-get install -y nodejs)")
        pytest.skip("node is not installed")
    return [node, str(ROOT / "examples/receivers/verify.js")]


@pytest.fixture(params=["python", "node"])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = _free_port()
    log = tmp_path / "receiver.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            _command(request.param),
            env={**os.environ, "WEBHOOK_SECRET": SECRET, "PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while "listening" not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/webhook", log
    finally:
        process.terminate()
        process.wait(timeout=10)


def _post(url: str, event: str, data: dict[str, object], event_id: str, **extra: str) -> dict:
    body = encode_body({"event": event, "data": data, "timestamp": "2026-02-02T14:15:30.456Z"})
    headers = {
        "Content-Type": "application/json",
        "X-Webhook-Signature": sign(SECRET, body, now_ms()),
        "X-Webhook-Event": event,
        "X-Webhook-Attempt": "1",
        "X-Webhook-Id": event_id,
        **extra,
    }
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_example_receivers_skip_tests_deduplicate_and_keep_the_newest(
    receiver: tuple[str, Path],
) -> None:
    url, log = receiver
    shipped = {**sample_data("order.updated"), "id": "o-1", "orderNumber": "ORD-1"}
    shipped.update(status="shipped", updatedAt="2026-02-02T14:15:30.000Z")
    confirmed = {**shipped, "status": "confirmed", "updatedAt": "2026-02-01T09:00:00.000Z"}

    assert _post(url, "order.created", shipped, "evt_t", **{"X-Webhook-Test": "true"}) == {
        "received": True,
        "test": True,
    }
    assert _post(url, "order.updated", shipped, "evt_1") == {"received": True}
    assert _post(url, "order.updated", shipped, "evt_1") == {"received": True, "duplicate": True}
    # The older update arrives last (no ordering across events): it must not win.
    assert _post(url, "order.updated", confirmed, "evt_0") == {"received": True}

    bad = urllib.request.Request(
        url, data=b"{}", headers={"X-Webhook-Signature": "t=1,v1=00"}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=10)  # loopback only
    assert refused.value.code == 401
    refused.value.close()

    time.sleep(0.2)
    lines = [line for line in log.read_text().splitlines() if "ORD-1" in line]
    assert lines == [
        "order.updated ORD-1 shipped",
        "stale order.updated ORD-1 (a newer update was handled)",
    ]
