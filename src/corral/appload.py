"""Importing the ASGI app from ``module:attribute``, with errors that name the fix.

The supervisor imports the app once before starting workers: to fail fast
with a clear message, and because on a free-threaded build the worker mode
can only be decided after the import (see ``runtime``). Process workers
import it again themselves; thread workers share the supervisor's object.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
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


def load_app(app_path: str) -> ASGIApp:
    """Import ``module:attribute`` and return the callable it names."""
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
    return _resolve(module, module_name, attribute)


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


def reload_app(app_path: str) -> ASGIApp:
    """Import the app afresh, so code changed on disk takes effect (thread-mode reload).

    The app's own top-level package is dropped from ``sys.modules`` first, so
    edited helper modules inside it are re-read too; third-party modules stay.
    Running workers keep references to the old objects until they retire.
    """
    module_name, _ = split_app_path(app_path)
    root = module_name.split(".")[0]
    importlib.invalidate_caches()
    for name in [n for n in sys.modules if n == root or n.startswith(root + ".")]:
        del sys.modules[name]
    return load_app(app_path)


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
