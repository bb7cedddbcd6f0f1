"""``user_traceback``: an import failure shows the app's frames, never corral's or importlib's."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.appload import load_app
from corral.errors import AppImportError
from corral.user_traceback import display_path, user_traceback

_names = itertools.count()


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A uniquely named, empty package in ``tmp_path``; unloaded afterwards."""
    name = f"corral_tb_pkg_{os.getpid()}_{next(_names)}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    yield name
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def failure(app_path: str) -> AppImportError:
    with pytest.raises(AppImportError) as info:
        load_app(app_path)
    return info.value


def frame_files(text: str) -> list[str]:
    return [line.split('"')[1] for line in text.splitlines() if line.startswith("  File ")]


def test_only_the_apps_frames_are_shown(package: str, tmp_path: Path) -> None:
    root = tmp_path / package
    (root / "app.py").write_text("from . import models\n", encoding="utf-8")
    (root / "models.py").write_text("x = 1\nraise LookupError('no table')\n", encoding="utf-8")
    error = failure(f"{package}.app:app")
    assert frame_files(error.traceback) == [str(root / "app.py"), str(root / "models.py")]
    assert error.traceback.startswith("Traceback (most recent call last):\n")
    assert error.traceback.endswith("LookupError: no table\n")
    assert f" at {root / 'models.py'}:2: LookupError: no table" in str(error)


def test_every_exception_in_a_chain_loses_the_machinery(package: str, tmp_path: Path) -> None:
    root = tmp_path / package
    (root / "app.py").write_text(
        "try:\n    from . import missing_part\nexcept ImportError as exc:\n"
        "    raise RuntimeError('configure the part') from exc\n",
        encoding="utf-8",
    )
    error = failure(f"{package}.app:app")
    assert "direct cause" in error.traceback
    assert frame_files(error.traceback) == [str(root / "app.py"), str(root / "app.py")]
    assert f" at {root / 'app.py'}:4: RuntimeError: configure the part" in str(error)


def test_an_exception_group_keeps_its_members(package: str, tmp_path: Path) -> None:
    root = tmp_path / package
    (root / "app.py").write_text(
        "def check(n):\n    raise ValueError(n)\n"
        "errors = []\nfor n in (1, 2):\n    try:\n        check(n)\n"
        "    except ValueError as exc:\n        errors.append(exc)\n"
        "raise ExceptionGroup('settings', errors)\n",
        encoding="utf-8",
    )
    error = failure(f"{package}.app:app")
    assert error.traceback.count(f'File "{root / "app.py"}", line 2, in check') == 2
    assert "importlib" not in error.traceback
    assert "/corral/" not in error.traceback


def test_nothing_to_show_without_user_frames() -> None:
    error = failure("corral_tb_no_such_module_xyz:app")
    assert error.traceback == ""


def test_location_is_the_raising_frame_of_a_plain_exception() -> None:
    try:
        raise KeyError("x")
    except KeyError as exc:
        shown = user_traceback(exc)
    assert shown.location == f"{display_path(__file__)}:{_raise_line()}"


def _raise_line() -> int:
    source = Path(__file__).read_text(encoding="utf-8").splitlines()
    return source.index('        raise KeyError("x")') + 1


def test_display_path_is_relative_inside_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert display_path(str(tmp_path / "pkg" / "app.py")) == os.path.join("pkg", "app.py")
    outside = str(tmp_path.parent / "elsewhere.py")
    assert display_path(outside) == outside
