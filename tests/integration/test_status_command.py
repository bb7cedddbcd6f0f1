"""``corral status`` as the container health command, against a real corral under each
side-port web config mode, and ``corral status --watch``.

The health command is the Dockerfile's own ``HEALTHCHECK`` line, read from the
file. Only its ``--url`` changes (the test's side port is ephemeral, and https
under TLS); credentials come from the ``CORRAL_STATUS_*`` variables a container
would set. Each mode is checked three ways: the right credential passes (exit
0), and a wrong or a missing one is a one-line error with its own exit code
that never shows the secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import pytest

from corral.errors import ExitCode
from tests.conftest import ROOT, CorralProcess, corral_env, eventually, run_cli
from tests.integration.test_side_port import _make_cert as make_cert

pytestmark = pytest.mark.integration

TOKEN = "health-check-token-0123456789"
PASSWORD = "correct horse battery staple"


def healthcheck_argv() -> list[str]:
    """The Dockerfile's ``HEALTHCHECK ... CMD`` as an argv (exec or shell form)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("HEALTHCHECK"))
    command = line.split(" CMD ", 1)[1].strip()
    argv: list[str] = json.loads(command) if command.startswith("[") else shlex.split(command)
    assert argv[:2] == ["corral", "status"], f"the health check is not corral status: {line}"
    return argv


