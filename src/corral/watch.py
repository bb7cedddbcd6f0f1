"""Which files ``--reload`` watches, and two ways to notice that they changed.

The watcher is watchfiles (OS file notifications; the ``reload`` extra, as
uvicorn uses it) when it is installed. Without it, and always on a
free-threaded build, a stat poller of our own takes over: it walks the
watched directories every half second and compares modification times, sizes
and inode numbers. The fallback exists because watchfiles is a Rust
extension: where it has no wheel pip would need a Rust toolchain and
crates.io to build it, and on a free-threaded build importing it could turn
the GIL back on after corral chose thread workers. A development server
should still reload there.

The selection follows uvicorn's: ``*.py`` under the working directory unless
``--reload-dir``/``--reload-include``/``--reload-exclude`` say otherwise. A
directory named in ``--reload-exclude`` is skipped with everything below it;
hidden directories, ``__pycache__``, ``node_modules`` and ``site-packages``
are never watched (a virtualenv in the project would otherwise cost a scan of
thousands of files).
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from corral.errors import ReloadDirError
from corral.runtime import is_free_threaded_build

DEFAULT_INCLUDES = ("*.py",)
# Hidden files (editor temporaries, .git's), bytecode, and backup files.
DEFAULT_EXCLUDES = (".*", "*.py[cod]", "*~")
_NEVER_WATCHED = frozenset({"__pycache__", "node_modules", "site-packages"})

POLL_INTERVAL = 0.5  # seconds between two scans of the stat poller
_SETTLE_SCANS = 10  # at most this many extra scans while files keep changing

Snapshot = dict[Path, tuple[int, int, int]]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class WatchSpec:
    """The directories to watch and the globs that pick files in them."""

    dirs: tuple[Path, ...]
    includes: tuple[str, ...]
    excludes: tuple[str, ...]
    exclude_dirs: tuple[Path, ...]

    @classmethod
    def build(
        cls,
        dirs: Iterable[str],
        includes: Iterable[str],
        excludes: Iterable[str],
        cwd: Path,
    ) -> WatchSpec:
        """Resolve the settings against ``cwd``; a missing directory is a ``ReloadDirError``."""
        resolved: list[Path] = []
        for raw in dirs or (".",):  # uvicorn watches the working directory by default
            path = (cwd / raw).resolve()
            if not path.is_dir():
                what = "is not a directory" if path.exists() else "does not exist"
                raise ReloadDirError(f"--reload-dir {raw} {what}; name a directory to watch")
            resolved.append(path)
        includes, excludes = tuple(includes), tuple(excludes)
        exclude_dirs = tuple((cwd / e).resolve() for e in excludes if (cwd / e).is_dir())
        return cls(
            dirs=_outermost(resolved),
            includes=_unique([*(d for d in DEFAULT_INCLUDES if d not in excludes), *includes]),
            excludes=_unique(
                [
                    *(d for d in DEFAULT_EXCLUDES if d not in includes),
                    *(e for e in excludes if (cwd / e).resolve() not in exclude_dirs),
                ]
            ),
            exclude_dirs=exclude_dirs,
        )

    def wants(self, path: Path) -> bool:
        """Whether a change to ``path`` (absolute) should trigger a reload."""
        if not self.picks(path):
            return False
        root = next((d for d in self.dirs if path.is_relative_to(d)), None)
        if root is None:
            return False
        between = [p for p in path.parents if p != root and p.is_relative_to(root)]
        return not any(self.skips(directory) for directory in between)

    def picks(self, path: Path) -> bool:
        """Whether the globs select ``path``, wherever it is."""
        if not any(path.match(pattern) for pattern in self.includes):
            return False
        return not any(path.match(pattern) for pattern in self.excludes)

    def skips(self, directory: Path) -> bool:
        """Whether nothing below ``directory`` is watched."""
        name = directory.name
        return name.startswith(".") or name in _NEVER_WATCHED or directory in self.exclude_dirs


def _outermost(dirs: list[Path]) -> tuple[Path, ...]:
    """Drop directories inside another watched one: each file is watched once."""
    kept = [d for d in dirs if not any(d != o and d.is_relative_to(o) for o in dirs)]
    return tuple(_unique(kept))


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))


# --- Noticing changes -------------------------------------------------------------

ChangeSource = Callable[[WatchSpec, threading.Event], Iterator[frozenset[Path]]]


def backend_name() -> str:
    """``watchfiles`` when it imports, else ``polling``."""
    return "watchfiles" if _watchfiles() is not None else "polling"


def watch_changes(spec: WatchSpec, stop: threading.Event) -> Iterator[frozenset[Path]]:
    """Sets of changed files, one per burst of changes, until ``stop`` is set."""
    watchfiles = _watchfiles()
    if watchfiles is None:
        yield from poll_changes(spec, stop)
        return
    for changes in watchfiles.watch(
        *spec.dirs,
        watch_filter=lambda _change, path: spec.wants(Path(path)),
        stop_event=stop,
        raise_interrupt=False,
    ):
        yield frozenset(Path(path) for _change, path in changes)


def _watchfiles() -> Any:
    # On a free-threaded build, an extension that does not declare support turns
    # the GIL back on at import, and corral has already chosen thread workers by
    # then. The poller never risks that.
    if is_free_threaded_build():
        return None
    try:
        return importlib.import_module("watchfiles")
    except ImportError:
        return None


def poll_changes(
    spec: WatchSpec, stop: threading.Event, interval: float = POLL_INTERVAL
) -> Iterator[frozenset[Path]]:
    """The stat poller: a scan every ``interval`` seconds; a burst of saves (an editor
    writing several files, or one file twice) is reported once it has settled.

    The first scan happens now, not at the first ``next()``, so a change made
    between the call and the first ``next()`` is reported.
    """
    return _poll(spec, stop, interval, snapshot(spec))


def _poll(
    spec: WatchSpec, stop: threading.Event, interval: float, before: Snapshot
) -> Iterator[frozenset[Path]]:
    while not stop.wait(interval):
        now = snapshot(spec)
        changed = _diff(before, now)
        if not changed:
            continue
        for _ in range(_SETTLE_SCANS):
            if stop.wait(interval):
                return
            later = snapshot(spec)
            more = _diff(now, later)
            now = later
            if not more:
                break
            changed |= more
        before = now
        yield frozenset(changed)


def snapshot(spec: WatchSpec) -> Snapshot:
    """(mtime, size, inode) of every watched file; the inode catches an editor's
    save-by-rename even when mtime and size happen to match."""
    found: Snapshot = {}
    for top in spec.dirs:
        for dirpath, dirnames, filenames in os.walk(top):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if not spec.skips(here / d)]
            for name in filenames:
                path = here / name
                if not spec.picks(path):  # the walk already pruned skipped directories
                    continue
                try:
                    stat = path.stat()
                except OSError:  # deleted between the listing and the stat
                    continue
                found[path] = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    return found


def _diff(before: Snapshot, after: Snapshot) -> set[Path]:
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
