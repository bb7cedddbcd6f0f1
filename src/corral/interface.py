"""Which calling convention the app speaks (ASGI 3, ASGI 2 or WSGI), and the adapter.

``--interface`` takes uvicorn's names. ``auto`` starts with uvicorn's test
(a coroutine function, a class with ``__await__``, or an object whose
``__call__`` is a coroutine function is ASGI 3), then goes one step further:
uvicorn takes every other callable for ASGI 2, so a Flask or Django app
passes start-up and then answers every request with a 500. corral takes a
plain callable with two positional parameters, ``(environ, start_response)``,
for WSGI, and one, ``(scope)``, for ASGI 2. The choice is made on the
supervisor's import, so ``corral check`` can say what it found.

WSGI apps are served through a2wsgi's ``WSGIMiddleware``: it runs the app on
a thread pool of its own, streams the body both ways, and is maintained for
exactly this job (uvicorn's built-in WSGI middleware is deprecated in favour
of it). WSGI has no WebSockets, so an upgrade reaches the app as plain HTTP.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from a2wsgi import WSGIMiddleware

from corral.config_choices import Interface


@dataclass(frozen=True, slots=True)
class InterfaceDecision:
    interface: Interface  # never AUTO
    reason: str


def _is_asgi3(app: object) -> bool:
    """uvicorn's own test, so corral and uvicorn agree on every ASGI app."""
    if inspect.isclass(app):
        return hasattr(app, "__await__")
    if inspect.isfunction(app):
        return inspect.iscoroutinefunction(app)
    return inspect.iscoroutinefunction(getattr(app, "__call__", None))  # noqa: B004 (uvicorn's)


def _positional_count(app: object) -> int | None:
    """How many positional arguments calling ``app`` takes, if its signature says."""
    try:
        signature = inspect.signature(app)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    return sum(1 for p in params if p.kind in kinds)


def decide_interface(app: object, chosen: Interface) -> InterfaceDecision:
    """Resolve ``auto`` for ``app``; an explicit choice is taken as given."""
    if chosen is not Interface.AUTO:
        return InterfaceDecision(chosen, "set by --interface")
    if _is_asgi3(app):
        return InterfaceDecision(Interface.ASGI3, "detected: a coroutine callable")
    if _positional_count(app) == 2:
        return InterfaceDecision(
            Interface.WSGI, "detected: a plain callable taking (environ, start_response)"
        )
    return InterfaceDecision(Interface.ASGI2, "detected: a plain callable, not WSGI-shaped")


def adapt(app: Any, interface: Interface) -> tuple[Callable[..., Any], str]:
    """The app as uvicorn should load it, and the ``interface`` to tell uvicorn.

    ASGI 2 is left to uvicorn's adapter; WSGI is wrapped here in a2wsgi's.
    """
    if interface is Interface.WSGI:
        return WSGIMiddleware(app), Interface.ASGI3.value
    if interface is Interface.AUTO:
        raise ValueError("decide_interface first")
    return app, interface.value


__all__ = ["Interface", "InterfaceDecision", "adapt", "decide_interface"]
