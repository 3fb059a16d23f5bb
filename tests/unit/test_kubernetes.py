"""deploy/kubernetes: every overlay renders and every object is valid, offline.

Each overlay is rendered with ``kubectl kustomize`` (no cluster needed). Built-in
kinds are validated against the Kubernetes OpenAPI schemas shipped by the
``kubernetes-validate`` package, strictly (unknown fields are errors), for the
oldest and newest Kubernetes versions this deployment targets. The Prometheus
Operator's ServiceMonitor and PrometheusRule are custom resources that package
cannot validate: their required fields are checked here, and the PrometheusRule's
groups must equal config/prometheus/alerts.yml (one source of truth). Then the
settings of the worker, the recorder, the notifier and webhook-api are loaded
with the real loader from the environment each pod gets (its ConfigMap, Secrets
and env), like tests/unit/test_deploy_files.py does for docker compose.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import inspect
import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cli.api import main as api_main
from cli.notifier import main as notifier_main
from cli.recorder import main as recorder_main
from cli.worker import main as worker_main
from config.settings import Settings, load_environment, load_settings
from config.subscriber_file import ENV_REFERENCE, parse_subscriber_file
from control.api.auth import ApiTokens
from control.delivery_log.recorder import Recorder
from control.notifications.destinations import operator_secret
from control.store.database import DatabaseUrl
from control.store.key import load_secrets_key
from tests.unit.test_deploy_files import (
    ALERT_RULES,
    METRICS_PORT,
    PROMETHEUS_CONFIG,
    ROOT,
    SETTINGS_VARS,
    _console_scripts,
    _dockerfile,
    need_tool,
    unavailable,
)

KUBERNETES = ROOT / "deploy/kubernetes"
OVERLAYS = ("development", "production")
SYNC_SCRIPT = KUBERNETES / "sync-prometheusrule.py"
# Oldest Kubernetes version this deployment supports, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
EXPECTED_KINDS = {
    "Namespace": 1,
    "ConfigMap": 2,  # the subscriber file, the environment every component shares
    "Secret": 4,  # broker and subscribers, the store, the operator's notices, API tokens
    "Service": 4,  # one per component: metrics (worker, recorder, notifier), the API
    "Deployment": 4,  # worker, recorder, notifier, api
    "PodDisruptionBudget": 1,
    "ServiceMonitor": 1,
    "PrometheusRule": 1,
}
# Each component's Deployment and Service, its console script, and the setting
# naming the port it serves /healthz on (and /readyz and /metrics, but the API).
COMPONENTS = {
    "worker": ("webhook-worker", "metrics_port"),
    "recorder": ("webhook-recorder", "recorder_metrics_port"),
    "notifier": ("webhook-notifier", "metrics_port"),
    "api": ("webhook-api", "api_port"),
}
# The components Prometheus scrapes (webhook-api has no /metrics).
METRICS_COMPONENTS = ("worker", "recorder", "notifier")
# The console script each Deployment's container runs (the worker's is the
# image's ENTRYPOINT, the others name theirs in `command`).
MAINS = {
    "worker": worker_main,
    "recorder": recorder_main,
    "notifier": notifier_main,
    "api": api_main,
}
# RSS measured for one API process: 118-121 MB (docs/scaling.md).
API_PROCESS_RSS = 121e6
_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|k|M|G)?")
_SCALE = {None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _need_kubectl() -> str:
    kubectl = need_tool("kubectl", "install kubectl: https://kubernetes.io/docs/tasks/tools/")
    version = json.loads(
        subprocess.run(
            [kubectl, "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    kustomize = version.get("kustomizeVersion", "")
    if not re.match(r"v?[5-9]\.", kustomize):
        unavailable(f"kubectl {kubectl} embeds kustomize {kustomize!r}: need kubectl >= 1.27")
    return kubectl


@functools.cache
def _render(overlay: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [_need_kubectl(), "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def _one(objects: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind]
    return found


def _named(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    """The object of ``kind`` named ``name`` (a generated ConfigMap: plus its hash suffix)."""
    found = [
        o
        for o in objects
        if o["kind"] == kind
        and re.fullmatch(re.escape(name) + r"(-[a-z0-9]{10})?", o["metadata"]["name"])
    ]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _component(
    objects: tuple[dict[str, Any], ...], component: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A component's Deployment and its one container."""
    deployment = _named(objects, "Deployment", COMPONENTS[component][0])
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


