"""A real Prometheus, a real Alertmanager and a webhook receiver, all on loopback.

Both servers come from Debian's packages (``prometheus``,
``prometheus-alertmanager``; ``scripts/system-packages.sh`` installs them).
Each runs on an ephemeral port with its own temporary storage, Alertmanager
with clustering off, and is killed by the fixture that started it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.assets.promql import ROOT

ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")
PROMETHEUS_BINARIES = ("prometheus",)
START_TIMEOUT = 60.0


def free_port() -> int:
    """A port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- The webhook receiver ----------------------------------------------------------


class Webhook(ThreadingHTTPServer):
    """Collects every Alertmanager notification posted to it."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.lock = threading.Lock()
        self.notifications: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/alerts"

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert in every notification so far, in arrival order."""
        with self.lock:
            return [alert for note in self.notifications for alert in note["alerts"]]


class _WebhookHandler(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        with self.server.lock:
            self.server.notifications.append(json.loads(body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# --- Servers --------------------------------------------------------------------


@dataclass
class Server:
    """One started binary, its URL and where its output goes."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if self.client.get(self.url + path).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not get ready; its log:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def _start(name: str, argv: list[str], url: str, workdir: Path) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=workdir
        )
    return Server(name, url, proc, log)


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The shipped example config, with its webhook pointed at the test's receiver.

    The route's waits are shortened from tens of seconds to one, for the test's
    time limit only; the routing tree and the inhibit rules are as shipped.
    """
    path = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
    return config


def start_alertmanager(binary: str, workdir: Path, webhook_url: str) -> Server:
    config = workdir / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_config(webhook_url)))
    (workdir / "am-data").mkdir()
    port = free_port()
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    server = _start("alertmanager", argv, f"http://127.0.0.1:{port}", workdir)
    server.wait_ready("/-/ready")
    return server


def prometheus_config(targets: list[str], alertmanager: str) -> dict[str, Any]:
    """1 s scrapes and evaluations of the shipped rules, as deploy/prometheus/rules has them."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy" / "prometheus" / "rules" / "*.yml")],
        "alerting": {
            "alertmanagers": [
                {"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}
            ]
        },
        "scrape_configs": [
            {"job_name": "corral", "static_configs": [{"targets": targets}]},
        ],
    }


def start_prometheus(binary: str, workdir: Path, targets: list[str], alertmanager: str) -> Server:
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(targets, alertmanager)))
    port = free_port()
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    server = _start("prometheus", argv, f"http://127.0.0.1:{port}", workdir)
    server.wait_ready("/-/ready")
    return server


# --- Asking Prometheus ------------------------------------------------------------


class PrometheusAPI:
    def __init__(self, server: Server) -> None:
        self.server = server

    def _get(self, path: str, **params: str) -> Any:
        reply = self.server.client.get(self.server.url + path, params=params)
        body = reply.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: str = "1s") -> list[Any]:
        data = self._get(
            "/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=step
        )
        result: list[Any] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        data = self._get("/api/v1/alerts")
        alerts: list[dict[str, Any]] = data["alerts"]
        return alerts

    def targets_up(self) -> dict[str, float]:
        return {
            sample["metric"]["instance"]: float(sample["value"][1])
            for sample in self.query('up{job="corral"}')
        }

    def rule_groups(self) -> list[dict[str, Any]]:
        data = self._get("/api/v1/rules")
        groups: list[dict[str, Any]] = data["groups"]
        return groups
