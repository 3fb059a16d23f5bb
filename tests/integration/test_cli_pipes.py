"""The tools behave like Unix tools on real pipes: a reader that goes away early
(`| head -1`) costs no traceback and, for webhook-publish, no unpublished event;
JSON lines on stdin publish one event per line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from broker.declarer import declare_topology
from config.settings import load_settings
from config.topology import work_queue
from tests.support.amqp import depth, drain
from tests.support.worker_harness import ACCOUNT
from wire.samples import sample_data

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _subscriber_file(tmp_path: Path, count: int = 1) -> Path:
    entries = "".join(
        f"  - id: shop{'' if i == 0 else f'-{i}'}\n"
        f"    account: {ACCOUNT}\n"
        f"    url: https://shop{i}.example/webhook/with/a/long/path/so/the/table/is/wide\n"
        "    secret: s3cret-value\n"
        '    events: ["order.*"]\n'
        for i in range(count)
    )
    path = tmp_path / "subscribers.yaml"
    path.write_text(f"subscribers:\n{entries}retry:\n  delays_seconds: [1, 2]\n", "utf-8")
    return path


def _env(url: str, config: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "RABBITMQ_URL": url,
        "WEBHOOK_CONFIG": str(config),
        "LOG_FORMAT": "console",
    }


def _piped_into_head(command: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``command | head -1`` with real pipes; return its exit code, the line, stderr."""
    producer = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    head = subprocess.run(
        ["head", "-1"], stdin=producer.stdout, capture_output=True, text=True, timeout=120
    )
    assert producer.stdout is not None
    producer.stdout.close()  # head has gone: the pipe has no reader any more
    assert producer.stderr is not None
    with producer.stderr:
        err = producer.stderr.read().decode()
    code = producer.wait(timeout=120)
    return code, head.stdout, err


def test_publish_into_head_publishes_every_event_without_a_traceback(
    vhost_url: str, tmp_path: Path
) -> None:
    config = _subscriber_file(tmp_path)
    settings = load_settings(_env(vhost_url, config))
    declare_topology(settings.broker, settings.subscribers, settings.retry)
    command = [
        sys.executable,
        "-m",
        "cli.publish",
        "order.created",
        "--sample",
        "--account",
        ACCOUNT,
        "--count",
        "3000",
    ]
    code, line, err = _piped_into_head(command, _env(vhost_url, config))
    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert line.startswith("evt_")
    assert depth(vhost_url, work_queue("shop")) == 3000  # nothing stopped half way


def test_check_config_into_head_exits_quietly(vhost_url: str, tmp_path: Path) -> None:
    # 600 rows: far more than a pipe buffer, so the write really hits the closed pipe.
    config = _subscriber_file(tmp_path, count=600)
    command = [sys.executable, "-m", "worker", "check-config"]
    code, line, err = _piped_into_head(command, _env(vhost_url, config))
    assert code == 0, err
    assert err == ""
    assert line.startswith("config: ")


def test_json_lines_on_stdin_publish_one_event_each(vhost_url: str, tmp_path: Path) -> None:
    config = _subscriber_file(tmp_path)
    settings = load_settings(_env(vhost_url, config))
    declare_topology(settings.broker, settings.subscribers, settings.retry)
    orders = [{**sample_data("order.created"), "id": f"line-{i}"} for i in range(3)]
    done = subprocess.run(
        [sys.executable, "-m", "cli.publish", "order.created", "--data", "-", "--account", ACCOUNT],
        cwd=ROOT,
        env=_env(vhost_url, config),
        input="\n".join(json.dumps(o) for o in orders) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.split()) == 3
    got = drain(vhost_url, work_queue("shop"))
    assert [json.loads(g.body)["data"]["id"] for g in got] == ["line-0", "line-1", "line-2"]
    assert [g.properties.message_id for g in got] == done.stdout.split()


def test_publish_needs_an_account(vhost_url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.publish", "order.created", "--sample"],
        cwd=ROOT,
        env=_env(vhost_url, _subscriber_file(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "webhook-publish: error: the following arguments are required: --account (see --help)"
    )
