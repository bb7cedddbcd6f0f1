"""The Docker image's pinned requirements still match pyproject.toml, checked offline.

``deploy/docker/requirements.txt`` is written by ``scripts/lock_image.py``
from pip's resolution of ``corral[otlp]``; each pin records who requires it
and with which specifier, and the header records the marker environment it
was resolved for (the image's Python). Against that, and pyproject.toml:

* every runtime requirement of corral (``dependencies`` and the extras the
  image installs) that applies in the image is pinned, exactly once, at a
  version its specifier allows, and is recorded with that same specifier;
* nothing extra: every other pin is required by a pinned package and
  reachable from corral, and every recorded specifier admits its pin;
* the Dockerfile installs this file with ``--no-deps``, then corral, then
  runs ``pip check``, with the extras the lock was made for.

Changing a dependency in pyproject.toml without ``make lock`` fails here.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

LOCK = ROOT / "deploy" / "docker" / "requirements.txt"
DOCKERFILE = ROOT / "Dockerfile"
PROJECT = "corral"
IMAGE_EXTRAS = ("otlp",)
_PIN = re.compile(r"^(?P<name>[a-z0-9-]+)==(?P<version>\S+)$")
_VIA = re.compile(r"^ {4}# via (?P<parent>[a-z0-9-]+) \((?P<spec>[^)]*)\)$")


@dataclass
class Pin:
    version: Version
    via: dict[str, SpecifierSet] = field(default_factory=dict)


@dataclass
class Lock:
    extras: tuple[str, ...]
    environment: dict[str, str]
    pins: dict[str, Pin]


def read_lock() -> Lock:
    environment: dict[str, str] = {}
    extras: tuple[str, ...] = ()
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in LOCK.read_text().splitlines():
        if line.startswith("# extras: "):
            extras = tuple(line.removeprefix("# extras: ").split(","))
        elif line.startswith("# environment: "):
            environment = json.loads(line.removeprefix("# environment: "))
        elif (pin := _PIN.match(line)) is not None:
            name = pin.group("name")
            assert name not in pins, f"{name} is pinned twice"
            assert name == canonicalize_name(name)
            current = pins[name] = Pin(Version(pin.group("version")))
        elif (via := _VIA.match(line)) is not None:
            assert current is not None, line
            spec = via.group("spec")
            current.via[via.group("parent")] = SpecifierSet("" if spec == "any" else spec)
        else:
            assert line.startswith("#"), f"unexpected line in {LOCK.name}: {line!r}"
    assert environment, "the lock records the marker environment it was resolved for"
    return Lock(extras, environment, pins)


def runtime_requirements(lock: Lock) -> list[Requirement]:
    """corral's requirements that apply in the image: dependencies and the image's extras."""
    assert lock.extras == IMAGE_EXTRAS, "the image exports OTLP over http/protobuf"
    environment = lock.environment
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in lock.extras:
        texts.extend(project["optional-dependencies"][extra])
    found = [Requirement(text) for text in texts]
    return [r for r in found if r.marker is None or r.marker.evaluate(environment)]


def test_every_runtime_dependency_is_pinned_within_its_specifier() -> None:
    lock = read_lock()
    required = runtime_requirements(lock)
    assert len(required) >= 10
    for requirement in required:
        name = canonicalize_name(requirement.name)
        assert name in lock.pins, f"{name} is not pinned: run make lock"
        pin = lock.pins[name]
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{name}=={pin.version} is outside {requirement.specifier}: run make lock"
        )
        assert pin.via.get(PROJECT) == requirement.specifier, (
            f"{name} was locked for {pin.via.get(PROJECT)}, pyproject says "
            f"{requirement.specifier}: run make lock"
        )
    direct = {name for name, pin in lock.pins.items() if PROJECT in pin.via}
    assert direct == {canonicalize_name(r.name) for r in required}, "run make lock"


def test_nothing_extra_is_pinned() -> None:
    """Every pin is required by a pinned package, within its specifier, and reachable."""
    lock = read_lock()
    assert PROJECT not in lock.pins
    for name, pin in lock.pins.items():
        assert pin.via, f"nothing requires {name}"
        for parent, spec in pin.via.items():
            assert parent == PROJECT or parent in lock.pins, f"{name} via unpinned {parent}"
            assert spec.contains(pin.version, prereleases=True), f"{name}: {parent} wants {spec}"
    reached = {PROJECT}
    grew = True
    while grew:
        more = {name for name, pin in lock.pins.items() if reached & set(pin.via)}
        grew = not more <= reached
        reached |= more
    assert reached - {PROJECT} == set(lock.pins)


def test_the_lock_is_for_the_images_python() -> None:
    lock = read_lock()
    match = re.search(r"^FROM python:(\d+\.\d+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert match is not None
    assert lock.environment["python_version"] == match.group(1)
    assert lock.environment["sys_platform"] == "linux"
    assert lock.environment["platform_python_implementation"] == "CPython"


def test_the_dockerfile_installs_the_lock_and_nothing_else() -> None:
    text = DOCKERFILE.read_text()
    runs = [line for line in text.splitlines() if line.startswith("RUN pip install")]
    assert runs, "the Dockerfile installs with pip"
    for run in runs:
        assert "--no-deps" in run, f"unpinned dependencies can get in: {run}"
    assert "-r /tmp/requirements.txt" in runs[0]
    assert "COPY deploy/docker/requirements.txt /tmp/requirements.txt" in text
    assert "pip check" in runs[-1]
    assert "!deploy/docker/requirements.txt" in (ROOT / ".dockerignore").read_text()
