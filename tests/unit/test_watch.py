"""What ``--reload`` watches, and the stat poller that works without watchfiles."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from corral.errors import ExitCode, ReloadDirError
from corral.watch import WatchSpec, poll_changes, snapshot


def touch(path: Path, text: str = "x = 1\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    before = path.stat().st_mtime_ns if path.exists() else None
    path.write_text(text, encoding="utf-8")
    if before is not None and path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before, before + 1_000_000))
    return path


def test_defaults_are_uvicorns(tmp_path: Path) -> None:
    spec = WatchSpec.build((), (), (), tmp_path)
    assert spec.dirs == (tmp_path,)
    assert spec.includes == ("*.py",)
    assert spec.excludes == (".*", "*.py[cod]", "*~")
    assert spec.wants(tmp_path / "app.py")
    assert spec.wants(tmp_path / "pkg" / "models.py")
    assert not spec.wants(tmp_path / "README.md")
    assert not spec.wants(tmp_path / ".app.py")
    assert not spec.wants(tmp_path / "app.pyc")
    assert not spec.wants(tmp_path / ".venv" / "lib" / "site.py")
    assert not spec.wants(tmp_path / "pkg" / "__pycache__" / "models.py")
    assert not spec.wants(tmp_path.parent / "elsewhere.py")


def test_includes_and_excludes_cancel_defaults(tmp_path: Path) -> None:
    (tmp_path / "generated").mkdir()
    spec = WatchSpec.build((), ("*.html", ".*"), ("*.py", "generated", "*_test.html"), tmp_path)
    assert spec.includes == ("*.html", ".*")
    assert spec.excludes == ("*.py[cod]", "*~", "*.py", "*_test.html")
    assert spec.exclude_dirs == (tmp_path / "generated",)
    assert spec.wants(tmp_path / "page.html")
    assert spec.wants(tmp_path / ".env")
    assert not spec.wants(tmp_path / "app.py")
    assert not spec.wants(tmp_path / "page_test.html")
    assert not spec.wants(tmp_path / "generated" / "out.html")


def test_nested_directories_are_watched_once(tmp_path: Path) -> None:
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    spec = WatchSpec.build(("src/pkg", "src", "src"), (), (), tmp_path)
    assert spec.dirs == (tmp_path / "src",)


@pytest.mark.parametrize(("name", "what"), [("missing", "does not exist"), ("f.py", "is not")])
def test_a_reload_dir_must_be_a_directory(tmp_path: Path, name: str, what: str) -> None:
    (tmp_path / "f.py").write_text("", encoding="utf-8")
    with pytest.raises(ReloadDirError) as info:
        WatchSpec.build((name,), (), (), tmp_path)
    assert str(info.value).startswith(f"--reload-dir {name} {what}")
    assert info.value.exit_code is ExitCode.RELOAD_DIR


def test_snapshot_skips_pruned_directories(tmp_path: Path) -> None:
    touch(tmp_path / "app.py")
    touch(tmp_path / ".venv" / "lib" / "x.py")
    touch(tmp_path / "node_modules" / "y.py")
    touch(tmp_path / "pkg" / "z.py")
    spec = WatchSpec.build((), (), (), tmp_path)
    assert set(snapshot(spec)) == {tmp_path / "app.py", tmp_path / "pkg" / "z.py"}


def test_the_poller_reports_a_burst_of_changes_once(tmp_path: Path) -> None:
    touch(tmp_path / "app.py")
    touch(tmp_path / "old.py")
    spec = WatchSpec.build((), (), (), tmp_path)
    stop = threading.Event()
    changes = poll_changes(spec, stop, interval=0.05)
    found: list[frozenset[Path]] = []
    reader = threading.Thread(target=lambda: found.append(next(changes)), daemon=True)
    reader.start()
    touch(tmp_path / "app.py", "x = 2\n")
    touch(tmp_path / "new.py")
    (tmp_path / "old.py").unlink()
    touch(tmp_path / "notes.txt")
    reader.join(timeout=30)
    stop.set()
    assert found, "the poller saw nothing within 30 s"
    # Saved within one scan or across two: either way, all of them, settled, once.
    assert found[0] <= {tmp_path / "app.py", tmp_path / "new.py", tmp_path / "old.py"}
    assert tmp_path / "app.py" in found[0]


def test_the_poller_stops_when_asked(tmp_path: Path) -> None:
    spec = WatchSpec.build((), (), (), tmp_path)
    stop = threading.Event()
    stop.set()
    assert list(poll_changes(spec, stop, interval=0.05)) == []
