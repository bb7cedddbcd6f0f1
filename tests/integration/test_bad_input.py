"""Bad input fails fast: one line on stderr naming the fix, a distinct exit code, no traceback.

Every test drives the real ``python -m corral`` CLI in a subprocess and looks
only at what an operator would see: the exit status, stdout and stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.errors import ExitCode
from tests.conftest import ROOT, CorralProcess, corral_env, pid_alive, run_cli

pytestmark = pytest.mark.integration

BOOT_LOOP_LIMIT = 30.0


# --- Helpers -----------------------------------------------------------------------


def run_app(
    app: str, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``corral run APP --port 0 ARGS``: port 0 so a wrongly accepted input cannot collide."""
    return run_cli("run", app, "--port", "0", *args, cwd=cwd, env=env)


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: ExitCode, *needles: str
) -> str:
    """Exactly one ``corral: error:`` line on stderr containing ``needles``; returns it."""
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stdout, shown
    assert "Traceback" not in result.stderr, shown
    assert result.returncode == code, f"expected {code!r}; {shown}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line error; {shown}"
    line = lines[0]
    assert line.startswith("corral: error: "), shown
    for needle in needles:
        assert needle in line, f"{needle!r} missing from the error line; {shown}"
    return line


def write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(source, encoding="utf-8")


