"""The container and monitoring files agree with the code and with each other.

No Docker engine runs here, so docker-compose.yml and the Dockerfile are parsed
and every path, port, variable, command and metric they name is checked against
the repository. Prometheus' own ``promtool`` validates the scrape config and the
rules, and unit-tests the alert logic (skipped without promtool, failed under CI).
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from broker.url import DEFAULT_URL
from cli.api import build_parser as api_parser
from cli.publish import build_parser as producer_parser
from cli.worker import main as worker_main
from config.settings import Settings, environment_variables, load_environment, load_settings
from config.subscriber_file import ENV_REFERENCE, parse_subscriber_file
from config.topology import REGISTRY_QUEUE, dead_letter_queue, delay_queue, work_queue
from control.api.auth import ApiTokens
from control.delivery_log import metrics as recorder_metrics
from control.delivery_log.recorder import Recorder
from control.notifications import metrics as notifier_metrics
from control.notifications.destinations import operator_secret
from control.store.database import DatabaseUrl
from control.store.key import load_secrets_key
from producer import metrics as producer_metrics
from wire.samples import SAMPLE_EVENTS
from worker import metrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS_CONFIG = ROOT / "config/prometheus/prometheus.yml"
ALERT_RULES = ROOT / "config/prometheus/alerts.yml"
GRAFANA_DATASOURCE = ROOT / "config/grafana/provisioning/datasources/prometheus.yml"
GRAFANA_PROVIDERS = ROOT / "config/grafana/provisioning/dashboards/dashboards.yml"
DASHBOARD = ROOT / "config/grafana/dashboards/webhooks.json"
ENABLED_PLUGINS = ROOT / "config/rabbitmq/enabled_plugins"
RABBITMQ_CONF = ROOT / "config/rabbitmq/conf.d/20-webhook-relay.conf"
# The oldest RabbitMQ series the compose file may use: 3.10 (the former image)
# reached its end of life in 2023; docker-compose.yml says what was checked.
MIN_RABBITMQ_SERIES = (4, 3)
ALERTMANAGER_CONFIG = ROOT / "config/alertmanager/alertmanager.yml"
ALERTMANAGER_PORT = 9093  # Alertmanager's default --web.listen-address
# Where each severity of config/prometheus/alerts.yml must end up.
RECEIVER_FOR_SEVERITY = {
    "critical": "oncall-webhook",
    "warning": "team-email",
    "info": "team-email",
}
OPERATIONS_DOC = ROOT / "docs/operations.md"
# Every alert's runbook_url is this placeholder base + "#" + its section's anchor
# (docs/operations.md and the header of config/prometheus/alerts.yml say how to
# replace it).
RUNBOOK_BASE = "https://github.com/OWNER/webhook-relay/blob/main/docs/operations.md"

SERVICES = {
    "rabbitmq",
    "rabbitmq-policies",
    "api",
    "notifier",
    "recorder",
    "postgres",
    "worker",
    "receiver",
    "producer",
    "prometheus",
    "alertmanager",
    "grafana",
}
SETTINGS_VARS = set(environment_variables())
METRICS_PORT = Settings.model_fields["metrics_port"].default
AMQP_PORT = urlsplit(DEFAULT_URL).port
RABBITMQ_PROMETHEUS_PORT = 15692  # the rabbitmq_prometheus plugin's default
# Queue-level series of rabbitmq_prometheus that rules and panels may use
# (tests/integration/test_observability.py checks them against a real broker).
RABBITMQ_SERIES = {
    "rabbitmq_queue_messages",
    "rabbitmq_queue_consumers",
    # Node-wide, from the aggregated /metrics endpoint (job rabbitmq-node).
    "rabbitmq_alarms_memory_used_watermark",
    "rabbitmq_alarms_free_disk_space_watermark",
}
REQUIRED_ALERTS = {
    "WebhookDeadLettersGrowing",
    "WebhookDeliverySuccessRateLow",
    "WebhookWorkQueueWithoutConsumer",
    "WebhookWorkerDown",
    "WebhookEndToEndLatencyHigh",
    "WebhookBrokerReconnectStorm",
    "WebhookBrokerMemoryAlarm",
    "WebhookBrokerDiskAlarm",
    "WebhookProducerPublishFailures",
    "WebhookProducerSpoolNotDraining",
}
# RabbitMQ's own overview dashboard (grafana.com 10991) keeps this uid when imported.
RABBITMQ_OVERVIEW_UID = "Kn5xm-gZk"

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


# ------------------------------------------------------------------- helpers


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # type: ignore[no-any-return]


def _service(name: str) -> dict[str, Any]:
    return _compose()["services"][name]  # type: ignore[no-any-return]


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f".env.example: not KEY=VALUE: {line!r}"
        assert key not in values, f".env.example defines {key} twice"
        values[key] = value
    return values


def _interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} substitution."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if present:
            return env[name]
        if op in (":-", "-"):
            return arg or ""
        raise AssertionError(f"compose variable {name} is not set: {arg}")

    return _INTERPOLATION.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _bind_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(host path, container path) of every bind mount of ``service``."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                yield volume["source"], volume["target"]
            continue
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            yield source, target


def _host_path_for(service: dict[str, Any], container_path: str) -> Path:
    """The repository file that ``container_path`` comes from, through the mounts."""
    wanted = PurePosixPath(container_path)
    for source, target in _bind_mounts(service):
        target_path = PurePosixPath(target)
        if wanted == target_path or target_path in wanted.parents:
            return ROOT / source / wanted.relative_to(target_path)
    raise AssertionError(f"{container_path} is not mounted from the repository")


def _console_scripts() -> dict[str, str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return pyproject["project"]["scripts"]  # type: ignore[no-any-return]


class _Dockerfile:
    """The final stage of the Dockerfile: instructions, ENV, ENTRYPOINT, CMD, ..."""

    def __init__(self, text: str) -> None:
        logical: list[str] = []
        pending = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not pending and (not line or line.startswith("#")):
                continue
            if line.startswith("#"):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            logical.append(pending + line)
            pending = ""
        self.args: dict[str, str] = {}
        self.stages: list[list[tuple[str, str]]] = []
        for line in logical:
            keyword, _, rest = line.partition(" ")
            keyword = keyword.upper()
            rest = rest.strip()
            if keyword == "ARG" and not self.stages:
                name, _, default = rest.partition("=")
                self.args[name] = default
            if keyword == "FROM":
                self.stages.append([])
            if self.stages:
                self.stages[-1].append((keyword, rest))

    @property
    def final(self) -> list[tuple[str, str]]:
        return self.stages[-1]

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.final if kw == keyword]

    def one(self, keyword: str) -> str:
        [value] = self.all(keyword)
        return value

    def base_image(self) -> str:
        image = self.one("FROM").split()[0]
        return re.sub(r"\$\{(\w+)\}", lambda m: self.args[m.group(1)], image)

    def env(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for rest in self.all("ENV"):
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                result[key] = value
        return result

    def exec_form(self, keyword: str) -> list[str]:
        value = json.loads(self.one(keyword))
        assert isinstance(value, list), f"{keyword} must use the exec (JSON) form"
        return value

    def healthcheck_command(self) -> list[str]:
        rest = self.one("HEALTHCHECK")
        _, _, command = rest.partition(" CMD ")
        return json.loads(command)  # type: ignore[no-any-return]


def _dockerfile() -> _Dockerfile:
    return _Dockerfile(DOCKERFILE.read_text())


def _effective_env(name: str, env_file: Mapping[str, str]) -> dict[str, str]:
    """A project-image service's environment: Dockerfile ENV, then compose's."""
    env = {k: v for k, v in _dockerfile().env().items() if not k.startswith(("PYTHON", "PIP_"))}
    env.update({k: _interpolate(v, env_file) for k, v in _environment(_service(name)).items()})
    return env


def metric_families() -> list[Any]:
    """Every metric family the worker, the notifier, the recorder and the producer library
    define."""
    return [
        family
        for module in (metrics, producer_metrics, notifier_metrics, recorder_metrics)
        for value in vars(module).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
    ]


def _metric_sample_names() -> set[str]:
    names: set[str] = set()
    for family in metric_families():
        # No `_created`: rules and panels never use those series.
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "gauge": ("",),
        }[family.type]
        names.update(family.name + suffix for suffix in suffixes)
    return names


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard."""
    return [
        (panel["title"], target["expr"])
        for panel in _panels(_dashboard())
        for target in panel.get("targets", [])
    ]


