"""Private directories that their owner's death, however sudden, lets others clean up.

The request-stats pool keeps its blocks in a directory under ``/dev/shm``. A
supervisor that stops normally removes it; one that is SIGKILLed or OOM-killed
cannot, and ``/dev/shm`` is memory: left alone, such directories pile up with
every hard kill. So each directory holds an ``owner.lock`` that its owner keeps
``flock``ed for its whole life, and a new owner sweeps the directories whose
lock it can take. The kernel drops a ``flock`` when its holder dies, in any
pid namespace, so "lock taken" means "owner gone" without trusting pids, which
containers sharing a ``/dev/shm`` would make ambiguous.

The owner locks the file *before* it becomes ``owner.lock`` (a rename), so a
sweeper can never see the name while it is unlocked and the owner alive.
Directories without an ``owner.lock`` are left alone: they are someone else's,
or still being created.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

LOCK_NAME = "owner.lock"


class OwnedDirectory:
    """A fresh ``0700`` directory, held by this process until ``close()`` (or death)."""

    def __init__(self, prefix: str, parent: str | None = None) -> None:
        sweep_abandoned(prefix, parent)
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        staging = self.path / f".{LOCK_NAME}.new"
        self._lock_fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        os.rename(staging, self.path / LOCK_NAME)

    def close(self) -> None:
        """Remove the directory and let go of it; idempotent."""
        if self._lock_fd < 0:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock_fd)
        self._lock_fd = -1


def sweep_abandoned(prefix: str, parent: str | None = None) -> int:
    """Remove ``prefix*`` directories in ``parent`` whose owner is dead; return how many."""
    root = Path(parent if parent is not None else tempfile.gettempdir())
    removed = 0
    for candidate in root.glob(f"{prefix}*"):
        if _remove_if_abandoned(candidate):
            removed += 1
    return removed


def _remove_if_abandoned(directory: Path) -> bool:
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return False  # not ours to judge: no lock file, not a directory, not readable
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its owner is alive
        shutil.rmtree(directory, ignore_errors=True)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