def _secret_value(objects: tuple[dict[str, Any], ...], name: str, key: str) -> str:
    return str(_named(objects, "Secret", name)["stringData"][key])


def _pod_env(objects: tuple[dict[str, Any], ...], container: dict[str, Any]) -> dict[str, str]:
    """The environment the container gets, as the kubelet builds it: ``envFrom`` in order,
    then ``env`` on top. Every ConfigMap, Secret and key it names must exist (unless
    optional), or the pod would not start."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(_named(objects, "Secret", source["secretRef"]["name"])["stringData"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        secret = _named(objects, "Secret", ref["name"])
        assert ref["key"] in secret["stringData"] or ref.get("optional"), ref
        if ref["key"] in secret["stringData"]:
            env[item["name"]] = secret["stringData"][ref["key"]]
    return env


def _quantity(value: str | int | float) -> float:
    match = _QUANTITY.fullmatch(str(value))
    assert match, f"not a quantity: {value!r}"
    return float(match.group(1)) * _SCALE[match.group(2)]


def _labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _sync_module() -> Any:
    spec = importlib.util.spec_from_file_location("sync_prometheusrule", SYNC_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ rendering


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_object_once(overlay: str) -> None:
    objects = _render(overlay)
    kinds = [o["kind"] for o in objects]
    assert {kind: kinds.count(kind) for kind in kinds} == EXPECTED_KINDS
    namespace = _one(objects, "Namespace")["metadata"]["name"]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, obj["kind"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_objects_validate_against_the_kubernetes_schemas(
    overlay: str, version: str
) -> None:
    for obj in _render(overlay):
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{overlay}: {obj['kind']} {obj['metadata']['name']}: {error}")


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions with In) against ``labels``."""
    if not _labels_match(selector.get("matchLabels", {}), labels):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_has_its_required_fields_and_finds_every_component(overlay: str) -> None:
    """ServiceMonitor (monitoring.coreos.com/v1): checked by hand, no schema offline."""
    objects = _render(overlay)
    monitor = _one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", monitor["metadata"]["name"])
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    assert spec["endpoints"], "at least one endpoint"
    for endpoint in spec["endpoints"]:
        assert endpoint["path"] == "/metrics"
        assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
        assert re.fullmatch(r"\d+[smh]", endpoint["scrapeTimeout"])
    # The Prometheus Operator names the job after the Service: the names the
    # alert rules, the dashboard and the compose Prometheus use.
    scrape_configs = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    jobs = {job["job_name"] for job in scrape_configs}
    services = [o for o in objects if o["kind"] == "Service"]
    selected = [s for s in services if _selects(spec["selector"], s["metadata"]["labels"])]
    for service in selected:
        name = service["metadata"]["name"]
        assert _selects(spec["selector"], service["metadata"]["labels"]), name
        assert name in jobs, f"{name}: not a job of config/prometheus/prometheus.yml"
        port_names = {port["name"] for port in service["spec"]["ports"]}
        assert all(endpoint["port"] in port_names for endpoint in spec["endpoints"]), name
    assert sorted(s["metadata"]["name"] for s in selected) == sorted(
        COMPONENTS[c][0] for c in METRICS_COMPONENTS
    )
    # The API's Service is not scraped: it serves no /metrics (a 401 or 404 there).
    assert COMPONENTS["api"][0] not in {s["metadata"]["name"] for s in selected}
    assert 'job="webhook-worker"' in ALERT_RULES.read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_rule_has_its_required_fields_and_the_repository_rules(overlay: str) -> None:
    """PrometheusRule (monitoring.coreos.com/v1): the groups of config/prometheus/alerts.yml."""
    rule = _one(_render(overlay), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"]
        for each in group["rules"]:
            assert ("record" in each) != ("alert" in each), each
            assert isinstance(each["expr"], str) and each["expr"].strip()
            if "alert" in each:
                assert each["labels"]["severity"] in ("critical", "warning", "info")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERT_RULES.read_text())["groups"]
    if overlay == "production":
        # The label a Prometheus Operator's ruleSelector usually wants (placeholder).
        assert "release" in rule["metadata"]["labels"]


