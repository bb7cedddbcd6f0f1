"""Is corral's upper bound on uvicorn still the newest uvicorn release?

corral subclasses uvicorn's server and HTTP protocol classes, which are not
a public API, so pyproject.toml pins uvicorn below the first release nobody
has tested. This asks PyPI for uvicorn's newest release and exits 1 when the
bound does not admit it: time to run the suite against it and raise the
bound. Exit 0 when the bound admits it; exit 2 when PyPI cannot be asked.

    python scripts/check_uvicorn_bound.py [--pyproject PATH] [--index URL]
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
PYPI = "https://pypi.org/pypi"


def declared(pyproject: Path, package: str) -> Requirement:
    """The requirement on ``package`` in ``[project] dependencies``."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    for line in data["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.name == package:
            return requirement
    raise SystemExit(f"{pyproject} does not depend on {package}")


def newest_release(package: str, index: str, timeout: float = 30.0) -> Version:
    """The highest final (not pre-release, not fully yanked) version on the index."""
    with urllib.request.urlopen(f"{index}/{package}/json", timeout=timeout) as response:
        releases: dict[str, list[dict[str, object]]] = json.load(response)["releases"]
    versions: list[Version] = []
    for text, files in releases.items():
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if files and not version.is_prerelease and not all(f.get("yanked") for f in files):
            versions.append(version)
    return max(versions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--index", default=PYPI, help="a PyPI-style JSON API")
    args = parser.parse_args(argv)
    requirement = declared(args.pyproject, "uvicorn")
    try:
        newest = newest_release("uvicorn", args.index)
    except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
        print(f"cannot ask {args.index} about uvicorn: {exc}", file=sys.stderr)
        return 2
    if requirement.specifier.contains(newest):
        print(f"ok: uvicorn {newest} is the newest release, and {requirement} admits it")
        return 0
    print(
        f"uvicorn {newest} is out, but pyproject.toml says {requirement}: run the test suite"
        f" with uvicorn=={newest}, then raise the bound to <{_next_minor(newest)}",
        file=sys.stderr,
    )
    return 1


def _next_minor(version: Version) -> str:
    major, minor = (*version.release, 0)[:2]
    return f"{major}.{minor + 1}"


if __name__ == "__main__":
    sys.exit(main())