def _series_names(expr: str) -> set[str]:
    """Metric and recording-rule names in a PromQL expression (roughly, but enough)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"|`[^`]*`', '""', expr)
    tokens = set(re.findall(r"(?<![\w:$])[A-Za-z_:][\w:]*", without_strings))
    return {t for t in tokens if t.startswith(("webhook_", "rabbitmq_")) or ":" in t or t == "up"}


def markdown_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a Markdown file: one per heading, plus explicit ids."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            title = re.sub(r"[`*]|\[([^]]*)\]\([^)]*\)", r"\1", heading.group(1))
            slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
        anchors.update(re.findall(r'<a\s+(?:id|name)="([^"]+)"', line))
    return anchors


def unavailable(message: str) -> NoReturn:
    """Skip for want of a tool, except under CI (.ci/run installs them): fail there."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def need_tool(name: str, install: str) -> str:
    """Path of the executable ``name``; ``install`` says how to get it."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} not found ({install})")
    return path


def _need_promtool() -> str:
    return need_tool("promtool", "apt-get install -y prometheus")


def _need_amtool() -> str:
    return need_tool("amtool", "apt-get install -y prometheus-alertmanager")


# ----------------------------------------------------------------- compose


def test_compose_has_the_whole_system() -> None:
    compose = _compose()
    assert set(compose["services"]) == SERVICES
    assert _service("worker")["deploy"]["replicas"] == 2
    assert _service("producer")["restart"] == "no"
    assert _service("rabbitmq-policies")["restart"] == "no"


_BYTES = re.compile(r"(\d+(?:\.\d+)?)\s*([kKmMgG]?)(i?[bB])?")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _compose_bytes(value: str | int) -> float:
    """A Compose byte value ("512M", "1G", "10m") in bytes."""
    match = _BYTES.fullmatch(str(value).strip())
    assert match, f"not a byte value: {value!r}"
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_cpu_and_memory_limits(name: str) -> None:
    resources = _service(name)["deploy"]["resources"]
    limits = resources["limits"]
    assert 0 < float(limits["cpus"]) <= 4, f"{name}: cpus {limits['cpus']}"
    memory = _compose_bytes(limits["memory"])
    assert 32 * 1024**2 <= memory <= 4 * 1024**3, f"{name}: memory {limits['memory']}"
    reserved = (resources.get("reservations") or {}).get("memory")
    if reserved is not None:
        assert _compose_bytes(reserved) <= memory, f"{name}: reserves more than its limit"


def test_resource_limits_fit_what_runs_inside() -> None:
    # The worker's measured peak RSS is 81-140 MB (docs/performance.md).
    worker = _compose_bytes(_service("worker")["deploy"]["resources"]["limits"]["memory"])
    assert worker >= 2 * 128 * 1024**2 * 0.99
    # RabbitMQ blocks publishers (memory alarm) well before the kernel kills it,
    # and its quorum queue write-ahead log (kept in memory) fits three times.
    rabbit = _compose_bytes(_service("rabbitmq")["deploy"]["resources"]["limits"]["memory"])
    settings = dict(
        (key.strip(), value.strip())
        for key, _, value in (
            line.partition("=")
            for line in RABBITMQ_CONF.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
    )
    watermark = settings["vm_memory_high_watermark.absolute"]
    assert watermark.endswith("MB"), "decimal units, as both 3.x and 4.x parse them"
    assert int(watermark.removesuffix("MB")) * 1000**2 <= 0.7 * rabbit
    assert 3 * int(settings["raft.wal_max_size_bytes"]) <= 0.5 * rabbit
    assert settings["disk_free_limit.absolute"] == "1GB"
    assert (
        dict(_bind_mounts(_service("rabbitmq")))["./config/rabbitmq/conf.d/20-webhook-relay.conf"]
        == "/etc/rabbitmq/conf.d/20-webhook-relay.conf"
    )


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_rotates_its_logs(name: str) -> None:
    """json-file with a size cap: one log line per delivery must not fill the disk."""
    logging = _service(name)["logging"]
    assert logging["driver"] == "json-file"
    options = logging["options"]
    assert 0 < _compose_bytes(options["max-size"]) <= 100 * 1024**2
    assert 1 <= int(options["max-file"]) <= 10


def test_dead_letter_backups_land_on_a_named_volume() -> None:
    """webhook-dlq purge writes to the current directory: the worker runs in a volume."""
    compose = _compose()
    worker = _service("worker")
    workdir = worker["working_dir"]
    named = {
        volume.split(":")[1]: volume.split(":")[0]
        for volume in worker["volumes"]
        if isinstance(volume, str) and not volume.startswith((".", "/"))
    }
    assert named.get(workdir) == "dlq-backups"
    assert "dlq-backups" in compose["volumes"]
    # The directory exists in the image, owned by the unprivileged user, so that a
    # new volume mounted there is writable by it.
    run = " ".join(rest for keyword, rest in _dockerfile().final if keyword == "RUN")
    assert re.search(rf"mkdir -p [^&]*{re.escape(workdir)}\b", run)
    assert re.search(rf"chown webhooks:webhooks [^&]*{re.escape(workdir)}\b", run)
    assert "dlq-backups" in OPERATIONS_DOC.read_text()


def test_every_mounted_path_and_build_context_exists() -> None:
    compose = _compose()
    named = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for source, _target in _bind_mounts(service):
            assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
        for volume in service.get("volumes") or []:
            if isinstance(volume, str) and not volume.startswith((".", "/")):
                assert volume.split(":")[0] in named, f"{name}: undeclared volume {volume}"
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            assert (ROOT / context).is_dir(), f"{name}: build context {context} missing"
            assert (ROOT / context / (dockerfile or "Dockerfile")).is_file()
    assert _service("rabbitmq")["volumes"][0].endswith(":/var/lib/rabbitmq")


def test_services_built_here_run_declared_entry_points(capsys: pytest.CaptureFixture[str]) -> None:
    scripts = _console_scripts()
    default_entrypoint = _dockerfile().exec_form("ENTRYPOINT")
    for name, service in _compose()["services"].items():
        if "build" not in service:
            continue
        assert service["image"] == "webhook-relay:local", f"{name}: share one image"
        entrypoint = service.get("entrypoint", default_entrypoint)
        if entrypoint[0] == "python":
            assert entrypoint[1] == "-m", f"{name}: run modules with python -m"
            assert importlib.util.find_spec(entrypoint[2]) is not None, f"{name}: no module"
        else:
            assert entrypoint[0] in scripts, f"{name}: {entrypoint[0]} is not a console script"

    # The commands parse with the real argument parsers.
    worker_command = _service("worker")["command"]
    assert worker_main([*worker_command, "--help"]) == 0
    capsys.readouterr()
    producer_args = producer_parser().parse_args(_service("producer")["command"])
    assert producer_args.sample and producer_args.event in SAMPLE_EVENTS
    api_parser().parse_args(_service("api").get("command", []))


def _strings(node: Any) -> Iterator[str]:
    """Every string (key or value) of a parsed YAML document: comments are not in it."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def test_env_example_defines_every_compose_variable() -> None:
    text = "\n".join(_strings(_compose()))
    assert not re.search(r"(?<!\$)\$(?![{$])[A-Za-z_]", text), "use ${VAR}, not $VAR"
    referenced = {m.group(1) for m in _INTERPOLATION.finditer(text)}
    # Secrets Compose creates from a variable (`environment:` source).
    secrets = _compose().get("secrets") or {}
    referenced |= {s["environment"] for s in secrets.values() if "environment" in s}
    defined = _env_example()
    assert referenced - set(defined) == set(), "missing from .env.example"
    assert set(defined) - referenced == set(), ".env.example defines unused variables"
    # Required ones fail loudly instead of silently becoming empty.
    for match in _INTERPOLATION.finditer(text):
        if "PASSWORD" in match.group(1) or "SECRET" in match.group(1):
            assert match.group(2) == ":?", f"{match.group(0)} must be required (:?)"


