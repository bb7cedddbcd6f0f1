"""The side port of a real corral: endpoints, auth, TLS, SSE, status page, ``corral status``.

The HTTP layer's edge cases (slowloris, huge headers, garbage) are covered
against a fake data source in ``tests/unit/test_service.py``; here the data
is real, so these tests check that it is *right*.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from corral.errors import ExitCode
from tests.conftest import CorralProcess, eventually, run_cli

pytestmark = pytest.mark.integration


def test_health_readiness_and_the_worker_table(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "2", "--mode", mode)
    server.wait_ready(2)
    assert server.side("/healthz").status_code == 200
    ready = server.side("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready_workers"] == 2
    table = server.side("/workers").json()
    assert table["mode"] == mode
    assert table["desired"] == 2
    assert isinstance(table["gil_enabled"], bool)
    rows = table["workers"]
    assert [row["slot"] for row in rows] == [0, 1]
    for row in rows:
        assert row["state"] == "ready"
        assert row["generation"] == 1
        assert row["budget_remaining"] == 5
        assert row["restarts_in_window"] == 0
        assert row["last_exit"] is None
        assert row["started_at"] > 0
        if mode == "process":
            assert row["pid"] != server.pid
        else:
            assert row["pid"] == server.pid
            assert row["thread_id"] > 0
    server.crash_generations(mode, slot=1, generations=1)
    server.wait_event("ready", slot=1, generation=2)
    row = server.side("/workers").json()["workers"][1]
    assert row["generation"] == 2
    assert row["restarts_in_window"] == 1
    assert row["budget_remaining"] == 4
    assert row["last_exit"] is not None


def _start_with_long_backoff(corral: Callable[..., CorralProcess], *args: str) -> CorralProcess:
    """Two ready thread workers whose back-to-back restarts wait 30 s."""
    server = corral(
        "--workers", "2", "--mode", "thread", "--backoff-base", "30", "--backoff-cap", "30", *args
    )  # fmt: skip
    server.wait_ready(2)
    return server


def _into_backoff(server: CorralProcess, slot: int) -> None:
    """The first restart is immediate; the second, back to back, waits out the backoff."""
    server.crash_generations("thread", slot=slot, generations=2)
    server.wait_event("respawn", slot=slot, count=2)


def test_readyz_fails_while_a_slot_is_down_and_healthz_does_not(
    corral: Callable[..., CorralProcess],
) -> None:
    server = _start_with_long_backoff(corral)
    _into_backoff(server, slot=0)
    reply = server.side("/readyz")
    assert reply.status_code == 503
    body = reply.json()
    assert body["ready"] is False
    assert body["reason"] == "1 of 2 required workers ready"
    # CorralNotReady compares with this gauge: it must be what /readyz requires.
    metrics = server.scrape()
    assert metrics.value("corral_workers_min_ready") == body["required_workers"] == 2
    assert metrics.value("corral_workers_ready") == body["ready_workers"] == 1
    assert server.side("/healthz").status_code == 200, "a slot in backoff is not a dead supervisor"
    assert server.side("/workers").json()["workers"][0]["state"] == "backoff"


def test_min_ready_lets_a_degraded_corral_stay_ready(corral: Callable[..., CorralProcess]) -> None:
    server = _start_with_long_backoff(corral, "--min-ready", "1")
    _into_backoff(server, slot=0)
    reply = server.side("/readyz")
    assert reply.status_code == 200, reply.text
    assert reply.json()["required_workers"] == 1
    assert server.scrape().value("corral_workers_min_ready") == 1


def test_readyz_fails_once_draining_so_the_balancer_stops_sending(
    corral: Callable[..., CorralProcess],
) -> None:
    server = corral("--workers", "1", "--mode", "process", "--shutdown-timeout", "30")
    server.wait_ready(1)
    slow = threading.Thread(target=lambda: _quiet_get(server.base_url + "/slow?seconds=3"))
    slow.start()
    eventually(lambda: server.scrape().sum("corral_http_requests_in_flight") == 1)
    server.send(signal.SIGTERM)
    server.wait_event("drain_start")
    reply = server.side("/readyz")
    assert reply.status_code == 503
    assert reply.json()["reason"] == "supervisor is draining"
    slow.join(30)
    assert server.wait_exit() == 0


def _quiet_get(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=30)


def test_events_endpoint_and_since(corral: Callable[..., CorralProcess]) -> None:
    server = corral("--workers", "2", "--mode", "thread")
    server.wait_ready(2)
    events = server.side("/events").json()
    assert [e["kind"] for e in events[:1]] == ["supervisor_start"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["trace_id"] and e["span_id"] for e in events)
    last = events[-1]["seq"]
    assert server.side(f"/events?since={last}").json() == []
    server.crash_generations("thread", slot=0, generations=1)
    newer = (
        server.wait_event("ready", slot=0, generation=2)
        and server.side(f"/events?since={last}").json()
    )
    assert [e["kind"] for e in newer][:3] == ["crash", "respawn", "spawn"]
    assert server.side("/events?since=banana").status_code == 400


def test_sse_follow_streams_new_events_live(corral: Callable[..., CorralProcess]) -> None:
    server = corral("--workers", "2", "--mode", "process")
    server.wait_ready(2)
    received: list[dict[str, Any]] = []
    done = threading.Event()

    def follow() -> None:
        url = server.metrics_url + "/events?follow=1"
        with httpx.stream("GET", url, timeout=20) as reply:
            assert reply.headers["content-type"].startswith("text/event-stream")
            event_id = None
            for line in reply.iter_lines():
                if line.startswith("id:"):
                    event_id = int(line[3:].strip())
                if line.startswith("data:"):
                    record = json.loads(line[5:])
                    assert record["seq"] == event_id
                    received.append(record)
                    if record["kind"] == "ready" and record["generation"] == 2:
                        done.set()
                        return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    # The backlog arrives first (start, spawns, readies), then live events.
    eventually(lambda: len(received) >= 5, what="the backlog")
    server.crash_slot("process", 1)
    assert done.wait(20), f"no live ready event; got {[e['kind'] for e in received]}"
    kinds = [e["kind"] for e in received]
    assert kinds[:1] == ["supervisor_start"]
    assert kinds[-4:] == ["crash", "respawn", "spawn", "ready"]
    assert [e["seq"] for e in received] == list(range(1, len(received) + 1))


def test_debug_traces_show_linked_spans(corral: Callable[..., CorralProcess]) -> None:
    server = corral("--workers", "1", "--mode", "process")
    server.wait_ready(1)
    server.crash_generations("process", slot=0, generations=1)
    server.wait_event("ready", slot=0, generation=2)
    spans = server.side("/debug/traces").json()
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    spawn1, spawn2 = by_name["corral.worker.spawn"]
    (crash,) = by_name["corral.worker.crash"]
    (respawn,) = by_name["corral.worker.respawn"]
    assert crash["links"] == [{"trace_id": spawn1["trace_id"], "span_id": spawn1["span_id"]}]
    assert respawn["links"][0]["span_id"] == crash["span_id"]
    assert spawn2["links"][0]["span_id"] == respawn["span_id"]
    assert crash["attributes"]["process.pid"] == spawn1["attributes"]["process.pid"]
    assert crash["attributes"]["corral.worker.generation"] == 1
    assert crash["status"] == "ERROR"


def test_unknown_paths_and_methods(corral: Callable[..., CorralProcess]) -> None:
    server = corral("--workers", "1", "--mode", "thread")
    server.wait_ready(1)
    assert server.side("/nope").status_code == 404
    reply = httpx.post(server.metrics_url + "/metrics", timeout=5)
    assert reply.status_code == 405
    assert "GET" in reply.headers["allow"]
    gzipped = server.side("/metrics", headers={"accept-encoding": "gzip"})
    assert gzipped.headers.get("content-encoding") == "gzip"
    assert "corral_workers_ready 1.0" in gzipped.text
    openmetrics = server.side(
        "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


def test_no_metrics_turns_the_side_port_off(corral: Callable[..., CorralProcess]) -> None:
    server = corral("--workers", "1", "--mode", "thread", "--no-metrics")
    server.wait_ready(1)
    assert server.metrics_url == ""
    assert server.get("/").status_code == 200


# --- Auth and TLS -------------------------------------------------------------------


def test_bearer_token_is_required_when_set(corral: Callable[..., CorralProcess]) -> None:
    token = "s3cret-token-for-tests"
    server = corral("--workers", "1", "--mode", "thread", env={"CORRAL_METRICS_TOKEN": token})
    server.wait_ready(1)
    assert server.side("/metrics").status_code == 401
    wrong = server.side("/metrics", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert token not in wrong.text
    good = server.side("/metrics", headers={"authorization": f"Bearer {token}"})
    assert good.status_code == 200
    assert "corral_workers_ready" in good.text
    assert all(token not in line for line in server.lines), "the token is never logged"
    ok = run_cli("status", "--url", server.metrics_url, env={"CORRAL_METRICS_TOKEN": token})
    assert ok.returncode == 0, ok.stderr
    refused = run_cli("status", "--url", server.metrics_url)
    assert refused.returncode == ExitCode.STATUS_UNAUTHORIZED
    assert "--token" in refused.stderr


def _make_cert(
    directory: Path, name: str, ca: tuple[Path, Path] | None = None
) -> tuple[Path, Path]:
    """A certificate and key: self-signed, or issued by ``ca``.

    The extensions are the ones Python 3.13's ``create_default_context`` insists
    on (it verifies with ``VERIFY_X509_STRICT``): a CA must carry ``keyUsage``
    and a certificate it issues an authority key identifier.
    """
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    if ca is None:
        command = [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign,cRLSign",
            "-keyout", str(key), "-out", str(cert),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=60)
        return cert, key
    csr = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        "subjectKeyIdentifier=hash\n"
    )
    subprocess.run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
         "-keyout", str(key), "-out", str(csr)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
         "-CAcreateserial", "-days", "1", "-extfile", str(extensions), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def _trust(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def test_tls_and_basic_auth_from_a_web_config(
    corral: Callable[..., CorralProcess], tmp_path: Path
) -> None:
    cert, key = _make_cert(tmp_path, "server")
    hashed = bcrypt.hashpw(b"hunter2", bcrypt.gensalt(rounds=4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    server = corral("--workers", "1", "--mode", "thread", "--metrics-web-config", str(config))
    server.wait_ready(1)
    assert server.metrics_url.startswith("https://")
    assert server.side("/healthz", verify=_trust(cert)).status_code == 401
    good = server.side("/metrics", verify=_trust(cert), auth=("prometheus", "hunter2"))
    assert good.status_code == 200
    assert server.side("/metrics", verify=_trust(cert), auth=("prometheus", "x")).status_code == 401
    # Plain HTTP to the TLS port fails cleanly, and the port keeps serving.
    plain = server.metrics_url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain + "/metrics", timeout=5)
    assert (
        server.side("/metrics", verify=_trust(cert), auth=("prometheus", "hunter2")).status_code
        == 200
    )
    assert "hunter2" not in "\n".join(server.lines)


def test_mutual_tls_rejects_clients_without_a_certificate(
    corral: Callable[..., CorralProcess], tmp_path: Path
) -> None:
    ca_cert, ca_key = _make_cert(tmp_path, "ca")
    server_cert, server_key = _make_cert(tmp_path, "server", ca=(ca_cert, ca_key))
    client_cert, client_key = _make_cert(tmp_path, "client", ca=(ca_cert, ca_key))
    config = tmp_path / "web.yml"
    config.write_text(
        f"tls_server_config:\n  cert_file: {server_cert}\n  key_file: {server_key}\n"
        f"  client_ca_file: {ca_cert}\n  client_auth_type: RequireAndVerifyClientCert\n"
    )
    server = corral("--workers", "1", "--mode", "thread", "--metrics-web-config", str(config))
    server.wait_ready(1)
    with pytest.raises(httpx.HTTPError):
        server.side("/metrics", verify=_trust(ca_cert)).raise_for_status()
    context = _trust(ca_cert)
    context.load_cert_chain(str(client_cert), str(client_key))
    assert server.side("/metrics", verify=context).status_code == 200


# --- The status page and ``corral status`` ------------------------------------------


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing; make test installs the Debian chromium package")
        pytest.skip("chromium is not installed (make test installs the Debian package)")
    return found


def test_status_page_renders_the_worker_table_in_a_real_browser(
    corral: Callable[..., CorralProcess], tmp_path: Path
) -> None:
    browser = _chromium()
    server = corral("--workers", "3", "--mode", "thread")
    server.wait_ready(3)
    page = server.side("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # The SVG namespace is a name, not a fetch.
    text = page.text.replace(server.metrics_url, "").replace('"http://www.w3.org/2000/svg"', "")
    assert "http://" not in text, "no external assets"
    assert "https://" not in text, "no external assets"
    result = subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}", "--timeout=5000",
            "--dump-dom", server.metrics_url + "/",
        ],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    for slot in range(3):
        assert f'data-slot="{slot}"' in dom, dom[-3000:]
    assert dom.count(">ready<") >= 3


def test_corral_status_prints_the_table_and_exits_by_readiness(
    corral: Callable[..., CorralProcess],
) -> None:
    server = _start_with_long_backoff(corral)
    ready = run_cli("status", "--url", server.metrics_url)
    assert ready.returncode == 0, ready.stderr
    lines = ready.stdout.splitlines()
    assert lines[0].startswith("corral: ready")
    assert "\x1b[" not in ready.stdout, "no colour codes when stdout is not a terminal"
    header = next(line for line in lines if line.startswith("SLOT"))
    rows = lines[lines.index(header) + 1 :]
    assert [row.split()[:3] for row in rows] == [["0", "1", "ready"], ["1", "1", "ready"]]
    as_json = run_cli("status", "--url", server.metrics_url, "--json")
    assert json.loads(as_json.stdout)["ready"] is True
    _into_backoff(server, slot=1)
    degraded = run_cli("status", "--url", server.metrics_url)
    assert degraded.returncode == 1
    assert "NOT READY" in degraded.stdout
    assert "backoff" in degraded.stdout


def test_corral_status_without_a_running_corral(tmp_path: Path) -> None:
    result = run_cli("status", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.startswith("corral: error: cannot read http://127.0.0.1:9/workers")
    assert "Traceback" not in result.stderr
