"""Unit tests for ``corral.runtime``, ``corral.appload`` and ``corral.listeners``."""

from __future__ import annotations

import fcntl
import itertools
import os
import socket
import sys
import sysconfig
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral import runtime
from corral.appload import load_app, reload_app, split_app_path
from corral.config import ServerConfig
from corral.errors import AppImportError, BindError, ExitCode
from corral.listeners import (
    close_listeners,
    create_listeners,
    describe,
    share_with_workers,
    worker_copy,
)
from corral.runtime import ModeDecision, WorkerMode, decide_mode, detect_worker_mode

# --- runtime ------------------------------------------------------------------------------


def _fake_build(monkeypatch: pytest.MonkeyPatch, *, free_threaded: bool, gil: bool) -> None:
    real = sysconfig.get_config_var

    def get_config_var(name: str) -> Any:
        if name == "Py_GIL_DISABLED":
            return 1 if free_threaded else 0
        return real(name)

    monkeypatch.setattr(sysconfig, "get_config_var", get_config_var)
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: gil, raising=False)


@pytest.mark.parametrize("mode", list(WorkerMode))
def test_decide_mode_override(mode: WorkerMode) -> None:
    decision = decide_mode(mode)
    assert decision.mode is mode
    assert (
        decision.reason
        == f"mode {mode.value} set explicitly (--mode, CORRAL_MODE or the config file)"
    )


@pytest.mark.parametrize("mode", list(WorkerMode))
def test_decide_mode_override_wins_on_free_threaded_build(
    monkeypatch: pytest.MonkeyPatch, mode: WorkerMode
) -> None:
    _fake_build(monkeypatch, free_threaded=True, gil=False)
    decision = decide_mode(mode)
    assert decision == ModeDecision(
        mode,
        f"mode {mode.value} set explicitly (--mode, CORRAL_MODE or the config file)",
        True,
        False,
    )


def test_gil_build_without_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_build(monkeypatch, free_threaded=False, gil=True)
    monkeypatch.delattr(sys, "_is_gil_enabled")
    assert runtime.gil_enabled() is True
    assert decide_mode(None) == ModeDecision(
        WorkerMode.PROCESS, "this interpreter has a GIL, so workers are processes", False, True
    )


def test_free_threaded_gil_disabled_gives_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_build(monkeypatch, free_threaded=True, gil=False)
    assert runtime.is_free_threaded_build() is True
    assert runtime.gil_enabled() is False
    assert decide_mode(None) == ModeDecision(
        WorkerMode.THREAD, "free-threaded build, GIL disabled", True, False
    )
    assert detect_worker_mode() is WorkerMode.THREAD


def test_free_threaded_gil_reenabled_gives_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_build(monkeypatch, free_threaded=True, gil=True)
    decision = decide_mode(None)
    assert decision.mode is WorkerMode.PROCESS
    assert decision.reason == (
        "free-threaded build, but the GIL was re-enabled after importing the app"
    )
    assert decision.free_threaded_build is True
    assert decision.gil_enabled is True
    assert detect_worker_mode() is WorkerMode.PROCESS


# --- appload --------------------------------------------------------------------------------

_counter = itertools.count()

ModuleFactory = Callable[[str], str]


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleFactory]:
    """Write a uniquely named module to ``tmp_path`` and return its name; unload afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    names: list[str] = []

    def make(source: str) -> str:
        name = f"corral_unit_app_{os.getpid()}_{next(_counter)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield make
    for name in names:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


APP_SOURCE = """
async def app(scope, receive, send):
    pass

class Holder:
    async def inner(self, scope, receive, send):
        pass

