"""The dashboard and the alert rules against a real Prometheus scraping a real worker.

A RabbitMQ node with the rabbitmq_prometheus plugin, a worker delivering to three
receivers (one healthy, one failing first attempts, one always failing, so events
succeed, retry and dead-letter), and Debian's ``prometheus`` binary scraping the
worker and the broker every second with the repository's rules loaded. Then every
query of the Grafana dashboard and every rule expression is run through the HTTP
API: all must evaluate, and the main panels must show data. The alerts that
should be pending are, and the worker's HTTP surface leaks no secret or payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from broker.url import BrokerUrl
from config.topology import dead_letter_queue
from control.delivery_log import metrics as recorder_metrics
from control.notifications import metrics as notifier_metrics
from devtools.local_processes import free_ports
from devtools.rabbitmq_node import (
    PROMETHEUS_PLUGIN,
    RABBITMQ_SERVER,
    LocalRabbitMQ,
    rabbitmq_available,
)
from producer import Publisher
from tests.support.amqp import depth
from tests.support.receiver import Received, Receiver
from tests.support.worker_harness import ACCOUNT, SECRET, make_settings, running_worker, subscriber
from tests.unit.test_deploy_files import (
    ALERT_RULES,
    PROMETHEUS_CONFIG,
    RABBITMQ_CONF,
    dashboard_expressions,
)
from wire.samples import sample_data
from worker import metrics

pytestmark = pytest.mark.timeout(150)

RATE_INTERVAL = "1m"  # what Grafana's $__rate_interval becomes with a 15 s scrape interval
# Panels that must show data once events were delivered, retried and dead-lettered.
MAIN_PANELS = {
    "Deliveries per second by outcome",
    "Deliveries per second by HTTP status",
    "Success rate per subscriber",
    "Delivery success rate",
    "Attempt latency (p50 / p90 / p99)",
    "End-to-end latency (p50 / p90 / p99)",
    "Work queue depth",
    "Dead-letter queue depth",
    "Delay queue depth",
    "In flight per subscriber",
    "Broker resource alarms",
    "Workers ready",
    "Top 20 failing subscribers",
    # The worker runs in this test's process, so its /metrics (the default registry)
    # also carries the producer metrics of the events this test publishes.
    "Producer events per second by outcome",
}
OK, FLAKY, DOWN = "obs-ok", "obs-flaky", "obs-down"
EVENTS = 4  # published after one warm-up event


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class _ComposeConfiguredRabbitMQ(LocalRabbitMQ):
    """A local node that also reads the settings docker-compose.yml gives RabbitMQ."""

    def _write_files(self) -> None:
        super()._write_files()
        conf = self.base_dir / "rabbitmq.conf"
        conf.write_text(conf.read_text() + RABBITMQ_CONF.read_text())


@pytest.fixture(scope="module")
def metrics_node() -> Iterator[LocalRabbitMQ]:
    """A RabbitMQ node of this module's own, with per-queue Prometheus metrics."""
    if not rabbitmq_available():
        _unavailable(f"{RABBITMQ_SERVER} not found (apt-get install -y rabbitmq-server)")
    node = _ComposeConfiguredRabbitMQ(plugins=[PROMETHEUS_PLUGIN])
    try:
        node.start()
        yield node
    finally:
        node.close()


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        _unavailable("prometheus not found (apt-get install -y prometheus)")
    assert binary is not None
    return binary


# ----------------------------------------------------------------- helpers


