"""Pin the Docker image's Python packages: write deploy/docker/requirements.txt from pyproject.toml.

The image installs exactly this file (``pip install --no-deps -r``), then
corral itself without dependencies, then runs ``pip check``: a rebuild months
later gets the same packages, and a dependency release cannot break it
unseen. Nothing is resolved by hand: pip resolves ``corral[otlp]`` (the
extras the Dockerfile installs) with ``pip install --dry-run --report``, run
by the same minor Python as the Dockerfile's base image, so the environment
markers are evaluated as they will be in the image. pip's JSON report gives
each package's version and metadata; from the metadata this records, for
every pin, which package requires it and with which specifier ("# via"),
which is what tests/packaging checks against pyproject.toml.

    python scripts/lock_image.py                  # finds python3.X as the Dockerfile's FROM says
    python scripts/lock_image.py --python /path/to/python3.12

Run it (``make lock``) after changing ``dependencies`` or the ``otlp`` extra
in pyproject.toml, or to take newer releases; then rebuild the image.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "deploy" / "docker" / "requirements.txt"
PROJECT = "corral"
# The extras whose dependencies the image gets (recorded in the lock's header).
EXTRAS = ("otlp",)
_FROM = re.compile(r"^FROM python:(\d+\.\d+)", re.MULTILINE)


class LockError(Exception):
    """The lock cannot be made; the message names the fix."""


@dataclass
class Pin:
    name: str
    version: str
    via: dict[str, str] = field(default_factory=dict)  # parent -> specifier ("" for any)


def image_python_version() -> str:
    match = _FROM.search(DOCKERFILE.read_text())
    if match is None:
        raise LockError("the Dockerfile has no `FROM python:X.Y...` line to take the version from")
    return match.group(1)


def find_python(version: str) -> str:
    """pythonX.Y on PATH, else pyenv's newest X.Y."""
    found = shutil.which(f"python{version}")
    candidates = sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
    for path in [found, *map(str, reversed(candidates))]:
        probe = [path, "-c", ""] if path else None
        if probe and subprocess.run(probe, check=False, capture_output=True).returncode == 0:
            return path
    raise LockError(
        f"no python{version} found (the Dockerfile's base image runs {version}); "
        f"install it or pass --python /path/to/python{version}"
    )


def resolve(python: str) -> dict[str, Any]:
    """pip's installation report for corral[extras], resolved from scratch."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        argv = [
            python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--report", str(report), f"{ROOT}[{','.join(EXTRAS)}]",
        ]  # fmt: skip
        done = subprocess.run(argv, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise LockError(f"pip could not resolve {PROJECT}:\n{done.stderr.strip()}")
        result: dict[str, Any] = json.loads(report.read_text())
        return result


def _applies(requirement: Requirement, environment: dict[str, str], extras: list[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(
        requirement.marker.evaluate({**environment, "extra": extra}) for extra in ["", *extras]
    )


def pins(report: dict[str, Any]) -> list[Pin]:
    """Every package pip would install but corral, with who requires it and how."""
    environment: dict[str, str] = report["environment"]
    found = {
        canonicalize_name(item["metadata"]["name"]): Pin(
            canonicalize_name(item["metadata"]["name"]), item["metadata"]["version"]
        )
        for item in report["install"]
    }
    for item in report["install"]:
        parent = canonicalize_name(item["metadata"]["name"])
        extras = list(item.get("requested_extras") or [])
        for text in item["metadata"].get("requires_dist") or []:
            requirement = Requirement(text)
            child = canonicalize_name(requirement.name)
            if child in found and _applies(requirement, environment, extras):
                found[child].via[parent] = str(requirement.specifier)
    found.pop(PROJECT, None)
    return sorted(found.values(), key=lambda pin: pin.name)


# Marker variables that name the build machine's kernel, not the image's platform.
_MACHINE_ONLY = ("platform_release", "platform_version")


def render(report: dict[str, Any]) -> str:
    environment = {k: v for k, v in report["environment"].items() if k not in _MACHINE_ONLY}
    locked = pins(report)
    lines = [
        "# GENERATED by scripts/lock_image.py from pyproject.toml; do not edit: run `make lock`.",
        f"# {PROJECT}[{','.join(EXTRAS)}]'s runtime dependencies as pip {report['pip_version']}"
        f" resolved them on",
        f"# {environment['implementation_name']} {environment['python_full_version']}"
        f" ({environment['platform_system']} {environment['platform_machine']}), for the"
        " Dockerfile's base image.",
        "# The image installs exactly these (pip install --no-deps -r), then corral, then"
        " pip check.",
        f"# extras: {','.join(EXTRAS)}",
        f"# environment: {json.dumps(environment, sort_keys=True)}",
    ]
    for pin in locked:
        lines.append(f"{pin.name}=={pin.version}")
        for parent, specifier in sorted(pin.via.items()):
            lines.append(f"    # via {parent} ({specifier or 'any'})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="the interpreter to resolve with (default: as the image)")
    args = parser.parse_args(argv)
    try:
        python = args.python or find_python(image_python_version())
        text = render(resolve(python))
    except LockError as exc:
        print(f"lock_image: {exc}", file=sys.stderr)
        return 2
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    LOCK.write_text(text)
    pinned = sum(1 for line in text.splitlines() if line and not line.startswith(("#", " ")))
    print(f"wrote {LOCK.relative_to(ROOT)} ({pinned} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