def test_no_guest_credentials() -> None:
    assert "guest" not in COMPOSE_FILE.read_text().lower()
    env_file = _env_example()
    assert all("guest" not in value.lower() for value in env_file.values())
    rabbit = {k: _interpolate(v, env_file) for k, v in _environment(_service("rabbitmq")).items()}
    assert rabbit["RABBITMQ_DEFAULT_USER"] not in ("", "guest")
    assert rabbit["RABBITMQ_DEFAULT_PASS"] not in ("", "guest")
    for name in ("worker", "producer"):
        env = _effective_env(name, env_file)
        assert env["RABBITMQ_USERNAME"] == rabbit["RABBITMQ_DEFAULT_USER"]
        assert env["RABBITMQ_PASSWORD"] == rabbit["RABBITMQ_DEFAULT_PASS"]


def test_only_loopback_ports_are_published() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} to the world"
    # The workers' metrics port (/status for an operator): loopback, and no fixed
    # host port, so that every replica gets its own.
    assert _service("worker")["ports"] == [f"127.0.0.1::{METRICS_PORT}"]


@pytest.mark.parametrize("name", ["worker", "producer"])
def test_worker_and_producer_settings_load_from_compose(name: str) -> None:
    """The effective environment passes the real settings loader, file included."""
    env_file = _env_example()
    service = _service(name)
    env = _effective_env(name, env_file)
    # Every variable is one the code reads (typos would be silently ignored).
    config_text = (ROOT / "config/subscribers.compose.yaml").read_text()
    file_vars = set(ENV_REFERENCE.findall(config_text))
    assert set(env) - SETTINGS_VARS - file_vars == set()
    assert file_vars <= set(env), "the subscriber file needs these variables"

    config_in_container = env["WEBHOOK_CONFIG"]
    host_env = {**env, "WEBHOOK_CONFIG": str(_host_path_for(service, config_in_container))}
    settings = load_settings(host_env)
    assert [s.id for s in settings.subscribers] == ["demo-shop"]
    assert settings.subscribers[0].secret.get_secret_value() == env_file["DEMO_SHOP_SECRET"]
    user = env_file["RABBITMQ_USER"]
    assert settings.broker.redacted == f"amqp://{user}:***@rabbitmq:{AMQP_PORT}/%2F"
    amqp = urlsplit(env["RABBITMQ_URL"])
    assert amqp.hostname == "rabbitmq" and amqp.port == AMQP_PORT
    assert settings.log_format == "json"
    if name == "worker":
        assert settings.metrics_host == "0.0.0.0"  # reachable by Prometheus' container
        assert settings.metrics_port == METRICS_PORT
        grace = settings.shutdown_grace_seconds
        stop = service["stop_grace_period"]
        assert float(stop.removesuffix("s")) > grace, "SIGKILL before the drain ends"
    assert "depends_on" in service and service["depends_on"]["rabbitmq"] == {
        "condition": "service_healthy"
    }


def test_api_settings_load_from_compose() -> None:
    """webhook-api's effective environment passes the real loaders: settings, store URL,
    secrets key and tokens; it listens where compose publishes and checks health."""
    env_file = _env_example()
    api = _service("api")
    env = _effective_env("api", env_file)
    assert set(env) <= SETTINGS_VARS, "a variable the code never reads"
    settings = load_environment(env)
    assert settings.api_host == "0.0.0.0" and settings.log_format == "json"
    assert api["ports"] == [f"127.0.0.1:{settings.api_port}:{settings.api_port}"]
    health = " ".join(api["healthcheck"]["test"])
    assert f"http://127.0.0.1:{settings.api_port}/healthz" in health
    assert ApiTokens.from_settings(settings)  # the example token is a valid one
    assert settings.store_allows_private_networks is False

    database = DatabaseUrl.parse(settings.store_database_url())
    assert database.dialect == "postgresql"
    assert database.redacted == (
        f"postgresql://{env_file['POSTGRES_USER']}:***@postgres:5432/{env_file['POSTGRES_DB']}"
    )
    # The password survives the trip through the URL (it needs no percent-encoding).
    assert database.password == env_file["POSTGRES_PASSWORD"]
    load_secrets_key(database, settings.secrets_key, settings.secrets_key_file)

    postgres = {k: _interpolate(v, env_file) for k, v in _environment(_service("postgres")).items()}
    assert postgres["POSTGRES_PASSWORD"] == database.password
    assert api["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "rabbitmq": {"condition": "service_healthy"},
    }
    assert float(api["stop_grace_period"].removesuffix("s")) > settings.shutdown_grace_seconds
    amqp = urlsplit(env["RABBITMQ_URL"])
    assert amqp.hostname == "rabbitmq" and amqp.port == AMQP_PORT
    assert env["RABBITMQ_USERNAME"] == env_file["RABBITMQ_USER"]


def test_notifier_settings_load_from_compose() -> None:
    """webhook-notifier's effective environment passes the real loaders: settings, the
    operator's destination (signed with the demo receiver's secret) and the store."""
    env_file = _env_example()
    notifier = _service("notifier")
    env = _effective_env("notifier", env_file)
    assert set(env) <= SETTINGS_VARS, "a variable the code never reads"
    settings = load_environment(env)
    assert settings.metrics_host == "0.0.0.0" and settings.log_format == "json"
    assert settings.operator_notification_url is not None
    url = urlsplit(settings.operator_notification_url.get_secret_value())
    assert url.hostname == "receiver" and url.hostname in _compose()["services"]
    # The demo receiver verifies notices like webhooks, with the demo shop's secret.
    assert operator_secret(settings).get_secret_value() == env_file["DEMO_SHOP_SECRET"]
    assert DatabaseUrl.parse(settings.store_database_url()).dialect == "postgresql"
    assert settings.store_allows_private_networks is False
    assert notifier["entrypoint"] == ["webhook-notifier"]
    assert notifier["depends_on"]["api"] == {"condition": "service_healthy"}
    grace = float(notifier["stop_grace_period"].removesuffix("s"))
    assert grace > settings.shutdown_grace_seconds