def _get(url: str, timeout: float = 5) -> tuple[int, str, bytes]:
    """(status, content type, body), also for error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        with contextlib.closing(error):
            return error.code, error.headers.get("Content-Type", ""), error.read()


class Prometheus:
    """A real prometheus process on a loopback port with a temporary TSDB."""

    def __init__(self, binary: str, workdir: Path, config: dict[str, Any]) -> None:
        self.binary = binary
        self.workdir = workdir
        self.config = config
        self.port = free_ports(1)[0]
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(self.config, sort_keys=False))
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            if self._proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.tail()}")
            with contextlib.suppress(OSError):
                if _get(f"{self.base}/-/ready", timeout=1)[0] == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready in 30 s:\n{self.tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        return ""

    def api(self, path: str, **params: str) -> dict[str, Any]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, _, body = _get(f"{self.base}/api/v1/{path}{query}", timeout=10)
        answer: dict[str, Any] = json.loads(body)
        answer["http_status"] = status
        return answer

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def values(self, expr: str) -> list[tuple[dict[str, str], float]]:
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        data = answer["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]


def _prometheus_config(
    worker_port: int, node: LocalRabbitMQ, notifier_port: int, recorder_port: int
) -> dict[str, Any]:
    """The repository's scrape config, with local targets and 1 s intervals."""
    repo = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert node.prometheus_port is not None
    targets = {
        "webhook-worker": f"127.0.0.1:{worker_port}",
        "webhook-notifier": f"127.0.0.1:{notifier_port}",
        "webhook-recorder": f"127.0.0.1:{recorder_port}",
        "rabbitmq": f"127.0.0.1:{node.prometheus_port}",
        "rabbitmq-node": f"127.0.0.1:{node.prometheus_port}",
    }
    jobs = []
    for job in repo["scrape_configs"]:
        local = {
            "job_name": job["job_name"],
            "metrics_path": job.get("metrics_path", "/metrics"),
            "static_configs": [{"targets": [targets[job["job_name"]]]}],
        }
        for key in ("params", "metric_relabel_configs"):
            if key in job:
                local[key] = job[key]
        jobs.append(local)
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERT_RULES)],
        "scrape_configs": jobs,
    }


async def _until(what: str, check: Callable[[], bool], timeout: float, prom: Prometheus) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{prom.tail()}")
        await asyncio.sleep(0.25)


def _publish(url: str, canary: str, count: int) -> list[str]:
    with Publisher(BrokerUrl.parse(url)) as publisher:
        return [
            publisher.publish(
                "order.created",
                {
                    **sample_data("order.created"),
                    "id": f"{canary}-{n}",
                    "customerName": f"Customer {canary}",
                    "shippingAddress": f"Street {canary}",
                },
                account=ACCOUNT,
            )
            for n in range(count)
        ]


def _alerts(prom: Prometheus) -> dict[str, set[str]]:
    """Alert name -> subscribers (or instances) it is pending or firing for."""
    answer = prom.api("alerts")
    assert answer["status"] == "success", answer
    found: dict[str, set[str]] = {}
    for alert in answer["data"]["alerts"]:
        labels = alert["labels"]
        who = labels.get("subscriber") or labels.get("instance") or ""
        found.setdefault(labels["alertname"], set()).add(who)
    return found


def _flaky(request: Received) -> web.Response:
    if request.attempt == 1:
        return web.Response(status=500, text="first attempt fails")
    return web.json_response({"received": True})


async def _metrics_server(module: Any) -> Receiver:
    """/metrics as webhook-notifier or webhook-recorder serves them: the families of
    ``module`` only (in this process the default registry also holds the worker's,
    which the webhook-worker job already scrapes)."""
    registry = CollectorRegistry(auto_describe=True)
    for value in vars(module).values():
        if isinstance(value, MetricWrapperBase):
            registry.register(value)

    def serve(_request: Received) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    return await Receiver(serve).start()


# -------------------------------------------------------------------- test