holder = Holder()
not_callable = 42
"""


def test_load_app_ok(app_module: ModuleFactory) -> None:
    name = app_module(APP_SOURCE)
    app = load_app(f"{name}:app")
    assert callable(app)
    assert app is sys.modules[name].app
    assert getattr(app, "__name__", None) == "app"


def test_load_app_dotted_attribute(app_module: ModuleFactory) -> None:
    name = app_module(APP_SOURCE)
    app = load_app(f"{name}:holder.inner")
    assert getattr(app, "__name__", None) == "inner"


def test_load_app_missing_module() -> None:
    with pytest.raises(AppImportError) as info:
        load_app("corral_no_such_module_xyz:app")
    assert str(info.value) == (
        "cannot import module 'corral_no_such_module_xyz': no module named "
        "'corral_no_such_module_xyz'; check the app path and run corral from the project directory"
    )
    assert info.value.exit_code is ExitCode.APP_IMPORT


def test_load_app_missing_submodule_of_real_package() -> None:
    with pytest.raises(AppImportError, match=r"^cannot import module 'corral\.nope_xyz'"):
        load_app("corral.nope_xyz:app")


def test_load_app_missing_dependency_is_an_import_failure(
    app_module: ModuleFactory, tmp_path: Path
) -> None:
    name = app_module("import corral_missing_dependency_xyz\napp = None\n")
    with pytest.raises(AppImportError) as info:
        load_app(f"{name}:app")
    assert str(info.value) == (
        f"importing {name!r} failed at {tmp_path / name}.py:1: ModuleNotFoundError: "
        "No module named 'corral_missing_dependency_xyz'"
    )


def test_load_app_missing_dependency_sharing_a_name_prefix(
    app_module: ModuleFactory, tmp_path: Path
) -> None:
    # The app module is named corral_unit_app_<pid>_<n>; it imports the missing "corral_unit".
    name = app_module("import corral_unit\napp = None\n")
    with pytest.raises(AppImportError) as info:
        load_app(f"{name}:app")
    assert str(info.value) == (
        f"importing {name!r} failed at {tmp_path / name}.py:1:"
        " ModuleNotFoundError: No module named 'corral_unit'"
    )


def test_load_app_missing_attribute(app_module: ModuleFactory) -> None:
    name = app_module(APP_SOURCE)
    with pytest.raises(AppImportError) as info:
        load_app(f"{name}:application")
    assert str(info.value) == (
        f"module {name!r} has no attribute 'application'; "
        "fix the part after the ':' in the app path"
    )


def test_load_app_missing_nested_attribute(app_module: ModuleFactory) -> None:
    name = app_module(APP_SOURCE)
    with pytest.raises(AppImportError, match=r"has no attribute 'holder\.outer'"):
        load_app(f"{name}:holder.outer")


def test_load_app_not_callable(app_module: ModuleFactory) -> None:
    name = app_module(APP_SOURCE)
    with pytest.raises(AppImportError) as info:
        load_app(f"{name}:not_callable")
    assert str(info.value) == (
        f"{name}:not_callable is of type int, not an ASGI callable; "
        "point the app path at the ASGI application object"
    )


def test_load_app_import_raising_gives_one_line(app_module: ModuleFactory, tmp_path: Path) -> None:
    name = app_module('raise RuntimeError("database unreachable\\nsecond line\\nthird")\n')
    with pytest.raises(AppImportError) as info:
        load_app(f"{name}:app")
    message = str(info.value)
    assert message == (
        f"importing {name!r} failed at {tmp_path / name}.py:1: RuntimeError: database unreachable"
    )
    assert "\n" not in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True


def test_load_app_import_raising_without_message(app_module: ModuleFactory, tmp_path: Path) -> None:
    name = app_module("raise ZeroDivisionError()\n")
    with pytest.raises(AppImportError) as info:
        load_app(f"{name}:app")
    assert (
        str(info.value)
        == f"importing {name!r} failed at {tmp_path / name}.py:1: ZeroDivisionError:"
    )


def test_load_app_syntax_error_is_one_line(app_module: ModuleFactory, tmp_path: Path) -> None:
    name = app_module("def broken(:\n    pass\n")
    with pytest.raises(AppImportError) as info:
        load_app(f"{name}:app")
    message = str(info.value)
    assert message.startswith(f"importing {name!r} failed at {tmp_path / name}.py:1: SyntaxError: ")
    assert info.value.traceback.startswith(f'  File "{tmp_path / name}.py", line 1\n')
    assert "\n" not in message


@pytest.mark.parametrize("path", ["myapp", "myapp:", ":app", "", ":"])
def test_bad_app_path_format(path: str) -> None:
    with pytest.raises(AppImportError) as info:
        load_app(path)
    assert str(info.value) == (
        f"app path {path!r} must look like 'package.module:attribute', e.g. 'myapp:app'"
    )


def test_split_app_path() -> None:
    assert split_app_path("pkg.mod:app") == ("pkg.mod", "app")
    assert split_app_path("pkg:factory.app") == ("pkg", "factory.app")
    assert split_app_path("a:b:c") == ("a", "b:c")


def test_reload_app_picks_up_changed_file(app_module: ModuleFactory, tmp_path: Path) -> None:
    name = app_module("def app():\n    return 1\n")
    first = load_app(f"{name}:app")
    assert first() == 1
    assert load_app(f"{name}:app") is first  # a plain load reuses the imported module
    (tmp_path / f"{name}.py").write_text("def app():\n    return 'two, longer'\n")
    second = reload_app(f"{name}:app")
    assert second is not first
    assert second() == "two, longer"
    assert first() == 1  # the old object still works for workers holding it
    assert sys.modules[name].app is second


def test_reload_app_rereads_package_submodules(tmp_path: Path, app_module: ModuleFactory) -> None:
    root = app_module("")  # registers the name for clean-up; replaced by a package below
    (tmp_path / f"{root}.py").unlink()
    package = tmp_path / root
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("VALUE = 1\n")
    (package / "main.py").write_text(
        "from . import helper\n\ndef app():\n    return helper.VALUE\n"
    )
    assert load_app(f"{root}.main:app")() == 1
    (package / "helper.py").write_text("VALUE = 22\n")
    assert reload_app(f"{root}.main:app")() == 22


def test_reload_app_rereads_sibling_modules_of_a_flat_project(
    tmp_path: Path, app_module: ModuleFactory
) -> None:
    helper = app_module("VALUE = 1\n")
    main = app_module(f"import {helper}\n\ndef app():\n    return {helper}.VALUE\n")
    assert load_app(f"{main}:app")() == 1
    (tmp_path / f"{helper}.py").write_text("VALUE = 333\n")
    assert reload_app(f"{main}:app")() == 333


def test_reload_app_keeps_installed_and_corral_modules() -> None:
    """examples/ sits in the repository beside src/corral: corral must stay imported."""
    load_app("examples.hello:app")
    before = dict(sys.modules)
    try:
        reload_app("examples.hello:app")
        for name in ("corral", "corral.appload", "corral.config", "json", "pytest", __name__):
            # __name__: a package app's siblings (this test module among them) are not
            # the app's; dropping them broke pickling by reference later in the run.
            assert sys.modules[name] is before[name], name
        assert sys.modules["examples.hello"] is not before["examples.hello"]
    finally:
        sys.modules.update(before)  # this test process's own modules (tests.*) stay as they were


def test_reload_app_errors_like_load_app() -> None:
    with pytest.raises(AppImportError, match="must look like"):
        reload_app("no_colon_here")
    with pytest.raises(AppImportError, match="cannot import module"):
        reload_app("corral_no_such_module_xyz:app")


# --- listeners ----------------------------------------------------------------------------


@pytest.fixture
def short_tmp(tmp_path: Path) -> Path:
    """A directory whose paths fit in a Unix socket address (108 bytes)."""
    if len(str(tmp_path)) < 80:
        return tmp_path
    pytest.skip("tmp_path too long for a Unix socket path")


def test_tcp_port_zero_binds_and_describe_shows_real_port() -> None:
    listeners = create_listeners(ServerConfig(host="127.0.0.1", port=0))
    try:
        assert len(listeners) == 1
        sock = listeners[0]
        host, port = sock.getsockname()[:2]
        assert host == "127.0.0.1"
        assert port != 0
        assert describe(sock) == f"http://127.0.0.1:{port}"
        assert describe(sock, tls=True) == f"https://127.0.0.1:{port}"
        # It is really listening: a client connects.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        close_listeners(listeners)
    assert listeners[0].fileno() == -1


def test_tcp_port_in_use_raises_bind_error() -> None:
    first = create_listeners(ServerConfig(port=0))
    try:
        port = first[0].getsockname()[1]
        with pytest.raises(BindError) as info:
            create_listeners(ServerConfig(port=port))
        assert str(info.value) == (
            f"127.0.0.1:{port} is already in use; stop the other server or choose another --port"
        )
        assert info.value.exit_code is ExitCode.BIND
    finally:
        close_listeners(first)


def test_tcp_unresolvable_host_raises_bind_error() -> None:
    with pytest.raises(BindError, match=r"cannot resolve --host 'no such host'"):
        create_listeners(ServerConfig(host="no such host", port=0))


def test_tcp_foreign_address_raises_bind_error() -> None:
    with pytest.raises(BindError) as info:
        create_listeners(ServerConfig(host="192.0.2.1", port=0))  # TEST-NET-1, never local
    assert str(info.value) == "192.0.2.1:0 is not an address of this machine; fix --host"


def test_describe_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        sock = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("::1 not available")
    with sock:
        port = sock.getsockname()[1]
        assert describe(sock) == f"http://[::1]:{port}"


def test_unix_socket_binds_and_listens(short_tmp: Path) -> None:
    path = str(short_tmp / "c.sock")
    listeners = create_listeners(ServerConfig(uds=path))
    try:
        assert describe(listeners[0]) == f"unix:{path}"
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with client:
            client.connect(path)
    finally:
        close_listeners(listeners)
    assert not os.path.exists(path)


def test_unix_stale_socket_file_is_replaced(short_tmp: Path) -> None:
    path = str(short_tmp / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens
    assert os.path.exists(path)
    listeners = create_listeners(ServerConfig(uds=path))
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with client:
            client.connect(path)
    finally:
        close_listeners(listeners)


def test_unix_live_socket_raises_bind_error(short_tmp: Path) -> None:
    path = str(short_tmp / "live.sock")
    live = create_listeners(ServerConfig(uds=path))
    try:
        with pytest.raises(BindError) as info:
            create_listeners(ServerConfig(uds=path))
        assert str(info.value) == (
            f"{path} is already in use by a running server; stop it or pick another --uds"
        )
        assert "already in use" in str(info.value)
        assert os.path.exists(path)  # the live server's socket file was left alone
    finally:
        close_listeners(live)


def test_unix_path_that_is_not_a_socket_raises(short_tmp: Path) -> None:
    path = short_tmp / "regular.sock"
    path.write_text("precious")
    with pytest.raises(BindError, match="exists and is not a socket"):
        create_listeners(ServerConfig(uds=str(path)))
    assert path.read_text() == "precious"


def test_unix_bind_in_missing_directory_raises(short_tmp: Path) -> None:
    path = str(short_tmp / "missing" / "c.sock")
    with pytest.raises(BindError, match=r"^cannot listen on .*c\.sock: "):
        create_listeners(ServerConfig(uds=path))


def test_close_listeners_is_idempotent_and_unlinks(short_tmp: Path) -> None:
    path = str(short_tmp / "idem.sock")
    listeners = [*create_listeners(ServerConfig(uds=path)), *create_listeners(ServerConfig(port=0))]
    assert os.path.exists(path)
    close_listeners(listeners)
    assert not os.path.exists(path)
    assert all(sock.fileno() == -1 for sock in listeners)
    close_listeners(listeners)  # again: no error
    close_listeners([])
    assert not os.path.exists(path)


def test_close_listeners_tolerates_already_removed_file(short_tmp: Path) -> None:
    path = str(short_tmp / "gone.sock")
    listeners = create_listeners(ServerConfig(uds=path))
    os.unlink(path)
    close_listeners(listeners)
    assert listeners[0].fileno() == -1


def _non_blocking(sock: socket.socket) -> bool:
    return bool(fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)


def test_worker_copies_never_put_the_shared_listener_back_in_blocking_mode() -> None:
    # Blocking mode is a flag of the open file description every copy shares:
    # one blocking copy would leave a worker that loses an accept() race asleep
    # inside accept() (see listeners.share_with_workers).
    (listener,) = create_listeners(ServerConfig(port=0))
    try:
        share_with_workers([listener])
        serving = worker_copy(listener)
        booting = worker_copy(listener)  # a worker started after the first one serves
        assert [_non_blocking(s) for s in (listener, serving, booting)] == [True, True, True]
        assert booting.fileno() not in (listener.fileno(), serving.fileno())
        assert booting.getsockname() == listener.getsockname()
        for copy in (serving, booting):
            copy.close()
        assert listener.getsockname()[1] > 0, "closing a copy leaves the listener open"
    finally:
        close_listeners([listener])
