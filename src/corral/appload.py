"""Importing the ASGI app from ``module:attribute``, with errors that name the fix.

The supervisor imports the app once before starting workers: to fail fast
with a clear message, and because on a free-threaded build the worker mode
can only be decided after the import (see ``runtime``). Process workers
import it again themselves; thread workers share the supervisor's object.
"""

from __future__ import annotations

import importlib
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral.errors import AppImportError
from corral.user_traceback import user_traceback

ASGIApp = Callable[..., Any]


def split_app_path(app_path: str) -> tuple[str, str]:
    module_name, sep, attribute = app_path.partition(":")
    if not sep or not module_name or not attribute:
        raise AppImportError(
            f"app path {app_path!r} must look like 'package.module:attribute', e.g. 'myapp:app'"
        )
    return module_name, attribute


def load_app(app_path: str, *, factory: bool = False) -> ASGIApp:
    """Import ``module:attribute`` and return the callable it names, or with ``factory``
    what calling it with no arguments returns (``--factory``)."""
    module_name, attribute = split_app_path(app_path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise AppImportError(
                f"cannot import module {module_name!r}: no module named {exc.name!r}; "
                "check the app path and run corral from the project directory"
            ) from None
        raise _import_failed(module_name, exc) from None
    except (Exception, SystemExit) as exc:  # the app's own import-time error, whatever it is
        raise _import_failed(module_name, exc) from None
    target = _resolve(module, module_name, attribute)
    return _call_factory(target, app_path) if factory else target


def _call_factory(factory: ASGIApp, app_path: str) -> ASGIApp:
    """Build the app the way ``--factory`` promises; a failure is an import failure."""
    try:
        app: object = factory()
    except (Exception, SystemExit) as exc:
        raise AppImportError(
            f"the app factory {app_path} failed: {_one_line(exc)}; --factory calls it with"
            " no arguments and serves what it returns"
        ) from None
    if not callable(app):
        raise AppImportError(
            f"the app factory {app_path} returned {type(app).__name__}, not an ASGI callable;"
            " return the app, or drop --factory if APP is the app itself"
        )
    return app


def _resolve(module: object, module_name: str, attribute: str) -> ASGIApp:
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppImportError(
                f"module {module_name!r} has no attribute {attribute!r}; "
                "fix the part after the ':' in the app path"
            ) from None
    if not callable(target):
        raise AppImportError(
            f"{module_name}:{attribute} is of type {type(target).__name__}, not an ASGI "
            "callable; point the app path at the ASGI application object"
        )
    return target


def reload_app(app_path: str, *, factory: bool = False) -> ASGIApp:
    """Import the app afresh, so code changed on disk takes effect (thread-mode reload).

    The app's own modules are dropped from ``sys.modules`` first, so edited
    helpers are re-read too: its top-level package, and the pure-Python
    modules imported from the directory it lives in (a flat project's
    ``models.py`` beside ``main.py``). Installed packages, the standard
    library and corral stay. Running workers keep references to the old
    objects until they retire.
    """
    module_name, _ = split_app_path(app_path)
    importlib.invalidate_caches()
    for name in _app_modules(module_name.split(".")[0]):
        del sys.modules[name]
    return load_app(app_path, factory=factory)


def _app_modules(root: str) -> list[str]:
    """The app's package, or, for a flat project (the app is a top-level module), every
    first-party module beside it. A package app's siblings are left alone: the project
    directory of a package holds other packages (tests, tools) whose modules are not
    the app's, and dropping them would re-import them under everyone else's feet."""
    names = [n for n in sys.modules if n == root or n.startswith(root + ".")]
    home = _flat_home(sys.modules.get(root))
    if home is None:
        return names
    for name, module in list(sys.modules.items()):
        source = getattr(module, "__file__", None)
        if name in names or name == "__main__" or not source or not source.endswith(".py"):
            continue
        path = Path(source).resolve()
        if path.is_relative_to(home) and not _installed(path):
            names.append(name)
    return names


def _flat_home(module: object) -> Path | None:
    """The directory a top-level app *module* was imported from; ``None`` for a package."""
    source = getattr(module, "__file__", None)
    if not source or Path(source).name == "__init__.py":
        return None
    return Path(source).resolve().parent


_INSTALLED = (
    Path(__file__).resolve().parent,  # corral itself: never re-imported under its own feet
    *{Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)},
    *{Path(p).resolve() for p in sysconfig.get_paths().values()},
)


def _installed(path: Path) -> bool:
    if "site-packages" in path.parts or "dist-packages" in path.parts:
        return True
    return any(path.is_relative_to(prefix) for prefix in _INSTALLED)


def _import_failed(module_name: str, exc: BaseException) -> AppImportError:
    """The one-line summary names the file and line; the user's frames go alongside."""
    shown = user_traceback(exc)
    where = f" at {shown.location}" if shown.location else ""
    return AppImportError(
        f"importing {module_name!r} failed{where}: {_one_line(exc)}", traceback=shown.text
    )


def _one_line(exc: BaseException) -> str:
    # A SyntaxError's str() repeats the file and line the summary already names.
    message = exc.msg if isinstance(exc, SyntaxError) else exc
    text = f"{type(exc).__name__}: {message}".strip()
    return text.splitlines()[0] if text else type(exc).__name__