async def test_dashboard_and_rules_evaluate_against_a_real_worker(
    metrics_node: LocalRabbitMQ, prometheus_binary: str, tmp_path: Path
) -> None:
    url = metrics_node.url
    canary = f"canary{secrets.token_hex(6)}"
    ok = await Receiver().start()
    flaky = await Receiver(_flaky).start()
    down = await Receiver(lambda _r: web.Response(status=503, text="down")).start()
    receivers = (ok, flaky, down)
    subs = [subscriber(OK, ok.url), subscriber(FLAKY, flaky.url), subscriber(DOWN, down.url)]
    settings = make_settings(url, subs, delays=(0.2, 0.2))
    if "circuit_breaker" in type(settings).model_fields:
        # A circuit breaker would stop consuming obs-down's queue after a few
        # failures; this test wants every event to run through all its attempts.
        policy = type(settings.circuit_breaker)
        settings = settings.model_copy(update={"circuit_breaker": policy(enabled=False)})
    try:
        async with running_worker(settings) as worker:
            port = worker.health.port
            assert port
            base = f"http://127.0.0.1:{port}"
            # Bound where the settings say (loopback here), nowhere else.
            runner = worker.health._runner
            assert runner is not None
            assert [a[0] for a in runner.addresses] == [settings.metrics_host]

            notifier = await _metrics_server(notifier_metrics)
            recorder = await _metrics_server(recorder_metrics)
            config = _prometheus_config(port, metrics_node, notifier.port, recorder.port)
            prom = Prometheus(prometheus_binary, tmp_path, config)
            await asyncio.to_thread(prom.start)
            try:
                await _exercise(prom, url, canary, receivers)
                await _check_queries(prom)
            finally:
                await asyncio.to_thread(prom.stop)
                await notifier.stop()
                await recorder.stop()

            await _check_worker_http(base, canary, url, receivers)
    finally:
        for receiver in receivers:
            await receiver.stop()


async def _exercise(
    prom: Prometheus, url: str, canary: str, receivers: tuple[Receiver, Receiver, Receiver]
) -> None:
    ok, flaky, down = receivers
    dlq = dead_letter_queue(DOWN)

    def series_present(expr: str, count: int) -> Callable[[], bool]:
        return lambda: len(prom.values(expr)) >= count

    # Every target scraped (worker, notifier, recorder, RabbitMQ twice), and the DLQ
    # depth recorded (at 0) before anything fails.
    await _until("targets up", lambda: sum(v for _, v in prom.values("up")) == 5, 20, prom)
    await _until(
        "DLQ depth recorded",
        series_present(f'subscriber:webhook_dlq_messages:max{{subscriber="{DOWN}"}}', 1),
        20,
        prom,
    )

    # Warm-up: one event creates every labelled series, so that the rates below
    # see the main batch as an increase (a series' first sample is no increase).
    await asyncio.to_thread(_publish, url, canary, 1)
    await down.wait_for(lambda rs: len(rs) == 3, timeout=15)
    await flaky.wait_for(lambda rs: len(rs) == 2, timeout=15)
    await ok.wait_for(lambda rs: len(rs) == 1, timeout=15)
    await _until(
        "warm-up scraped",
        series_present('webhook_deliveries_total{subscriber=~"obs-.*"}', 4),
        15,
        prom,
    )

    await asyncio.to_thread(_publish, url, canary, EVENTS)
    total = EVENTS + 1
    await down.wait_for(lambda rs: len(rs) == 3 * total, timeout=20)
    await flaky.wait_for(lambda rs: len(rs) == 2 * total, timeout=20)
    await ok.wait_for(lambda rs: len(rs) == total, timeout=20)
    await _until("dead letters in RabbitMQ", lambda: depth(url, dlq) == total, 15, prom)

    # RabbitMQ refreshes its queue metrics every few seconds.
    await _until(
        "DLQ depth in Prometheus",
        lambda: (
            [
                v
                for _, v in prom.values(
                    f'subscriber:webhook_dlq_messages:max{{subscriber="{DOWN}"}}'
                )
            ]
            == [total]
        ),
        30,
        prom,
    )
    await _until(
        "all attempts scraped",
        lambda: (
            [v for _, v in prom.values(f'sum(webhook_deliveries_total{{subscriber="{DOWN}"}})')]
            == [3 * total]
        ),
        15,
        prom,
    )

    def expected_alerts() -> bool:
        alerts = _alerts(prom)
        return DOWN in alerts.get("WebhookDeadLettersGrowing", set()) and DOWN in alerts.get(
            "WebhookDeliverySuccessRateLow", set()
        )

    await _until("alerts pending", expected_alerts, 15, prom)
    alerts = await asyncio.to_thread(_alerts, prom)
    assert alerts["WebhookDeadLettersGrowing"] == {DOWN}
    assert alerts["WebhookDeliverySuccessRateLow"] == {DOWN, FLAKY}  # 0% and 50% of attempts
    for quiet in (
        "WebhookWorkerDown",
        "WebhookNoWorkerUp",
        "WebhookWorkerNotReady",
        "WebhookWorkQueueWithoutConsumer",
        "WebhookBrokerMetricsMissing",
        "WebhookBrokerReconnectStorm",
        "WebhookBrokerMemoryAlarm",
        "WebhookBrokerDiskAlarm",
    ):
        assert quiet not in alerts, (quiet, alerts[quiet])


