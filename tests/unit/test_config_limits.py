"""Config mistakes that used to give a traceback, minutes of CPU, or a worker with nothing to do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.worker import main as worker_cli
from config.errors import ConfigError
from config.settings import load_settings
from worker.health import HealthServer

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "redteam" / "config-mistakes"


def _load(name: str, **env: str) -> None:
    load_settings({"WEBHOOK_CONFIG": str(FIXTURES / name), **env})


def _check_config(name: str, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch) -> str:
    """``webhook-worker check-config`` on fixture ``name``: exit 3 and its one stderr line."""
    mp.setenv("WEBHOOK_CONFIG", str(FIXTURES / name))
    assert worker_cli(["check-config"]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith(f"webhook-worker: error: {FIXTURES / name}: ")
    return line


# --- YAML size and depth ----------------------------------------------------------


def test_billion_laughs_is_refused_in_well_under_a_second() -> None:
    started = time.process_time()
    with pytest.raises(ConfigError, match=r"more than 100,000 values once aliases \(\*name\)"):
        _load("billion-laughs.yaml")
    assert time.process_time() - started < 0.5


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nested-50000-deep.yaml", "line 1, column 77: nested more than 64 levels deep"),
        ("alias-cycle.yaml", "nested more than 64 levels deep once aliases are expanded"),
        ("alias-chain-1000-deep.yaml", "nested more than 64 levels deep once aliases are expanded"),
    ],
)
def test_deep_nesting_is_one_readable_error(
    name: str,
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(name)
    assert str(caught.value).startswith(f"{FIXTURES / name}: ")
    assert expected in str(caught.value)
    assert expected in _check_config(name, capsys, monkeypatch)


def test_a_large_honest_file_is_still_read(tmp_path: Path) -> None:
    entry = (
        "  - id: shop-{i}\n    url: https://shop{i}.example/hook\n    secret: s-{i}\n"
        "    account: acme\n"
        '    events: ["order.*", "invoice.paid"]\n    timeout_seconds: 5\n    max_in_flight: 8\n'
        "    circuit_breaker: {{failure_threshold: 3, cooldown_seconds: 2}}\n"
    )
    path = tmp_path / "subscribers.yaml"
    path.write_text("subscribers:\n" + "".join(entry.format(i=i) for i in range(1000)))
    assert len(load_settings({"WEBHOOK_CONFIG": str(path)}).subscribers) == 1000


# --- a subscriber file with no subscribers -------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("empty.yaml", "no subscribers: the file is empty or holds only comments"),
        ("comments-only.yaml", "no subscribers: the file is empty or holds only comments"),
        ("no-subscribers-listed.yaml", "no subscribers: list at least one under 'subscribers:'"),
    ],
)
def test_a_file_without_subscribers_is_an_error(
    name: str,
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for required in (True, False):  # the producer and webhook-dlq read a file that exists too
        with pytest.raises(ConfigError, match=expected):
            load_settings(
                {"WEBHOOK_CONFIG": str(FIXTURES / name)}, require_subscriber_file=required
            )
    assert _check_config(name, capsys, monkeypatch).endswith(expected)


def test_no_file_at_all_is_still_fine_where_not_required(tmp_path: Path) -> None:
    environ = {"WEBHOOK_CONFIG": str(tmp_path / "absent.yaml")}
    assert load_settings(environ, require_subscriber_file=False).subscribers == ()


# --- METRICS_HOST and METRICS_PORT ----------------------------------------------------


@pytest.mark.parametrize(
    "host", ["999.1.1.1", "1.2.3", "", "[::1]", "-metrics.example", "metrics_host", "a" * 64]
)
def test_metrics_host_must_be_an_ip_address_or_a_host_name(tmp_path: Path, host: str) -> None:
    environ = {"WEBHOOK_CONFIG": str(tmp_path / "absent.yaml"), "METRICS_HOST": host}
    with pytest.raises(ConfigError) as caught:
        load_settings(environ, require_subscriber_file=False)
    assert str(caught.value) == (
        "invalid environment: METRICS_HOST: must be an IP address (such as 0.0.0.0) or a host name"
    )


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "metrics-1.internal.example."]
)
def test_metrics_host_accepts_addresses_and_names(tmp_path: Path, host: str) -> None:
    environ = {"WEBHOOK_CONFIG": str(tmp_path / "absent.yaml"), "METRICS_HOST": host}
    assert load_settings(environ, require_subscriber_file=False).metrics_host == host


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


async def test_health_server_on_a_busy_port_is_a_config_error(busy_port: int) -> None:
    server = HealthServer("127.0.0.1", busy_port, lambda: True)
    with pytest.raises(ConfigError) as caught:
        await server.start()
    assert str(caught.value) == (
        f"METRICS_HOST/METRICS_PORT: cannot serve health and metrics on 127.0.0.1:{busy_port}: "
        "address already in use"
    )
    await server.stop()  # already cleaned up: a no-op


def test_worker_run_on_a_busy_metrics_port_exits_3_without_a_traceback(
    busy_port: int, tmp_path: Path
) -> None:
    config = tmp_path / "subscribers.yaml"
    config.write_text(
        "subscribers:\n  - id: shop\n    url: https://shop.example/hook\n"
        "    secret: s\n    account: acme\n    events: [order.created]\n",
        encoding="utf-8",
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "WEBHOOK_CONFIG": str(config),
        "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/%2F",
        "METRICS_PORT": str(busy_port),
    }
    done = subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr == (
        "webhook-worker: error: METRICS_HOST/METRICS_PORT: cannot serve health and metrics on "
        f"127.0.0.1:{busy_port}: address already in use\n"
    )