@contextlib.contextmanager
def listening_socket() -> Iterator[int]:
    """A TCP listener on 127.0.0.1, held for the duration; yields its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


# --- The app path ------------------------------------------------------------------


def test_module_that_does_not_exist() -> None:
    result = run_app("nosuchmodule:app")
    assert_one_line_error(
        result, ExitCode.APP_IMPORT, "'nosuchmodule'", "check the app path", "project directory"
    )


def test_attribute_that_does_not_exist() -> None:
    result = run_app("examples.hello:nope")
    assert_one_line_error(
        result, ExitCode.APP_IMPORT, "'examples.hello'", "'nope'", "fix the part after the ':'"
    )


def test_attribute_that_is_not_callable(tmp_path: Path) -> None:
    write_module(tmp_path, "notcallable", "app = 42\n")
    result = run_app("notcallable:app", "--app-dir", str(tmp_path))
    assert_one_line_error(result, ExitCode.APP_IMPORT, "notcallable:app", "not an ASGI callable")


def assert_import_error(
    result: subprocess.CompletedProcess[str], where: Path, line: int, *needles: str
) -> str:
    """The app's own frames, ending at ``where:line``, then one ``corral: error:`` line
    that names the same place; none of corral's or importlib's frames."""
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == ExitCode.APP_IMPORT, shown
    assert result.stdout == "", shown
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):", shown
    frames = [text for text in lines if text.startswith("  File ")]
    assert frames, shown
    assert frames[-1].startswith(f'  File "{where}", line {line}'), shown
    machinery = [f for f in frames if "/corral/" in f or "importlib" in f]
    assert not machinery, f"corral's or importlib's frames shown: {machinery}"
    summary = lines[-1]
    assert summary.startswith("corral: error: "), shown
    assert f" at {where}:{line}: " in summary, shown
    assert not [text for text in lines[:-1] if text.startswith("corral: ")], shown
    for needle in needles:
        assert needle in summary, f"{needle!r} missing from the error line; {shown}"
    return summary


def test_module_that_raises_at_import(tmp_path: Path) -> None:
    write_module(tmp_path, "explodes", 'raise RuntimeError("boom")\n')
    result = run_app("explodes:app", "--app-dir", str(tmp_path))
    assert_import_error(result, tmp_path / "explodes.py", 1, "'explodes'", "RuntimeError: boom")


def test_import_error_names_the_innermost_user_frame(tmp_path: Path) -> None:
    write_module(tmp_path, "outer", "import inner\n")
    write_module(tmp_path, "inner", "def build():\n    return {}['missing']\n\nbuild()\n")
    result = run_app("outer:app", "--app-dir", str(tmp_path))
    assert_import_error(result, tmp_path / "inner.py", 2, "'outer'", "KeyError: 'missing'")
    frames = [line for line in result.stderr.splitlines() if line.startswith("  File ")]
    assert len(frames) == 3, result.stderr  # outer.py:1, inner.py:4, inner.py:2


def test_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    write_module(tmp_path, "typo", "x = 1\ndef f(:\n    pass\n")
    result = run_app("typo:app", "--app-dir", str(tmp_path))
    shown = result.stderr
    assert result.returncode == ExitCode.APP_IMPORT, shown
    lines = shown.rstrip().splitlines()
    assert lines[0] == f'  File "{tmp_path / "typo.py"}", line 2', shown
    assert any(line.startswith("SyntaxError: ") for line in lines), shown
    assert "importlib" not in shown, shown
    assert "/corral/" not in shown, shown
    assert lines[-1].startswith(
        f"corral: error: importing 'typo' failed at {tmp_path / 'typo.py'}:2: SyntaxError: "
    ), shown
    assert ", line 2)" not in lines[-1], "the file and line are named once"


def test_import_error_with_a_multi_line_message_is_cut_to_one_line(tmp_path: Path) -> None:
    write_module(tmp_path, "chatty", 'raise ValueError("first line\\nsecond line")\n')
    result = run_app("chatty:app", "--app-dir", str(tmp_path))
    line = assert_import_error(result, tmp_path / "chatty.py", 1, "'chatty'", "first line")
    assert "second line" not in line


def test_missing_dependency_of_the_app_is_named(tmp_path: Path) -> None:
    write_module(tmp_path, "needsdep", "import nosuchdependency\n")
    result = run_app("needsdep:app", "--app-dir", str(tmp_path))
    assert_import_error(result, tmp_path / "needsdep.py", 1, "'needsdep'", "nosuchdependency")


def test_missing_dependency_whose_name_prefixes_the_app_module(tmp_path: Path) -> None:
    write_module(tmp_path, "foobar", "import foo\n")
    result = run_app("foobar:app", "--app-dir", str(tmp_path))
    line = assert_import_error(result, tmp_path / "foobar.py", 1, "'foobar'", "'foo'")
    assert "check the app path" not in line, "the app path is right; its dependency is missing"


def test_module_that_calls_sys_exit_at_import(tmp_path: Path) -> None:
    write_module(tmp_path, "quitter", "import sys\nsys.exit(3)\n")
    result = run_app("quitter:app", "--app-dir", str(tmp_path))
    assert_import_error(result, tmp_path / "quitter.py", 2, "'quitter'", "SystemExit")


@pytest.mark.parametrize("app_path", ["examples.hello", "examples.hello:", ":app"])
def test_app_path_without_module_and_attribute(app_path: str) -> None:
    result = run_app(app_path)
    assert_one_line_error(result, ExitCode.APP_IMPORT, repr(app_path), "'package.module:attribute'")


# --- Settings ----------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_workers_below_one(workers: str) -> None:
    result = run_app("examples.hello:app", "--workers", workers)
    assert_one_line_error(result, ExitCode.CONFIG, f"got {workers}", "--workers 1 or more")


@pytest.mark.parametrize(
    ("flag", "value"), [("--shutdown-timeout", "-1"), ("--restart-window", "-5")]
)
def test_negative_durations(flag: str, value: str) -> None:
    result = run_app("examples.hello:app", flag, value)
    assert_one_line_error(result, ExitCode.CONFIG, "must not be negative", f"pass {flag} 0 or more")


def test_port_out_of_range() -> None:
    result = run_cli("run", "examples.hello:app", "--port", "70000")
    assert_one_line_error(result, ExitCode.CONFIG, "70000", "use 0 to pick a free port")


def _unknown_key_via_flag(tmp_path: Path) -> tuple[list[str], Path]:
    (tmp_path / "corral.toml").write_text("workers = 2\nbogus_key = 1\n", encoding="utf-8")
    return ["--config", str(tmp_path / "corral.toml")], ROOT


def _unknown_key_in_cwd_corral_toml(tmp_path: Path) -> tuple[list[str], Path]:
    (tmp_path / "corral.toml").write_text("workers = 2\nbogus_key = 1\n", encoding="utf-8")
    return ["--app-dir", str(ROOT)], tmp_path


def _unknown_key_in_cwd_pyproject(tmp_path: Path) -> tuple[list[str], Path]:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.corral]\nworkers = 2\nbogus_key = 1\n', encoding="utf-8"
    )
    return ["--app-dir", str(ROOT)], tmp_path


@pytest.mark.parametrize(
    "setup",
    [_unknown_key_via_flag, _unknown_key_in_cwd_corral_toml, _unknown_key_in_cwd_pyproject],
    ids=["--config", "cwd-corral.toml", "cwd-pyproject.toml"],
)
def test_unknown_key_in_config_file(
    tmp_path: Path, setup: Callable[[Path], tuple[list[str], Path]]
) -> None:
    args, cwd = setup(tmp_path)
    result = run_app("examples.hello:app", *args, cwd=cwd)
    assert_one_line_error(
        result, ExitCode.CONFIG, "unknown config key 'bogus_key'", "valid keys are", "workers"
    )


def test_config_file_that_is_not_toml(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("workers = [\n", encoding="utf-8")
    result = run_app("examples.hello:app", "--config", str(tmp_path / "broken.toml"))
    assert_one_line_error(result, ExitCode.CONFIG, "broken.toml", "not valid TOML")


def test_config_file_that_does_not_exist(tmp_path: Path) -> None:
    result = run_app("examples.hello:app", "--config", str(tmp_path / "missing.toml"))
    assert_one_line_error(result, ExitCode.CONFIG, "missing.toml", "fix the --config path")


def test_invalid_value_in_environment_variable() -> None:
    result = run_app("examples.hello:app", env={"CORRAL_WORKERS": "abc"})
    assert_one_line_error(
        result, ExitCode.CONFIG, "environment variable CORRAL_WORKERS", "'abc'", "workers"
    )


def test_malformed_flag_value_is_a_usage_error_without_traceback() -> None:
    """click's own usage errors keep click's exit code and format (several lines)."""
    result = run_app("examples.hello:app", "--workers", "abc")
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "'--workers'" in result.stderr


# --- Listening ---------------------------------------------------------------------


def test_port_already_in_use() -> None:
    with listening_socket() as port:
        result = run_cli("run", "examples.hello:app", "--host", "127.0.0.1", "--port", str(port))
    assert_one_line_error(
        result, ExitCode.BIND, f"127.0.0.1:{port}", "already in use", "choose another --port"
    )


def test_unix_socket_path_that_is_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("keep me", encoding="utf-8")
    result = run_cli("run", "examples.hello:app", "--uds", str(path))
    assert_one_line_error(result, ExitCode.BIND, "is not a socket", "pick another --uds")
    assert path.read_text(encoding="utf-8") == "keep me", "corral must not delete a regular file"


# --- A boot loop ends by itself ----------------------------------------------------


def test_boot_loop_exits_with_boot_loop_code(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    max_restarts = 2
    started = time.monotonic()
    server = corral(
        "--workers",
        "2",
        "--max-restarts",
        str(max_restarts),
        "--mode",
        mode,
        env={"CHAOS_FAIL_STARTUP": "1"},
    )
    try:
        code = server.wait_exit(timeout=BOOT_LOOP_LIMIT)
    except subprocess.TimeoutExpired:
        tail = "\n".join(server.lines[-40:])
        pytest.fail(f"corral kept going after {BOOT_LOOP_LIMIT}s of failed boots:\n{tail}")
    elapsed = time.monotonic() - started
    output = "\n".join(server.lines)

    assert code == ExitCode.BOOT_LOOP, output[-4000:]
    assert elapsed < BOOT_LOOP_LIMIT, "hang guard"
    assert "Traceback" not in output

    spawns = Counter(
        r["slot"] for r in server.records if r.get("lifecycle") and r["event"] == "spawn"
    )
    assert spawns == {0: max_restarts + 1, 1: max_restarts + 1}, "one start plus max_restarts"
    crashes = server.events("crash")
    assert len(crashes) == 2 * (max_restarts + 1)
    assert {c["reason"] for c in crashes} == {"boot"}
    exhausted = Counter(r["slot"] for r in server.events("budget_exhausted"))
    assert exhausted == {0: 1, 1: 1}
    assert not server.events("ready"), "no worker ever became ready"
    stop = server.events("supervisor_stop")
    assert len(stop) == 1
    assert stop[0]["message"] == f"exit code {int(ExitCode.BOOT_LOOP)}"
    leftovers = [e["pid"] for e in server.events("spawn") if pid_alive(e["pid"])]
    assert not leftovers, f"worker processes outlived corral: {leftovers}"


# --- The codes are distinct --------------------------------------------------------


def test_exit_code_enum_has_no_aliases() -> None:
    assert len(set(ExitCode)) == len(ExitCode.__members__)


def test_each_cause_exits_with_its_own_nonzero_code() -> None:
    seen: dict[ExitCode, int] = {}
    seen[ExitCode.APP_IMPORT] = run_app("nosuchmodule:app").returncode
    seen[ExitCode.CONFIG] = run_app("examples.hello:app", "--workers", "0").returncode
    with listening_socket() as port:
        seen[ExitCode.BIND] = run_cli(
            "run", "examples.hello:app", "--host", "127.0.0.1", "--port", str(port)
        ).returncode
    seen[ExitCode.BOOT_LOOP] = run_app(
        "examples.chaos:app", "--max-restarts", "0", env={"CHAOS_FAIL_STARTUP": "1"}
    ).returncode

    assert seen == {cause: int(cause) for cause in seen}, seen
    codes = list(seen.values())
    assert len(set(codes)) == len(codes), f"two causes share an exit code: {seen}"
    assert all(code != 0 for code in codes), seen


# --- Help --------------------------------------------------------------------------

DOCUMENTED_FLAGS = (
    "--host",
    "--port",
    "--uds",
    "--workers",
    "--mode",
    "--max-restarts",
    "--restart-window",
    "--shutdown-timeout",
    "--on-exhausted",
    "--log-format",
    "--log-level",
    "--config",
)


def _option_blocks(help_text: str) -> dict[str, str]:
    """Each option's flag names -> its whole (possibly wrapped) entry, whitespace-normalised."""
    blocks: dict[str, str] = {}
    names: list[str] = []
    body: list[str] = []

    def flush() -> None:
        text = " ".join(" ".join(body).split())
        for name in names:
            blocks[name] = text

    for line in help_text.splitlines():
        if re.match(r"^ {1,4}-", line):  # an option's first line; wrapped lines indent deeper
            flush()
            declaration = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
            names = re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", declaration)
            body = [line]
        elif names and line.startswith(" " * 5):
            body.append(line)
        else:
            flush()
            names, body = [], []
    flush()
    return blocks


