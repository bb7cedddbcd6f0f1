"""Generate the Kubernetes objects that copy another asset, so each has one source of truth.

* ``deploy/kubernetes/prometheusrule.yaml`` from
  ``deploy/prometheus/rules/corral-alerts.yml`` (the Prometheus operator's
  PrometheusRule takes the same ``groups``);
* ``deploy/kubernetes/dashboard-configmap.yaml`` from
  ``dashboards/corral-overview.json``, labelled ``grafana_dashboard: "1"`` for
  the Grafana sidecar that kube-prometheus-stack and the Grafana chart run.

Run it (``make assets``) after editing the rules or the dashboard::

    python scripts/build_kubernetes.py           # rewrite both files
    python scripts/build_kubernetes.py --check   # exit 1 if either is stale

tests/assets checks that the committed files equal what this writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules" / "corral-alerts.yml"
DASHBOARD = ROOT / "dashboards" / "corral-overview.json"
KUBERNETES = ROOT / "deploy" / "kubernetes"
PROMETHEUS_RULE = KUBERNETES / "prometheusrule.yaml"
DASHBOARD_CONFIGMAP = KUBERNETES / "dashboard-configmap.yaml"

LABELS = {"app.kubernetes.io/name": "corral"}


def _header(source: Path, extra: str) -> str:
    return (
        f"# GENERATED from {source.relative_to(ROOT)} by scripts/build_kubernetes.py;\n"
        f"# do not edit: change the source and run `make assets`.\n{extra}"
    )


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, the dashboard JSON) as literal blocks, as people write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def prometheus_rule() -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "corral-alerts", "labels": dict(LABELS)},
        "spec": {"groups": groups},
    }
    extra = (
        "# Your Prometheus selects rules by label (kube-prometheus-stack: `release: <name>`\n"
        "# by default); add it under metadata.labels with a kustomize patch if needed.\n"
    )
    return _header(RULES, extra) + _dump(document)


def dashboard_configmap() -> str:
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "corral-dashboard",
            "labels": {**LABELS, "grafana_dashboard": "1"},
        },
        "data": {DASHBOARD.name: DASHBOARD.read_text()},
    }
    extra = '# The Grafana sidecar loads every ConfigMap labelled grafana_dashboard: "1".\n'
    return _header(DASHBOARD, extra) + _dump(document)


OUTPUTS = {PROMETHEUS_RULE: prometheus_rule, DASHBOARD_CONFIGMAP: dashboard_configmap}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, render in OUTPUTS.items():
        text = render()
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
            continue
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    for path in stale:
        print(f"{path.relative_to(ROOT)} is stale: run python scripts/build_kubernetes.py")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
