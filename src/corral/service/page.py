"""The status page at ``/``: one self-contained HTML document, no external assets.

The worker table is drawn by the page's script from a JSON snapshot embedded
in the document, before the ``load`` event, so even a browser that dumps the
DOM right after loading (``chromium --headless --dump-dom``) shows one
``<tr data-slot="N">`` per worker in ``<table id="workers">``. After that the
script refetches ``/workers`` whenever ``/events?follow=1`` delivers an event,
and every few seconds in case an event was missed.

Headless Chromium polls ``/events?since=N`` instead of holding the stream
open: ``--virtual-time-budget`` waits for every open request, so with the
stream open ``chromium --headless --virtual-time-budget=... --dump-dom``
would never finish. ``/?live=1`` forces the stream, ``/?live=0`` polling.

The script and style are constants, so the Content-Security-Policy allows
exactly them by hash and nothing else: no inline handlers, no foreign hosts.
Data reaches the DOM through ``textContent`` only.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from corral.lifecycle.events import EventKind
from corral.states import STATE_STYLES

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .3em; }
#summary { color: #555; margin-bottom: 1em; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: .25em .8em; text-align: left; }
th { background: #f4f4f4; }
td[data-col="state"] { font-weight: 600; }
#feed-status { color: #555; font-size: .9em; }
#events { font-family: ui-monospace, monospace; font-size: 12px; list-style: none; padding: 0; }
#events li { border-bottom: 1px solid #eee; padding: .15em 0; }
""" + "".join(  # one colour per state, the same table `corral status` colours from
    f'tr.state-{state.value} td[data-col="state"] {{ color: {style.css}; }}\n'
    for state, style in STATE_STYLES.items()
)

# Kept free of "</" so it cannot end the <script> element early.
_SCRIPT = """
"use strict";
const KINDS = JSON.parse(document.getElementById("kinds").textContent);
const LABELS = JSON.parse(document.getElementById("state-labels").textContent);
const COLUMNS = [
  ["slot", "slot"], ["state", "state"], ["pid", "pid"], ["thread_id", "thread"],
  ["generation", "generation"], ["restarts_in_window", "restarts"],
  ["budget_remaining", "budget left"], ["started_at", "started"], ["last_exit", "last exit"],
];
const table = document.getElementById("workers");
const summary = document.getElementById("summary");
const feed = document.getElementById("events");
const feedStatus = document.getElementById("feed-status");

function text(value, key) {
  if (value === null || value === undefined) return "-";
  if (key === "started_at" && typeof value === "number") {
    return new Date(value * 1000).toLocaleTimeString();
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function render(data) {
  const parts = ["mode " + text(data.mode), "GIL " + (data.gil_enabled ? "enabled" : "disabled"),
    "desired workers " + text(data.desired)];
  if (data.phase !== undefined) parts.push("supervisor " + text(data.phase));
  summary.textContent = parts.join(" | ");
  const head = document.createElement("tr");
  for (const [, label] of COLUMNS) {
    const th = document.createElement("th");
    th.textContent = label;
    head.appendChild(th);
  }
  table.tHead.replaceChildren(head);
  const rows = (data.workers || []).map((worker) => {
    const tr = document.createElement("tr");
    tr.id = "worker-" + worker.slot;
    tr.dataset.slot = String(worker.slot);
    tr.dataset.state = String(worker.state);
    tr.className = "state-" + String(worker.state);
    for (const [key] of COLUMNS) {
      const td = document.createElement("td");
      td.dataset.col = key;
      td.textContent = key === "state" && LABELS[worker.state] ?
        LABELS[worker.state] : text(worker[key], key);
      tr.appendChild(td);
    }
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
}

let refreshing = null;
async function refresh() {
  try {
    const response = await fetch("workers", {cache: "no-store", credentials: "same-origin"});
    if (response.ok) render(await response.json());
  } catch (err) {
    summary.textContent = "cannot reach /workers";
  }
}
function refreshSoon() {
  if (refreshing !== null) return;
  refreshing = setTimeout(() => { refreshing = null; refresh(); }, 200);
}

let lastSeq = 0;
function show(event) {
  if (typeof event.seq === "number") {
    if (event.seq <= lastSeq) return false;
    lastSeq = event.seq;
  }
  const li = document.createElement("li");
  const when = typeof event.wall_time === "number" ?
    new Date(event.wall_time * 1000).toLocaleTimeString() : "";
  const parts = ["#" + text(event.seq), when, text(event.kind)];
  if (event.slot !== undefined) parts.push("slot " + event.slot);
  if (event.pid !== undefined) parts.push("pid " + event.pid);
  if (event.message !== undefined) parts.push(text(event.message));
  li.textContent = parts.join("  ");
  li.dataset.seq = text(event.seq);
  feed.prepend(li);
  while (feed.children.length > 200) feed.lastElementChild.remove();
  return true;
}

function onMessage(message) {
  let event;
  try { event = JSON.parse(message.data); } catch (err) { return; }
  if (show(event)) refreshSoon();
}

async function poll() {
  try {
    const response = await fetch("events?since=" + lastSeq, {cache: "no-store"});
    if (!response.ok) return;
    let changed = false;
    for (const event of await response.json()) changed = show(event) || changed;
    if (changed) refreshSoon();
  } catch (err) {
    feedStatus.textContent = "cannot reach /events";
  }
}

render(JSON.parse(document.getElementById("initial").textContent));
// Headless Chromium's --virtual-time-budget waits for every open request, so
// an open stream would keep it from ever finishing: headless browsers poll
// /events instead. "?live=1" forces the stream, "?live=0" forces polling.
const mode = new URLSearchParams(location.search).get("live");
const headless = /HeadlessChrome/.test(navigator.userAgent);
if (mode !== "0" && typeof EventSource === "function" && (mode === "1" || !headless)) {
  const source = new EventSource("events?follow=1");
  for (const kind of KINDS) source.addEventListener(kind, onMessage);
  source.onmessage = onMessage;
  source.onopen = () => { feedStatus.textContent = "live"; };
  source.onerror = () => { feedStatus.textContent = "reconnecting..."; };
} else {
  feedStatus.textContent = "polling";
  poll();
  setInterval(poll, 5000);
}
setInterval(refresh, 5000);
"""

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>corral</title>
<style>{style}</style>
</head>
<body>
<h1>corral workers</h1>
<div id="summary"></div>
<table id="workers"><thead></thead><tbody></tbody></table>
<h2>Lifecycle events <span id="feed-status">connecting...</span></h2>
<ul id="events"></ul>
<script type="application/json" id="initial">{initial}</script>
<script type="application/json" id="kinds">{kinds}</script>
<script type="application/json" id="state-labels">{labels}</script>
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
        f"script-src {_sha256(_SCRIPT)}",
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


def render_page(workers: dict[str, Any]) -> bytes:
    """The page with ``workers`` (the ``/workers`` JSON) as its first snapshot."""
    kinds = [kind.value for kind in EventKind]
    labels = {state.value: style.label for state, style in STATE_STYLES.items()}
    return _TEMPLATE.format(
        style=_STYLE,
        script=_SCRIPT,
        initial=_embed(workers),
        kinds=_embed(kinds),
        labels=_embed(labels),
    ).encode("utf-8")