def test_run_help_documents_every_flag_with_its_default() -> None:
    result = run_cli("run", "--help")
    assert result.returncode == ExitCode.OK, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    blocks = _option_blocks(result.stdout)
    missing = [flag for flag in DOCUMENTED_FLAGS if flag not in blocks]
    assert not missing, f"undocumented flags {missing} in:\n{result.stdout}"
    no_default = [flag for flag in DOCUMENTED_FLAGS if "[default:" not in blocks[flag]]
    assert not no_default, f"flags without a [default: ...] note: {no_default}\n{result.stdout}"


def test_tls_files_that_do_not_load(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    result = run_app("examples.hello:app", "--ssl-certfile", missing, "--ssl-keyfile", missing)
    assert_one_line_error(result, ExitCode.CONFIG, "cannot load TLS certificate", "--ssl-certfile")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    result = run_app(
        "examples.hello:app", "--ssl-certfile", str(garbage), "--ssl-keyfile", str(garbage)
    )
    assert_one_line_error(result, ExitCode.CONFIG, "cannot load TLS certificate")


def test_tls_certificate_without_key() -> None:
    result = run_app("examples.hello:app", "--ssl-certfile", "cert.pem")
    assert_one_line_error(result, ExitCode.CONFIG, "--ssl-keyfile")


# --- The side port ------------------------------------------------------------------


def test_metrics_port_already_in_use() -> None:
    with listening_socket() as port:
        result = run_app("examples.hello:app", "--metrics-port", str(port))
    assert_one_line_error(
        result, ExitCode.BIND, f"metrics port 127.0.0.1:{port} is already in use", "--no-metrics"
    )


def test_app_and_side_port_on_the_same_port() -> None:
    result = run_cli("run", "examples.hello:app", "--port", "9555", "--metrics-port", "9555")
    assert_one_line_error(result, ExitCode.CONFIG, "both want port 9555", "--metrics-port")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("tls_server_config:\n  cert_file: /nope.pem\n  key_file: /nope.key\n", "does not exist"),
        ("basic_auth_users:\n  admin: not-a-bcrypt-hash\n", "admin"),
        ("surprise: 1\n", "surprise"),
        ("tls_server_config: [unclosed\n", "web config"),
    ],
)
def test_web_config_that_cannot_be_used(tmp_path: Path, content: str, needle: str) -> None:
    config = tmp_path / "web.yml"
    config.write_text(content)
    result = run_app("examples.hello:app", "--metrics-web-config", str(config))
    assert_one_line_error(result, ExitCode.CONFIG, str(config), needle)


