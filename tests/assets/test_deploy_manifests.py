"""The Dockerfile, the Compose stack and the Kubernetes manifests, validated offline.

* Compose: Debian's ``docker-compose`` (1.29) validates the file against the
  Compose schema and resolves every path with ``config``, which needs no
  Docker daemon; the services the stack promises are checked on its output.
* Kubernetes: ``kubernetes-validate`` (PyPI) checks the core objects
  (Deployment, Service, ConfigMap) against the Kubernetes API schemas. It has
  no schemas for CRDs, so the ServiceMonitor and the PrometheusRule are
  checked structurally here, and against their sources (the rules file and
  the dashboard JSON, of which they are generated copies).
* The Dockerfile: no Docker here, so its promises (non-root, both ports
  exposed, the side port bound to 0.0.0.0) are read from the file.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.assets.promql import DASHBOARDS, ROOT, RULES_FILE
from tests.assets.tools import require, run

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
    for kind in ("Deployment", "Service", "ConfigMap"):
        validate.validate(manifests[kind], KUBERNETES_VERSION, strict=True)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        with pytest.raises(validate.SchemaNotFoundError):
            validate.validate(manifests[kind], KUBERNETES_VERSION, strict=True)


def _args(container: dict[str, Any]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in container["args"] if "=" in arg)


def test_deployment_probes_ports_and_drain_budget() -> None:
    deployment = _manifests()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8000, "metrics": 9180}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["CORRAL_METRICS_HOST"] == "0.0.0.0"
    args = _args(container)
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(args["shutdown-timeout"]) + float(args["force-stop-grace"])
    assert pod["terminationGracePeriodSeconds"] > drain + float(pre_stop[1])
    assert pod["securityContext"]["runAsNonRoot"] is True
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


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
