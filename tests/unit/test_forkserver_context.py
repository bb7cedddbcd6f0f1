"""``forkserver_context`` leans on multiprocessing internals; these tests fail loudly if a
Python upgrade moves them, and prove the effect with a real forkserver child."""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from multiprocessing import context, popen_forkserver, spawn
from multiprocessing.connection import Connection

from corral.forkserver_context import (
    MAIN_MODULE_KEYS,
    WorkerContext,
    WorkerProcess,
    _Popen,
    preparation_data,
)

UPGRADE = (
    "multiprocessing changed under corral.forkserver_context in this Python;"
    " re-read CPython's popen_forkserver.py and spawn.py and update that module"
)


def _body(function: object) -> list[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]
    definition = tree.body[0]
    assert isinstance(definition, ast.FunctionDef)
    return [ast.dump(statement) for statement in definition.body]


def test_launch_is_cpythons_but_for_the_preparation_data() -> None:
    ours = _body(_Popen._launch)
    theirs = _body(getattr(popen_forkserver.Popen, "_launch"))  # noqa: B009 - not in typeshed
    assert ours[1:] == theirs[1:], UPGRADE
    first = ast.dump(ast.parse("prep_data = spawn.get_preparation_data(process_obj._name)"))
    assert theirs[0] in first, UPGRADE


def test_the_main_module_keys_are_the_ones_prepare_acts_on() -> None:
    full = spawn.get_preparation_data("probe")
    main = sys.modules["__main__"]
    if main.__spec__ is not None or getattr(main, "__file__", None):
        # pytest's __main__ is its script or ``pytest.__main__``: the stock data names it.
        assert set(full) & set(MAIN_MODULE_KEYS), UPGRADE
    stripped = preparation_data("probe")
    assert set(full) - set(stripped) <= set(MAIN_MODULE_KEYS)
    assert not set(stripped) & set(MAIN_MODULE_KEYS)
    prepare = inspect.getsource(spawn.prepare)
    assert all(f"'{key}'" in prepare for key in MAIN_MODULE_KEYS), UPGRADE


def test_the_process_class_hook_is_still_there() -> None:
    assert isinstance(inspect.getattr_static(context.ForkServerProcess, "_Popen"), staticmethod)
    assert WorkerContext().Process is WorkerProcess
    assert WorkerContext().get_start_method() == "forkserver"


def _report_main(reply: Connection) -> None:
    main = sys.modules["__main__"]
    reply.send((getattr(main, "__file__", None), getattr(main.__spec__, "name", None)))


def test_a_worker_process_does_not_rerun_the_parents_main() -> None:
    ctx = WorkerContext()
    receive, reply = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_report_main, args=(reply,))
    process.start()
    reply.close()
    try:
        assert receive.poll(30), "the forkserver child never answered"
        assert receive.recv() == (None, None)
    finally:
        process.join(30)
    assert process.exitcode == 0