def run_healthcheck(url: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The health command, pointed at ``url``, with the container's variables ``env``."""
    argv = healthcheck_argv()[1:]
    if "--url" in argv:
        argv[argv.index("--url") + 1] = url
    else:
        env = {"CORRAL_STATUS_URL": url, **env}
    return run_cli(*argv, env=env)


def assert_healthy(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert result.stdout.startswith("corral: ready"), result.stdout
    assert_no_secret(result)


def assert_refused(result: subprocess.CompletedProcess[str], code: ExitCode, *needles: str) -> None:
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == code, shown
    assert result.stdout == "", shown
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line error; {shown}"
    assert lines[0].startswith("corral: error: "), shown
    for needle in needles:
        assert needle in lines[0], f"{needle!r} missing; {shown}"
    assert_no_secret(result)


def assert_no_secret(result: subprocess.CompletedProcess[str]) -> None:
    for secret in (TOKEN, PASSWORD, "wrong-token", "wrong password"):
        assert secret not in result.stdout + result.stderr


@dataclass
class Side:
    """A running corral under one web config, and the files a health check would use."""

    server: CorralProcess
    files: dict[str, Path] = field(default_factory=dict)

    def check(self, **env: str | Path) -> subprocess.CompletedProcess[str]:
        return run_healthcheck(self.server.metrics_url, {k: str(v) for k, v in env.items()})


def start(
    corral: Callable[..., CorralProcess],
    tmp_path: Path,
    web_config: str = "",
    env: dict[str, str] | None = None,
) -> CorralProcess:
    args = ["--workers", "1", "--mode", "thread"]
    if web_config:
        config = tmp_path / "web.yml"
        config.write_text(web_config)
        args += ["--metrics-web-config", str(config)]
    server = corral(*args, env=env)
    server.wait_ready(1)
    return server


def secret_file(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content + "\n")  # as `echo ... > file` or a Kubernetes secret may have it
    path.chmod(0o600)
    return path


# --- Each web config mode -----------------------------------------------------------


def test_health_command_without_auth(corral: Callable[..., CorralProcess], tmp_path: Path) -> None:
    side = Side(start(corral, tmp_path))
    assert side.server.metrics_url.startswith("http://")
    assert_healthy(side.check())


def test_health_command_with_a_bearer_token(
    corral: Callable[..., CorralProcess], tmp_path: Path
) -> None:
    side = Side(start(corral, tmp_path, env={"CORRAL_METRICS_TOKEN": TOKEN}))
    # The container's own variable, which corral reads too, and a mounted secret file.
    assert_healthy(side.check(CORRAL_METRICS_TOKEN=TOKEN))
    assert_healthy(side.check(CORRAL_STATUS_TOKEN_FILE=secret_file(tmp_path, "token", TOKEN)))
    wrong = secret_file(tmp_path, "wrong", "wrong-token")
    assert_refused(
        side.check(CORRAL_STATUS_TOKEN_FILE=wrong),
        ExitCode.STATUS_UNAUTHORIZED,
        "refused the bearer token",
    )
    assert_refused(side.check(), ExitCode.STATUS_UNAUTHORIZED, "wants Bearer", "--token-file")


def test_health_command_with_basic_auth(
    corral: Callable[..., CorralProcess], tmp_path: Path
) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    side = Side(start(corral, tmp_path, f"basic_auth_users:\n  health: '{hashed}'\n"))
    password = secret_file(tmp_path, "password", PASSWORD)
    assert_healthy(side.check(CORRAL_STATUS_USER="health", CORRAL_STATUS_PASSWORD_FILE=password))
    assert_healthy(
        side.check(
            CORRAL_STATUS_USER="health",
            CORRAL_STATUS_PASSWORD_ENV="HEALTH_PASSWORD",
            HEALTH_PASSWORD=PASSWORD,
        )
    )
    assert_refused(
        side.check(
            CORRAL_STATUS_USER="health",
            CORRAL_STATUS_PASSWORD_FILE=secret_file(tmp_path, "wrong", "wrong password"),
        ),
        ExitCode.STATUS_UNAUTHORIZED,
        "refused the password of user 'health'",
    )
    assert_refused(side.check(), ExitCode.STATUS_UNAUTHORIZED, "wants Basic", "--user")
    unset = side.check(CORRAL_STATUS_USER="health", CORRAL_STATUS_PASSWORD_ENV="NOT_SET_HERE")
    assert_refused(unset, ExitCode.CONFIG, "NOT_SET_HERE", "not set")


def test_health_command_over_tls(corral: Callable[..., CorralProcess], tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "server")
    side = Side(
        start(corral, tmp_path, f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    )
    assert side.server.metrics_url.startswith("https://")
    assert_healthy(side.check(CORRAL_STATUS_CACERT=cert))
    assert_refused(side.check(), ExitCode.CONFIG, "not trusted", "--cacert")


def test_health_command_over_mutual_tls(
    corral: Callable[..., CorralProcess], tmp_path: Path
) -> None:
    ca_cert, ca_key = make_cert(tmp_path, "ca")
    server_cert, server_key = make_cert(tmp_path, "server", ca=(ca_cert, ca_key))
    client_cert, client_key = make_cert(tmp_path, "client", ca=(ca_cert, ca_key))
    other_ca = make_cert(tmp_path, "other-ca")
    stranger_cert, stranger_key = make_cert(tmp_path, "stranger", ca=other_ca)
    side = Side(
        start(
            corral,
            tmp_path,
            f"tls_server_config:\n  cert_file: {server_cert}\n  key_file: {server_key}\n"
            f"  client_ca_file: {ca_cert}\n  client_auth_type: RequireAndVerifyClientCert\n",
        )
    )
    assert_healthy(
        side.check(
            CORRAL_STATUS_CACERT=ca_cert,
            CORRAL_STATUS_CERT=client_cert,
            CORRAL_STATUS_KEY=client_key,
        )
    )
    assert_refused(
        side.check(
            CORRAL_STATUS_CACERT=ca_cert,
            CORRAL_STATUS_CERT=stranger_cert,
            CORRAL_STATUS_KEY=stranger_key,
        ),
        ExitCode.STATUS_UNAUTHORIZED,
        f"refused the client certificate {stranger_cert}",
    )
    assert_refused(
        side.check(CORRAL_STATUS_CACERT=ca_cert),
        ExitCode.STATUS_UNAUTHORIZED,
        "wants a client certificate",
        "--cert and --key",
    )


def test_contradictory_credentials_are_a_usage_error() -> None:
    both = run_cli("status", "--token", TOKEN, "--user", "health", "--password-env", "X")
    assert both.returncode == ExitCode.USAGE
    assert "not both" in both.stderr
    assert_no_secret(both)
    lonely = run_cli("status", "--user", "health")
    assert lonely.returncode == ExitCode.USAGE
    assert "--password-file or --password-env" in lonely.stderr


# --- --watch --------------------------------------------------------------------------


class Watch:
    """A running ``corral status --watch``, its output collected as it comes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "corral", "status", "--watch", *args],
            cwd=ROOT,
            env=corral_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lock = threading.Lock()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Iterator[str], into: list[str]) -> None:
        for line in stream:
            with self.lock:
                into.append(line.rstrip("\n"))

    def count(self, prefix: str, *, err: bool = False) -> int:
        with self.lock:
            return sum(line.startswith(prefix) for line in (self.stderr if err else self.stdout))

    def wait(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def watches() -> Iterator[Callable[..., Watch]]:
    started: list[Watch] = []

    def begin(*args: str) -> Watch:
        started.append(Watch(*args))
        return started[-1]

    yield begin
    for watch in started:
        watch.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_watch_waits_out_an_absent_side_port_and_stops_cleanly_on_ctrl_c(
    corral: Callable[..., CorralProcess], watches: Callable[..., Watch]
) -> None:
    port = _free_port()
    watch = watches("--url", f"http://127.0.0.1:{port}", "--interval", "0.3")
    eventually(lambda: watch.count("corral: warning: cannot read", err=True) >= 2, 30)
    assert watch.proc.poll() is None, "an unreachable side port does not end the watch"
    server = corral("--workers", "2", "--mode", "thread", "--metrics-port", str(port))
    server.wait_ready(2)
    eventually(lambda: watch.count("corral: ready") >= 2, 30, "two tables once corral is up")
    watch.proc.send_signal(signal.SIGINT)
    assert watch.wait() == 0, "Ctrl-C is how a watch ends: exit 0"
    with watch.lock:
        out, err = "\n".join(watch.stdout), list(watch.stderr)
    assert "\x1b[" not in out, "no screen clearing or colour when stdout is not a terminal"
    assert "Traceback" not in out + "\n".join(err)
    assert all(line.startswith("corral: warning: cannot read") for line in err), err
    assert out.count("\n\ncorral: ") == out.count("corral: ") - 1, "a blank line between tables"
    tables: list[list[str]] = []
    for line in out.splitlines():
        if line.startswith("corral: "):
            tables.append([line])
        elif line:
            tables[-1].append(line)
    assert len(tables) >= 2
    last = tables[-1]  # an earlier one may show the workers still starting
    assert last[0].startswith("corral: ready"), last
    assert [row.split()[:3] for row in last[2:]] == [["0", "1", "ready"], ["1", "1", "ready"]]


def test_watch_count_bounds_the_refreshes(
    corral: Callable[..., CorralProcess], watches: Callable[..., Watch]
) -> None:
    server = corral("--workers", "1", "--mode", "thread")
    server.wait_ready(1)
    table = watches("--url", server.metrics_url, "--interval", "0.2", "--count", "3")
    assert table.wait() == 0
    assert table.count("corral: ready") == 3
    as_json = watches("--url", server.metrics_url, "--interval", "0.2", "--count", "2", "--json")
    assert as_json.wait() == 0
    with as_json.lock:
        replies = [json.loads(line) for line in as_json.stdout]
    assert [reply["ready"] for reply in replies] == [True, True]
    assert all(reply["workers"][0]["state"] == "ready" for reply in replies)
    assert run_cli("status", "--count", "2").returncode == ExitCode.USAGE


def test_watch_redraws_in_place_on_a_terminal(corral: Callable[..., CorralProcess]) -> None:
    server = corral("--workers", "1", "--mode", "thread")
    server.wait_ready(1)
    leader, follower = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "status", "--watch", "--url", server.metrics_url,
         "--interval", "0.2", "--count", "2"],
        cwd=ROOT, env=corral_env(), stdin=subprocess.DEVNULL, stdout=follower,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    os.close(follower)
    screen = b""
    with contextlib.suppress(OSError):  # EIO once the watch has exited and closed the pty
        while chunk := os.read(leader, 4096):
            screen += chunk
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    text = screen.decode()
    assert text.count("\x1b[2J\x1b[1;1H") == 2, "each refresh clears the screen and homes"
    assert text.count("Ctrl-C to stop") == 2
    assert "\x1b[32mready" in text, "the state is coloured on a terminal"
