"""`webhook-worker status` asks a running worker for its lanes: a table, or JSON to script."""

from __future__ import annotations

import asyncio
import json

import pytest

from cli.worker import main as worker_cli
from tests.support.receiver import Receiver
from tests.support.worker_harness import make_settings, running_worker, subscriber

pytestmark = pytest.mark.integration


async def test_status_as_a_table_and_as_json(
    vhost_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = await Receiver().start()
    settings = make_settings(vhost_url, [subscriber("shop", receiver.url)])
    monkeypatch.delenv("WEBHOOK_CONFIG", raising=False)
    try:
        async with running_worker(settings) as worker:
            url = f"http://127.0.0.1:{worker.health.port}/status"
            code = await asyncio.to_thread(worker_cli, ["status", "--url", url])
            # The in-process worker logs to stdout too: read from the status block on.
            lines = capsys.readouterr().out.splitlines()
            assert code == 0
            start = next(i for i, line in enumerate(lines) if line.startswith("ready: "))
            assert lines[start] == "ready: yes"
            header, row = lines[start + 1 : start + 3]
            assert header.split()[:3] == ["SUBSCRIBER", "CIRCUIT", "PAUSED"]
            assert row.split()[:4] == ["shop", "closed", "no", "yes"]

            code = await asyncio.to_thread(worker_cli, ["status", "--url", url, "-o", "json"])
            out = capsys.readouterr().out
            document = json.loads(out[out.index("{\n") :])
            assert code == 0 and document == worker.status()
    finally:
        await receiver.stop()


def test_status_without_a_worker_is_one_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEBHOOK_CONFIG", raising=False)
    assert worker_cli(["status", "--url", "http://127.0.0.1:9/status"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("webhook-worker: error: no worker answers at http://127.0.0.1:9/status")
