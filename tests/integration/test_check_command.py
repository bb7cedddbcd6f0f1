"""``corral check``: imports the app and explains the worker mode, without serving anything."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from corral.errors import ExitCode
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.integration

FREE_THREADED_BUILD = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def run_check(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return run_cli("check", *args, cwd=cwd)


def report(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The successful report as ``{"app", "interface", ..., "config"}`` lines, checked for shape."""
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == ExitCode.OK, shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    fields: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition(":")
        assert sep, f"unexpected line {line!r}; {shown}"
        assert value.startswith(" "), f"unexpected line {line!r}; {shown}"
        fields[key] = line
    assert set(fields) == {"app", "interface", "websockets", "mode", "python", "config"}, shown
    return fields


def test_check_reports_the_automatic_mode_and_why() -> None:
    fields = report(run_check("examples.hello:app"))
    assert fields["app"] == "app:    examples.hello:app (function)"
    if FREE_THREADED_BUILD:  # nothing examples.hello imports may turn the GIL back on
        assert fields["mode"] == "mode:   thread (free-threaded build, GIL disabled)", fields
        assert "free-threaded build: yes, GIL enabled now: no" in fields["python"], fields
    else:
        assert fields["mode"] == (
            "mode:   process (this interpreter has a GIL, so workers are processes)"
        )
        assert "free-threaded build: no, GIL enabled now: yes" in fields["python"], fields
    assert fields["python"].startswith(f"python: {sys.version.split()[0]} ("), fields


@pytest.mark.skipif(
    not FREE_THREADED_BUILD, reason="PYTHON_GIL only exists on free-threaded builds"
)
def test_check_on_a_free_threaded_build_with_the_gil_forced_on() -> None:
    result = run_cli("check", "examples.hello:app", env={"PYTHON_GIL": "1"})
    fields = report(result)
    assert fields["mode"] == (
        "mode:   process (free-threaded build, but the GIL was re-enabled after importing the app)"
    ), fields
    assert "free-threaded build: yes, GIL enabled now: yes" in fields["python"], fields


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_check_honours_an_explicit_mode(mode: str) -> None:
    fields = report(run_check("examples.hello:app", "--mode", mode))
    assert fields["mode"].startswith(f"mode:   {mode} ("), fields
    assert f"mode {mode} set explicitly" in fields["mode"], "the reason says it was chosen"


def test_check_imports_from_app_dir(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.py").write_text(
        "async def application(scope, receive, send):\n    pass\n", encoding="utf-8"
    )
    fields = report(run_check("elsewhere:application", "--app-dir", str(tmp_path)))
    assert fields["app"] == "app:    elsewhere:application (function)"


@pytest.mark.parametrize(
    ("app_path", "needle"),
    [
        ("nosuchmodule:app", "'nosuchmodule'"),
        ("examples.hello:nope", "'nope'"),
        ("examples.hello", "'package.module:attribute'"),
    ],
)
def test_check_with_a_bad_app_fails_with_one_line(app_path: str, needle: str) -> None:
    result = run_check(app_path)
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == ExitCode.APP_IMPORT, shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    assert result.stdout == "", "no partial report before the error"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, shown
    assert lines[0].startswith("corral: error: "), shown
    assert needle in lines[0], shown


def test_check_with_an_app_that_raises_at_import(tmp_path: Path) -> None:
    (tmp_path / "explodes.py").write_text(
        "import helper\n\napp = helper.build()\n", encoding="utf-8"
    )
    (tmp_path / "helper.py").write_text(
        'def build():\n    raise RuntimeError("boom")\n', encoding="utf-8"
    )
    result = run_check("explodes:app", "--app-dir", str(tmp_path))
    assert result.returncode == ExitCode.APP_IMPORT, result.stderr
    assert result.stdout == "", "no partial report before the error"
    # Python versions differ in where they draw ^^^ markers; the rest is exact.
    lines = [line for line in result.stderr.splitlines() if line.strip(" ^~")]
    assert lines == [
        "Traceback (most recent call last):",
        f'  File "{tmp_path / "explodes.py"}", line 3, in <module>',
        "    app = helper.build()",
        f'  File "{tmp_path / "helper.py"}", line 2, in build',
        '    raise RuntimeError("boom")',
        "RuntimeError: boom",
        f"corral: error: importing 'explodes' failed at {tmp_path / 'helper.py'}:2:"
        " RuntimeError: boom",
    ], result.stderr


def test_check_names_a_relative_path_inside_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("app = undefined_name\n", encoding="utf-8")
    result = run_cli("check", "broken:app", cwd=tmp_path)
    assert result.returncode == ExitCode.APP_IMPORT, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "corral: error: importing 'broken' failed at broken.py:1:"
        " NameError: name 'undefined_name' is not defined"
    ), result.stderr


def test_check_accepts_a_log_level(tmp_path: Path) -> None:
    (tmp_path / "chatty.py").write_text(
        "import logging\n"
        "logging.getLogger('chatty').debug('debug at import')\n"
        "logging.getLogger('chatty').info('info at import')\n"
        "async def app(scope, receive, send):\n    pass\n",
        encoding="utf-8",
    )
    quiet = run_check("chatty:app", "--app-dir", str(tmp_path), "--log-level", "warning")
    loud = run_check("chatty:app", "--app-dir", str(tmp_path), "--log-level", "debug")
    assert report(quiet)["app"] == report(loud)["app"] == "app:    chatty:app (function)"
    assert "at import" not in quiet.stderr, quiet.stderr
    records = [json.loads(line) for line in loud.stderr.splitlines()]
    assert [r["event"] for r in records] == ["debug at import", "info at import"], loud.stderr
    bad = run_check("chatty:app", "--app-dir", str(tmp_path), "--log-level", "loud")
    assert bad.returncode == ExitCode.CONFIG, bad.stderr
    assert bad.stderr.startswith("corral: error: log_level 'loud' is unknown"), bad.stderr


def test_check_reads_the_environment_and_config_file(tmp_path: Path) -> None:
    (tmp_path / "corral.toml").write_text("workers = 3\n")
    result = run_cli(
        "check",
        "examples.hello:app",
        "--app-dir",
        str(ROOT),
        cwd=tmp_path,
        env={"CORRAL_MODE": "thread"},
    )
    fields = report(result)
    assert fields["mode"].startswith("mode:   thread (mode thread set explicitly")
    assert fields["config"] == f"config: {tmp_path / 'corral.toml'}; 3 worker(s)"


def test_check_rejects_invalid_configuration(tmp_path: Path) -> None:
    (tmp_path / "corral.toml").write_text("wokers = 3\n")
    result = run_cli("check", "examples.hello:app", "--app-dir", str(ROOT), cwd=tmp_path)
    assert result.returncode == ExitCode.CONFIG
    assert result.stderr.startswith("corral: error: ")
    assert "wokers" in result.stderr
