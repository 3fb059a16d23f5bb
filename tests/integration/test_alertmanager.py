"""config/alertmanager/alertmanager.yml in a real Alertmanager: routes and inhibition.

Debian's ``prometheus-alertmanager`` runs the repository's routing tree and
inhibition rules unchanged; only the receivers' endpoints point at a local HTTP
server (the e-mail receiver becomes a webhook of the same name), the secret
files at temporary copies, and the group waits are shortened. Alerts are posted
the way Prometheus posts them; the test then reads what Alertmanager suppressed
and what each receiver was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from devtools.local_processes import free_ports
from tests.unit.test_deploy_files import ALERTMANAGER_CONFIG

pytestmark = pytest.mark.timeout(90)

BINARY = "prometheus-alertmanager"
TOKEN = "test-oncall-token"


@pytest.fixture
def alertmanager_binary() -> str:
    binary = shutil.which(BINARY)
    if binary is None:
        message = f"{BINARY} not found (apt-get install -y prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    assert binary is not None
    return binary


def _local_config(base_url: str, workdir: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    (workdir / "token").write_text(TOKEN)
    (workdir / "smtp-password").write_text("unused")
    config["global"]["smtp_auth_password_file"] = str(workdir / "smtp-password")
    for receiver in config["receivers"]:
        name = receiver["name"]
        if "email_configs" in receiver:
            del receiver["email_configs"]
            receiver["webhook_configs"] = [{"url": f"{base_url}/{name}"}]
        for hook in receiver["webhook_configs"]:
            hook["url"] = f"{base_url}/{name}"
            authorization = hook.get("http_config", {}).get("authorization")
            if authorization:
                authorization["credentials_file"] = str(workdir / "token")

    def quicken(route: dict[str, Any]) -> None:
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
        for child in route.get("routes", []):
            quicken(child)

    quicken(config["route"])
    return config


@contextlib.contextmanager
def _alertmanager(binary: str, workdir: Path, config: dict[str, Any]) -> Iterator[str]:
    config_file = workdir / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    log = workdir / "alertmanager.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"alertmanager exited:\n{log.read_text()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{base}/-/ready", timeout=1) as response,
            ):
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"alertmanager not ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _post_alerts(base: str, alerts: list[dict[str, str]]) -> None:
    body = json.dumps([{"labels": labels, "annotations": {}} for labels in alerts]).encode()
    request = urllib.request.Request(
        f"{base}/api/v2/alerts",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _alert_states(base: str) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(f"{base}/api/v2/alerts", timeout=5) as response:
        alerts = json.loads(response.read())
    return {alert["labels"]["alertname"]: alert["status"] for alert in alerts}


async def test_routes_and_inhibition_in_a_real_alertmanager(
    alertmanager_binary: str, tmp_path: Path
) -> None:
    received: list[tuple[str, str, dict[str, Any]]] = []

    async def hook(request: web.Request) -> web.Response:
        payload = await request.json()
        received.append(
            (request.match_info["receiver"], request.headers.get("Authorization", ""), payload)
        )
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{receiver}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_ports(1)[0]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        config = _local_config(f"http://127.0.0.1:{port}", tmp_path)
        with _alertmanager(alertmanager_binary, tmp_path, config) as base:
            await asyncio.to_thread(
                _post_alerts,
                base,
                [
                    # A broker alarm (critical) and what it explains (a backlog) ...
                    {
                        "alertname": "WebhookBrokerMemoryAlarm",
                        "severity": "critical",
                        "instance": "rabbit-1",
                    },
                    {
                        "alertname": "WebhookWorkQueueBacklog",
                        "severity": "warning",
                        "subscriber": "shop-a",
                        "queue": "webhooks.shop-a.work",
                    },
                    # ... and a warning it does not explain.
                    {
                        "alertname": "WebhookDeliverySuccessRateLow",
                        "severity": "warning",
                        "subscriber": "shop-b",
                    },
                ],
            )
            states = await asyncio.to_thread(_alert_states, base)
            assert states["WebhookWorkQueueBacklog"]["state"] == "suppressed"
            assert states["WebhookWorkQueueBacklog"]["inhibitedBy"]
            assert states["WebhookBrokerMemoryAlarm"]["state"] == "active"
            assert states["WebhookDeliverySuccessRateLow"]["state"] == "active"

            deadline = time.monotonic() + 30
            while {r for r, _, _ in received} != {"oncall-webhook", "team-email"}:
                if time.monotonic() > deadline:
                    raise AssertionError(f"notifications: {received}")
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)  # a suppressed alert would have been sent by now
    finally:
        await runner.cleanup()

    sent = {
        (receiver, alert["labels"]["alertname"])
        for receiver, _, payload in received
        for alert in payload["alerts"]
    }
    assert sent == {
        ("oncall-webhook", "WebhookBrokerMemoryAlarm"),
        ("team-email", "WebhookDeliverySuccessRateLow"),
    }
    for receiver, authorization, payload in received:
        if receiver == "oncall-webhook":
            assert authorization == f"Bearer {TOKEN}"
        # Grouped by alert name and subscriber.
        assert set(payload["groupLabels"]) <= {"alertname", "subscriber"}
