"""The Dockerfile, the Compose stack and the Kubernetes manifests, validated offline.

* Compose: Debian's ``docker-compose`` (1.29) validates the file against the
  Compose schema and resolves every path with ``config``, which needs no
  Docker daemon; the services the stack promises are checked on its output.
* Kubernetes: ``kubernetes-validate`` (PyPI) checks the core objects
  (Deployment, Service, ConfigMap, PodDisruptionBudget, NetworkPolicy)
  against the Kubernetes API schemas. It has no schemas for CRDs, so the
  ServiceMonitor and the PrometheusRule are checked structurally here, and
  against their sources (the rules file and the dashboard JSON, of which they
  are generated copies). ``kubectl kustomize`` renders the kustomization, to
  prove the image tag pin applies. The probes' command runs against a real
  corral with a token on its side port.
* The Dockerfile: no Docker here, so its promises (non-root, both ports
  exposed, the side port bound to 0.0.0.0) are read from the file.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from corral import __version__
from tests.assets.promql import DASHBOARDS, ROOT, RULES_FILE
from tests.assets.tools import require, run
from tests.conftest import CorralProcess

KUBERNETES = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"
KUBERNETES_VERSION = "1.30.0"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> dict[str, dict[str, Any]]:
    """kind -> object, over every manifest the kustomization lists."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    found: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in _docs(KUBERNETES / name):
            found[doc["kind"]] = doc
    return found


# --- Compose ----------------------------------------------------------------------


def test_compose_file_validates_with_docker_compose() -> None:
    docker_compose = require("docker-compose", "docker-compose")
    result = run(docker_compose, "-f", str(COMPOSE), "config", "-q")
    assert result.returncode == 0, result.stdout + result.stderr


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """source -> target of a service's volumes, in the short or the long syntax."""
    found: dict[str, str] = {}
    for volume in service["volumes"]:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            found[source] = target
        else:
            found[volume["source"]] = volume["target"]
    return found


def test_compose_stack_has_every_service_wired() -> None:
    docker_compose = require("docker-compose", "docker-compose")
    result = run(docker_compose, "-f", str(COMPOSE), "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) >= {
        "corral",
        "prometheus",
        "alertmanager",
        "grafana",
        "otel-collector",
        "jaeger",
    }
    corral = services["corral"]
    assert Path(corral["build"]["context"]) == ROOT
    assert corral["build"]["dockerfile"] == "Dockerfile"
    assert corral["command"][0] == "examples.chaos:app"
    assert corral["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    mounts = _mounts(services["prometheus"])
    assert mounts[str(ROOT / "deploy" / "prometheus")] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert str(DASHBOARDS) in _mounts(services["grafana"])
    collector = yaml.safe_load((COMPOSE.parent / "otel-collector.yaml").read_text())
    assert collector["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]


# --- Dockerfile ---------------------------------------------------------------------


def test_dockerfile_runs_non_root_and_exposes_both_ports_on_all_interfaces() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", text, flags=re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^EXPOSE 8000 9180$", text, flags=re.MULTILINE)
    assert "CORRAL_METRICS_HOST=0.0.0.0" in text
    assert "CORRAL_HOST=0.0.0.0" in text
    assert 'ENTRYPOINT ["corral", "run"]' in text
    ignored = (ROOT / ".dockerignore").read_text()
    assert "!src/" in ignored
    assert "!examples/" in ignored


# --- Kubernetes -----------------------------------------------------------------------


def test_core_objects_validate_against_the_kubernetes_schemas() -> None:
    validate = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is in the `assets` dependency group (make test installs it; "
        "its rpds-py dependency has no wheel for every free-threaded CPython)",
    )
    manifests = _manifests()
    for kind in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"):
        validate.validate(manifests[kind], KUBERNETES_VERSION, strict=True)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        with pytest.raises(validate.SchemaNotFoundError):
            validate.validate(manifests[kind], KUBERNETES_VERSION, strict=True)


def _args(container: dict[str, Any]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in container["args"] if "=" in arg)


def _container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = _manifests()["Deployment"]["spec"]["template"]["spec"][
        "containers"
    ]
    [container] = containers
    return container


def _probe_command(probe: dict[str, Any]) -> list[str]:
    command: list[str] = probe["exec"]["command"]
    return command


def test_deployment_probes_ports_and_drain_budget() -> None:
    deployment = _manifests()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = _container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8000, "metrics": 9180}
    assert _probe_command(container["livenessProbe"])[-1] == "/healthz"
    assert _probe_command(container["readinessProbe"])[-1] == "/readyz"
    assert _probe_command(container["startupProbe"])[-1] == "/readyz"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["CORRAL_METRICS_HOST"] == "0.0.0.0"
    assert env["CORRAL_METRICS_PORT"] == str(ports["metrics"])
    args = _args(container)
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(args["shutdown-timeout"]) + float(args["force-stop-grace"])
    assert pod["terminationGracePeriodSeconds"] > drain + float(pre_stop[1])
    assert pod["securityContext"]["runAsNonRoot"] is True
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_the_side_port_token_comes_from_the_secret_the_service_monitor_sends() -> None:
    """One Secret, read by the pods (required, never optional) and sent by the scraper."""
    [token] = [item for item in _container()["env"] if item["name"] == "CORRAL_METRICS_TOKEN"]
    ref = token["valueFrom"]["secretKeyRef"]
    assert not ref.get("optional", False), "a missing Secret must stop the pod, not open the port"
    [endpoint] = _manifests()["ServiceMonitor"]["spec"]["endpoints"]
    auth = endpoint["authorization"]
    assert auth.get("type", "Bearer") == "Bearer"
    assert auth["credentials"] == {"name": ref["name"], "key": ref["key"]}
    # No token is committed: the Secret is the operator's to create.
    assert "Secret" not in _manifests()


