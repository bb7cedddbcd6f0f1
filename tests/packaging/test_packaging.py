"""What a user installing corral sees: valid metadata, the license, and a uvicorn bound
that is both tested and current (the last needs PyPI)."""

from __future__ import annotations

import email.parser
import subprocess
import sys
import tomllib
import zipfile
from email.message import Message
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from trove_classifiers import classifiers as known_classifiers

from tests.conftest import ROOT

CHECK = ROOT / "scripts" / "check_uvicorn_bound.py"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def uvicorn_requirement() -> Requirement:
    found = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    return next(r for r in found if r.name == "uvicorn")


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(CHECK), *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)


def test_the_uvicorn_bound_admits_the_newest_release() -> None:
    """Fails as soon as PyPI has a uvicorn newer than the bound: test it, raise the bound."""
    result = run_check()
    assert result.returncode != 2, f"PyPI could not be asked: {result.stderr}"
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: uvicorn "), result.stdout


def test_the_check_fails_when_a_newer_uvicorn_exists(tmp_path: Path) -> None:
    stale = tmp_path / "pyproject.toml"
    stale.write_text('[project]\ndependencies = ["uvicorn>=0.1,<0.2"]\n', encoding="utf-8")
    result = run_check("--pyproject", str(stale))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "but pyproject.toml says uvicorn<0.2,>=0.1" in result.stderr
    assert "raise the bound to <0." in result.stderr


def test_the_installed_uvicorn_is_inside_the_bound() -> None:
    """The version the suite runs against is one the bound admits."""
    requirement = uvicorn_requirement()
    assert requirement.specifier.contains(version("uvicorn")), (requirement, version("uvicorn"))
    assert any(spec.operator == "<" for spec in requirement.specifier), "an upper bound"


@pytest.fixture(scope="module")
def metadata(tmp_path_factory: pytest.TempPathFactory) -> Message:
    """METADATA of a wheel built from this tree, as pip would build it."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--quiet", "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(out.glob("corral-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())
        return email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))


def test_license_is_an_spdx_expression_with_its_file(metadata: Message) -> None:
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["License"] is None, "no deprecated free-text license"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License\n")


def test_classifiers_exist_and_name_free_threading(metadata: Message) -> None:
    classifiers = metadata.get_all("Classifier") or []
    assert set(classifiers) <= known_classifiers, set(classifiers) - known_classifiers
    assert "Programming Language :: Python :: Free Threading :: 3 - Stable" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")], "SPDX replaces them"


def test_project_urls(metadata: Message) -> None:
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Documentation", "Issues", "Changelog"}
    assert all(url.startswith("https://") for url in urls.values())


def test_requirements_and_extras(metadata: Message) -> None:
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    names = {r.name for r in requires if r.marker is None or r.marker.evaluate()}
    assert {"uvicorn", "h11", "click", "structlog"} <= names
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert extras == {"otlp", "otlp-grpc", "fast-json", "reload"}, (
        "development groups are not extras"
    )


def test_the_container_build_context_carries_the_license() -> None:
    """The Dockerfile builds corral from a copy of the tree: the license must be in it."""
    assert "!LICENSE" in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    copies = [
        line.split()[1:-1]
        for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if line.startswith("COPY ") and line.rstrip().endswith("/tmp/corral/")
    ]
    assert any("LICENSE" in sources for sources in copies), copies
