"""The user's part of a traceback, for errors raised by code corral imports.

When an app fails to import, the frames that matter are the app's own.
corral's frames (``appload``) and importlib's machinery sit above them and
only push them off the screen, so they are dropped, in every exception of
the chain. What is left is formatted the way Python formats a traceback, and
the innermost user frame is named as ``file:line`` for a one-line summary.
"""

from __future__ import annotations

import importlib
import os
import traceback
from dataclasses import dataclass
from pathlib import Path

_CORRAL_DIR = Path(__file__).resolve().parent
_IMPORTLIB_DIR = Path(importlib.__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class UserTraceback:
    """``text`` is the formatted traceback of the user's frames ("" when there are
    none to show); ``location`` is the innermost one as ``file:line``, if any."""

    text: str
    location: str | None


def user_traceback(exc: BaseException) -> UserTraceback:
    """The user's frames of ``exc`` (and of its causes and contexts)."""
    shown = traceback.TracebackException.from_exception(exc)
    pending = [shown]
    seen: set[int] = set()
    has_frames = False
    while pending:  # every exception in the chain, each once (chains can loop)
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        kept = [frame for frame in current.stack if not _is_machinery(frame.filename)]
        current.stack = traceback.StackSummary.from_list(kept)
        has_frames = has_frames or bool(kept)
        pending.extend(
            chained
            for chained in (current.__cause__, current.__context__, *(current.exceptions or ()))
            if chained is not None
        )
    location = _location(exc, shown)
    text = "".join(shown.format()) if has_frames or isinstance(exc, SyntaxError) else ""
    return UserTraceback(text, location)


def _location(exc: BaseException, shown: traceback.TracebackException) -> str | None:
    """Where it went wrong: the bad line of a syntax error, else the innermost user frame."""
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        return f"{display_path(exc.filename)}:{exc.lineno}"
    if shown.stack:
        frame = shown.stack[-1]
        return f"{display_path(frame.filename)}:{frame.lineno}"
    return None


def display_path(filename: str) -> str:
    """A path relative to the working directory when it is inside it, else as given."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive, on Windows
        return filename
    return filename if relative.startswith(os.pardir) else relative


def _is_machinery(filename: str) -> bool:
    """corral's own frames and importlib's: never where a user's import went wrong."""
    if filename.startswith("<frozen importlib"):
        return True
    path = Path(filename).resolve()
    return path.is_relative_to(_CORRAL_DIR) or path.is_relative_to(_IMPORTLIB_DIR)
