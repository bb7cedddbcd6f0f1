"""Fail if importing corral, its example apps, or what a worker loads turns the GIL back on.

Run with a free-threaded interpreter from the repository root (``make test-ft``
does). On a free-threaded build, importing an extension module that does not
declare free-threading support re-enables the GIL for the whole process,
silently apart from a ``RuntimeWarning``, and corral then falls back to
process workers. So this imports one module at a time and checks
``sys._is_gil_enabled()`` after each, naming the first import that flipped it
and the extension the warning blames.

The warning is *recorded*, not turned into an error (``-W error::RuntimeWarning``
would make the offending import raise, which hides which module it was and
leaves the interpreter in a state no user would see).

Exit status: 0 when the GIL stayed off, 1 otherwise (with one line per problem).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pkgutil
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("examples.hello", "examples.chaos")


def gil_enabled() -> bool:
    probe = getattr(sys, "_is_gil_enabled", None)
    return True if probe is None else bool(probe())


def corral_modules() -> Iterator[str]:
    """Every ``corral.*`` module, found on disk without importing any of them.

    ``pkgutil.walk_packages`` imports each subpackage to look inside it, which
    would run imports before they are checked; walking the directories with
    ``iter_modules`` keeps the import order ours. ``__main__`` is left out:
    importing it as a module runs nothing, but it is the CLI's entry point.
    """
    spec = importlib.util.find_spec("corral")
    assert spec is not None, "corral is not installed in this interpreter"
    assert spec.submodule_search_locations is not None
    yield "corral"
    stack = [(list(spec.submodule_search_locations), "corral.")]
    while stack:
        paths, prefix = stack.pop()
        for info in sorted(pkgutil.iter_modules(paths, prefix), key=lambda i: i.name):
            if info.name.endswith(".__main__"):
                continue
            yield info.name
            if info.ispkg:
                leaf = info.name.rsplit(".", 1)[1]
                stack.append(([str(Path(p) / leaf) for p in paths], info.name + "."))


def load_worker_engine() -> None:
    """What a worker imports lazily when it starts: uvicorn's loop and protocol
    implementations (uvloop and httptools where installed)."""
    import uvicorn  # noqa: PLC0415 - imported here so it is checked on its own

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    uvicorn.Config(app, log_config=None).load()


def check(name: str, action: Callable[[], object]) -> str | None:
    """Run one import; return a message if it turned the GIL on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        action()
    if not gil_enabled():
        return None
    blamed = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    detail = f": {blamed[0]}" if blamed else ""
    return f"importing {name} re-enabled the GIL{detail}"


def main() -> int:
    sys.path.insert(0, str(ROOT))
    if sysconfig.get_config_var("Py_GIL_DISABLED") != 1:
        print(f"check_gil: {sys.executable} is not a free-threaded build", file=sys.stderr)
        return 1
    if gil_enabled():
        print(
            "check_gil: the GIL is enabled before any import (PYTHON_GIL=1 or -X gil=1?)",
            file=sys.stderr,
        )
        return 1
    steps: list[tuple[str, Callable[[], object]]] = [
        (name, functools.partial(importlib.import_module, name))
        for name in [*corral_modules(), *EXAMPLES]
    ]
    steps.append(("uvicorn's worker engine (Config.load)", load_worker_engine))
    for name, action in steps:
        problem = check(name, action)
        if problem is not None:
            print(f"check_gil: {problem}", file=sys.stderr)
            return 1
    print(f"check_gil: GIL still disabled after {len(steps)} imports ({sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
