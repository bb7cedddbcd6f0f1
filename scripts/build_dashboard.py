"""Write ``dashboards/corral-overview.json``, the Grafana dashboard for corral.

The committed JSON is the artefact Grafana loads; this script is how it stays
consistent: every panel gets the same ``${datasource}`` reference, the same
``job``/``instance`` matchers and a unique id, and the layout is computed
rather than hand-placed. Run it after changing a panel::

    python scripts/build_dashboard.py           # rewrite the JSON
    python scripts/build_dashboard.py --check   # exit 1 if the JSON is stale

Only the standard library is used, so it runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "dashboards" / "corral-overview.json"

UID = "corral-overview"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Every query is narrowed to the selected jobs and instances (multi-valued,
# hence the regex match).
SEL = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"
GRID_WIDTH = 24

Json = dict[str, Any]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


@dataclass(frozen=True)
class Panel:
    """One panel; ``kind`` is a Grafana panel type (timeseries, stat, table...)."""

    title: str
    kind: str
    queries: tuple[Query, ...]
    description: str
    unit: str = "short"
    width: int = 12
    height: int = 8
    thresholds: tuple[tuple[str, float | None], ...] = ()
    options: Json = field(default_factory=dict)
    custom: Json = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def q(expr: str, legend: str = "", **flags: bool) -> Query:
    return Query(expr, legend, **flags)


# --- The panels ----------------------------------------------------------------

FLEET = Row(
    "Fleet",
    (
        Panel(
            "Workers desired / alive / ready",
            "timeseries",
            (
                q(f"sum by (instance) (corral_workers_desired{{{SEL}}})", "{{instance}} desired"),
                q(f"sum by (instance) (corral_workers_alive{{{SEL}}})", "{{instance}} alive"),
                q(f"sum by (instance) (corral_workers_ready{{{SEL}}})", "{{instance}} ready"),
                q(
                    f"sum by (instance) (corral_workers_min_ready{{{SEL}}})",
                    "{{instance}} required by /readyz",
                ),
            ),
            "Configured slots, slots with a running worker (starting, ready or draining), "
            "slots serving requests, and how many /readyz requires (--min-ready, else every "
            "slot not exhausted). Ready below required for 5 minutes is CorralNotReady.",
            width=12,
        ),
        Panel(
            "Ready workers",
            "stat",
            (q(f"sum(corral_workers_ready{{{SEL}}})", "ready", instant=True),),
            "Workers serving requests now, across the selected instances.",
            width=4,
            thresholds=(("red", None), ("green", 1)),
        ),
        Panel(
            "Desired workers",
            "stat",
            (q(f"sum(corral_workers_desired{{{SEL}}})", "desired", instant=True),),
            "Worker slots configured (--workers, changed by SIGTTIN/SIGTTOU).",
            width=4,
        ),
        Panel(
            "Exhausted slots",
            "stat",
            (q(f"sum(corral_worker_exhausted{{{SEL}}})", "exhausted", instant=True),),
            "Slots given up on after running out of restarts: CorralRestartBudgetExhausted. "
            "A reload (SIGHUP) starts them again.",
            width=4,
            thresholds=(("green", None), ("red", 1)),
        ),
        Panel(
            "Warm spares desired / ready / given up",
            "timeseries",
            (
                q(f"sum by (instance) (corral_spares_desired{{{SEL}}})", "{{instance}} desired"),
                q(f"sum by (instance) (corral_spares_ready{{{SEL}}})", "{{instance}} ready"),
                q(
                    f"max by (instance) (corral_spares_exhausted{{{SEL}}})",
                    "{{instance}} given up",
                ),
            ),
            "Warm spares (--spares): workers booted through lifespan startup that take a "
            "dead, recycled or rolled slot at once (a promote event). Ready dips while a "
            "promoted spare's replacement boots. Given up (1) means spares failed past their "
            "own restart budget until a reload: CorralSparesExhausted. The slots serve on.",
            width=16,
        ),
        Panel(
            "Warm spares ready",
            "stat",
            (q(f"sum(corral_spares_ready{{{SEL}}})", "ready", instant=True),),
            "Spares warm now, across the selected instances; 0 when --spares is 0. "
            "Promotions are the promote kind in Lifecycle events by kind.",
            width=8,
        ),
    ),
)

LIFECYCLE = Row(
    "Lifecycle",
    (
        Panel(
            "Restarts per slot",
            "timeseries",
            (
                q(
                    f"sum by (instance, slot) "
                    f"(increase(corral_worker_restarts_total{{{SEL}}}[{RATE}]))",
                    "{{instance}} slot {{slot}}",
                ),
            ),
            "Restarts charged to each slot's budget. Sustained restarts while the budget "
            "shrinks is CorralWorkerCrashLooping.",
            custom={"drawStyle": "bars", "fillOpacity": 60},
        ),
        Panel(
            "Crashes by reason",
            "timeseries",
            (
                q(
                    f"sum by (reason) (increase(corral_worker_crashes_total{{{SEL}}}[{RATE}]))",
                    "{{reason}}",
                ),
            ),
            "Workers that died unasked: exit_code, signal, boot (failed before ready), "
            "hang, exception.",
            custom={"drawStyle": "bars", "fillOpacity": 60, "stacking": {"mode": "normal"}},
        ),
        Panel(
            "Restart budget remaining per slot",
            "bargauge",
            (
                q(
                    f"min by (instance, slot) (corral_restart_budget_remaining{{{SEL}}})"
                    " / on (instance) group_left "
                    f"max by (instance) (corral_restart_budget_limit{{{SEL}}})",
                    "{{instance}} slot {{slot}}",
                    instant=True,
                ),
            ),
            "Share of --max-restarts each slot may still use within --restart-window "
            "(corral_restart_budget_limit, _window_seconds). At 0 the next crash exhausts "
            "the slot.",
            unit="percentunit",
            width=8,
            thresholds=(("red", None), ("orange", 0.2), ("green", 0.6)),
            options={"orientation": "horizontal", "displayMode": "gradient"},
        ),
        Panel(
            "Spawn to ready (p50 / p99)",
            "timeseries",
            (
                q(
                    "histogram_quantile(0.5, sum by (instance, le) "
                    f"(rate(corral_worker_ready_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                    "{{instance}} p50",
                ),
                q(
                    "histogram_quantile(0.99, sum by (instance, le) "
                    f"(rate(corral_worker_ready_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                    "{{instance}} p99",
                ),
            ),
            "Time from spawning a worker to it accepting requests: how long a crash costs a slot.",
            unit="s",
            width=8,
        ),
        Panel(
            "Drain duration (p50 / p99)",
            "timeseries",
            (
                q(
                    "histogram_quantile(0.5, sum by (instance, le) "
                    f"(rate(corral_drain_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                    "{{instance}} p50",
                ),
                q(
                    "histogram_quantile(0.99, sum by (instance, le) "
                    f"(rate(corral_drain_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                    "{{instance}} p99",
                ),
                q(
                    f"sum by (instance) "
                    f"(increase(corral_worker_force_stops_total{{{SEL}}}[{RATE}]))",
                    "{{instance}} force stops",
                ),
            ),
            "Time from asking a worker to drain to it exiting (shutdown, rolling restart, "
            "scale-down), and forcible stops of drains that overran: CorralSlowDrain.",
            unit="s",
            width=8,
        ),
        Panel(
            "Lifecycle events by kind",
            "timeseries",
            (
                q(
                    f"sum by (kind) (increase(corral_lifecycle_events_total{{{SEL}}}[{RATE}]))",
                    "{{kind}}",
                ),
            ),
            "Every transition corral emits (spawn, ready, crash, respawn, drain, reload, "
            "scale...). The same events are in /events, the logs and the traces.",
            width=12,
            custom={"drawStyle": "bars", "fillOpacity": 60, "stacking": {"mode": "normal"}},
        ),
        Panel(
            "Sink errors",
            "timeseries",
            (
                q(
                    f"sum by (instance, sink) "
                    f"(increase(corral_sink_errors_total{{{SEL}}}[{RATE}]))",
                    "{{instance}} {{sink}}",
                ),
            ),
            "Lifecycle events a sink failed to handle: CorralSinkErrors.",
            width=12,
        ),
    ),
)

TRAFFIC = Row(
    "Traffic",
    (
        Panel(
            "Request rate per slot",
            "timeseries",
            (
                q(
                    f"sum by (instance, slot) (rate(corral_http_requests_total{{{SEL}}}[{RATE}]))",
                    "{{instance}} slot {{slot}}",
                ),
            ),
            "Requests finished per second by each slot's workers (off with --no-request-metrics).",
            unit="reqps",
        ),
        Panel(
            "Error ratio (5xx)",
            "timeseries",
            (
                q(
                    "sum by (instance) (rate(corral_http_requests_total"
                    f'{{{SEL}, status_class="5xx"}}[{RATE}]))\n/\n'
                    f"sum by (instance) (rate(corral_http_requests_total{{{SEL}}}[{RATE}]))",
                    "{{instance}}",
                ),
            ),
            "Share of requests answered with a 5xx status.",
            unit="percentunit",
            thresholds=(("green", None), ("orange", 0.01), ("red", 0.05)),
        ),
        Panel(
            "Latency per slot (p50 / p99)",
            "timeseries",
            (
                q(
                    "histogram_quantile(0.5, sum by (instance, slot, le) "
                    f"(rate(corral_http_request_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                    "{{instance}} slot {{slot}} p50",
                ),
                q(
                    "histogram_quantile(0.99, sum by (instance, slot, le) "
                    f"(rate(corral_http_request_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                    "{{instance}} slot {{slot}} p99",
                ),
            ),
            "Time from receiving a request to the app returning, per slot.",
            unit="s",
        ),
        Panel(
            "In-flight requests",
            "timeseries",
            (
                q(
                    f"sum by (instance, slot) (corral_http_requests_in_flight{{{SEL}}})",
                    "{{instance}} slot {{slot}}",
                ),
            ),
            "Requests the slot's live workers are handling now.",
        ),
    ),
)

RESOURCES = Row(
    "Resources",
    (
        Panel(
            "CPU per worker",
            "timeseries",
            (
                q(
                    f"sum by (instance, slot) "
                    f"(rate(corral_worker_cpu_seconds_total{{{SEL}}}[{RATE}]))",
                    "{{instance}} slot {{slot}}",
                ),
                q(
                    f"rate(process_cpu_seconds_total{{{SEL}}}[{RATE}])",
                    "{{instance}} supervisor process",
                ),
            ),
            "CPU seconds per second of each slot's current worker (its event-loop thread "
            "in thread mode), and the supervisor process (all threads in thread mode).",
            unit="percentunit",
        ),
        Panel(
            "Memory per worker",
            "timeseries",
            (
                q(
                    f"sum by (instance, slot) (corral_worker_resident_memory_bytes{{{SEL}}})",
                    "{{instance}} slot {{slot}}",
                ),
                q(
                    f"process_resident_memory_bytes{{{SEL}}}",
                    "{{instance}} supervisor process",
                ),
            ),
            "Resident memory of each worker process (process mode), and of the supervisor "
            "process, which holds every worker in thread mode.",
            unit="bytes",
        ),
    ),
)

BUILD = Row(
    "Build info",
    (
        Panel(
            "corral build",
            "table",
            (
                q(
                    f"max by (instance, version, mode, python, gil) "
                    f"(corral_supervisor_info{{{SEL}}})",
                    instant=True,
                    table=True,
                ),
            ),
            "The corral version, worker mode, interpreter and whether the GIL is on, per instance.",
            width=16,
            options={"showHeader": True},
        ),
        Panel(
            "Supervisor uptime",
            "stat",
            (
                q(
                    f"time() - max by (instance) (process_start_time_seconds{{{SEL}}})",
                    "{{instance}}",
                    instant=True,
                ),
            ),
            "Time since the supervisor process started.",
            unit="s",
            width=8,
        ),
    ),
)

ROWS = (FLEET, LIFECYCLE, TRAFFIC, RESOURCES, BUILD)


# --- Rendering -----------------------------------------------------------------


def render_target(query: Query, ref: str) -> Json:
    target: Json = {
        "datasource": DATASOURCE,
        "refId": ref,
        "expr": query.expr,
        "legendFormat": query.legend or "__auto",
        "range": not query.instant,
        "instant": query.instant,
    }
    if query.table:
        target["format"] = "table"
    return target


def render_thresholds(panel: Panel) -> Json:
    steps = panel.thresholds or (("green", None),)
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


def render_panel(panel: Panel, panel_id: int, x: int, y: int) -> Json:
    defaults: Json = {"unit": panel.unit, "thresholds": render_thresholds(panel)}
    if panel.kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "fillOpacity": 10, **panel.custom}
        if panel.thresholds:
            defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
    if panel.kind in ("stat", "bargauge"):
        defaults["color"] = {"mode": "thresholds"}
    if panel.kind == "bargauge" and panel.unit == "percentunit":
        defaults.update(min=0, max=1)  # a full bar is 100%, not the largest value shown
    rendered: Json = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": panel.options,
        "targets": [
            render_target(query, chr(ord("A") + index)) for index, query in enumerate(panel.queries)
        ],
    }
    if panel.kind == "table":
        rendered["transformations"] = [
            {
                "id": "organize",
                "options": {"excludeByName": {"Time": True, "Value": True}},
            }
        ]
    return rendered


def render_panels() -> list[Json]:
    """Rows and their panels, flowing left to right and wrapping at 24 columns."""
    panels: list[Json] = []
    next_id = 1
    y = 0
    for row in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": GRID_WIDTH, "h": 1},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y = 0, y + line_height
                line_height = 0
            panels.append(render_panel(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return panels


def render_variables() -> list[Json]:
    datasource: Json = {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }

    def label_values(name: str, label: str, query: str) -> Json:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DATASOURCE,
            "definition": query,
            "query": {"query": query, "refId": f"{name}-variable"},
            "refresh": 2,
            "multi": True,
            "includeAll": True,
            "allValue": ".+",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
            "regex": "",
            "options": [],
        }

    return [
        datasource,
        label_values("job", "Job", "label_values(corral_supervisor_info, job)"),
        label_values(
            "instance",
            "Instance",
            'label_values(corral_supervisor_info{job=~"$job"}, instance)',
        ),
    ]


def render_annotations() -> list[Json]:
    return [
        {
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        },
        {
            "name": "Worker crashes",
            "datasource": DATASOURCE,
            "enable": True,
            "hide": False,
            "iconColor": "red",
            "expr": (
                "sum by (instance, slot, reason) "
                f"(increase(corral_worker_crashes_total{{{SEL}}}[$__interval])) > 0"
            ),
            "step": "$__interval",
            "titleFormat": "crash",
            "textFormat": "{{instance}} slot {{slot}}: {{reason}}",
            "tagKeys": "instance,slot,reason",
            "useValueForTime": False,
        },
    ]


def render_dashboard() -> Json:
    return {
        "uid": UID,
        "title": "corral overview",
        "description": (
            "corral, the ASGI worker supervisor: fleet, lifecycle, traffic, resources "
            "and build, from its /metrics side port."
        ),
        "tags": ["corral"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "annotations": {"list": render_annotations()},
        "templating": {"list": render_variables()},
        "panels": render_panels(),
    }


def dashboard_text() -> str:
    return json.dumps(render_dashboard(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON is stale")
    args = parser.parse_args(argv)
    text = dashboard_text()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run python scripts/build_dashboard.py")
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
