"""``--reload``: edit -> new code served; break -> error shown once, old code served;
fix -> new code served. A real corral on a temporary project, in both worker modes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.errors import ExitCode
from tests.conftest import CorralProcess, run_cli

pytestmark = pytest.mark.integration

APP = """\
import greeting


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = greeting.TEXT.encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""

FAILED = "reload skipped: the changed code does not import; the workers keep the old code"
SAME = "reload skipped: the same import error as above"
CHANGED = "reload: files changed"


def save(path: Path, text: str) -> None:
    """Write ``text`` so that any watcher sees a change, even within one mtime tick."""
    before = path.stat() if path.exists() else None
    path.write_text(text, encoding="utf-8")
    if before is not None and path.stat().st_mtime_ns == before.st_mtime_ns:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP, encoding="utf-8")
    (tmp_path / "greeting.py").write_text('TEXT = "v1"\n', encoding="utf-8")
    return tmp_path


def start(corral: Callable[..., CorralProcess], project: Path, mode: str) -> CorralProcess:
    server = corral(
        "--reload", "--mode", mode, "--workers", "2", "--app-dir", str(project),
        app="app:app", cwd=project,
    )  # fmt: skip
    server.wait_ready(2)
    server.wait_for(lambda r: r.get("event") == "reload watching")
    return server


def save_and_wait_for_roll(server: CorralProcess, path: Path, text: str, workers: int) -> None:
    """Save, then wait until a rolling restart has finished: every old worker drained.
    Counted from now, so an editor's save seen as two changes cannot confuse it."""
    rolls = len(server.events("reload"))
    drains = len(server.events("drain_end"))
    save(path, text)
    server.wait_event("reload", count=rolls + 1, timeout=30, message="rolling restart")
    server.wait_event("drain_end", count=drains + workers, timeout=30)


def body(server: CorralProcess) -> str:
    return server.get("/").text


def test_edit_break_fix(corral: Callable[..., CorralProcess], project: Path, mode: str) -> None:
    server = start(corral, project, mode)
    assert body(server) == "v1"

    save_and_wait_for_roll(server, project / "greeting.py", 'TEXT = "v2"\n', workers=2)
    assert {body(server) for _ in range(4)} == {"v2"}
    rolls, spawns = len(server.events("reload")), len(server.events("spawn"))

    save(project / "greeting.py", 'TEXT = "v3"\nundefined_name\n')
    failed = server.wait_for(lambda r: r.get("event") == FAILED, timeout=30)[0]
    assert failed["level"] == "error"
    assert failed["error"] == (
        "importing 'app' failed at greeting.py:2: NameError: name 'undefined_name' is not defined"
    )
    frames = [line for line in failed["exception"].splitlines() if line.startswith("  File ")]
    assert frames == [
        f'  File "{project / "app.py"}", line 1, in <module>',
        f'  File "{project / "greeting.py"}", line 2, in <module>',
    ], failed["exception"]
    assert {body(server) for _ in range(4)} == {"v2"}, "the old workers keep serving"

    save(project / "greeting.py", 'TEXT = "v3"\nundefined_name  # still broken\n')
    server.wait_for(lambda r: r.get("event") == SAME, timeout=30)
    assert len([r for r in server.records if r.get("event") == FAILED]) == 1, "shown once"
    assert len(server.events("reload")) == rolls, "no roll for broken code"
    assert len(server.events("spawn")) == spawns, "no worker tried the broken code"
    assert not server.events("crash")

    save_and_wait_for_roll(server, project / "greeting.py", 'TEXT = "v4"\n', workers=2)
    assert {body(server) for _ in range(4)} == {"v4"}
    server.send(signal.SIGTERM)
    assert server.wait_exit(30) == 0


def test_a_new_error_is_shown_and_files_outside_the_globs_are_ignored(
    corral: Callable[..., CorralProcess], project: Path
) -> None:
    server = start(corral, project, "thread")
    save(project / "notes.txt", "not python\n")
    save(project / "greeting.py", "TEXT = (\n")
    first = server.wait_for(lambda r: r.get("event") == FAILED, timeout=30)[0]
    assert first["error"].startswith("importing 'app' failed at greeting.py:1: SyntaxError: ")
    changed = server.wait_for(lambda r: r.get("event") == CHANGED)[0]
    assert changed["files"] == ["greeting.py"], "notes.txt is not *.py"
    save(project / "greeting.py", 'TEXT = "v2"\nraise RuntimeError("not yet")\n')
    second = server.wait_for(lambda r: r.get("event") == FAILED, timeout=30, count=2)[1]
    assert second["error"] == "importing 'app' failed at greeting.py:2: RuntimeError: not yet"
    assert body(server) == "v1"


def test_reload_include_exclude_and_dir(
    corral: Callable[..., CorralProcess], project: Path
) -> None:
    (project / "templates").mkdir()
    (project / "templates" / "page.html").write_text("<p>1</p>\n", encoding="utf-8")
    (project / "scratch").mkdir()
    server = corral(
        "--reload", "--mode", "thread", "--app-dir", str(project),
        "--reload-include", "*.html", "--reload-exclude", "scratch",
        app="app:app", cwd=project,
    )  # fmt: skip
    server.wait_ready(1)
    watching = server.wait_for(lambda r: r.get("event") == "reload watching")[0]
    assert watching["dirs"] == [str(project)]
    assert watching["include"] == ["*.py", "*.html"]
    save(project / "scratch" / "tmp.py", "x = 1\n")
    save(project / "templates" / "page.html", "<p>2</p>\n")
    changed = server.wait_for(lambda r: r.get("event") == CHANGED, timeout=30)[0]
    assert changed["files"] == [os.path.join("templates", "page.html")]
    server.wait_event("reload", timeout=30)


def test_reload_dir_that_does_not_exist(project: Path) -> None:
    started = time.monotonic()
    result = run_cli(
        "run", "app:app", "--reload", "--reload-dir", "nowhere", "--port", "0", cwd=project
    )
    assert result.returncode == ExitCode.RELOAD_DIR, result.stderr
    assert result.stderr.strip().splitlines() == [
        "corral: error: --reload-dir nowhere does not exist; name a directory to watch"
    ], result.stderr
    assert time.monotonic() - started < 30, "it fails before serving anything"


def test_reload_dir_that_is_a_file(project: Path) -> None:
    result = run_cli(
        "run", "app:app", "--reload", "--reload-dir", "app.py", "--port", "0", cwd=project
    )
    assert result.returncode == ExitCode.RELOAD_DIR, result.stderr
    assert "--reload-dir app.py is not a directory" in result.stderr


def test_reload_settings_without_reload_are_named(
    corral: Callable[..., CorralProcess], project: Path
) -> None:
    server = corral("--reload-exclude", "scratch", app="app:app", cwd=project)
    server.wait_ready(1)
    warning = server.wait_for(lambda r: "do nothing without --reload" in r.get("event", ""))[0]
    assert warning["level"] == "warning"
    assert not [r for r in server.records if r.get("event") == "reload watching"]
