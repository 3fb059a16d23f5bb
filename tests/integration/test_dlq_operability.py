"""webhook-dlq as an operator meets it: no secret needed to read, a REASON column,
no status 0 for a timeout, and at a terminal the audit line goes to a file."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from broker.declarer import declare_topology
from config.topology import dead_letter_queue
from tests.integration.test_dead_letters import put_dead_letter
from tests.support.amqp import depth
from tests.support.worker_harness import make_settings, subscriber

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# The secret comes from a variable this environment does not set.
FILE = """\
subscribers:
  - id: shop
    account: acme
    url: https://shop.example/webhook
    secret: ${SHOP_SECRET_NOT_SET_HERE}
    events: ["order.*"]
"""


@pytest.fixture
def prepared(vhost_url: str, tmp_path: Path) -> dict[str, str]:
    settings = make_settings(vhost_url, [subscriber("shop", "http://127.0.0.1:9/")])
    declare_topology(settings.broker, settings.subscribers, settings.retry)
    config = tmp_path / "subscribers.yaml"
    config.write_text(FILE, encoding="utf-8")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "RABBITMQ_URL": vhost_url,
        "WEBHOOK_CONFIG": str(config),
        "DLQ_BACKUP_DIR": str(tmp_path / "state" / "dlq-backups"),
    }


def _dlq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.dlq", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_read_only_commands_need_no_secret_and_show_the_reason(
    prepared: dict[str, str],
) -> None:
    url = prepared["RABBITMQ_URL"]
    put_dead_letter(url, "shop", "evt_timeout", status=0, error="timed out after 10 s")
    done = _dlq(prepared, "list", "--subscriber", "shop")
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()[-2:]
    assert "REASON" in header.split()
    cells = row.split()
    assert "exhausted" in cells  # the worker's reason header
    assert "0" not in cells  # no HTTP answer is '-', not a status 0
    # The worker itself still needs the secret.
    check = subprocess.run(
        [sys.executable, "-m", "worker", "check-config"],
        cwd=ROOT,
        env=prepared,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 3
    assert "SHOP_SECRET_NOT_SET_HERE is not set" in check.stderr


def test_at_a_terminal_the_audit_line_goes_to_a_file(
    prepared: dict[str, str], tmp_path: Path
) -> None:
    url = prepared["RABBITMQ_URL"]
    put_dead_letter(url, "shop", "evt_gone")
    leader, follower = pty.openpty()  # stderr is a terminal, stdout a pipe
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.dlq", "purge", "--subscriber", "shop", "--yes"],
            cwd=ROOT,
            env=prepared,
            stdout=subprocess.PIPE,
            stderr=follower,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        out, _ = process.communicate(timeout=60)
        os.close(follower)
        follower = -1
        err = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert process.returncode == 0, err
    text = err.decode()
    audit_file = tmp_path / "state" / "audit.jsonl"
    assert f"audit line appended to {audit_file}" in text
    assert "{" not in text  # no raw JSON at the terminal
    [line] = [json.loads(x) for x in audit_file.read_text(encoding="utf-8").splitlines()]
    assert line["event"] == "dlq_purged" and line["counts"]["purged"] == 1
    assert oct(audit_file.stat().st_mode & 0o777) == "0o600"
    assert "purged 1 dead letter" in out
    assert depth(url, dead_letter_queue("shop")) == 0
