"""``--reload``: when source files change, check that the app still imports, then roll.

uvicorn's reloader restarts the server whatever the new code does, so a typo
takes the app down until it is fixed. corral first imports the app in a fresh
interpreter (the same interpreter, environment, working directory and app
directory as the workers). Only when that succeeds does it ask the
supervisor for its rolling restart (``Supervisor.restart_workers()``, the
SIGHUP path: thread mode re-imports the app, process mode starts fresh
processes, and each roll is a ``reload`` lifecycle event). When it fails, the
workers keep serving the old code and the error is shown once, with the
app's own frames and its file and line; saving the fix reloads.

The check runs in a subprocess in both modes: the supervisor's own import
(thread mode) would leave half-imported modules behind, and a process
worker's import fails only after the old worker has been asked to make room.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from corral.appload import load_app
from corral.errors import AppImportError, ExitCode
from corral.user_traceback import display_path
from corral.watch import ChangeSource, WatchSpec, backend_name, watch_changes

log = structlog.get_logger("corral.reload")

IMPORT_CHECK_TIMEOUT = 60.0  # seconds a fresh interpreter may take to import the app
_SHOWN_FILES = 5  # changed files named in the log line; the rest are counted

_CHECK = "import sys; from corral.reloader import check_main; sys.exit(check_main(sys.argv[1:]))"


class Restartable(Protocol):
    """What the reloader needs of the supervisor: its public rolling restart."""

    def restart_workers(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ImportFailure:
    """Why the changed code does not import: the one-line summary and the user's frames."""

    summary: str
    traceback: str


def check_import(app_path: str, app_dir: str, *, factory: bool = False) -> ImportFailure | None:
    """Import the app in a fresh interpreter; ``None`` when it imports."""
    with tempfile.TemporaryDirectory(prefix="corral-reload-") as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, "-c", _CHECK, app_path, app_dir, str(result), str(factory)]
        try:
            done = subprocess.run(  # the app's own output at import is not ours to show twice
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=IMPORT_CHECK_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return ImportFailure(
                f"importing the app took longer than {IMPORT_CHECK_TIMEOUT:.0f} s", ""
            )
        if done.returncode == 0:
            return None
        if result.is_file():
            found = json.loads(result.read_text(encoding="utf-8"))
            return ImportFailure(str(found["summary"]), str(found["traceback"]))
        output = (done.stdout + done.stderr).decode("utf-8", "replace")
        return ImportFailure(
            f"checking the import failed with exit code {done.returncode}", output[-4000:]
        )


def check_main(argv: list[str]) -> int:
    """The fresh interpreter's side of ``check_import``."""
    app_path, app_dir, result, factory = argv
    sys.path.insert(0, str(Path(app_dir).resolve()))
    try:  # with --factory, calling the factory is part of "does the new code work"
        load_app(app_path, factory=factory == "True")
    except AppImportError as exc:
        failure = {"summary": str(exc), "traceback": exc.traceback}
        Path(result).write_text(json.dumps(failure), encoding="utf-8")
        return int(ExitCode.APP_IMPORT)
    return 0


class Reloader:
    """A daemon thread: watch, check the import, roll (or show why not, once)."""

    def __init__(
        self,
        supervisor: Restartable,
        spec: WatchSpec,
        app_path: str,
        app_dir: str,
        *,
        factory: bool = False,
        changes: ChangeSource = watch_changes,
    ) -> None:
        self._supervisor = supervisor
        self._spec = spec
        self._app_path = app_path
        self._app_dir = app_dir
        self._factory = factory
        self._changes = changes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="corral-reload", daemon=True)
        self._failure: ImportFailure | None = None

    def start(self) -> None:
        log.info(
            "reload watching",
            watcher=backend_name(),
            dirs=[str(d) for d in self._spec.dirs],
            include=list(self._spec.includes),
            exclude=[*self._spec.excludes, *(str(d) for d in self._spec.exclude_dirs)],
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; an import check in progress is left to finish on its own."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        try:
            for changed in self._changes(self._spec, self._stop):
                if self._stop.is_set():
                    return
                self.on_change(changed)
        except Exception:  # a broken watcher must not take the server down with it
            log.exception("reload watcher failed; --reload is off until corral restarts")

    def on_change(self, changed: Iterable[Path]) -> None:
        """One burst of changes: roll if the app imports, else say why (a new error once)."""
        log.info("reload: files changed", files=_describe(changed))
        failure = check_import(self._app_path, self._app_dir, factory=self._factory)
        if failure is None:
            self._failure = None
            self._supervisor.restart_workers()
            return
        # The same place and message: saving again (a comment, say) does not repeat the block.
        if self._failure is not None and failure.summary == self._failure.summary:
            log.info("reload skipped: the same import error as above", error=failure.summary)
            return
        self._failure = failure
        # structlog renders "exception" as a block below the line (console) or a field (JSON).
        shown = {"exception": failure.traceback} if failure.traceback else {}
        log.error(
            "reload skipped: the changed code does not import; the workers keep the old code",
            error=failure.summary,
            **shown,
        )


def _describe(changed: Iterable[Path]) -> list[str]:
    names = sorted(display_path(str(path)) for path in changed)
    if len(names) > _SHOWN_FILES:
        return [*names[:_SHOWN_FILES], f"... and {len(names) - _SHOWN_FILES} more"]
    return names
