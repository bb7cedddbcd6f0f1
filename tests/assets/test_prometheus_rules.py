"""The alert rules, the scrape config and the Alertmanager example, checked by the real tools.

``promtool`` (Debian's prometheus package) checks the rules and runs their
unit tests (``deploy/prometheus/tests``: a firing and a not-firing case per
alert); it checks the shipped ``prometheus.yml`` as it is, rule files
resolved relative to it. ``amtool`` checks the Alertmanager example. The
rest is what operators rely on: every alert has a severity, a summary, a
description and an absolute runbook link that lands on a heading of
docs/runbooks.md. The rules file is generated (``scripts/build_rules.py``
fills in the runbook base URL); a test fails when the committed file is stale.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.assets.promql import ROOT, RULES_FILE, load_rules
from tests.assets.tools import require, run

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALERTS = {
    "CorralRestartBudgetExhausted",
    "CorralWorkerCrashLooping",
    "CorralWorkersBelowDesired",
    "CorralNotReady",
    "CorralSlowDrain",
    "CorralSinkErrors",
    "CorralSpansDropped",
    "CorralSparesExhausted",
    "CorralMetricsDown",
}


def _promtool() -> str:
    return require("prometheus", "promtool")


def test_promtool_checks_the_rules() -> None:
    result = run(_promtool(), "check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    tests = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert tests
    result = run(_promtool(), "test", "rules", *map(str, tests), cwd=str(PROMETHEUS_DIR / "tests"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases: dict[str, list[bool]] = {}
    for path in (PROMETHEUS_DIR / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                cases.setdefault(check["alertname"], []).append(bool(check["exp_alerts"]))
    assert set(cases) == ALERTS
    for alert, fired in cases.items():
        assert True in fired, f"{alert} never fires in a unit test"
        assert False in fired, f"{alert} has no not-firing unit test"


def test_promtool_checks_the_shipped_prometheus_config() -> None:
    result = run(_promtool(), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_the_scrape_job_is_the_one_the_alerts_expect() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["corral"]["metrics_path"] == "/metrics"
    down = next(rule for rule in load_rules() if rule["alert"] == "CorralMetricsDown")
    assert 'up{job="corral"} == 0' in down["expr"]
    assert 'absent(up{job="corral"})' in down["expr"]


def test_amtool_checks_the_alertmanager_example() -> None:
    amtool = require("prometheus-alertmanager", "amtool")
    config = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    result = run(amtool, "check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    routed = yaml.safe_load(config.read_text())
    assert [r["name"] for r in routed["receivers"]] == [routed["route"]["receiver"]]
    assert routed["receivers"][0]["webhook_configs"][0]["url"].startswith("http")


def _repository_runbooks_url() -> str:
    """docs/runbooks.md on GitHub, from the repository URL pyproject.toml publishes."""
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    return f"{urls['Homepage']}/blob/main/docs/runbooks.md"


def _build_rules(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    script = str(ROOT / "scripts" / "build_rules.py")
    env = {k: v for k, v in os.environ.items() if k != "RUNBOOK_BASE_URL"} | environ
    return subprocess.run(
        [sys.executable, script, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_the_committed_rules_file_is_generated_from_the_template() -> None:
    """With no RUNBOOK_BASE_URL, the links point at docs/runbooks.md on GitHub."""
    result = _build_rules("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_runbook_base_url_can_be_overridden(tmp_path: Path) -> None:
    """RUNBOOK_BASE_URL reaches every alert; a committed file made with another base is stale."""
    base = "https://wiki.example.com/corral/runbooks"
    stale = _build_rules("--check", RUNBOOK_BASE_URL=base)
    assert stale.returncode == 1
    assert "stale" in stale.stdout
    rules_file = tmp_path / "rules.yml"
    result = _build_rules("--output", str(rules_file), RUNBOOK_BASE_URL=base)
    assert result.returncode == 0, result.stderr
    urls = [rule["annotations"]["runbook_url"] for rule in load_rules(rules_file)]
    assert urls == [f"{base}#{rule['alert'].lower()}" for rule in load_rules()]
    # The flag wins over the variable.
    flag = _build_rules(
        "--check", f"--runbook-base-url={_repository_runbooks_url()}", RUNBOOK_BASE_URL=base
    )
    assert flag.returncode == 0, flag.stdout + flag.stderr
    bad = _build_rules("--check", '--runbook-base-url=docs/runbooks.md"')
    assert bad.returncode == 2
    assert "RUNBOOK_BASE_URL=https://" in bad.stderr


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


@pytest.mark.parametrize("rule", load_rules(), ids=lambda rule: str(rule["alert"]))
def test_every_alert_is_labelled_annotated_and_has_a_runbook(rule: dict[str, Any]) -> None:
    assert rule["alert"] in ALERTS
    assert rule["labels"]["severity"] in {"critical", "warning"}
    annotations = rule["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    url, _, anchor = annotations["runbook_url"].partition("#")
    assert url == _repository_runbooks_url()
    assert anchor == rule["alert"].lower()
    assert anchor in _anchors(RUNBOOKS.read_text()), f"no heading for #{anchor} in {RUNBOOKS}"
    # Alerts that page someone at once get a severity that says so.
    if rule["alert"] == "CorralRestartBudgetExhausted":
        assert rule["labels"]["severity"] == "critical"
    if rule["alert"] == "CorralWorkerCrashLooping":
        assert rule["labels"]["severity"] == "warning"


def test_the_rules_file_has_exactly_the_documented_alerts() -> None:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    assert len(groups) == 1
    assert {rule["alert"] for rule in load_rules()} == ALERTS
    assert Path(RULES_FILE).name == "corral-alerts.yml"
