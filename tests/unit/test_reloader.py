"""The reloader's import check (a real fresh interpreter) and its show-once rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.reloader import ImportFailure, Reloader, check_import
from corral.watch import WatchSpec


class Restarts:
    """Counts rolling restarts asked for: the one method the reloader calls."""

    def __init__(self) -> None:
        self.count = 0

    def restart_workers(self) -> None:
        self.count += 1


def write(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(source, encoding="utf-8")


def test_an_app_that_imports_passes(tmp_path: Path) -> None:
    write(tmp_path, "fine", "async def app(scope, receive, send):\n    pass\n")
    assert check_import("fine:app", str(tmp_path)) is None


def test_with_factory_the_factory_must_work_too(tmp_path: Path) -> None:
    write(tmp_path, "made", "def create():\n    raise RuntimeError('no database')\n")
    assert check_import("made:create", str(tmp_path)) is None  # the module imports
    failure = check_import("made:create", str(tmp_path), factory=True)
    assert failure is not None
    assert "RuntimeError: no database" in failure.summary


def test_a_failing_import_gives_summary_and_frames(tmp_path: Path) -> None:
    write(tmp_path, "broken", "import helper\n")
    write(tmp_path, "helper", "x = 1\nprint('noise')\n1 / 0\n")
    failure = check_import("broken:app", str(tmp_path))
    assert failure is not None
    assert failure.summary == (
        f"importing 'broken' failed at {tmp_path / 'helper.py'}:3:"
        " ZeroDivisionError: division by zero"
    )
    assert f'File "{tmp_path / "helper.py"}", line 3, in <module>' in failure.traceback
    assert "noise" not in failure.traceback, "the app's own output is not the error"


def test_an_interpreter_that_dies_is_a_failure_too(tmp_path: Path) -> None:
    write(tmp_path, "dies", "import os\nos._exit(7)\n")
    failure = check_import("dies:app", str(tmp_path))
    assert failure == ImportFailure("checking the import failed with exit code 7", "")


def test_an_error_is_shown_once_until_it_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    restarts = Restarts()
    reloader = Reloader(restarts, WatchSpec.build((), (), (), tmp_path), "app:app", str(tmp_path))
    changed = [tmp_path / "app.py"]
    write(tmp_path, "app", "def app():\n    return 1\n")
    reloader.on_change(changed)
    assert restarts.count == 1
    write(tmp_path, "app", "app = (\n")
    reloader.on_change(changed)
    reloader.on_change(changed)
    write(tmp_path, "app", "app = undefined\n")
    reloader.on_change(changed)
    write(tmp_path, "app", "def app():\n    return 2\n")
    reloader.on_change(changed)
    assert restarts.count == 2, "no restart while the code does not import"
    err = capsys.readouterr()
    output = err.out + err.err
    assert output.count("reload skipped: the changed code does not import") == 2, output
    assert output.count("reload skipped: the same import error as above") == 1, output
