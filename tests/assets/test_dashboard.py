"""The Grafana dashboard's structure, its provisioning, and that it is what the generator writes.

Grafana itself is not run here; what it needs to load the dashboard "as it
is" from provisioning is checked structurally: a classic JSON model of
schemaVersion >= 39 with a stable uid, every data source reached through the
``datasource`` variable (never a fixed uid or an import-time ``${DS_...}``),
``job`` and ``instance`` variables used by every query, and the rows the
issue asks for. Whether each query returns data from a real Prometheus is
the end-to-end test's job (test_alerting_e2e.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.assets.promql import DASHBOARDS, ROOT, dashboard_expressions, dashboard_files

OVERVIEW = DASHBOARDS / "corral-overview.json"
PROVISIONING = DASHBOARDS / "provisioning"
ROWS = ["Fleet", "Lifecycle", "Traffic", "Resources", "Build info"]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _load(path: Path = OVERVIEW) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _datasource_refs(node: Any) -> Iterator[Any]:
    """Every value of a "datasource" key, anywhere in the model."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            yield from _datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasource_refs(item)


def test_the_committed_json_is_what_the_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_dashboard.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda path: path.name)
def test_dashboard_model(path: Path) -> None:
    dashboard = _load(path)
    assert dashboard["schemaVersion"] >= 39
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert "__inputs" not in dashboard, "an import-time template, not a provisionable dashboard"
    assert "${DS_" not in path.read_text()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    refs = list(_datasource_refs(dashboard))
    grafana_builtin = {"type": "grafana", "uid": "-- Grafana --"}
    assert refs
    assert all(ref in (DATASOURCE, grafana_builtin) for ref in refs), refs


def test_variables_are_datasource_job_and_instance() -> None:
    variables = {v["name"]: v for v in _load()["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
        assert variables[name]["multi"]
        assert variables[name]["includeAll"]
    assert "$job" in variables["instance"]["query"]["query"], "instances of the chosen jobs"


def test_rows_and_every_query_is_scoped_to_job_and_instance() -> None:
    dashboard = _load()
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows == ROWS
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])


def test_panels_the_issue_names_are_there() -> None:
    by_title = {p["title"]: p for p in _load()["panels"] if p["type"] != "row"}
    exprs = " ".join(e.expr for e in dashboard_expressions(OVERVIEW))
    for metric in (
        "corral_workers_desired",
        "corral_workers_alive",
        "corral_workers_ready",
        "corral_worker_exhausted",
        "corral_worker_restarts_total",
        "corral_worker_crashes_total",
        "corral_restart_budget_remaining",
        "corral_worker_ready_duration_seconds_bucket",
        "corral_drain_duration_seconds_bucket",
        "corral_lifecycle_events_total",
        "corral_http_requests_total",
        "corral_http_request_duration_seconds_bucket",
        "corral_http_requests_in_flight",
        "corral_worker_cpu_seconds_total",
        "corral_worker_resident_memory_bytes",
        "corral_supervisor_info",
    ):
        assert metric in exprs, metric
    budget = by_title["Restart budget remaining per slot"]
    steps = budget["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [step["color"] for step in steps] == ["red", "orange", "green"]
    for title in ("Spawn to ready (p50 / p99)", "Latency per slot (p50 / p99)"):
        quantiles = [t["expr"].split(",")[0] for t in by_title[title]["targets"]]
        assert quantiles == ["histogram_quantile(0.5", "histogram_quantile(0.99"]


def test_crash_annotations_come_from_the_crash_counter() -> None:
    annotations = [a for a in _load()["annotations"]["list"] if "expr" in a]
    assert len(annotations) == 1
    crash = annotations[0]
    assert crash["datasource"] == DATASOURCE
    assert "corral_worker_crashes_total" in crash["expr"]
    assert crash["enable"] is True


def test_provisioning_loads_this_directory_with_a_prometheus_datasource() -> None:
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert sources["apiVersion"] == 1
    [source] = sources["datasources"]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "corral.yml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    # The Compose stack mounts dashboards/ at the provider's path.
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../../dashboards:{provider['options']['path']}:ro" in mounts
