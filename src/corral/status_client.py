"""``corral status``: the worker table from a running corral's side port.

It reads ``/workers`` and ``/readyz`` and exits 0 when ready, 1 when not
(or unreachable), so it doubles as a container health command. Colour is
added with click styles, which click strips when stdout is not a terminal.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import click

from corral.states import STATE_STYLES, SlotState, parse_state

DEFAULT_URL = "http://127.0.0.1:9180"
TIMEOUT_SECONDS = 5.0


class StatusError(Exception):
    """The side port could not be read; the message says what to do."""


@dataclass(frozen=True, slots=True)
class StatusReport:
    workers: dict[str, Any]
    ready: bool
    reason: str


def fetch(url: str, token: str | None, cafile: str | None) -> StatusReport:
    base = url.rstrip("/")
    context = ssl.create_default_context(cafile=cafile) if base.startswith("https:") else None
    workers_status, workers = _get_json(f"{base}/workers", token, context)
    if workers_status != 200:
        raise StatusError(f"{base}/workers answered HTTP {workers_status}")
    ready_status, readiness = _get_json(f"{base}/readyz", token, context)
    reason = str(readiness.get("reason", "")) if isinstance(readiness, dict) else ""
    return StatusReport(workers, ready_status == 200, reason)


def _get_json(url: str, token: str | None, context: ssl.SSLContext | None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise StatusError(
                "the side port wants credentials; pass --token or set CORRAL_METRICS_TOKEN"
            ) from None
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(
            f"cannot read {url}: {reason}; is corral running with its side port on? "
            "(pass --url if it is not on the default)"
        ) from None


def render(report: StatusReport, now: float | None = None) -> list[str]:
    """The table as lines, styled; click removes the styles off a terminal."""
    now = time.time() if now is None else now
    info = report.workers
    gil = "on" if info.get("gil_enabled") else "off"
    verdict = (
        click.style("ready", fg="green") if report.ready else click.style("NOT READY", fg="red")
    )
    lines = [
        f"corral: {verdict} ({report.reason}); mode {info.get('mode')}, GIL {gil}, "
        f"{info.get('desired')} worker(s) desired, phase {info.get('phase', '?')}",
        "",
    ]
    header = ("SLOT", "GEN", "STATE", "PID", "THREAD", "UPTIME", "RESTARTS", "BUDGET", "LAST EXIT")
    rows = [header]
    states: list[SlotState | None] = []
    for worker in info.get("workers", []):
        started = worker.get("started_at")
        state = parse_state(worker.get("state"))
        states.append(state)
        rows.append(
            (
                str(worker.get("slot")),
                str(worker.get("generation")),
                STATE_STYLES[state].label if state else str(worker.get("state")),
                _dash(worker.get("pid")),
                _dash(worker.get("thread_id")),
                _uptime(now - started) if isinstance(started, int | float) else "-",
                str(worker.get("restarts_in_window")),
                str(worker.get("budget_remaining")),
                _dash(worker.get("last_exit")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        if index > 0:
            state = states[index - 1]
            if state is not None:
                cells[2] = click.style(cells[2], fg=STATE_STYLES[state].terminal)
        else:
            cells = [click.style(cell, bold=True) for cell in cells]
        lines.append("  ".join(cells).rstrip())
    return lines


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _uptime(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
