"""The status page's script: one constant, so the page's CSP can allow it by hash.

It keeps, per slot, a bounded history of incarnations built from the
lifecycle events (the SSE stream replays the collector's recent events first,
so a freshly opened page starts with history), reconciles it with the
``/workers`` snapshot (which is also where a hang that no event announces
shows up), and redraws an SVG timeline and the worker table from that.
Rates are differences of the cumulative counts of two ``/workers`` readings.

What it draws comes from tables embedded by ``page.py`` (states, marks), so a
new marker kind is a line there, not code here. Data reaches the DOM through
``textContent`` and attributes only. It never contains a closing-tag
sequence, so it cannot end its ``<script>`` element early.
"""

SCRIPT = r"""
"use strict";
const CONFIG = JSON.parse(document.getElementById("config").textContent);
const SVG = "http://www.w3.org/2000/svg";
const MAX_INCARNATIONS = 40;     // per slot
const MAX_MARKS = 400;
const MAX_EVENTS = 200;
const MIN_RATE_SPAN = 1.0;       // seconds between the two readings a rate is taken from
const ALIVE = new Set(["starting", "ready", "draining", "hung"]);
const MARKS = new Map(CONFIG.marks.map((m) => [m.key, m]));
const $ = (id) => document.getElementById(id);

const model = {
  snapshot: null, skew: 0, lastSeq: 0, incarnations: new Map(), marks: [],
  previous: new Map(), rates: new Map(),
};

function now() { return Date.now() / 1000 + model.skew; }
function show(value) { return value === null || value === undefined ? "-" : String(value); }
function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}
function clock(t) { return new Date(t * 1000).toLocaleTimeString([], {hour12: false}); }
function seconds(s) {
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  if (s < 3600) {
    const rest = Math.round(s % 60);
    return Math.floor(s / 60) + " min" + (rest ? " " + rest + " s" : "");
  }
  return (s / 3600).toFixed(1) + " h";
}
function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}
function cssKey(key) { return String(key).replace(/[^a-z0-9_-]/gi, "-"); }

// --- The model: incarnations and marks -----------------------------------

function incarnation(slot, generation, t) {
  const key = slot + ":" + generation;
  let inc = model.incarnations.get(key);
  if (inc === undefined) {
    inc = {slot, generation, pid: null, start: t, end: null, ending: null, reason: null,
      segments: [{state: "starting", from: t}]};
    model.incarnations.set(key, inc);
    const mine = [...model.incarnations.values()].filter((i) => i.slot === slot);
    mine.sort((a, b) => a.generation - b.generation);
    for (const old of mine.slice(0, Math.max(0, mine.length - MAX_INCARNATIONS))) {
      model.incarnations.delete(old.slot + ":" + old.generation);
    }
  }
  return inc;
}
function enter(inc, state, t) {
  if (inc.end !== null) return;
  const last = inc.segments[inc.segments.length - 1];
  // A draining worker only ever ends; a snapshot older than the last change is stale.
  if (last.state === state || last.state === "draining" || t < last.from) return;
  inc.segments.push({state, from: t});
}
function finish(inc, t, ending, reason) {
  if (inc.end !== null) return;
  inc.end = Math.max(t, inc.start);
  inc.ending = ending;
  inc.reason = reason || null;
}
function mark(key, event) {
  const style = MARKS.get(key);
  if (style === undefined) return;
  const slot = style.fleet ? null : event.slot;
  model.marks.push({key, slot, t: event.wall_time, event});
  if (model.marks.length > MAX_MARKS) model.marks.shift();
}

function apply(event) {
  if (typeof event.seq === "number") {
    if (event.seq <= model.lastSeq) return false;
    model.lastSeq = event.seq;
  }
  const t = event.wall_time;
  const kind = event.kind;
  const keyed = event.reason ? kind + ":" + event.reason : kind;
  mark(MARKS.has(keyed) ? keyed : kind, event);
  if (typeof event.slot !== "number" || !event.generation || typeof t !== "number") return true;
  const inc = incarnation(event.slot, event.generation, t);
  if (event.pid !== undefined && inc.pid === null) inc.pid = event.pid;
  if (event.thread_id !== undefined) inc.thread = event.thread_id;
  if (kind === "spawn") inc.start = Math.min(inc.start, t);
  else if (kind === "ready" || kind === "promote") enter(inc, "ready", t);
  else if (kind === "drain_start") enter(inc, "draining", t);
  else if (kind === "crash" && event.reason === "hang" && event.mode === "thread") {
    enter(inc, "hung", t);  // told when found: the thread may still come back
  } else if (kind === "crash") finish(inc, t, "crash", event.reason);
  else if (kind === "exit" || kind === "drain_end") finish(inc, t, "exit", event.message);
  return true;
}

function reconcile(data) {
  // The snapshot knows states no event announces: a process found hung before
  // it is killed, a hung thread that recovered.
  for (const row of data.workers || []) {
    if (!row.generation || !ALIVE.has(row.state)) continue;
    const started = typeof row.started_at === "number" ? row.started_at : data.time;
    const inc = incarnation(row.slot, row.generation, started);
    if (inc.pid === null && row.pid !== null) inc.pid = row.pid;
    enter(inc, row.state, data.time);
  }
}

// --- Rates from successive /workers readings -------------------------------

function rates(data) {
  for (const row of data.workers || []) {
    const before = model.previous.get(row.slot);
    const rate = {requests: null, cpu: null};
    if (before !== undefined && data.time - before.time < MIN_RATE_SPAN) continue;
    if (before !== undefined) {
      const dt = data.time - before.time;
      if (row.requests !== null && before.requests !== null && row.requests >= before.requests) {
        rate.requests = (row.requests - before.requests) / dt;
      }
      const same = before.generation === row.generation;
      if (same && row.cpu_seconds !== null && before.cpu_seconds !== null) {
        rate.cpu = Math.max(0, (row.cpu_seconds - before.cpu_seconds) / dt);
      }
    }
    model.rates.set(row.slot, rate);
    model.previous.set(row.slot, {time: data.time, generation: row.generation,
      requests: row.requests, cpu_seconds: row.cpu_seconds});
  }
}

// --- Drawing -----------------------------------------------------------------

function renderSummary(data) {
  const rows = data.workers || [];
  const ready = rows.filter((r) => r.state === "ready").length;
  let total = 0;
  for (const rate of model.rates.values()) total += rate.requests || 0;
  const items = [
    ["ready", ready + " of " + show(data.desired)],
    ["supervisor", show(data.phase)],
    ["mode", show(data.mode) + (data.gil_enabled ? " (GIL)" : " (free-threaded)")],
    ["requests", total.toFixed(1) + "/s"],
    ["restarts in window", String(rows.reduce((n, r) => n + (r.restarts_in_window || 0), 0))],
  ];
  const spares = data.spares;
  if (spares && spares.desired) {
    items.push(["spares", spares.ready + " of " + spares.desired + " warm"
      + (spares.exhausted ? " (given up)" : "")]);
  }
  const budget = data.budget;
  if (budget) {
    items.push(["budget",
      budget.max_restarts + " per " + seconds(budget.window_seconds)]);
  }
  const cards = items.map(([label, value]) => {
    const card = el("div", {class: "card", "data-card": cssKey(label)});
    card.append(el("span", {class: "value"}, value), el("span", {class: "label"}, label));
    return card;
  });
  $("summary").replaceChildren(...cards);
  document.body.dataset.phase = show(data.phase);
}

const COLUMNS = [
  ["slot", "slot"], ["state", "state"], ["worker", "pid / thread"], ["generation", "gen"],
  ["rate", "req/s"], ["in_flight", "in flight"], ["cpu", "CPU"], ["rss", "RSS"],
  ["budget", "budget left"], ["uptime", "up"], ["last_exit", "last exit"],
];

function cell(row, key, data) {
  const rate = model.rates.get(row.slot) || {requests: null, cpu: null};
  switch (key) {
    case "state": {
      const style = CONFIG.states[row.state];
      return el("span", {class: "badge state-" + cssKey(row.state)},
        style ? style.label : show(row.state));
    }
    case "worker": return document.createTextNode(show(row.pid !== null ? row.pid : row.thread_id));
    case "rate": return document.createTextNode(
      rate.requests === null ? "-" : rate.requests.toFixed(1));
    case "in_flight": return document.createTextNode(show(row.in_flight));
    case "cpu": return document.createTextNode(
      rate.cpu === null ? "-" : (rate.cpu * 100).toFixed(0) + "%");
    case "rss": return document.createTextNode(bytes(row.rss_bytes));
    case "uptime": return document.createTextNode(
      typeof row.started_at === "number" && ALIVE.has(row.state) ?
        seconds(Math.max(0, data.time - row.started_at)) : "-");
    case "budget": return budgetCell(row, data.budget);
    default: return document.createTextNode(show(row[key]));
  }
}

function budgetCell(row, budget) {
  const wrap = el("span", {class: "budget"});
  if (!budget) return el("span", {}, show(row.budget_remaining));
  const low = Math.min(1, budget.max_restarts);
  const meter = el("meter", {min: "0", max: String(budget.max_restarts),
    value: String(row.budget_remaining), low: String(low + 0.5),
    high: String(Math.max(low + 0.5, budget.max_restarts - 0.5)),
    optimum: String(budget.max_restarts)});
  wrap.append(meter, el("span", {class: "budget-text"},
    row.budget_remaining + " of " + budget.max_restarts));
  return wrap;
}

function renderTable(data) {
  const head = el("tr");
  for (const [, label] of COLUMNS) head.append(el("th", {}, label));
  $("workers").tHead.replaceChildren(head);
  const rows = (data.workers || []).map((row) => {
    const tr = el("tr", {id: "worker-" + row.slot, "data-slot": String(row.slot),
      "data-state": String(row.state), class: "state-" + cssKey(row.state)});
    for (const [key] of COLUMNS) {
      const td = el("td", {"data-col": key});
      td.append(cell(row, key, data));
      tr.append(td);
    }
    return tr;
  });
  $("workers").tBodies[0].replaceChildren(...rows);
}

const ROW = 34;
const LEFT = 64;
const RIGHT = 36;   // room for the last tick's label
const TOP = 22;
const SHAPES = {
  cross: (x, y) => `M${x - 5},${y - 5}L${x + 5},${y + 5}M${x - 5},${y + 5}L${x + 5},${y - 5}`,
  diamond: (x, y) => `M${x},${y - 6}L${x + 6},${y}L${x},${y + 6}L${x - 6},${y}Z`,
  triangle: (x, y) => `M${x},${y - 6}L${x + 6},${y + 5}L${x - 6},${y + 5}Z`,
  circle: (x, y) => `M${x - 5},${y}a5,5 0 1,0 10,0a5,5 0 1,0 -10,0`,
  bar: (x, y) => `M${x},${y - 8}L${x},${y + 8}`,
};

function slotsShown() {
  const slots = new Set((model.snapshot && model.snapshot.workers || []).map((r) => r.slot));
  for (const inc of model.incarnations.values()) slots.add(inc.slot);
  return [...slots].sort((a, b) => a - b);
}

function lanes(incs) {
  // A rolling replacement overlaps the worker it replaces: it gets the lower lane.
  const ends = [];
  for (const inc of incs.sort((a, b) => a.start - b.start)) {
    let lane = ends.findIndex((end) => end !== null && end <= inc.start);
    if (lane === -1) lane = ends.length;
    inc.lane = Math.min(lane, 1);
    ends[inc.lane] = inc.end;
  }
}

function ticks(from, to, width) {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
  const span = to - from;
  const step = steps.find((s) => span / s <= Math.max(2, width / 90)) || 3600;
  const out = [];
  for (let t = Math.ceil(from / step) * step; t <= to; t += step) out.push(t);
  return out;
}

function renderTimeline() {
  const box = $("timeline");
  const width = Math.max(320, box.clientWidth || 800);
  const slots = slotsShown();
  const height = TOP + slots.length * ROW + 4;
  const end = now();
  // The window grows with the history it holds, from 20 s up to max_window.
  let first = end - 20;
  for (const inc of model.incarnations.values()) first = Math.min(first, inc.start);
  const span = Math.min(CONFIG.max_window, Math.max(20, (end - first) * 1.04));
  const start = end - span;
  const scale = (width - LEFT - RIGHT) / span;
  const x = (t) => LEFT + (Math.max(start, Math.min(end, t)) - start) * scale;
  const root = svg("svg", {width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "worker incarnations per slot over time", "data-window": span.toFixed(0)});
  for (const t of ticks(start, end, width)) {
    root.append(svg("line", {class: "tick", x1: x(t), x2: x(t), y1: TOP - 4, y2: height}));
    root.append(svg("text", {class: "tick-label", x: x(t), y: 12}, clock(t)));
  }
  const rowOf = new Map(slots.map((slot, i) => [slot, TOP + i * ROW]));
  for (const [slot, y] of rowOf) {
    root.append(svg("text", {class: "slot-label", x: 4, y: y + 20}, "slot " + slot));
    root.append(svg("line", {class: "row-line", x1: LEFT, x2: width - RIGHT, y1: y + ROW - 1,
      y2: y + ROW - 1}));
  }
  for (const slot of slots) {
    const incs = [...model.incarnations.values()].filter((i) => i.slot === slot);
    lanes(incs);
    for (const inc of incs) root.append(bar(inc, rowOf.get(slot), x, end));
  }
  for (const m of model.marks) {
    if (m.t < start) continue;
    root.append(marker(m, m.slot === null ? null : rowOf.get(m.slot), x, height));
  }
  box.replaceChildren(root);
}

function bar(inc, y, x, end) {
  const stop = inc.end === null ? end : inc.end;
  const top = inc.lane ? y + 21 : y + 5;
  const tall = inc.lane ? 9 : 14;
  const group = svg("g", {class: "inc", "data-slot": inc.slot, "data-generation": inc.generation,
    "data-end": inc.ending || "live"});
  inc.segments.forEach((seg, i) => {
    const next = i + 1 < inc.segments.length ? inc.segments[i + 1].from : stop;
    if (next < seg.from) return;
    const left = x(seg.from);
    group.append(svg("rect", {class: "seg state-" + cssKey(seg.state), "data-state": seg.state,
      x: left, y: top, width: Math.max(1.5, x(next) - left), height: tall, rx: 2}));
  });
  const what = inc.ending === null ? "running" : inc.ending === "crash" ?
    "crashed (" + show(inc.reason) + ")" : "exited";
  group.append(svg("title", {}, `slot ${inc.slot} generation ${inc.generation} pid ` +
    `${show(inc.pid)}: ${clock(inc.start)}, ${seconds(stop - inc.start)}, ${what}`));
  return group;
}

function marker(m, y, x, height) {
  const style = MARKS.get(m.key);
  const group = svg("g", {class: "mark mark-" + cssKey(m.key), "data-kind": m.key,
    "data-slot": m.slot === null ? "all" : m.slot});
  const at = x(m.t);
  if (y === null || y === undefined) {
    group.append(svg("line", {class: "fleet-line", x1: at, x2: at, y1: TOP - 6, y2: height}));
    group.append(svg("path", {d: SHAPES[style.shape](at, TOP - 6)}));
  } else {
    group.append(svg("path", {d: SHAPES[style.shape](at, y + 12)}));
  }
  const detail = m.event.message || m.event.signal || m.event.reason || "";
  group.append(svg("title", {}, `${style.label} ${clock(m.t)} ${detail}`.trim()));
  return group;
}

function renderLegend() {
  const items = [];
  for (const [state, style] of Object.entries(CONFIG.states)) {
    if (!style.timeline) continue;
    const sw = svg("svg", {width: 14, height: 10});
    sw.append(svg("rect", {class: "seg state-" + cssKey(state), width: 14, height: 10, rx: 2}));
    const item = el("span", {class: "legend-item"});
    item.append(sw, document.createTextNode(style.label));
    items.push(item);
  }
  for (const m of CONFIG.marks) {
    const sw = svg("svg", {width: 14, height: 14, class: "mark mark-" + cssKey(m.key)});
    sw.append(svg("path", {d: SHAPES[m.shape](7, 7)}));
    const item = el("span", {class: "legend-item"});
    item.append(sw, document.createTextNode(m.label));
    items.push(item);
  }
  $("legend").replaceChildren(...items);
}

function renderEvent(event) {
  const when = typeof event.wall_time === "number" ? clock(event.wall_time) : "";
  const parts = ["#" + show(event.seq), when, show(event.kind)];
  if (event.slot !== undefined) parts.push("slot " + event.slot);
  if (event.generation) parts.push("gen " + event.generation);
  if (event.pid !== undefined) parts.push("pid " + event.pid);
  if (event.reason !== undefined) parts.push(String(event.reason));
  if (event.message !== undefined) parts.push(show(event.message));
  const li = el("li", {"data-seq": show(event.seq), "data-kind": show(event.kind),
    class: "kind-" + cssKey(event.kind)}, parts.join("  "));
  const feed = $("events");
  feed.prepend(li);
  while (feed.children.length > MAX_EVENTS) feed.lastElementChild.remove();
  feed.dataset.lastSeq = String(model.lastSeq);
}

function render() {
  if (model.snapshot !== null) {
    renderSummary(model.snapshot);
    renderTable(model.snapshot);
  }
  renderTimeline();
}

// --- Feeding it --------------------------------------------------------------

function take(data) {
  if (typeof data.time === "number") model.skew = data.time - Date.now() / 1000;
  else data.time = now();
  model.snapshot = data;
  rates(data);
  reconcile(data);
  render();
}

let pending = null;
async function refresh() {
  try {
    const response = await fetch("workers", {cache: "no-store", credentials: "same-origin"});
    if (response.ok) take(await response.json());
  } catch (err) {
    $("feed-status").textContent = "cannot reach /workers";
  }
}
function refreshSoon() {
  if (pending !== null) return;
  pending = setTimeout(() => { pending = null; refresh(); }, 150);
}

let drawPending = false;
function onEvent(event) {
  if (!apply(event)) return;
  renderEvent(event);
  refreshSoon();
  if (!drawPending) {
    drawPending = true;
    requestAnimationFrame(() => { drawPending = false; renderTimeline(); });
  }
}

function onMessage(message) {
  let event;
  try { event = JSON.parse(message.data); } catch (err) { return; }
  onEvent(event);
}

async function poll() {
  try {
    const response = await fetch("events?since=" + model.lastSeq, {cache: "no-store"});
    if (!response.ok) return;
    for (const event of await response.json()) onEvent(event);
  } catch (err) {
    $("feed-status").textContent = "cannot reach /events";
  }
}

function setFeed(state) {
  $("feed-status").textContent = state;
  $("feed-status").dataset.state = state;
}

renderLegend();
take(JSON.parse(document.getElementById("initial").textContent));
// The stream replays the collector's recent events before the live ones, so
// the timeline starts with history. "?live=0" polls /events instead.
if (new URLSearchParams(location.search).get("live") !== "0" &&
    typeof EventSource === "function") {
  const source = new EventSource("events?follow=1&since=0");
  for (const kind of CONFIG.kinds) source.addEventListener(kind, onMessage);
  source.onmessage = onMessage;
  source.onopen = () => setFeed("live");
  source.onerror = () => setFeed("reconnecting");
} else {
  setFeed("polling");
  poll();
  setInterval(poll, 3000);
}
setInterval(refresh, CONFIG.refresh_ms);
setInterval(renderTimeline, 1000);
window.addEventListener("resize", renderTimeline);
"""