def test_prometheus_rule_file_is_generated_from_alerts_yml() -> None:
    """One source of truth: edit alerts.yml, then run the sync script."""
    current = (KUBERNETES / "base/prometheusrule.yaml").read_text()
    assert current == _sync_module().render(), (
        "deploy/kubernetes/base/prometheusrule.yaml is out of date: "
        "run `python deploy/kubernetes/sync-prometheusrule.py`"
    )


# ---------------------------------------------------------------- components


@pytest.mark.parametrize("component", sorted(COMPONENTS))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_the_port_the_settings_give(overlay: str, component: str) -> None:
    objects = _render(overlay)
    _, container = _component(objects, component)
    settings = load_environment(_pod_env(objects, container))
    port = getattr(settings, COMPONENTS[component][1])
    [declared] = container["ports"]
    assert declared["containerPort"] == port
    if component == "api":
        # The kubelet and the Service reach it (its default is 127.0.0.1); it has
        # /healthz only, answered once the store is migrated and open.
        assert declared["name"] == "http" and settings.api_host == "0.0.0.0"
        ready = "/healthz"
    else:
        assert declared["name"] == "metrics"
        assert settings.metrics_host == "0.0.0.0"  # the kubelet and Prometheus reach it
        ready = "/readyz"
    name = declared["name"]
    assert container["readinessProbe"]["httpGet"] == {"path": ready, "port": name}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": name}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": name}
    # Liveness must not kill a process that is only waiting for RabbitMQ: /healthz
    # answers as long as the process serves HTTP, /readyz is for readiness only.
    assert container["livenessProbe"]["httpGet"]["path"] != "/readyz"
    if component == "worker":
        assert port == METRICS_PORT


@pytest.mark.parametrize("component", sorted(COMPONENTS))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_component_stops_gracefully_before_sigkill(overlay: str, component: str) -> None:
    objects = _render(overlay)
    deployment, container = _component(objects, component)
    settings = load_environment(_pod_env(objects, container))
    if component == "recorder":
        # The recorder drains for a fixed time (Recorder's drain_seconds).
        drain = inspect.signature(Recorder).parameters["drain_seconds"].default
    else:
        drain = settings.shutdown_grace_seconds
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(drain) + 5
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("component", sorted(COMPONENTS))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_are_requested_and_limited(overlay: str, component: str) -> None:
    _, container = _component(_render(overlay), component)
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        request = _quantity(resources["requests"][kind])
        limit = _quantity(resources["limits"][kind])
        assert 0 < request <= limit, (kind, request, limit)
    # Above the measured peak RSS (docs/performance.md): the worker's 81-140 MB,
    # the recorder's 124-167 MiB (the delivery log's benchmark); the API's
    # 118-121 MB per process (docs/scaling.md), requested, with room for twice it.
    least = {
        "worker": 256 * 2**20,
        "recorder": 2 * 167 * 2**20,
        "notifier": 128 * 2**20,
        "api": 2 * API_PROCESS_RSS,
    }
    assert _quantity(resources["limits"]["memory"]) >= least[component]
    if component == "api":
        assert _quantity(resources["requests"]["memory"]) > API_PROCESS_RSS
        # One process uses at most one core: a larger limit would never be used.
        assert _quantity(resources["limits"]["cpu"]) <= 1


