"""``scripts/free-threaded-python.sh``: which interpreter it offers, and its refusals.

Offline and quick: the build itself (minutes, from Debian's archive) is what
``make venv-ft`` exercises before the free-threaded lane; here only what the
script decides before it would build is checked, with a stand-in
``python3.14t`` on PATH.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "free-threaded-python.sh"
BASH = shutil.which("bash") or "/bin/bash"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),  # no cached build under the real home
        **env,
    }
    return subprocess.run(
        [BASH, str(SCRIPT)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _stand_in(tmp_path: Path, name: str, gil_disabled: bool) -> Path:
    """A ``name`` on PATH that answers the script's sysconfig question like a real build."""
    path = tmp_path / "bin" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexit {0 if gil_disabled else 1}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_an_unknown_version_is_refused_with_the_versions_it_knows(tmp_path: Path) -> None:
    done = _run(tmp_path, CORRAL_FT_VERSION="3.12")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "CORRAL_FT_VERSION=3.12; use 3.13 or 3.14" in done.stderr


def test_a_free_threaded_314_on_path_is_taken_as_it_is(tmp_path: Path) -> None:
    found = _stand_in(tmp_path, "python3.14t", gil_disabled=True)
    done = _run(tmp_path, CORRAL_FT_VERSION="3.14")
    assert (done.returncode, done.stdout) == (0, f"{found}\n"), done.stderr


def test_asking_for_313_never_offers_a_314(tmp_path: Path) -> None:
    _stand_in(tmp_path, "python3.14t", gil_disabled=True)
    found = _stand_in(tmp_path, "python3.13t", gil_disabled=True)
    done = _run(tmp_path, CORRAL_FT_VERSION="3.13")
    assert (done.returncode, done.stdout) == (0, f"{found}\n"), done.stderr
    unasked = _run(tmp_path)  # no version asked: either, the newer first
    assert unasked.stdout == f"{tmp_path / 'bin' / 'python3.14t'}\n"


def test_a_build_with_the_gil_on_path_is_not_taken(tmp_path: Path) -> None:
    _stand_in(tmp_path, "python3.14t", gil_disabled=False)
    # Not free-threaded, and no cache: it would build, so its PATH has no apt-get.
    done = _run(tmp_path, CORRAL_FT_VERSION="3.14", PATH=str(tmp_path / "bin"))
    assert done.returncode != 0
    assert done.stdout == ""
    assert "install a free-threaded python3.14t and put it on PATH" in done.stderr
    assert not os.path.exists(tmp_path / "home" / ".cache" / "corral" / "python3.14t")
