"""The status page at ``/``: one self-contained HTML document, no external assets.

What an operator sees: a timeline per slot (each incarnation a bar from spawn
to exit, coloured by state, with crashes, hangs, recycles and reloads marked),
then the worker table (request rate, in-flight, CPU, RSS, budget left against
the limit), then the raw event feed. The script is in ``page_script``.

The first snapshot is embedded as JSON and drawn before ``load``, so even
``chromium --headless --dump-dom`` shows one ``<tr data-slot="N">`` per
worker. Then the page holds ``/events?follow=1&since=0`` open: the stream
replays recent events (the timeline's history) and goes on live, headless
browsers included. ``/?live=0`` polls ``/events?since=N`` instead. Tests drive
Chromium over the DevTools protocol, where an open stream is no obstacle
(``--virtual-time-budget`` would wait for it forever).

The script and style are constants, so the Content-Security-Policy allows
exactly them by hash and nothing else: no inline handlers, no foreign hosts.
Data reaches the DOM through ``textContent`` and attributes only; the
marker and state tables are embedded as JSON, which needs no hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from corral.lifecycle.events import EventKind
from corral.service.page_script import SCRIPT
from corral.states import STATE_STYLES, SlotState


@dataclass(frozen=True, slots=True)
class Mark:
    """How one kind of lifecycle event is marked on the timeline.

    ``key`` is an event kind, or ``kind:reason`` for a crash reason drawn
    apart; ``fleet`` marks are drawn across every slot (they have no slot).
    """

    key: str
    shape: str  # one of the script's SHAPES: cross, diamond, triangle, circle, bar
    css: str
    label: str
    fleet: bool = False


# The timeline's markers: a new kind of marker is one line here.
MARKS: tuple[Mark, ...] = (
    Mark("crash", "cross", "#b00020", "crash"),
    Mark("crash:hang", "cross", "#d35400", "hang (killed)"),
    Mark("force_stop", "bar", "#6a1b9a", "force stop"),
    Mark("recycle", "circle", "#00897b", "recycle"),
    Mark("promote", "circle", "#5b4fb0", "spare promoted"),
    Mark("budget_exhausted", "diamond", "#b00020", "budget exhausted"),
    Mark("reload", "triangle", "#444444", "reload", fleet=True),
)

# Slot states drawn as a bar segment; the others (backoff, exhausted, stopped) are gaps.
_TIMELINE_STATES = frozenset(
    {SlotState.STARTING, SlotState.READY, SlotState.DRAINING, SlotState.HUNG}
)
# The timeline shows at most this much history, however old the first event is.
MAX_WINDOW_SECONDS = 15 * 60
REFRESH_MS = 2000


def _css_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", key)


_STYLE = (
    """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2329; background: #f5f6f8; }
header { display: flex; align-items: baseline; gap: 1em; padding: .8em 1.5em;
  background: #1d2329; color: #fff; }
header h1 { font-size: 1.2em; margin: 0; }
#feed-status { font-size: .85em; padding: .1em .6em; border-radius: 1em; background: #555; }
#feed-status[data-state="live"] { background: #176f2c; }
#feed-status[data-state="reconnecting"] { background: #b00020; }
main { padding: 1em 1.5em; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px;
  padding: .6em 1em 1em; margin-bottom: 1em; }
h2 { font-size: 1em; margin: .2em 0 .6em; color: #444; }
#summary { display: flex; flex-wrap: wrap; gap: .8em; margin-bottom: 1em; }
.card { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: .4em .9em;
  min-width: 7em; }
.card .value { display: block; font-size: 1.3em; font-weight: 600; }
.card .label { color: #667; font-size: .8em; }
#legend { display: flex; flex-wrap: wrap; gap: 1em; font-size: .85em; color: #444;
  margin-bottom: .4em; }
.legend-item { display: inline-flex; align-items: center; gap: .3em; }
#timeline svg { display: block; }
.tick { stroke: #e6e8eb; }
.tick-label { font-size: 10px; fill: #778; text-anchor: middle; }
.slot-label { font-size: 12px; fill: #333; }
.row-line { stroke: #f0f1f3; }
.mark path { stroke-width: 2; }
.fleet-line { stroke-dasharray: 3 3; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #e6e8eb; padding: .3em .7em; text-align: left; }
th { color: #556; font-weight: 600; font-size: .85em; }
td[data-col="rate"], td[data-col="in_flight"], td[data-col="cpu"], td[data-col="rss"] {
  font-variant-numeric: tabular-nums; }
.badge { font-weight: 600; padding: .05em .5em; border-radius: .8em; color: #fff; }
.budget { display: inline-flex; align-items: center; gap: .4em; }
meter { width: 5em; }
#events { font-family: ui-monospace, monospace; font-size: 12px; list-style: none; padding: 0;
  margin: 0; max-height: 18em; overflow-y: auto; }
#events li { border-bottom: 1px solid #f0f1f3; padding: .15em 0; }
"""
    # One colour per state, the same table `corral status` colours from.
    + "".join(
        f".state-{state.value} .badge, .badge.state-{state.value} "
        f"{{ background: {style.css}; }}\n"
        f".seg.state-{state.value} {{ fill: {style.css}; }}\n"
        for state, style in STATE_STYLES.items()
    )
    + "".join(
        f".mark-{_css_key(mark.key)} path, .mark-{_css_key(mark.key)} line "
        f"{{ stroke: {mark.css}; fill: {mark.css}; }}\n"
        f"#events li.kind-{_css_key(mark.key.partition(':')[0])} {{ color: {mark.css}; }}\n"
        for mark in MARKS
    )
)

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>corral</title>
<style>{style}</style>
</head>
<body>
<header><h1>corral</h1><span id="feed-status">connecting...</span></header>
<main>
<div id="summary"></div>
<section><h2>Incarnations per slot</h2><div id="legend"></div><div id="timeline"></div></section>
<section><h2>Workers</h2>
<table id="workers"><thead></thead><tbody></tbody></table></section>
<section><h2>Lifecycle events</h2><ul id="events"></ul></section>
</main>
<script type="application/json" id="initial">{initial}</script>
<script type="application/json" id="config">{config}</script>
<script>{script}</script>
</body>
</html>
"""


def _sha256(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        f"script-src {_sha256(SCRIPT)}",
        f"style-src {_sha256(_STYLE)}",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
)


def _embed(value: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    # "<" escaped means no "</script>" or "<!--" can appear in the element.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page_config() -> dict[str, Any]:
    """The tables the script draws from (embedded as JSON, so they need no CSP hash)."""
    return {
        "kinds": [kind.value for kind in EventKind],
        "states": {
            state.value: {"label": style.label, "timeline": state in _TIMELINE_STATES}
            for state, style in STATE_STYLES.items()
        },
        "marks": [
            {"key": m.key, "shape": m.shape, "label": m.label, "fleet": m.fleet} for m in MARKS
        ],
        "max_window": MAX_WINDOW_SECONDS,
        "refresh_ms": REFRESH_MS,
    }


def render_page(workers: dict[str, Any]) -> bytes:
    """The page with ``workers`` (the ``/workers`` JSON) as its first snapshot."""
    return _TEMPLATE.format(
        style=_STYLE,
        script=SCRIPT,
        initial=_embed(workers),
        config=_embed(page_config()),
    ).encode("utf-8")