@pytest.mark.parametrize("component", sorted(COMPONENTS))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_component_runs_non_root_with_a_read_only_root_filesystem(
    overlay: str, component: str
) -> None:
    deployment, container = _component(_render(overlay), component)
    pod = deployment["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    image_user = _dockerfile().one("USER").split(":")[0]
    assert str(security["runAsUser"]) == image_user != "0"
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    box = container["securityContext"]
    assert box["readOnlyRootFilesystem"] is True
    assert box["allowPrivilegeEscalation"] is False
    assert box["capabilities"]["drop"] == ["ALL"]
    # Writable places are volumes: /tmp, and the worker's working directory where
    # webhook-dlq purge writes its backup.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ("/tmp", *([container["workingDir"]] if component == "worker" else [])):
        assert "emptyDir" in volumes[mounts[path]], path
    # The restricted Pod Security Standard is enforced on the namespace.
    namespace = _one(_render(overlay), "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("component", sorted(COMPONENTS))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_component_runs_its_console_script(
    overlay: str, component: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, container = _component(_render(overlay), component)
    command = container.get("command", _dockerfile().exec_form("ENTRYPOINT"))
    assert command == [COMPONENTS[component][0]]
    assert command[0] in _console_scripts()
    # The arguments parse with the real CLI.
    assert MAINS[component]([*container.get("args", []), "--help"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_component_reads_the_shared_config_map(overlay: str) -> None:
    """One place for the broker's address and the log settings: the generated ConfigMap."""
    objects = _render(overlay)
    shared = _named(objects, "ConfigMap", "webhook-relay-env")
    assert set(shared["data"]) <= SETTINGS_VARS, set(shared["data"]) - SETTINGS_VARS
    for component in COMPONENTS:
        _, container = _component(objects, component)
        refs = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
        assert refs == [shared["metadata"]["name"]], component
        inline = {e["name"] for e in container.get("env", [])}
        assert not inline & set(shared["data"]), f"{component} overrides the shared values"
        env = _pod_env(objects, container)
        assert env["RABBITMQ_URL"] == shared["data"]["RABBITMQ_URL"]
        assert env["RABBITMQ_PASSWORD"] == _secret_value(
            objects, "webhook-relay", "RABBITMQ_PASSWORD"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_settings_load_from_the_manifests(
    overlay: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The environment and the subscriber file the pod gets pass the real settings loader."""
    objects = _render(overlay)
    deployment, container = _component(objects, "worker")
    secret = _named(objects, "Secret", "webhook-relay")
    config_map = _named(objects, "ConfigMap", "webhook-relay-subscribers")
    env = _pod_env(objects, container)
    assert set(env) <= SETTINGS_VARS | set(secret["stringData"]), set(env) - SETTINGS_VARS
    assert [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s] == [
        secret["metadata"]["name"]
    ]
    # DATABASE_URL would switch the worker from the subscriber file to the store.
    assert "DATABASE_URL" not in env

    # The ConfigMap (name with its content hash) is mounted where WEBHOOK_CONFIG points.
    pod = deployment["spec"]["template"]["spec"]
    config_path = PurePosixPath(env["WEBHOOK_CONFIG"])
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    assert mount["readOnly"] is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    text = config_map["data"][config_path.name]
    (tmp_path / config_path.name).write_text(text)

    settings = load_settings({**env, "WEBHOOK_CONFIG": str(tmp_path / config_path.name)})
    assert settings.subscribers and settings.log_format == "json"
    assert settings.metrics_host == "0.0.0.0" and settings.metrics_port == METRICS_PORT
    # Subscriber secrets come from the Secret, one key per ${VAR} of the file.
    content = "\n".join(line.split("#")[0] for line in text.splitlines())
    assert set(ENV_REFERENCE.findall(content)) <= set(secret["stringData"])
    parsed = parse_subscriber_file(text, source=config_path.name, environ=env)
    assert not parsed.security.allow_private_networks  # SSRF guard on in the cluster
    capsys.readouterr()


def _store_settings(env: dict[str, str]) -> tuple[Settings, DatabaseUrl]:
    assert set(env) <= SETTINGS_VARS, set(env) - SETTINGS_VARS
    settings = load_environment(env)
    assert settings.log_format == "json" and settings.uses_store
    database = DatabaseUrl.parse(settings.store_database_url())
    assert database.dialect == "postgresql"
    return settings, database


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_recorder_settings_load_from_the_manifests(overlay: str) -> None:
    """The recorder gets the broker's login and DATABASE_URL, nothing else secret."""
    objects = _render(overlay)
    _, container = _component(objects, "recorder")
    assert [s for s in container["envFrom"] if "secretRef" in s] == []
    env = _pod_env(objects, container)
    settings, database = _store_settings(env)
    assert database.password == "change-me-postgres-password"
    assert settings.delivery_log_retention_days == 7
    assert settings.recorder_metrics_port != settings.metrics_port
    assert not {"SECRETS_KEY", "EXAMPLE_SHOP_SECRET", "OPERATOR_NOTIFICATION_SECRET"} & set(env)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_notifier_settings_load_from_the_manifests(overlay: str) -> None:
    """The notifier: the store (URL and key), the operator's URL and secret (optional)."""
    objects = _render(overlay)
    _, container = _component(objects, "notifier")
    assert [s for s in container["envFrom"] if "secretRef" in s] == []
    env = _pod_env(objects, container)
    settings, database = _store_settings(env)
    load_secrets_key(database, settings.secrets_key, settings.secrets_key_file)
    assert settings.operator_notification_url is not None
    assert operator_secret(settings).get_secret_value() == _secret_value(
        objects, "webhook-relay-notifier", "OPERATOR_NOTIFICATION_SECRET"
    )
    assert settings.store_allows_private_networks is False
    assert "EXAMPLE_SHOP_SECRET" not in env
    # Without the optional operator Secret it still starts: accounts' URLs only.
    optional = {
        item["name"]
        for item in container["env"]
        if item.get("valueFrom", {}).get("secretKeyRef", {}).get("optional")
    }
    assert optional == {"OPERATOR_NOTIFICATION_URL", "OPERATOR_NOTIFICATION_SECRET"}
    assert load_environment({k: v for k, v in env.items() if k not in optional}).uses_store


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_settings_load_from_the_manifests(overlay: str, tmp_path: Path) -> None:
    """webhook-api: the store (URL and key), the broker's login, its tokens from a
    mounted Secret file (never an env var), one process, no recorder of its own."""
    objects = _render(overlay)
    deployment, container = _component(objects, "api")
    assert [s for s in container["envFrom"] if "secretRef" in s] == []
    env = _pod_env(objects, container)
    settings, database = _store_settings(env)
    assert database.password == "change-me-postgres-password"
    load_secrets_key(database, settings.secrets_key, settings.secrets_key_file)
    assert settings.store_allows_private_networks is False
    assert not {"EXAMPLE_SHOP_SECRET", "OPERATOR_NOTIFICATION_SECRET"} & set(env)
    # The recorder has its own Deployment: a second one would delete twice.
    assert settings.api_run_recorder is False
    _component(objects, "recorder")
    # One server process per pod (the resources are sized for one); scale by replicas.
    assert settings.api_workers == 1

    # The tokens: a file from the Secret webhook-relay-api, read-only, not in env.
    assert "API_TOKENS" not in env and settings.api_tokens is None
    assert settings.api_tokens_file is not None
    tokens_path = PurePosixPath(str(settings.api_tokens_file))
    pod = deployment["spec"]["template"]["spec"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(tokens_path.parent)]
    assert mount["readOnly"] is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secret_name = volume["secret"]["secretName"]
    assert secret_name == "webhook-relay-api"
    [item] = [i for i in volume["secret"]["items"] if i["path"] == tokens_path.name]
    # Readable by the pod's group (the kubelet gives the files fsGroup), nobody else.
    assert volume["secret"]["defaultMode"] & 0o047 == 0o040
    text = _secret_value(objects, secret_name, item["key"])
    local = tmp_path / tokens_path.name
    local.write_text(text)
    tokens = ApiTokens.from_settings(load_environment({**env, "API_TOKENS_FILE": str(local)}))
    assert len(tokens) == 1  # the placeholder is a valid token (comments skipped)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_hold_placeholders_only(overlay: str) -> None:
    readme = (ROOT / "README.md").read_text()
    for secret in (o for o in _render(overlay) if o["kind"] == "Secret"):
        name = secret["metadata"]["name"]
        assert "data" not in secret, "placeholders stay readable (stringData)"
        for key, value in secret["stringData"].items():
            if key == "SECRETS_KEY":  # base64 of "change-me-change-me-change-me-32"
                assert "change-me" in base64.b64decode(value).decode(), key
            elif key != "RABBITMQ_USERNAME":
                assert "change-me" in value, f"{name} {key} is not a placeholder"
            assert "guest" not in value
        assert f"Secret `{name}`" in readme


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budget_and_services_select_their_pods(overlay: str) -> None:
    objects = _render(overlay)
    for component, (name, _) in COMPONENTS.items():
        deployment, container = _component(objects, component)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert _labels_match(deployment["spec"]["selector"]["matchLabels"], pod_labels)
        service = _named(objects, "Service", name)
        assert _labels_match(service["spec"]["selector"], pod_labels)
        others = [
            o
            for o in objects
            if o["kind"] == "Deployment" and o["metadata"]["name"] != deployment["metadata"]["name"]
        ]
        for other in others:  # a Service reaches only its own component's pods
            assert not _labels_match(
                service["spec"]["selector"], other["spec"]["template"]["metadata"]["labels"]
            )
        [port] = service["spec"]["ports"]
        assert port["targetPort"] == container["ports"][0]["name"]
    worker, _ = _component(objects, "worker")
    budget = _one(objects, "PodDisruptionBudget")
    assert _labels_match(
        budget["spec"]["selector"]["matchLabels"], worker["spec"]["template"]["metadata"]["labels"]
    )
    if "maxUnavailable" in budget["spec"]:
        assert budget["spec"]["maxUnavailable"] == 1
    else:
        assert budget["spec"]["minAvailable"] < worker["spec"]["replicas"]


def test_overlays_differ_where_they_should() -> None:
    (development, dev_container), (production, prod_container) = (
        _component(_render(o), "worker") for o in OVERLAYS
    )
    assert development["spec"]["replicas"] == 1
    # Production survives a node drain with two replicas still delivering.
    assert production["spec"]["replicas"] >= 3
    assert production["spec"]["template"]["spec"]["topologySpreadConstraints"]
    image = prod_container["image"]
    assert re.fullmatch(r"[\w.-]+(:\d+)?/[\w./-]+:[\w.-]+", image) and not image.endswith(":latest")
    dev_env = _pod_env(_render("development"), dev_container)
    assert dev_env["LOG_LEVEL"] == "debug"
    prod_env = _pod_env(_render("production"), prod_container)
    assert len(prod_env["RABBITMQ_URL"].split(",")) == 3  # every node of the cluster
    # A notifier on standby takes over at once (single active consumer).
    notifier, _ = _component(_render("production"), "notifier")
    assert notifier["spec"]["replicas"] == 2
    # Two API pods: a node drain or a rollout leaves one serving.
    api, _ = _component(_render("production"), "api")
    assert api["spec"]["replicas"] == 2
    # Every component runs the one image the overlay names.
    for overlay in OVERLAYS:
        objects = _render(overlay)
        images = {_component(objects, c)[1]["image"] for c in COMPONENTS}
        assert len(images) == 1, images
