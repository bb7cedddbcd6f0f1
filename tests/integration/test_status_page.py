"""The status page in a real headless Chromium, watching a real corral live.

The browser opens the page first and then sees everything over the SSE
stream as it happens: traffic, crashes, a hang, a recycle and a rolling
reload. The test asserts on the live DOM (the timeline's bars and marks, the
worker table) against what corral logged, then reloads the page to check the
history comes back from the stream's replay.

``CORRAL_SCREENSHOT=docs/img/status-page.png`` also saves the README's
screenshot of the final state.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.browser import Browser
from tests.conftest import ROOT, CorralProcess, eventually

MAX_RESTARTS = 5
SHOT = os.environ.get("CORRAL_SCREENSHOT")
# For the screenshot only: seconds between steps, so the bars are wide enough to read.
PACE = 2.0 if SHOT else 0.0


def _count(browser: Browser, selector: str) -> int:
    escaped = selector.replace('"', '\\"')
    value = browser.evaluate(f'document.querySelectorAll("{escaped}").length')
    assert isinstance(value, int)
    return value


def _hang_one_worker(server: CorralProcess) -> None:
    def request() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the hung worker is killed under it
            httpx.get(f"{server.base_url}/hang?seconds=60", timeout=70)

    threading.Thread(target=request, daemon=True).start()


def _traffic_until_recycled(server: CorralProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for _ in range(2000):
            client.get("/", headers={"connection": "close"})
            if server.events("recycle"):
                return
    raise AssertionError("no worker reached --max-requests")


def _scenario(server: CorralProcess) -> None:
    """Several crashes, a recycle, a hang and a rolling reload, each waited for."""
    _traffic_until_recycled(server)
    for slot in (0, 0, 1):
        time.sleep(PACE)
        ready = len(server.events("ready", slot=slot))
        server.crash_slot("process", slot)
        server.wait_event("ready", slot=slot, count=ready + 1)
    time.sleep(PACE)
    hangs = len(server.events("crash", reason="hang"))
    _hang_one_worker(server)
    hang = server.wait_event("crash", reason="hang", count=hangs + 1, timeout=30)[-1]
    server.wait_event("respawn", slot=hang["slot"], generation=hang["generation"])
    server.wait_event("ready", slot=hang["slot"], generation=hang["generation"] + 1)
    time.sleep(PACE)
    drained = len(server.events("drain_end"))
    server.send(signal.SIGHUP)
    (reload,) = server.wait_event("reload")
    assert reload["workers"] == 3, "every slot was ready, so every slot rolls"
    server.wait_event("drain_end", count=drained + 3, timeout=60)


def test_the_status_page_draws_crashes_a_hang_a_recycle_and_a_reload_live(
    corral: Callable[..., CorralProcess], tmp_path: Path
) -> None:
    server = corral(
        "--workers", "3", "--mode", "process", "--worker-timeout", "2",
        "--max-requests", "30", "--max-restarts", str(MAX_RESTARTS), "--backoff-base", "0.05",
    )  # fmt: skip
    server.wait_ready(3)
    with Browser(tmp_path / "profile", width=1280, height=1000) as browser:
        browser.open(server.metrics_url + "/")
        browser.wait_for("document.getElementById('feed-status').dataset.state === 'live'")
        _scenario(server)
        last_seq = max(event["seq"] for event in _side_events(server))
        browser.wait_for(f"Number(document.getElementById('events').dataset.lastSeq) >= {last_seq}",
                         what="the stream to deliver every event")  # fmt: skip
        _assert_timeline(browser, server)
        _assert_busy(browser, server, SHOT)
        _assert_table(browser, server)
        assert browser.errors == []
        # A reopened page rebuilds the same history from the stream's replay.
        incarnations = _count(browser, "g.inc")
        browser.open(server.metrics_url + "/")
        browser.wait_for(f"document.querySelectorAll('g.inc').length === {incarnations}",
                         what="the replayed history")  # fmt: skip
        _assert_timeline(browser, server)
        assert browser.errors == []


def _assert_busy(browser: Browser, server: CorralProcess, shot: str | None) -> None:
    """Slow requests show in flight, and traffic as a request rate, on the slots serving them."""
    stop = threading.Event()

    def slow() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{server.base_url}/slow?seconds=6", timeout=30)

    def traffic() -> None:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):  # a recycled worker's last request
                    client.get("/")
                time.sleep(0.1)  # gentle: a worker lives long enough to show its CPU

    threads = [threading.Thread(target=slow) for _ in range(3)]
    threads.append(threading.Thread(target=traffic))
    for thread in threads:
        thread.start()
    try:
        cells = "[...document.querySelectorAll('#workers td[data-col=\"%s\"]')]"
        browser.wait_for(
            f"{cells % 'in_flight'}.reduce((n, td) => n + Number(td.textContent), 0) >= 3",
            what="the three slow requests in flight",
        )
        browser.wait_for(f"{cells % 'rate'}.some((td) => Number(td.textContent) > 0)",
                         what="a request rate")  # fmt: skip
        if shot:
            browser.wait_for(f"{cells % 'cpu'}.every((td) => td.textContent.endsWith('%'))")
            browser.screenshot(ROOT / shot)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


def _side_events(server: CorralProcess) -> list[dict[str, Any]]:
    reply = server.side("/events")
    assert reply.status_code == 200
    events: list[dict[str, Any]] = reply.json()
    return events


def _assert_timeline(browser: Browser, server: CorralProcess) -> None:
    # A loaded machine can starve a worker past --worker-timeout: count hangs, do not assume one.
    crashes = server.events("crash")
    assert any(crash.get("reason") == "hang" for crash in crashes)
    for slot in range(3):
        for key, hang in (("crash", False), ("crash:hang", True)):
            expected = sum(
                1 for e in crashes if e["slot"] == slot and (e["reason"] == "hang") == hang
            )
            assert _count(browser, f'g.mark[data-kind="{key}"][data-slot="{slot}"]') == expected
    assert _count(browser, 'g.mark[data-kind="reload"][data-slot="all"]') == 1
    assert _count(browser, 'g.mark[data-kind="recycle"]') == len(server.events("recycle"))
    for spawn in server.events("spawn"):
        key = f'[data-slot="{spawn["slot"]}"][data-generation="{spawn["generation"]}"]'
        assert _count(browser, "g.inc" + key) == 1, key
    for crash in server.events("crash"):
        key = f'[data-slot="{crash["slot"]}"][data-generation="{crash["generation"]}"]'
        assert _count(browser, f'g.inc{key}[data-end="crash"]') == 1, key
    # The rolling reload: every replaced worker drained, then exited, and every
    # slot has a live successor.
    for drain in server.events("drain_end"):
        key = f'[data-slot="{drain["slot"]}"][data-generation="{drain["generation"]}"]'
        assert _count(browser, f'g.inc{key}[data-end="exit"] rect[data-state="draining"]') == 1
    assert _count(browser, 'g.inc[data-end="live"] rect[data-state="ready"]') == 3


def _assert_table(browser: Browser, server: CorralProcess) -> None:
    workers = server.side("/workers").json()
    assert workers["budget"] == {"max_restarts": MAX_RESTARTS, "window_seconds": 60.0}
    script = """[...document.querySelectorAll('#workers tbody tr')].map(tr => Object.fromEntries(
        [...tr.cells].map(td => [td.dataset.col, td.textContent])))"""

    def settled() -> bool:
        rows = browser.evaluate(script)
        return bool(rows) and all(
            row["state"] == "ready" and row["rss"] != "-" and row["in_flight"] == "0"
            for row in rows
        )

    # in_flight 0: the hung request died with its worker, and nothing else is running.
    eventually(settled, timeout=20, what="every worker ready and idle, with its RSS")
    rows = browser.evaluate(script)
    table = {row["slot"]: row for row in server.side("/workers").json()["workers"]}
    for row in table.values():  # the figures /workers adds for the page
        assert row["requests"] >= 0, row
        assert (row["errors"], row["in_flight"]) == (0, 0), row
        assert row["cpu_seconds"] >= 0, row
        assert row["rss_bytes"] > 1024 * 1024, row
    assert sum(row["requests"] for row in table.values()) >= 30, "the traffic that recycled"
    budget = {slot: row["budget_remaining"] for slot, row in table.items()}
    assert [row["slot"] for row in rows] == ["0", "1", "2"]
    for row in rows:
        assert row["budget"] == f"{budget[int(row['slot'])]} of {MAX_RESTARTS}"
        assert row["rss"].endswith("MiB"), row
        assert row["cpu"].endswith("%"), row
        assert float(row["rate"]) >= 0, row
    for slot in range(3):
        crashed = len(server.events("crash", slot=slot))
        assert budget[slot] == MAX_RESTARTS - crashed, "every crash is within the window"
    assert budget[0] <= MAX_RESTARTS - 2


def test_a_hung_thread_shows_as_hung_on_its_bar_then_ready_again(
    corral: Callable[..., CorralProcess], tmp_path: Path
) -> None:
    """Thread mode: a hung thread under ``ignore`` is told at detection and lives on,
    so its bar turns hung (from the event) and back to ready (from ``/workers``)."""
    server = corral(
        "--workers", "2", "--mode", "thread", "--worker-timeout", "2",
        "--on-hung-thread", "ignore",
    )  # fmt: skip
    server.wait_ready(2)
    with Browser(tmp_path / "profile") as browser:
        browser.open(server.metrics_url + "/")
        browser.wait_for("document.getElementById('feed-status').dataset.state === 'live'")
        ready = len(server.events("ready", slot=1))
        server.crash_slot("thread", 1)
        server.wait_event("ready", slot=1, count=ready + 1)
        threading.Thread(
            target=lambda: httpx.get(f"{server.base_url}/hang?seconds=5", timeout=30), daemon=True
        ).start()
        (hang,) = server.wait_event("crash", reason="hang", timeout=30)
        bar = f'g.inc[data-slot="{hang["slot"]}"][data-generation="{hang["generation"]}"]'
        browser.wait_for(f"document.querySelector('{bar} rect[data-state=\"hung\"]') !== null",
                         what="the hung segment")  # fmt: skip
        assert _count(browser, f'{bar}[data-end="live"]') == 1, "a hung thread lives on"
        assert _count(browser, f'g.mark[data-kind="crash:hang"][data-slot="{hang["slot"]}"]') == 1
        assert _count(browser, 'g.mark[data-kind="crash"][data-slot="1"]') == 1
        server.wait_for(lambda r: r.get("event") == "hung worker recovered", timeout=30)
        states = f"[...document.querySelectorAll('{bar} rect')].map(r => r.dataset.state)"
        browser.wait_for(f"{states}.join().endsWith('hung,ready')", what="ready again")
        workers = server.side("/workers").json()["workers"]
        assert all(w["rss_bytes"] is None for w in workers), "threads share one process"
        assert all(w["cpu_seconds"] >= 0 for w in workers), workers
        assert sum(w["requests"] for w in workers) >= 1, workers
        row = f'#worker-{hang["slot"]} td[data-col="%s"]'
        assert browser.evaluate(f"document.querySelector('{row % 'rss'}').textContent") == "-"
        assert browser.errors == []
