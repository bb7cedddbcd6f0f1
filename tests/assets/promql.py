"""Every PromQL expression the operator assets ship, and the rewrites needed to run them.

The dashboard's queries carry Grafana variables (``$__rate_interval``,
``$job``...) that Prometheus does not know; ``substitute`` replaces them the
way Grafana would for "All" on a 1 s scrape interval. An alert expression is a
condition that is usually false, so ``without_thresholds`` turns each
comparison into a ``bool`` one: the result keeps every series the expression's
selectors and joins produce, whatever the threshold says.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
DASHBOARDS = ROOT / "dashboards"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
RULES_FILE = RULES_DIR / "corral-alerts.yml"

# What Grafana puts in place of its variables, for a Prometheus scraping every
# second and every job/instance selected ("All" is the allValue ".+").
GRAFANA_VARIABLES = {
    "__rate_interval": "5s",
    "__interval": "5s",
    "__range": "5m",
    "job": ".+",
    "instance": ".+",
    "datasource": "prometheus",
}
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*\w+\)$", re.DOTALL)
_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)")
_METRIC_NAME = re.compile(r"\b(corral_[a-z0-9_]+)\b")


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it came from (for failure messages)."""

    where: str
    expr: str
    is_rule: bool = False


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def load_rules(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    document = yaml.safe_load(path.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions(path: Path) -> list[Expression]:
    """Panel targets, annotation queries and variable queries of one dashboard."""
    dashboard = json.loads(path.read_text())
    found: list[Expression] = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append(Expression(f"{path.name} panel {panel['title']!r}", target["expr"]))
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            where = f"{path.name} annotation {annotation['name']!r}"
            found.append(Expression(where, annotation["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text.strip())
        # label_values(selector, label) is Grafana's; its selector is PromQL.
        found.append(
            Expression(
                f"{path.name} variable {variable['name']!r}",
                match.group("selector") if match else text,
            )
        )
    return found


def rule_expressions(path: Path) -> list[Expression]:
    return [
        Expression(
            f"{path.name} {rule.get('alert') or rule.get('record')}", rule["expr"], is_rule=True
        )
        for rule in load_rules(path)
    ]


def all_expressions() -> list[Expression]:
    found: list[Expression] = []
    for path in dashboard_files():
        found.extend(dashboard_expressions(path))
    for path in rule_files():
        found.extend(rule_expressions(path))
    return found


def substitute(expr: str) -> str:
    """Replace Grafana's variables; an unknown one fails loudly rather than reaching Prometheus."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in GRAFANA_VARIABLES:
            raise KeyError(f"no substitute for Grafana variable ${name} in {expr!r}")
        return GRAFANA_VARIABLES[name]

    return _VARIABLE.sub(replace, expr)


def without_thresholds(expr: str) -> str:
    """Make every comparison outside label matchers and strings a ``bool`` comparison."""
    out: list[str] = []
    depth = 0
    quote = ""
    index = 0
    while index < len(expr):
        char = expr[index]
        if quote:
            out.append(char)
            if char == "\\" and index + 1 < len(expr):
                out.append(expr[index + 1])
                index += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
            out.append(char)
        elif char == "{":
            depth += 1
            out.append(char)
        elif char == "}":
            depth -= 1
            out.append(char)
        elif depth == 0 and (match := _COMPARISON.match(expr, index)):
            out.append(f"{match.group(1)} bool")
            index += len(match.group(1))
            continue
        else:
            out.append(char)
        index += 1
    return "".join(out)


def metric_names(text: str) -> set[str]:
    """``corral_*`` names in a text, without the histogram suffixes Prometheus adds."""
    return set(_METRIC_NAME.findall(text))