def test_only_the_monitoring_namespace_reaches_the_side_port() -> None:
    manifests = _manifests()
    policy = manifests["NetworkPolicy"]["spec"]
    pod_labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    by_port = {rule["ports"][0]["port"]: rule for rule in policy["ingress"]}
    assert set(by_port) == {"http", "metrics"}
    assert "from" not in by_port["http"], "the app port is for everyone in the cluster"
    [source] = by_port["metrics"]["from"]
    assert source == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }


def test_the_disruption_budget_keeps_a_pod_serving() -> None:
    manifests = _manifests()
    budget = manifests["PodDisruptionBudget"]["spec"]
    deployment = manifests["Deployment"]["spec"]
    assert budget["selector"]["matchLabels"] == deployment["selector"]["matchLabels"]
    assert deployment["replicas"] - budget["maxUnavailable"] >= 1
    assert "minAvailable" not in budget, "minAvailable blocks node drains at one replica"


def test_the_kustomization_pins_the_image_to_the_release() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "corral", "newTag": __version__}]
    assert _container()["image"] == "corral", "the tag lives in the kustomization only"


def test_kubectl_kustomize_renders_the_pinned_image() -> None:
    kubectl = require("kubernetes-client", "kubectl")
    result = run(kubectl, "kustomize", str(KUBERNETES))
    assert result.returncode == 0, result.stderr
    [deployment] = [d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"corral:{__version__}"


@pytest.mark.integration
def test_the_probe_command_passes_with_the_token_and_fails_without(
    corral: Callable[..., CorralProcess],
) -> None:
    """The exec probes, run as the kubelet would, against a corral whose side port wants a token."""
    token = "probe-test-token-0123456789"
    server = corral("--workers", "1", env={"CORRAL_METRICS_TOKEN": token})
    server.wait_ready(1)
    port = server.metrics_url.rstrip("/").rsplit(":", 1)[1]
    container = _container()

    def probe(name: str, secret: str) -> int:
        env = {"CORRAL_METRICS_PORT": port, "CORRAL_METRICS_TOKEN": secret, "PATH": "/usr/bin"}
        command = _probe_command(container[name])
        argv = [sys.executable, *command[1:]] if command[0] == "python" else command
        done = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
        return done.returncode

    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert probe(name, token) == 0, name
        assert probe(name, "wrong-token") == 1, name


def test_service_and_service_monitor_reach_the_side_port() -> None:
    manifests = _manifests()
    service, monitor = manifests["Service"], manifests["ServiceMonitor"]
    # The operator names the job after the Service: CorralMetricsDown wants job="corral".
    assert service["metadata"]["name"] == "corral"
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert ports["metrics"]["targetPort"] == "metrics"
    pod_labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"


def test_prometheus_rule_is_the_rules_file() -> None:
    rule = _manifests()["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES_FILE.read_text())["groups"]


def test_dashboard_configmap_is_the_dashboard() -> None:
    configmap = _manifests()["ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    [(name, text)] = configmap["data"].items()
    assert json.loads(text) == json.loads((DASHBOARDS / name).read_text())


def test_generated_manifests_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_kubernetes.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
