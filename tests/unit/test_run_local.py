"""run-local's helpers, without servers: the run directory, its files, and the clean-up."""

from __future__ import annotations

import argparse
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cli.publish import build_parser as publish_parser
from cli.worker import build_parser as worker_parser
from config.settings import environment_variables, load_settings
from devtools import run_local
from devtools.api_client import ApiClient, ApiError
from devtools.process_group import ProcessGroup
from devtools.run_directory import RunDirectory

# What webhook-api answers to POST /v1/accounts/{account}/endpoints (the fields used).
CREATED: dict[str, Any] = {
    "id": "ep-abcdefghijklmnopqrst",
    "account_id": "demo-merchant",
    "url": "http://127.0.0.1:40000/webhook",
    "events": ["order.*"],
    "all_accounts": False,
    "timeout_seconds": None,
    "connect_timeout_seconds": None,
    "max_in_flight": 4,
    "standard_webhooks": None,
    "circuit_breaker": None,
    "secret": "whsec_c2VjcmV0LWJ5dGVzLW9mLXRoZS1kZW1vLWVuZHBvaW50Kys=",
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_run_directory_is_private_and_removed(tmp_path: Path) -> None:
    with RunDirectory(tmp_path) as run:
        assert _mode(run.path) == 0o700
        assert run.database_url == f"sqlite:///{run.path / 'webhooks.db'}"
        run.write_env_file({"A": "1"})
        (run.path / "webhooks.db").write_bytes(b"")
    assert not run.path.exists()
    run.remove()  # twice is fine


def test_the_env_file_gives_a_second_shell_the_runs_settings(tmp_path: Path) -> None:
    with RunDirectory(tmp_path) as run:
        api = ApiClient("http://127.0.0.1:40001", "token with 'quotes' and $dollars")
        variables = run_local.second_shell_variables(
            run,
            broker_url="amqp://guest:guest@127.0.0.1:5999/%2F",
            api=api,
            endpoint_id=CREATED["id"],
        )
        env_file = run.write_env_file(variables, unset=("SECRETS_KEY", "RABBITMQ_PASSWORD"))
        assert _mode(env_file) == 0o600
        text = env_file.read_text()
        assert f"source {env_file}" in text and "unset RABBITMQ_PASSWORD SECRETS_KEY" in text

        # What a second shell ends up with, sourced by a real shell over a polluted one.
        shown = subprocess.run(
            ["bash", "-c", f"source {env_file} && env"],
            env={"SECRETS_KEY": "another-key", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        environ = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        assert "SECRETS_KEY" not in environ
        for name, value in variables.items():
            assert environ[name] == value, name
        # Every variable is one the tools read, or one the printed curl uses.
        tools = set(environment_variables())
        shell_only = {"WEBHOOK_API_URL", "WEBHOOK_API_TOKEN", "DEMO_ACCOUNT", "DEMO_ENDPOINT"}
        assert set(variables) - tools == shell_only
        settings = load_settings(environ)
        assert settings.uses_store  # the worker and the tools read the run's store
        assert settings.store_database_url() == run.database_url
        assert settings.retry.delays_seconds == (2, 5)
        assert settings.store_allows_private_networks


def test_the_printed_commands_parse(tmp_path: Path) -> None:
    with RunDirectory(tmp_path) as run:
        source, publish, test_endpoint, curl = run_local.try_these(run, CREATED["id"])
    assert source == f"source {run.env_file}"
    published = publish_parser().parse_args(publish.split()[1:])
    assert published.sample and published.event == "order.created"
    assert published.account == run_local.DEMO_ACCOUNT
    tested = worker_parser().parse_args(test_endpoint.split()[1:])
    assert tested.command == "test-endpoint" and tested.subscriber == CREATED["id"]
    assert "$WEBHOOK_API_TOKEN" in curl and f"/v1/accounts/{run_local.DEMO_ACCOUNT}/" in curl


def test_child_environment_drops_another_store_and_own_broker_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("DATABASE_URL", "SECRETS_KEY", "API_TOKENS", "RABBITMQ_PASSWORD"):
        monkeypatch.setenv(name, "from-the-callers-shell")
    ours = run_local.base_environment("amqp://127.0.0.1:1/%2F", own_broker=True)
    assert not {"DATABASE_URL", "SECRETS_KEY", "API_TOKENS", "RABBITMQ_PASSWORD"} & set(ours)
    assert ours["RABBITMQ_URL"] == "amqp://127.0.0.1:1/%2F"
    theirs = run_local.base_environment("amqp://broker/%2F", own_broker=False)
    assert theirs["RABBITMQ_PASSWORD"] == "from-the-callers-shell"


@pytest.mark.parametrize(
    ("failure", "code"), [(ApiError("refused"), 1), (KeyboardInterrupt(), 130)]
)
def test_main_stops_everything_and_removes_the_directory_however_it_ends(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    failure: BaseException,
    code: int,
) -> None:
    runs: list[RunDirectory] = []
    stopped: list[bool] = []

    def in_tmp() -> RunDirectory:
        runs.append(RunDirectory(tmp_path))
        return runs[-1]

    def fail(
        _args: argparse.Namespace, run: RunDirectory, _group: ProcessGroup, env: dict[str, str]
    ) -> int:
        run.write_env_file({"RABBITMQ_URL": env["RABBITMQ_URL"]})
        raise failure

    monkeypatch.setenv("RABBITMQ_URL", "amqp://127.0.0.1:1/%2F")  # no node is started
    monkeypatch.setattr(run_local, "RunDirectory", in_tmp)
    monkeypatch.setattr(run_local, "_demo", fail)
    monkeypatch.setattr(ProcessGroup, "stop", lambda self, timeout=30: stopped.append(True))
    assert run_local.main([]) == code
    [run] = runs
    assert stopped == [True]
    assert not run.path.exists()
    assert f"==> removed {run.path}" in capsys.readouterr().out


async def test_the_demo_receiver_never_fails_a_test_delivery_on_purpose() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from devtools.demo_receiver import build_app
    from wire.contract import HTTP_TEST
    from wire.envelope import build_envelope
    from wire.samples import sample_data
    from wire.signature import now_ms, sign

    body = build_envelope("order.created", sample_data("order.created"))
    async with TestClient(TestServer(build_app("s3cret", fail_rate=1.0, quiet=True))) as client:
        statuses = []
        for test in (True, False):
            headers = {
                "X-Webhook-Signature": sign("s3cret", body, now_ms()),
                "X-Webhook-Attempt": "1",
                **({HTTP_TEST: "true"} if test else {}),
            }
            response = await client.post("/webhook", data=body, headers=headers)
            statuses.append(response.status)
    assert statuses == [200, 500]