def test_recorder_settings_load_from_compose() -> None:
    """webhook-recorder's effective environment passes the real loaders; it runs together
    with the workers' DELIVERY_LOG, checks its own port's health and outlives its drain."""
    env_file = _env_example()
    recorder = _service("recorder")
    env = _effective_env("recorder", env_file)
    assert set(env) <= SETTINGS_VARS, "a variable the code never reads"
    settings = load_environment(env)
    assert settings.metrics_host == "0.0.0.0" and settings.log_format == "json"
    database = DatabaseUrl.parse(settings.store_database_url())
    assert database.dialect == "postgresql" and database.password == env_file["POSTGRES_PASSWORD"]
    assert settings.delivery_log_retention_days == float(env_file["DELIVERY_LOG_RETENTION_DAYS"])
    assert recorder["entrypoint"] == ["webhook-recorder"]
    # The image's health check asks METRICS_PORT; the recorder serves on its own.
    health = " ".join(recorder["healthcheck"]["test"])
    assert f"http://127.0.0.1:{settings.recorder_metrics_port}/healthz" in health
    assert settings.recorder_metrics_port != settings.metrics_port
    assert recorder["depends_on"]["api"] == {"condition": "service_healthy"}  # migrated
    assert recorder["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
    drain = inspect.signature(Recorder).parameters["drain_seconds"].default
    assert float(recorder["stop_grace_period"].removesuffix("s")) > drain
    assert "profiles" not in recorder  # on whenever the stack is (README, compose)
    # The workers publish the log by default, with the switch in .env.
    worker = load_environment(
        {k: v for k, v in _effective_env("worker", env_file).items() if k != "WEBHOOK_CONFIG"}
    )
    assert worker.delivery_log is (env_file["DELIVERY_LOG"] == "true") is True
    assert _environment(_service("worker"))["DELIVERY_LOG"] == "${DELIVERY_LOG:-true}"
    memory = _compose_bytes(recorder["deploy"]["resources"]["limits"]["memory"])
    assert memory >= 2 * 167 * 1024**2  # peak RSS 124-167 MiB (docs/performance.md)


def test_postgres_service_is_the_official_image_with_its_data_on_a_volume() -> None:
    postgres = _service("postgres")
    image = re.fullmatch(r"postgres:(\d+)(?:-alpine)?", postgres["image"])
    assert image, f"{postgres['image']}: the official image, its major version pinned"
    assert int(image.group(1)) >= 15
    assert postgres["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    assert "postgres-data" in _compose()["volumes"]
    assert "ports" not in postgres, "only the api (on the compose network) talks to it"
    assert postgres["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "pg_isready" in postgres["healthcheck"]["test"][1]
    env = _environment(postgres)
    assert set(env) == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}


def test_workers_show_how_they_will_get_the_store() -> None:
    """Until workers read the store, their service carries it as a commented example."""
    assert "DATABASE_URL" not in _environment(_service("worker"))
    assert "# <<: [*broker-env, *store-env]" in COMPOSE_FILE.read_text()


def test_demo_subscriber_points_at_the_receiver_service() -> None:
    env_file = _env_example()
    text = (ROOT / "config/subscribers.compose.yaml").read_text()
    parsed = parse_subscriber_file(text, source="subscribers.compose.yaml", environ=env_file)
    [demo] = parsed.subscribers
    url = urlsplit(demo.url)
    receiver = _service("receiver")
    receiver_env = {k: _interpolate(v, env_file) for k, v in _environment(receiver).items()}
    assert url.hostname == "receiver" and url.path == "/webhook"
    assert url.port == int(receiver_env["PORT"])
    assert receiver_env["HOST"] == "0.0.0.0"
    assert receiver_env["WEBHOOK_SECRET"] == demo.secret.get_secret_value()
    assert parsed.security.allow_private_networks  # the receiver has a private address
    assert parsed.retry.delays_seconds == (5, 30)
    assert receiver["entrypoint"] == ["python", "-m", "devtools.demo_receiver"]


def test_rabbitmq_service_enables_prometheus_and_checks_health() -> None:
    rabbit = _service("rabbitmq")
    # A supported series, pinned to its minor version (an upgrade skipping a minor
    # cannot open the data volume), with the management plugin.
    image = re.fullmatch(r"rabbitmq:(\d+)\.(\d+)-management", rabbit["image"])
    assert image, rabbit["image"]
    assert (int(image.group(1)), int(image.group(2))) >= MIN_RABBITMQ_SERIES
    plugins = ENABLED_PLUGINS.read_text().strip()
    assert re.fullmatch(r"\[[a-z_,\s]+\]\.", plugins), plugins
    assert {"rabbitmq_management", "rabbitmq_prometheus"} <= set(
        p.strip() for p in plugins[1:-2].split(",")
    )
    assert dict(_bind_mounts(rabbit))["./config/rabbitmq/enabled_plugins"] == (
        "/etc/rabbitmq/enabled_plugins"
    )
    assert rabbit["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "ping"]


def test_rabbitmq_policy_keeps_dead_letters_from_the_default_delivery_limit() -> None:
    """RabbitMQ 4 drops a quorum queue message after 20 failed deliveries by default."""
    policies = _service("rabbitmq-policies")
    assert policies["image"] == _service("rabbitmq")["image"]  # ships rabbitmqadmin 2
    assert policies["entrypoint"] == ["rabbitmqadmin"]
    assert policies["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}
    env_file = _env_example()
    command = [_interpolate(arg, env_file) for arg in policies["command"]]
    assert command[command.index("policies") + 1] == "declare"

    def option(name: str) -> str:
        return command[command.index(name) + 1]

    assert json.loads(option("--definition")) == {"delivery-limit": -1}
    assert option("--apply-to") == "quorum_queues"
    pattern = re.compile(option("--pattern"))
    for queue in (dead_letter_queue("demo-shop"), dead_letter_queue("a_b-c"), REGISTRY_QUEUE):
        assert pattern.search(queue), queue
    # Work queues keep their own limit (20, x-delivery-limit); delay queues theirs.
    for queue in (work_queue("demo-shop"), work_queue("dlq"), delay_queue(5), "webhooks.a.dlq.x"):
        assert not pattern.search(queue), queue
    env = {k: _interpolate(v, env_file) for k, v in _environment(policies).items()}
    rabbit = {k: _interpolate(v, env_file) for k, v in _environment(_service("rabbitmq")).items()}
    assert env["RABBITMQADMIN_TARGET_HOST"] == "rabbitmq"
    assert env["RABBITMQADMIN_USERNAME"] == rabbit["RABBITMQ_DEFAULT_USER"]
    assert env["RABBITMQADMIN_PASSWORD"] == rabbit["RABBITMQ_DEFAULT_PASS"]


def test_prometheus_and_grafana_wiring() -> None:
    compose = _compose()
    prometheus = _service("prometheus")
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_in_container = config_flag.split("=", 1)[1]
    assert _host_path_for(prometheus, config_in_container).resolve() == PROMETHEUS_CONFIG
    assert "127.0.0.1:9090:9090" in prometheus["ports"]

    scrape = {
        job["job_name"]: job
        for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    }
    assert set(scrape) == {
        "webhook-worker",
        "webhook-notifier",
        "webhook-recorder",
        "rabbitmq",
        "rabbitmq-node",
    }
    [notifier] = scrape["webhook-notifier"]["static_configs"]
    assert notifier["targets"] == [f"notifier:{METRICS_PORT}"]
    [recorder] = scrape["webhook-recorder"]["static_configs"]
    recorder_port = load_environment(_effective_env("recorder", _env_example()))
    assert recorder["targets"] == [f"recorder:{recorder_port.recorder_metrics_port}"]
    [dns] = scrape["webhook-worker"]["dns_sd_configs"]
    assert dns["names"] == ["worker"] and dns["names"][0] in compose["services"]
    assert dns["port"] == METRICS_PORT
    assert scrape["rabbitmq"]["metrics_path"] == "/metrics/per-object"
    [static] = scrape["rabbitmq"]["static_configs"]
    assert static["targets"] == [f"rabbitmq:{RABBITMQ_PROMETHEUS_PORT}"]
    # Node-wide series (the alarms) are only on the aggregated endpoint, and only
    # they are kept from it: everything else would be scraped twice.
    assert scrape["rabbitmq-node"]["metrics_path"] == "/metrics"
    assert scrape["rabbitmq-node"]["static_configs"] == scrape["rabbitmq"]["static_configs"]
    [keep] = scrape["rabbitmq-node"]["metric_relabel_configs"]
    assert keep["action"] == "keep" and keep["source_labels"] == ["__name__"]
    node_series = {name for name in RABBITMQ_SERIES if name.startswith("rabbitmq_alarms_")}
    assert node_series and all(re.fullmatch(keep["regex"], name) for name in node_series)
    assert not any(re.fullmatch(keep["regex"], name) for name in RABBITMQ_SERIES - node_series)

    grafana = _service("grafana")
    datasource = yaml.safe_load(GRAFANA_DATASOURCE.read_text())["datasources"][0]
    url = urlsplit(datasource["url"])
    assert url.hostname in compose["services"] and url.port == 9090
    assert _host_path_for(grafana, "/etc/grafana/provisioning/datasources/prometheus.yml")
    [provider] = yaml.safe_load(GRAFANA_PROVIDERS.read_text())["providers"]
    dashboards_dir = _host_path_for(grafana, provider["options"]["path"])
    assert (dashboards_dir / DASHBOARD.name).resolve() == DASHBOARD
    home = _environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _host_path_for(grafana, home).resolve() == DASHBOARD


def producer_example_job() -> dict[str, Any]:
    """The commented-out example scrape job for producers in prometheus.yml."""
    lines = PROMETHEUS_CONFIG.read_text().splitlines()
    start = lines.index("  # - job_name: webhook-producer")
    block = []
    for line in lines[start:]:
        if not line.startswith("  #"):
            break
        block.append(line.removeprefix("  # "))
    [job] = yaml.safe_load("\n".join(block))
    return job  # type: ignore[no-any-return]


def test_producer_example_job_is_valid_once_uncommented(tmp_path: Path) -> None:
    promtool = _need_promtool()
    job = producer_example_job()
    assert job["job_name"] == "webhook-producer"
    [static] = job["static_configs"]
    [target] = static["targets"]
    # The port the README's producer example serves its metrics on.
    operating = (ROOT / "README.md").read_text().split("## Operating it", 1)[1]
    assert f"start_http_server({target.rsplit(':', 1)[1]}" in operating
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["rule_files"] = [str(ALERT_RULES)]
    config["scrape_configs"].append(job)
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool, "check", "config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------ Alertmanager


def _alertmanager_config() -> dict[str, Any]:
    return yaml.safe_load(ALERTMANAGER_CONFIG.read_text())  # type: ignore[no-any-return]


def test_amtool_check_config() -> None:
    amtool = _need_amtool()
    result = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alertmanager_routes_every_alert_by_its_severity() -> None:
    """critical pages the on-call webhook; warning and info are e-mailed."""
    amtool = _need_amtool()

    def receiver(**labels: str) -> str:
        result = subprocess.run(
            [
                amtool,
                "config",
                "routes",
                "test",
                f"--config.file={ALERTMANAGER_CONFIG}",
                *(f"{k}={v}" for k, v in labels.items()),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.strip()

    receivers = {r["name"] for r in _alertmanager_config()["receivers"]}
    assert set(RECEIVER_FOR_SEVERITY.values()) <= receivers
    for name, rule in _alerts().items():
        severity = rule["labels"]["severity"]
        got = receiver(alertname=name, severity=severity, subscriber="demo-shop")
        assert got == RECEIVER_FOR_SEVERITY[severity], (name, severity, got)
    # An alert without a severity still reaches someone.
    assert receiver(alertname="SomethingElse") == "team-email"


def _alert_names(matcher: str) -> set[str]:
    match = re.fullmatch(r'alertname(=~|=)"([A-Za-z|]+)"', matcher)
    assert match, f"inhibit matchers name alerts: {matcher!r}"
    return set(match.group(2).split("|"))


def test_alertmanager_groups_and_inhibits_known_alerts() -> None:
    config = _alertmanager_config()
    assert config["route"]["group_by"] == ["alertname", "subscriber"]
    alerts = _alerts()
    inhibits: dict[str, set[str]] = {}
    for rule in config["inhibit_rules"]:
        [source_matcher] = rule["source_matchers"]
        [target_matcher] = rule["target_matchers"]
        sources, targets = _alert_names(source_matcher), _alert_names(target_matcher)
        assert sources | targets <= set(alerts), (sources | targets) - set(alerts)
        for source in sources:
            inhibits.setdefault(source, set()).update(targets)
    # A blocked broker explains a backlog; no worker at all explains the rest.
    for alarm in ("WebhookBrokerMemoryAlarm", "WebhookBrokerDiskAlarm"):
        assert "WebhookWorkQueueBacklog" in inhibits[alarm]
        assert "WebhookProducerSpoolNotDraining" in inhibits[alarm]
        assert alerts[alarm]["labels"]["severity"] == "critical"
    assert {"WebhookWorkerDown", "WebhookWorkQueueWithoutConsumer"} <= inhibits["WebhookNoWorkerUp"]
    # A page is only ever replaced by another page.
    for source, targets in inhibits.items():
        for target in targets:
            if alerts[target]["labels"]["severity"] == "critical":
                assert alerts[source]["labels"]["severity"] == "critical", (source, target)


def test_alertmanager_service_and_prometheus_wiring() -> None:
    compose = _compose()
    alertmanager = _service("alertmanager")
    assert re.fullmatch(r"prom/alertmanager:v\d+\.\d+\.\d+", alertmanager["image"])
    flag = next(a for a in alertmanager["command"] if a.startswith("--config.file="))
    assert _host_path_for(alertmanager, flag.split("=", 1)[1]).resolve() == ALERTMANAGER_CONFIG
    assert f"127.0.0.1:{ALERTMANAGER_PORT}:{ALERTMANAGER_PORT}" in alertmanager["ports"]

    prometheus_config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    [target_group] = prometheus_config["alerting"]["alertmanagers"]
    [static] = target_group["static_configs"]
    assert static["targets"] == [f"alertmanager:{ALERTMANAGER_PORT}"]

    # Every secret file the config reads is a Compose secret granted to the service,
    # made from a variable that .env.example defines.
    wanted = set(re.findall(r"/run/secrets/(\w+)", ALERTMANAGER_CONFIG.read_text()))
    assert wanted, "the example keeps its credentials out of the file"
    assert wanted == set(alertmanager["secrets"])
    env_file = _env_example()
    for name in wanted:
        variable = compose["secrets"][name]["environment"]
        assert env_file[variable].startswith("change-me"), variable


def test_dockerfile_runs_the_worker_as_non_root_with_a_health_check() -> None:
    docker = _dockerfile()
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", docker.base_image())
    user = docker.one("USER").split(":")[0]
    assert user not in ("root", "0")
    assert docker.exec_form("ENTRYPOINT") == ["webhook-worker"]
    assert "webhook-worker" in _console_scripts()
    assert docker.exec_form("CMD") == ["run"]
    env = docker.env()
    assert env["LOG_FORMAT"] == "json"
    assert env["METRICS_HOST"] == "0.0.0.0"
    assert int(env["METRICS_PORT"]) == METRICS_PORT
    assert set(k for k in env if not k.startswith(("PYTHON", "PIP_"))) <= SETTINGS_VARS
    assert docker.one("EXPOSE") == str(METRICS_PORT)
    assert any("pip install" in rest for kw, rest in docker.final if kw == "RUN")

    command = docker.healthcheck_command()
    assert command[:2] == ["python", "-c"]
    script = command[2]
    assert "http://127.0.0.1:" in script and "/healthz" in script
    fallback = re.search(r"'METRICS_PORT', '(\d+)'", script)
    assert fallback and int(fallback.group(1)) == METRICS_PORT
    compile(script, "<healthcheck>", "exec")  # valid Python


def test_dockerfile_copies_only_existing_paths_and_ignores_secrets() -> None:
    docker = _dockerfile()
    for stage in docker.stages:
        for keyword, rest in stage:
            if keyword != "COPY" or "--from=" in rest:
                continue
            *sources, _dest = [p for p in shlex.split(rest) if not p.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    ignored = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".git", "tests"} <= ignored
    needed = {"pyproject.toml", "config", "worker", "producer", "devtools", "scripts"}
    assert needed.isdisjoint(ignored)


# -------------------------------------------------------------- Prometheus


def test_promtool_check_config_and_rules() -> None:
    promtool = _need_promtool()
    for args in (["check", "config", str(PROMETHEUS_CONFIG)], ["check", "rules", str(ALERT_RULES)]):
        result = subprocess.run(
            [promtool, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_are_complete_and_written_for_on_call() -> None:
    alerts = _alerts()
    assert set(alerts) >= REQUIRED_ALERTS
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook"):
            assert len(annotations.get(key, "").strip()) > 20, f"{name}: {key} too short"
    # What each required alert is built on, recording rules expanded.
    recorded = {rule["record"]: rule["expr"] for rule in _rules() if "record" in rule}

    def expanded(expr: str) -> str:
        for name, definition in recorded.items():
            expr = expr.replace(name, f"({definition})")
        return expr

    sources = {
        "WebhookBrokerMemoryAlarm": ("rabbitmq_alarms_memory_used_watermark", "> 0"),
        "WebhookBrokerDiskAlarm": ("rabbitmq_alarms_free_disk_space_watermark", "> 0"),
        "WebhookDeadLettersGrowing": ("rabbitmq_queue_messages", r"\\.dlq"),
        "WebhookDeliverySuccessRateLow": ("webhook_deliveries_total", 'outcome="success"'),
        "WebhookWorkQueueWithoutConsumer": ("rabbitmq_queue_consumers", r"\\.work"),
        "WebhookWorkerDown": ('up{job="webhook-worker"}', "== 0"),
        "WebhookEndToEndLatencyHigh": ("webhook_end_to_end_latency_seconds_bucket", "0.99"),
        "WebhookBrokerReconnectStorm": ("webhook_broker_reconnects_total", "increase"),
        "WebhookProducerPublishFailures": (
            "webhook_producer_events_published_total",
            'outcome=~"unavailable|nacked|unroutable"',
        ),
        "WebhookProducerSpoolNotDraining": ("webhook_producer_spool_depth", "> 0"),
    }
    for name, needles in sources.items():
        full = expanded(alerts[name]["expr"])
        for needle in needles:
            assert needle in full, f"{name}: expected {needle!r} in {full}"


def test_markdown_anchors_follow_github() -> None:
    text = "# Title\n## A `code` heading\n### Same\n### Same\n```\n# not a heading\n```\n"
    text += 'Text <a id="custom-id"></a>\n## [Linked](http://x) / Mixed_Case!\n'
    assert markdown_anchors(text) == {
        "title",
        "a-code-heading",
        "same",
        "same-1",
        "custom-id",
        "linked--mixed_case",
    }


def test_every_alert_links_its_section_of_the_operator_guide() -> None:
    """runbook_url = the one placeholder base + an anchor that exists in docs/operations.md."""
    anchors = markdown_anchors(OPERATIONS_DOC.read_text())
    for name, rule in _alerts().items():
        url = rule["annotations"].get("runbook_url", "")
        base, sep, anchor = url.partition("#")
        assert base == RUNBOOK_BASE and sep, f"{name}: runbook_url {url!r}"
        assert anchor == name.lower(), f"{name}: anchor {anchor!r}, want its own section"
        assert anchor in anchors, f"{name}: no section #{anchor} in docs/operations.md"
    # The placeholder is documented where it has to be replaced.
    assert RUNBOOK_BASE in ALERT_RULES.read_text().split("groups:")[0]
    assert RUNBOOK_BASE in OPERATIONS_DOC.read_text()


def test_operator_guide_links_resolve() -> None:
    text = OPERATIONS_DOC.read_text()
    anchors = markdown_anchors(text)
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in anchors, f"docs/operations.md links to missing #{anchor}"
    for target in re.findall(r"\]\((?!#|https?:)([^)#]+)", text):
        assert (OPERATIONS_DOC.parent / target).exists(), f"broken link {target}"
    # The README's links into the guide too.
    for anchor in re.findall(
        r"\]\(docs/operations\.md#([^)]+)\)", (ROOT / "README.md").read_text()
    ):
        assert anchor in anchors, f"README.md links to missing docs/operations.md#{anchor}"


def test_every_series_used_exists() -> None:
    """Rules and panels only use metrics the code defines (names never drift)."""
    worker_series = _metric_sample_names()
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    expressions = [("rule " + r.get("record", r.get("alert", "")), r["expr"]) for r in _rules()]
    expressions += dashboard_expressions()
    variable = _dashboard()["templating"]["list"][0]
    expressions.append(("variable", variable["definition"]))
    used: set[str] = set()
    for where, expr in expressions:
        names = _series_names(expr)
        assert names, f"{where}: no series in {expr!r}"
        for name in names:
            known = name in worker_series or name in RABBITMQ_SERIES or name in recorded
            assert known or name == "up", f"{where}: unknown series {name}"
        used |= names
    # Every worker and producer metric is on the dashboard or in a rule.
    for family in {family.name for family in metric_families()}:
        assert any(u.startswith(family) for u in used), f"{family} is used nowhere"


def panel_query(title: str, subscriber: str = ".*") -> str:
    """The first query of the panel ``title``, as Grafana would send it for ``subscriber``."""
    [expr, *_] = [expr for panel, expr in dashboard_expressions() if panel == title]
    return expr.replace("$__rate_interval", "5m").replace("$subscriber", subscriber)


def _rule_test(rules_file: Path) -> dict[str, Any]:
    """promtool unit tests for the alert logic (annotations are checked above)."""

    def series(name: str, values: str, **labels: str) -> dict[str, str]:
        body = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"{name}{{{body}}}", "values": values}

    worker = {"job": "webhook-worker"}
    rabbit = {"job": "rabbitmq", "instance": "rabbitmq:15692", "vhost": "/"}

    def deliveries(subscriber: str, outcome: str, values: str, status: str) -> dict[str, str]:
        return series(
            "webhook_deliveries_total",
            values,
            **worker,
            instance="w1",
            subscriber=subscriber,
            event="order.created",
            outcome=outcome,
            status=status,
        )

    def e2e(subscriber: str, le: str, values: str) -> dict[str, str]:
        return series(
            "webhook_end_to_end_latency_seconds_bucket",
            values,
            **worker,
            instance="w1",
            subscriber=subscriber,
            le=le,
        )

    def circuit(subscriber: str, instance: str, **values: str) -> list[dict[str, str]]:
        """One replica's webhook_circuit_state series: 1 for its state, 0 for the others."""
        return [
            series(
                "webhook_circuit_state",
                values.get(state, "0x40"),
                **worker,
                instance=instance,
                subscriber=subscriber,
                state=state,
            )
            for state in metrics.CIRCUIT_STATES
        ]

    def alert(name: str, *expected: dict[str, str]) -> dict[str, Any]:
        return {
            "eval_time": "25m",
            "alertname": name,
            "exp_alerts": [{"exp_labels": labels} for labels in expected],
        }

    def queue(name: str, **labels: str) -> dict[str, str]:
        return {"vhost": "/", "queue": name, **labels}

    busy_world = {
        "interval": "1m",
        "input_series": [
            deliveries("down", "http_error", "0+10x40", "5xx"),  # never a success series
            deliveries("ok", "success", "0+10x40", "2xx"),
            deliveries("ok", "timeout", "0+0x40", "none"),
            deliveries("quiet", "http_error", "0+0.5x40", "4xx"),  # too little traffic to judge
            # 80% success only once the failures of every status are summed (each
            # status alone stays under 10% of the attempts).
            deliveries("mixed", "success", "0+8x40", "2xx"),
            deliveries("mixed", "http_error", "0+0.5x40", "5xx"),
            deliveries("mixed", "http_error", "0+0.5x40", "4xx"),
            deliveries("mixed", "http_error", "0+0.5x40", "429"),
            deliveries("mixed", "timeout", "0+0.5x40", "none"),
            series("rabbitmq_queue_messages", "0 0 0 1+1x37", **rabbit, queue="webhooks.down.dlq"),
            series("rabbitmq_queue_messages", "3x40", **rabbit, queue="webhooks.old.dlq"),
            series("rabbitmq_queue_messages", "2000x40", **rabbit, queue="webhooks.busy.work"),
            series("rabbitmq_queue_messages", "0x40", **rabbit, queue="webhooks.down.work"),
            series("rabbitmq_queue_messages", "7x40", **rabbit, queue="webhooks.delay.5000ms"),
            series("rabbitmq_queue_consumers", "2x40", **rabbit, queue="webhooks.down.work"),
            series("rabbitmq_queue_consumers", "2x40", **rabbit, queue="webhooks.busy.work"),
            series("rabbitmq_queue_consumers", "0x40", **rabbit, queue="webhooks.orphan.work"),
            # No consumer on purpose: circuit open (one replica) / paused (410 Gone).
            series("rabbitmq_queue_consumers", "0x40", **rabbit, queue="webhooks.tripped.work"),
            *circuit("tripped", "w1", open="1x40"),
            *circuit("ok", "w1", closed="1x40"),
            # Two replicas: one open, one closed. Its queue still has a consumer.
            *circuit("split", "w1", open="1x40"),
            *circuit("split", "w2", closed="1x40"),
            series("rabbitmq_queue_consumers", "0x40", **rabbit, queue="webhooks.gone.work"),
            series("webhook_subscriber_paused", "1x40", **worker, instance="w1", subscriber="gone"),
            series("webhook_subscriber_paused", "0x40", **worker, instance="w1", subscriber="ok"),
            # Switched off in the configuration (enabled: false / paused in the store).
            series("rabbitmq_queue_consumers", "0x40", **rabbit, queue="webhooks.off.work"),
            series(
                "webhook_subscriber_disabled", "1x40", **worker, instance="w1", subscriber="off"
            ),
            # Open for a while, then a probe succeeded: no alert.
            *circuit(
                "healed", "w1", open="1x10 0 0x28", half_open="0x10 1 0x28", closed="0x11 1x28"
            ),
            series("rabbitmq_queue_consumers", "0x40", **rabbit, queue="webhooks.down.dlq"),
            series("up", "1x40", **worker, instance="w1"),
            series("up", "0x40", **worker, instance="w2"),
            series("up", "1x40", job="rabbitmq", instance="rabbitmq:15692"),
            series("up", "1x40", job="rabbitmq-node", instance="rabbitmq:15692"),
            series("webhook_worker_ready", "1x40", **worker, instance="w1"),
            series("webhook_broker_reconnects_total", "0+1x40", **worker, instance="w1"),
            e2e("slow", "60", "0x40"),
            e2e("slow", "300", "0+10x40"),
            e2e("slow", "+Inf", "0+10x40"),
            e2e("ok", "1", "0+10x40"),
            e2e("ok", "+Inf", "0+10x40"),
        ],
        "alert_rule_test": [
            alert(
                "WebhookDeliverySuccessRateLow",
                {"severity": "warning", "subscriber": "down"},
                {"severity": "warning", "subscriber": "mixed"},
            ),
            alert(
                "WebhookDeadLettersGrowing",
                {"severity": "warning", "subscriber": "down", **queue("webhooks.down.dlq")},
            ),
            alert("WebhookDeadLettersWaiting"),  # only after a day
            alert(
                "WebhookWorkQueueWithoutConsumer",
                {"severity": "critical", "subscriber": "orphan", **queue("webhooks.orphan.work")},
            ),
            alert(
                "WebhookWorkQueueBacklog",
                {"severity": "warning", "subscriber": "busy", **queue("webhooks.busy.work")},
            ),
            alert("WebhookWorkerDown", {"severity": "warning", **worker, "instance": "w2"}),
            alert("WebhookNoWorkerUp"),
            alert(
                "WebhookCircuitOpen",
                {"severity": "warning", "subscriber": "split"},
                {"severity": "warning", "subscriber": "tripped"},
            ),
            alert("WebhookSubscriberPaused", {"severity": "warning", "subscriber": "gone"}),
            alert("WebhookWorkerNotReady"),
            alert("WebhookEndToEndLatencyHigh", {"severity": "warning", "subscriber": "slow"}),
            alert(
                "WebhookBrokerReconnectStorm", {"severity": "warning", **worker, "instance": "w1"}
            ),
            alert("WebhookBrokerMetricsMissing"),
        ],
        "promql_expr_test": [
            # The dashboard's circuit panel counts replicas per state: 2 replicas of
            # "split", one open and one closed.
            {
                "expr": panel_query("Circuit breaker state (worker replicas per state)", "split"),
                "eval_time": "25m",
                "exp_samples": [
                    {"labels": f'{{subscriber="split",state="{state}"}}', "value": count}
                    for state, count in (("closed", 1), ("half_open", 0), ("open", 1))
                ],
            },
            # The top-N tables list exactly the failing subscribers and the backlogs.
            {
                "expr": f"count by (subscriber) ({panel_query('Top 20 failing subscribers')})",
                "eval_time": "25m",
                "exp_samples": [
                    {"labels": f'{{subscriber="{name}"}}', "value": 1}
                    for name in ("down", "mixed", "quiet")
                ],
            },
            {
                "expr": f"count by (subscriber) ({panel_query('Top 20 work queues by depth')})",
                "eval_time": "25m",
                "exp_samples": [{"labels": '{subscriber="busy"}', "value": 1}],
            },
            # Summed over replicas, the circuit state counts replicas per state.
            {
                "expr": 'sum by (state) (webhook_circuit_state{subscriber="split"})',
                "eval_time": "25m",
                "exp_samples": [
                    {"labels": '{state="closed"}', "value": 1},
                    {"labels": '{state="half_open"}', "value": 0},
                    {"labels": '{state="open"}', "value": 1},
                ],
            },
            # The per-status recording rule keeps every status and sums back to the total.
            {
                "expr": "count by (status)"
                ' (subscriber_status:webhook_deliveries:rate5m{subscriber="mixed"})',
                "eval_time": "25m",
                "exp_samples": [
                    {"labels": f'{{status="{status}"}}', "value": 1}
                    for status in ("2xx", "4xx", "429", "5xx", "none")
                ],
            },
            {
                "expr": "abs(sum by (subscriber) (subscriber_status:webhook_deliveries:rate5m)"
                " - subscriber:webhook_deliveries:rate5m) < bool 1e-12",
                "eval_time": "25m",
                "exp_samples": [
                    {"labels": f'{{subscriber="{name}"}}', "value": 1}
                    for name in ("down", "mixed", "ok", "quiet")
                ],
            },
        ],
    }
    dark_world = {
        "interval": "1m",
        "input_series": [
            series("up", "0x40", **worker, instance="w1"),
            series("webhook_worker_ready", "0x40", **worker, instance="w1"),
        ],
        "alert_rule_test": [
            alert("WebhookNoWorkerUp", {"severity": "critical"}),
            alert("WebhookWorkerDown", {"severity": "warning", **worker, "instance": "w1"}),
            alert(
                "WebhookBrokerMetricsMissing",
                {"severity": "warning", "job": "rabbitmq"},
                {"severity": "warning", "job": "rabbitmq-node"},
            ),
            alert("WebhookBrokerMemoryAlarm"),
            alert("WebhookBrokerDiskAlarm"),
            alert("WebhookWorkerNotReady", {"severity": "warning", **worker, "instance": "w1"}),
        ],
    }

    def node(name: str, metric: str, values: str) -> dict[str, str]:
        return series(f"rabbitmq_alarms_{metric}", values, job="rabbitmq-node", instance=name)

    def alarm(name: str, eval_time: str, *expected: dict[str, str]) -> dict[str, Any]:
        return {**alert(name, *expected), "eval_time": eval_time}

    # Three nodes: rabbit-1 is in a memory alarm from minute 5 to 20; rabbit-2 in a
    # disk alarm from minute 8 on; rabbit-3 blips into both for one scrape (minute 10),
    # shorter than the alerts' `for`.
    alarm_world = {
        "interval": "1m",
        "input_series": [
            node("rabbit-1", "memory_used_watermark", "0x4 1x15 0x20"),
            node("rabbit-1", "free_disk_space_watermark", "0x40"),
            node("rabbit-2", "memory_used_watermark", "0x40"),
            node("rabbit-2", "free_disk_space_watermark", "0x7 1x32"),
            node("rabbit-3", "memory_used_watermark", "0x9 1 0x30"),
            node("rabbit-3", "free_disk_space_watermark", "0x9 1 0x30"),
        ],
        "alert_rule_test": [
            alarm("WebhookBrokerMemoryAlarm", "4m"),
            alarm("WebhookBrokerMemoryAlarm", "5m"),  # pending, not firing yet
            alarm(
                "WebhookBrokerMemoryAlarm", "6m", {"severity": "critical", "instance": "rabbit-1"}
            ),
            alarm(
                "WebhookBrokerMemoryAlarm", "10m", {"severity": "critical", "instance": "rabbit-1"}
            ),
            alarm(
                "WebhookBrokerMemoryAlarm", "11m", {"severity": "critical", "instance": "rabbit-1"}
            ),
            alarm("WebhookBrokerMemoryAlarm", "21m"),  # cleared
            alarm("WebhookBrokerDiskAlarm", "8m"),
            alarm("WebhookBrokerDiskAlarm", "9m", {"severity": "critical", "instance": "rabbit-2"}),
            alarm(
                "WebhookBrokerDiskAlarm", "11m", {"severity": "critical", "instance": "rabbit-2"}
            ),
            alarm(
                "WebhookBrokerDiskAlarm", "39m", {"severity": "critical", "instance": "rabbit-2"}
            ),
        ],
    }
    return {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [busy_world, dark_world, alarm_world],
    }


def test_alert_logic_with_promtool_unit_tests(tmp_path: Path) -> None:
    promtool_test_rules(tmp_path, _rule_test)


def _delivery_log_rule_test(rules_file: Path) -> dict[str, Any]:
    """The delivery log's alerts: records dropped, the recorder lagging or absent."""

    def series(name: str, values: str, **labels: str) -> dict[str, str]:
        body = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"{name}{{{body}}}", "values": values}

    worker = {"job": "webhook-worker"}
    recorder = {"job": "webhook-recorder"}
    rabbit = {"job": "rabbitmq", "instance": "rabbitmq:15692", "vhost": "/"}
    attempts = {**rabbit, "queue": "webhooks.attempts"}

    def alert(name: str, *expected: dict[str, str]) -> dict[str, Any]:
        return {
            "eval_time": "25m",
            "alertname": name,
            "exp_alerts": [{"exp_labels": labels} for labels in expected],
        }

    recorder_down = {
        "interval": "1m",
        "input_series": [
            # w1 dropped records a few minutes ago; w2 only published.
            series(
                "webhook_delivery_log_dropped_total",
                "0x20 5 5x19",
                **worker,
                instance="w1",
                reason="buffer_full",
            ),
            series(
                "webhook_delivery_log_dropped_total",
                "0x40",
                **worker,
                instance="w2",
                reason="buffer_full",
            ),
            # Batches wait and nobody consumes them.
            series("rabbitmq_queue_messages", "0x5 10+10x35", **attempts),
            series("rabbitmq_queue_consumers", "0x40", **attempts),
            # A recorder whose database has been down for 20 minutes, one that is fine.
            series("webhook_recorder_lag_seconds", "0x5 60+60x35", **recorder, instance="r1"),
            series("webhook_recorder_lag_seconds", "0.2x40", **recorder, instance="r2"),
        ],
        "alert_rule_test": [
            alert(
                "WebhookDeliveryLogRecordsDropped",
                {"severity": "warning", **worker, "instance": "w1", "reason": "buffer_full"},
            ),
            alert(
                "WebhookDeliveryLogNotRecorded",
                {"severity": "warning", "vhost": "/", "queue": "webhooks.attempts"},
            ),
            alert(
                "WebhookDeliveryLogLagging",
                {"severity": "warning", **recorder, "instance": "r1"},
            ),
        ],
    }
    recorder_consuming = {
        "interval": "1m",
        "input_series": [
            series("rabbitmq_queue_messages", "100x40", **attempts),
            series("rabbitmq_queue_consumers", "1x40", **attempts),
            series("webhook_recorder_lag_seconds", "0x40", **recorder, instance="r1"),
        ],
        "alert_rule_test": [
            alert("WebhookDeliveryLogNotRecorded"),
            alert("WebhookDeliveryLogLagging"),
            alert("WebhookDeliveryLogRecordsDropped"),
        ],
    }
    return {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [recorder_down, recorder_consuming],
    }


def test_delivery_log_alert_logic_with_promtool_unit_tests(tmp_path: Path) -> None:
    promtool_test_rules(tmp_path, _delivery_log_rule_test)


def promtool_test_rules(tmp_path: Path, rule_test: Callable[[Path], dict[str, Any]]) -> None:
    """Run ``promtool test rules`` on what ``rule_test(rules_file)`` returns."""
    promtool = _need_promtool()
    rules = yaml.safe_load(ALERT_RULES.read_text())
    stripped = copy.deepcopy(rules)
    for group in stripped["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump(stripped))
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(yaml.safe_dump(rule_test(rules_file), sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------- Grafana


def test_dashboard_uses_the_provisioned_datasource_everywhere() -> None:
    [datasource] = yaml.safe_load(GRAFANA_DATASOURCE.read_text())["datasources"]
    uid = datasource["uid"]
    assert datasource["type"] == "prometheus"
    dashboard = _dashboard()
    ids = []
    for panel in _panels(dashboard):
        ids.append(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = [p["title"] for p in _panels(dashboard)]
    assert len(titles) == len(set(titles)), "panel titles must be unique"
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid


def test_dashboard_has_the_operator_panels() -> None:
    dashboard = _dashboard()
    titles = {p["title"] for p in _panels(dashboard)}
    assert {
        "Deliveries per second by outcome",
        "Deliveries per second by HTTP status",
        "Success rate per subscriber",
        "Attempt latency (p50 / p90 / p99)",
        "End-to-end latency (p50 / p90 / p99)",
        "Retries scheduled per subscriber (per minute)",
        "Dead letters per subscriber (per minute)",
        "Work queue depth",
        "Delay queue depth",
        "Dead-letter queue depth",
        "In flight per subscriber",
        "Broker reconnects",
        "Workers ready",
        "Top 20 failing subscribers",
        "Top 20 work queues by depth",
        "Producer events per second by outcome",
        "Producer publish latency (p50 / p99)",
        "Producer spool depth",
        "Producer spool traffic (per minute)",
    } <= titles
    [variable] = dashboard["templating"]["list"]
    assert variable["name"] == "subscriber" and variable["includeAll"]
    assert variable["allValue"] == ".*"
    assert re.fullmatch(variable["regex"].strip("/"), "webhooks.demo-shop.work")
    uses_variable = [expr for _title, expr in dashboard_expressions() if "$subscriber" in expr]
    assert len(uses_variable) >= 10
    for title, expr in dashboard_expressions():
        if "histogram_quantile" in expr:
            assert "_bucket" in expr and "le" in expr, title


def test_top_subscriber_tables_scale_to_many_subscribers() -> None:
    """Instant topk(20) queries, one row per subscriber, the subscriber as a column."""
    tables = [p for p in _panels(_dashboard()) if p["type"] == "table"]
    assert {p["title"] for p in tables} >= {
        "Top 20 failing subscribers",
        "Top 20 work queues by depth",
    }
    for panel in tables:
        targets = panel["targets"]
        assert all(t["format"] == "table" and t["instant"] for t in targets), panel["title"]
        # The first query picks the rows; the others add columns for the same rows.
        [top] = re.findall(r"topk\(20, .*\)$", targets[0]["expr"])
        for target in targets[1:]:
            assert target["expr"].endswith(f"and on (subscriber) {top}"), panel["title"]
        transformations = [t["id"] for t in panel["transformations"]]
        assert transformations == ["merge", "organize"], panel["title"]
        organize = panel["transformations"][1]["options"]
        assert organize["indexByName"]["subscriber"] == 0
        columns = set(organize["renameByName"].values())
        assert panel["options"]["sortBy"][0]["displayName"] in columns


def test_dashboard_links_rabbitmqs_own_dashboards() -> None:
    links = {link["title"]: link for link in _dashboard()["links"]}
    overview = links["RabbitMQ-Overview"]
    assert overview["type"] == "link"
    assert overview["url"].startswith(f"/d/{RABBITMQ_OVERVIEW_UID}/")
    assert overview["keepTime"]
    # Every dashboard RabbitMQ publishes carries this tag.
    assert links["RabbitMQ dashboards"]["tags"] == ["rabbitmq-prometheus"]


def _notification_rule_test(rules_file: Path) -> dict[str, Any]:
    """A notice given up at minute 10 and facts dropped at minute 12 alert for 15 min."""
    notifier = {"job": "webhook-notifier", "instance": "n1", "destination": "account"}
    worker = {"job": "webhook-worker", "instance": "w1", "reason": "queue_full"}

    def series(name: str, values: str, labels: dict[str, str]) -> dict[str, str]:
        body = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"{name}{{{body}}}", "values": values}

    def at(name: str, eval_time: str, labels: dict[str, str] | None) -> dict[str, Any]:
        expected = [] if labels is None else [{"exp_labels": {"severity": "warning", **labels}}]
        return {"alertname": name, "eval_time": eval_time, "exp_alerts": expected}

    world = {
        "interval": "1m",
        "input_series": [
            series("webhook_notices_given_up_total", "0x9 1x40", notifier),
            series("webhook_operational_facts_dropped_total", "0x11 3x40", worker),
        ],
        "alert_rule_test": [
            at("WebhookNoticesGivenUp", "9m", None),
            at("WebhookNoticesGivenUp", "11m", notifier),
            at("WebhookNoticesGivenUp", "40m", None),
            at("WebhookOperationalFactsDropped", "11m", None),
            at("WebhookOperationalFactsDropped", "13m", worker),
            at("WebhookOperationalFactsDropped", "45m", None),
        ],
    }
    return {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": [world]}


def test_notification_alert_logic_with_promtool_unit_tests(tmp_path: Path) -> None:
    promtool_test_rules(tmp_path, _notification_rule_test)
