"""Generate the Prometheus alert rules with runbook links that open from anywhere.

``deploy/prometheus/corral-alerts.template.yml`` is the source; each alert's
``runbook_url`` there reads ``${RUNBOOK_BASE_URL}#anchor``. This writes
``deploy/prometheus/rules/corral-alerts.yml`` with the placeholder replaced by
an absolute URL, so the link opens from Alertmanager, Grafana or a pager, not
only from a checkout of this repository. Text is substituted, not re-dumped,
so the template's comments reach the rules file as written.

The base URL is, first to last: ``--runbook-base-url``, the
``RUNBOOK_BASE_URL`` environment variable, and the default: docs/runbooks.md
on the branch ``main`` of the repository named in pyproject.toml's
``[project.urls] Homepage``. To point the links at your own copy::

    RUNBOOK_BASE_URL=https://wiki.example.com/corral/runbooks make assets

(``make assets`` also rebuilds deploy/kubernetes/prometheusrule.yaml from the
result, so the Kubernetes rules follow.)

    python scripts/build_rules.py           # rewrite the rules file
    python scripts/build_rules.py --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "prometheus" / "corral-alerts.template.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "corral-alerts.yml"
PLACEHOLDER = "${RUNBOOK_BASE_URL}"
ENV_VAR = "RUNBOOK_BASE_URL"
_ANY_PLACEHOLDER = re.compile(r"\$\{\w+\}")


class BuildError(Exception):
    """The template or the base URL cannot make a valid rules file; the message says why."""


def default_base_url() -> str:
    """docs/runbooks.md in the repository pyproject.toml names, on its main branch."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    homepage = str(project["urls"]["Homepage"]).rstrip("/")
    return f"{homepage}/blob/main/docs/runbooks.md"


def base_url(flag: str | None, environ: dict[str, str]) -> str:
    url = flag or environ.get(ENV_VAR) or default_base_url()
    if not re.match(r"^https?://[^\s#\"]+$", url):
        raise BuildError(
            f"runbook base URL {url!r} is not an http(s) URL without a fragment or quotes; "
            f"pass e.g. {ENV_VAR}=https://wiki.example.com/corral/runbooks"
        )
    return url


def render(base: str) -> str:
    template = TEMPLATE.read_text()
    alerts = len(re.findall(r"^\s*- alert:", template, flags=re.MULTILINE))
    links = template.count(f'runbook_url: "{PLACEHOLDER}#')
    if links != alerts:
        raise BuildError(f"{TEMPLATE.name}: {alerts} alerts but {links} runbook_url placeholders")
    text = template.replace(PLACEHOLDER, base)
    leftover = _ANY_PLACEHOLDER.search(text)
    if leftover:
        raise BuildError(f"{TEMPLATE.name}: unknown placeholder {leftover.group(0)}")
    header = (
        f"# GENERATED from {TEMPLATE.relative_to(ROOT)} by scripts/build_rules.py;\n"
        "# do not edit: change the template and run `make assets`.\n"
    )
    return header + text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the rules file is stale")
    parser.add_argument(
        "--runbook-base-url", help=f"URL of the runbook page (default: ${ENV_VAR}, else GitHub)"
    )
    parser.add_argument("--output", type=Path, default=RULES, help="where to write the rules")
    args = parser.parse_args(argv)
    try:
        text = render(base_url(args.runbook_base_url, dict(os.environ)))
    except BuildError as exc:
        print(f"build_rules: {exc}", file=sys.stderr)
        return 2
    output: Path = args.output
    if args.check:
        if not output.exists() or output.read_text() != text:
            print(f"{output} is stale: run python scripts/build_rules.py")
            return 1
        return 0
    output.write_text(text)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
