"""The command-line tools the asset tests drive: found on PATH, else a skip (a failure on CI).

``make test`` installs them all (``scripts/system-packages.sh``); a developer
running pytest by hand without them gets a skip that says which package to
install, while CI, where they must be present, fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

TOOL_TIMEOUT = 120.0


def require(package: str, *names: str) -> str:
    """The first of ``names`` on PATH; otherwise skip (or fail under CI) naming the package."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    message = (
        f"{names[0]} is missing: install the Debian package {package} "
        "(make test does, through scripts/system-packages.sh)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run(*argv: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, check=False, capture_output=True, text=True, timeout=TOOL_TIMEOUT, cwd=cwd
    )
