"""deploy/kubernetes: every overlay renders and every object is valid, offline.

Each overlay is rendered with ``kubectl kustomize`` (no cluster needed). Built-in
kinds are validated against the Kubernetes OpenAPI schemas shipped by the
``kubernetes-validate`` package, strictly (unknown fields are errors), for the
oldest and newest Kubernetes versions this deployment targets. The Prometheus
Operator's ServiceMonitor and PrometheusRule are custom resources that package
cannot validate: their required fields are checked here, and the PrometheusRule's
groups must equal config/prometheus/alerts.yml (one source of truth). Then the
worker's settings are loaded with the real loader from what the manifests give
it, like tests/unit/test_deploy_files.py does for docker compose.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cli.worker import main as worker_main
from config.settings import load_settings
from config.subscriber_file import ENV_REFERENCE, parse_subscriber_file
from tests.unit.test_deploy_files import (
    ALERT_RULES,
    METRICS_PORT,
    PROMETHEUS_CONFIG,
    ROOT,
    SETTINGS_VARS,
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
    "Namespace",
    "ConfigMap",
    "Secret",
    "Service",
    "Deployment",
    "PodDisruptionBudget",
    "ServiceMonitor",
    "PrometheusRule",
}
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
    assert sorted(o["kind"] for o in objects) == sorted(EXPECTED_KINDS)
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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_has_its_required_fields_and_finds_the_workers(overlay: str) -> None:
    """ServiceMonitor (monitoring.coreos.com/v1): checked by hand, no schema offline."""
    objects = _render(overlay)
    monitor = _one(objects, "ServiceMonitor")
    service = _one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", monitor["metadata"]["name"])
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    assert _labels_match(spec["selector"]["matchLabels"], service["metadata"]["labels"])
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert spec["endpoints"], "at least one endpoint"
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
        assert re.fullmatch(r"\d+[smh]", endpoint["scrapeTimeout"])
    # The Prometheus Operator names the job after the Service: the name the
    # alert rules and the dashboard query (job="webhook-worker").
    scrape_configs = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    jobs = [job["job_name"] for job in scrape_configs]
    assert service["metadata"]["name"] in jobs
    assert 'job="webhook-worker"' in ALERT_RULES.read_text()
    assert service["metadata"]["name"] == "webhook-worker"


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


# -------------------------------------------------------------------- worker


def _worker(objects: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = _one(objects, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_probes_use_the_metrics_port(overlay: str) -> None:
    _, container = _worker(_render(overlay))
    env = {e["name"]: e["value"] for e in container["env"]}
    [port] = container["ports"]
    assert port["name"] == "metrics" and port["containerPort"] == int(env["METRICS_PORT"])
    assert int(env["METRICS_PORT"]) == METRICS_PORT
    assert env["METRICS_HOST"] == "0.0.0.0"  # the kubelet and Prometheus reach it
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    # Liveness must not kill a worker that is only waiting for RabbitMQ: /healthz
    # answers as long as the process serves HTTP, /readyz is for readiness only.
    assert container["livenessProbe"]["httpGet"]["path"] != "/readyz"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_stops_gracefully_before_sigkill(overlay: str) -> None:
    deployment, container = _worker(_render(overlay))
    env = {e["name"]: e["value"] for e in container["env"]}
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(env["SHUTDOWN_GRACE_SECONDS"]) + 5
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_resources_are_requested_and_limited(overlay: str) -> None:
    _, container = _worker(_render(overlay))
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        request = _quantity(resources["requests"][kind])
        limit = _quantity(resources["limits"][kind])
        assert 0 < request <= limit, (kind, request, limit)
    # Above the measured peak RSS (81-140 MB, docs/performance.md).
    assert _quantity(resources["limits"]["memory"]) >= 256 * 2**20


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_runs_non_root_with_a_read_only_root_filesystem(overlay: str) -> None:
    deployment, container = _worker(_render(overlay))
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
    # Writable places are volumes: /tmp, and the working directory where
    # webhook-dlq purge writes its backup.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ("/tmp", container["workingDir"]):
        assert "emptyDir" in volumes[mounts[path]], path
    # The restricted Pod Security Standard is enforced on the namespace.
    namespace = _one(_render(overlay), "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_settings_load_from_the_manifests(
    overlay: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The environment and the subscriber file the pod gets pass the real settings loader."""
    objects = _render(overlay)
    deployment, container = _worker(objects)
    secret = _one(objects, "Secret")
    config_map = _one(objects, "ConfigMap")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) <= SETTINGS_VARS, set(env) - SETTINGS_VARS
    [source] = container["envFrom"]
    assert source["secretRef"]["name"] == secret["metadata"]["name"]
    env.update(secret["stringData"])

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
    # The container's arguments parse with the real worker CLI.
    assert worker_main([*container["args"], "--help"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secret_holds_placeholders_only(overlay: str) -> None:
    secret = _one(_render(overlay), "Secret")
    assert "data" not in secret, "placeholders stay readable (stringData)"
    for key, value in secret["stringData"].items():
        if key != "RABBITMQ_USERNAME":
            assert value.startswith("change-me"), f"{key} is not a placeholder"
        assert "guest" not in value
    readme = (ROOT / "README.md").read_text()
    assert f"Secret `{secret['metadata']['name']}`" in readme


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budget_and_service_select_the_workers(overlay: str) -> None:
    objects = _render(overlay)
    deployment, container = _worker(objects)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _labels_match(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    budget = _one(objects, "PodDisruptionBudget")
    assert _labels_match(budget["spec"]["selector"]["matchLabels"], pod_labels)
    replicas = deployment["spec"]["replicas"]
    if "maxUnavailable" in budget["spec"]:
        assert budget["spec"]["maxUnavailable"] == 1
    else:
        assert budget["spec"]["minAvailable"] < replicas
    service = _one(objects, "Service")
    assert _labels_match(service["spec"]["selector"], pod_labels)
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == container["ports"][0]["name"]


def test_overlays_differ_where_they_should() -> None:
    development, production = (_worker(_render(o)) for o in OVERLAYS)
    assert development[0]["spec"]["replicas"] == 1
    # Production survives a node drain with two replicas still delivering.
    assert production[0]["spec"]["replicas"] >= 3
    assert production[0]["spec"]["template"]["spec"]["topologySpreadConstraints"]
    image = production[1]["image"]
    assert re.fullmatch(r"[\w.-]+(:\d+)?/[\w./-]+:[\w.-]+", image) and not image.endswith(":latest")
    dev_env = {e["name"]: e["value"] for e in development[1]["env"]}
    assert dev_env["LOG_LEVEL"] == "debug"