async def _check_queries(prom: Prometheus) -> None:
    # Every rule evaluates without error in the real Prometheus.
    rules = await asyncio.to_thread(prom.api, "rules")
    evaluated = [rule for group in rules["data"]["groups"] for rule in group["rules"]]
    repo_rules = [r for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"]]
    assert len(evaluated) == len(repo_rules)
    for rule in evaluated:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        answer = await asyncio.to_thread(prom.query, rule["query"])
        assert answer["status"] == "success", (rule["name"], answer)

    # The success ratio keeps a subscriber that never succeeds, at 0.
    ratios = {
        labels["subscriber"]: value
        for labels, value in await asyncio.to_thread(
            prom.values, 'subscriber:webhook_delivery_success:ratio_rate5m{subscriber=~"obs-.*"}'
        )
    }
    assert ratios[OK] == 1 and ratios[DOWN] == 0 and 0 < ratios[FLAKY] < 1, ratios

    empty: list[str] = []
    for choice in (".*", FLAKY):
        for title, expr in dashboard_expressions():
            query = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$subscriber", choice)
            answer = await asyncio.to_thread(prom.query, query)
            assert answer["status"] == "success", (title, query, answer)
            result = answer["data"]["result"]
            values = [float(item["value"][1]) for item in result]
            if title in MAIN_PANELS and not any(math.isfinite(v) for v in values):
                empty.append(f"{title} [{choice}]: {query} -> {result}")
    assert not empty, "main panels without data:\n" + "\n".join(empty)

    # The panels show what happened: per-outcome rates and the three queue kinds.
    outcomes = {
        labels["outcome"]
        for labels, _ in await asyncio.to_thread(
            prom.values, f'sum by (outcome) (webhook_deliveries_total{{subscriber="{FLAKY}"}})'
        )
    }
    assert outcomes == {"success", "http_error"}
    # ... and per HTTP status: the flaky receiver answers 500 then 200, obs-down 503.
    for who, expected in ((FLAKY, {"2xx", "5xx"}), (DOWN, {"5xx"}), (OK, {"2xx"})):
        statuses = {
            labels["status"]
            for labels, _ in await asyncio.to_thread(
                prom.values, f'sum by (status) (webhook_deliveries_total{{subscriber="{who}"}})'
            )
        }
        assert statuses == expected, (who, statuses)
    queues = {
        labels["queue"]
        for labels, _ in await asyncio.to_thread(
            prom.values, 'rabbitmq_queue_messages{queue=~"webhooks\\\\..+"}'
        )
    }
    assert {"webhooks.obs-down.work", "webhooks.obs-down.dlq", "webhooks.delay.200ms"} <= queues
    # The delay-queue panel picks exactly the delay queues.
    delay_queues = {
        labels["queue"]
        for title, expr in dashboard_expressions()
        if title == "Delay queue depth"
        for labels, _ in await asyncio.to_thread(prom.values, expr)
    }
    assert delay_queues == {"webhooks.delay.200ms"}
    # The top-N table has one row per failing subscriber, named in its own column.
    for choice, expected in ((".*", {DOWN, FLAKY}), (FLAKY, {FLAKY})):
        for title, expr in dashboard_expressions():
            if title != "Top 20 failing subscribers":
                continue
            query = expr.replace("$subscriber", choice)
            rows = await asyncio.to_thread(prom.values, query)
            assert {labels["subscriber"] for labels, _ in rows} == expected, (query, rows)
            assert all(set(labels) == {"subscriber"} for labels, _ in rows), rows

    # The broker alarm series the alerts use exist under these names, from the
    # aggregated endpoint (job rabbitmq-node), at 0 on a healthy node.
    for series in (
        "rabbitmq_alarms_memory_used_watermark",
        "rabbitmq_alarms_free_disk_space_watermark",
    ):
        found = await asyncio.to_thread(prom.values, series)
        assert [(labels["job"], value) for labels, value in found] == [("rabbitmq-node", 0)]
    # RabbitMQ's own dashboards (linked from ours) join every series on `instance`
    # with rabbitmq_identity_info: one per node, so job rabbitmq-node keeps no copy.
    identities = await asyncio.to_thread(prom.values, "rabbitmq_identity_info")
    assert [labels["job"] for labels, _ in identities] == ["rabbitmq"]
    cluster = identities[0][0]["rabbitmq_cluster"]
    overview_query = (  # the "Ready messages" stat of RabbitMQ-Overview
        "sum(rabbitmq_queue_messages_ready * on(instance) group_left(rabbitmq_cluster) "
        f'rabbitmq_identity_info{{rabbitmq_cluster="{cluster}", namespace=""}})'
    )
    answer = await asyncio.to_thread(prom.query, overview_query)
    assert answer["status"] == "success" and answer["data"]["result"], answer
    # The broker runs with config/rabbitmq/conf.d (memory alarm at 600 MB, disk 1 GB):
    # the file parses and takes effect.
    limits = {
        name: value
        for name in (
            "rabbitmq_resident_memory_limit_bytes",
            "rabbitmq_disk_space_available_limit_bytes",
        )
        for _, value in await asyncio.to_thread(prom.values, f'{name}{{job="rabbitmq"}}')
    }
    assert limits == {
        "rabbitmq_resident_memory_limit_bytes": 600e6,
        "rabbitmq_disk_space_available_limit_bytes": 1e9,
    }


async def _check_worker_http(
    base: str, canary: str, amqp_url: str, receivers: tuple[Receiver, ...]
) -> None:
    status, _, body = await asyncio.to_thread(_get, f"{base}/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body = await asyncio.to_thread(_get, f"{base}/readyz")
    assert status == 200 and json.loads(body) == {"ready": True}
    status, content_type, body = await asyncio.to_thread(_get, f"{base}/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    text = body.decode()
    families = [
        family
        for value in vars(metrics).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
    ]
    assert len(families) >= 9
    for family in families:
        exposed = family.name + ("_total" if family.type == "counter" else "")
        assert f"# TYPE {exposed} {family.type}" in text, exposed
    assert "_created" not in text  # disabled in worker/metrics.py
    # Nothing secret or payload-derived: subscriber secret, payload values, event
    # ids, receiver URLs (they may carry tokens), broker credentials.
    assert SECRET not in text
    assert canary not in text
    assert "Rahim" not in text and "ORD-" not in text and "+880" not in text
    event_ids = {r.event_id for receiver in receivers for r in receiver.requests}
    assert event_ids and not any(event_id in text for event_id in event_ids)
    for receiver in receivers:
        assert f":{receiver.port}" not in text
    assert amqp_url not in text and "guest" not in text