def test_unsupported_otel_exporter_settings() -> None:
    zipkin = run_app("examples.hello:app", env={"OTEL_TRACES_EXPORTER": "zipkin"})
    assert_one_line_error(zipkin, ExitCode.CONFIG, "OTEL_TRACES_EXPORTER", "otlp, console or none")
    # http/json: in the OTel specification, but the Python SDK has no exporter for it.
    json_protocol = run_app(
        "examples.hello:app",
        env={"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
    )
    assert_one_line_error(json_protocol, ExitCode.CONFIG, "http/protobuf or grpc")


def test_garbage_on_the_side_port_does_not_disturb_corral(
    corral: Callable[..., CorralProcess],
) -> None:
    server = corral("--workers", "1", "--mode", "thread")
    server.wait_ready(1)
    host, port = server.metrics_url.removeprefix("http://").rsplit(":", 1)
    for payload in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, b"\xff" * 512):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(payload)
            reply = sock.recv(4096)
        assert reply == b"" or reply.startswith(b"HTTP/1.1 400"), reply[:80]
    assert server.side("/healthz").status_code == 200
    assert server.get("/").status_code == 200
    assert not [line for line in server.lines if "Traceback" in line]


# --- Serving options: inherited sockets, env files, headers, strict config ---------------


def test_fd_that_is_not_open() -> None:
    result = run_app("examples.hello:app", "--fd", "987")
    assert_one_line_error(result, ExitCode.BIND, "--fd 987 is not an open file descriptor")


def _serve_on_inherited_fd(fd: int) -> subprocess.CompletedProcess[str]:
    """``corral run --fd FD`` with ``fd`` really inherited, as a launcher would pass it."""
    os.set_inheritable(fd, True)
    command = [sys.executable, "-m", "corral", "run", "examples.hello:app", "--fd", str(fd)]
    return subprocess.run(
        command, env=corral_env(), cwd=ROOT, capture_output=True, text=True,
        pass_fds=(fd,), timeout=60, check=False,
    )  # fmt: skip


def test_fd_that_is_not_a_socket(tmp_path: Path) -> None:
    """The fd is open in corral (a file the launcher passed), but it is a regular file."""
    path = tmp_path / "plain.txt"
    path.write_text("not a socket")
    with path.open("rb") as handle:
        fd = handle.fileno()
        proc = _serve_on_inherited_fd(fd)
    assert_one_line_error(proc, ExitCode.BIND, f"--fd {fd} is not a socket")


def test_fd_that_is_a_datagram_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        fd = sock.fileno()
        proc = _serve_on_inherited_fd(fd)
    assert_one_line_error(proc, ExitCode.BIND, "not a stream socket")


@pytest.mark.parametrize("count", ["abc", "0", ""])
def test_listen_fds_garbage(count: str) -> None:
    launcher = (
        "import os, sys; os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=sys.argv[1]);"
        " os.execv(sys.executable, [sys.executable, '-m', 'corral', 'run', 'examples.hello:app',"
        " '--port', '0'])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", launcher, count], env=corral_env(), cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert_one_line_error(proc, ExitCode.BIND, f"LISTEN_FDS={count!r}", "fix the socket unit")


def test_listen_fds_for_another_process_is_ignored() -> None:
    """A LISTEN_PID that is not ours means the variables were meant for someone else."""
    result = run_cli("check", "examples.hello:app", env={"LISTEN_PID": "1", "LISTEN_FDS": "x"})
    assert result.returncode == ExitCode.OK, result.stderr


def test_env_file_that_does_not_exist(tmp_path: Path) -> None:
    result = run_app("examples.hello:app", "--env-file", str(tmp_path / "missing.env"))
    assert_one_line_error(result, ExitCode.CONFIG, "missing.env does not exist", "--env-file")


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        ("X-Ok", "is not 'Name: value'"),
        ("Bad Name: 1", "'Bad Name' is not a valid HTTP field name"),
        ("X-Snow: ☃", "has a value HTTP cannot carry"),
    ],
)
def test_bad_header(header: str, needle: str) -> None:
    result = run_app("examples.hello:app", "--header", header)
    assert_one_line_error(result, ExitCode.CONFIG, needle)


def test_wrong_toml_type_in_config_file(tmp_path: Path) -> None:
    (tmp_path / "corral.toml").write_text('workers = "3"\n', encoding="utf-8")
    result = run_app("examples.hello:app", "--app-dir", str(ROOT), cwd=tmp_path)
    assert_one_line_error(
        result, ExitCode.CONFIG, "workers must be an integer, not a string", "write workers = 3"
    )


def test_misspelt_config_key_gets_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool]\ncorral = { "shutdown-timout" = 3 }\n', encoding="utf-8"
    )
    result = run_app("examples.hello:app", "--app-dir", str(ROOT), cwd=tmp_path)
    assert_one_line_error(
        result, ExitCode.CONFIG, "unknown config key 'shutdown-timout'", "'shutdown-timeout'?"
    )


def test_check_warns_about_a_misspelt_variable_but_not_status_url() -> None:
    result = run_cli(
        "check",
        "examples.hello:app",
        env={"CORRAL_WORKRES": "2", "CORRAL_STATUS_URL": "http://127.0.0.1:1"},
    )
    assert result.returncode == ExitCode.OK, result.stderr
    assert result.stderr.strip().splitlines() == [
        "corral: warning: unknown environment variable CORRAL_WORKRES"
        " (did you mean CORRAL_WORKERS?) ignored"
    ]


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls-extras")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--ssl-ca-certs", "/nonexistent/ca.pem"], "fix --ssl-ca-certs"),
        (["--ssl-ciphers", "NO-SUCH-CIPHER"], "fix --ssl-ciphers"),
        (["--ssl-cert-reqs", "required"], "set that too"),
    ],
)
def test_tls_extras_that_cannot_be_used(
    self_signed: tuple[Path, Path], extra: list[str], needle: str
) -> None:
    cert, key = self_signed
    result = run_app(
        "examples.hello:app", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), *extra
    )
    assert_one_line_error(result, ExitCode.CONFIG, needle)


def test_fd_and_uds_together() -> None:
    result = run_app("examples.hello:app", "--fd", "3", "--uds", "/tmp/x.sock")
    assert_one_line_error(result, ExitCode.CONFIG, "--fd and --uds")
