"""The shape of corral's import graph: no cycles, and no upward imports.

The graph is read from the source with ``ast``, not by importing anything:
every ``import corral...`` and ``from corral... import ...``, at module level
or inside a function, is an edge. Imports under ``if TYPE_CHECKING:`` are
left out: they never run, so they cannot form a cycle at import time, and
they are the sanctioned way to name a type from a higher layer.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "corral"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(node: ast.ImportFrom, package: str) -> list[str]:
    if node.level:  # relative: resolve against the importing module's package
        base = package.split(".")
        base = base[: len(base) - node.level + 1]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    # `from corral.service import page` depends on the submodule; the package
    # itself counts only when some name is not a submodule of it.
    submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules()]
    if target in modules() and len(submodules) < len(node.names):
        submodules.append(target)
    return submodules


def _walk(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            found.extend(n for n in node.orelse for n in _walk(ast.Module([n], [])))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        found.extend(_walk(node))
    return found


@cache
def imports_of(name: str) -> frozenset[str]:
    """The corral modules ``name`` imports directly."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: set[str] = set()
    for node in _walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            edges.update(a.name for a in node.names if a.name in modules())
        else:
            edges.update(_imported(node, package))
    edges.discard(name)
    return frozenset(edges)


def reachable(name: str) -> set[str]:
    """Every corral module importing ``name`` imports, transitively."""
    seen: set[str] = set()
    stack = [name]
    while stack:
        for target in imports_of(stack.pop()):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def assert_never_imports(importer: str, forbidden: str) -> None:
    """Fail, naming the path, if ``importer`` reaches ``forbidden`` (or a module under it)."""
    parents: dict[str, str] = {}
    stack = [importer]
    while stack:
        current = stack.pop()
        for target in imports_of(current):
            if target in parents or target == importer:
                continue
            parents[target] = current
            if target == forbidden or target.startswith(forbidden + "."):
                path = [target]
                while path[-1] != importer:
                    path.append(parents[path[-1]])
                pytest.fail(f"{importer} imports {forbidden}: {' -> '.join(reversed(path))}")
            stack.append(target)


def find_cycle() -> list[str] | None:
    """One import cycle between corral modules, as a path that ends where it starts."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(imports_of(name)):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in modules():
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_the_graph_is_read() -> None:
    assert "corral.supervisor.core" in imports_of("corral.supervisor")
    assert "corral.incarnation" in reachable("corral.supervisor")
    assert "corral.cli_status" in imports_of("corral.cli")
    assert "corral.status_client" in imports_of("corral.cli_status")


def test_no_import_cycle_between_corral_modules() -> None:
    cycle = find_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_slot_vocabulary_is_a_leaf() -> None:
    assert imports_of("corral.states") == frozenset()


# Who may never depend on the supervision mechanism.
VOCABULARY_ONLY = [
    "corral.metrics",
    "corral.service",
    "corral.service.live",
    "corral.service.figures",
    "corral.service.page",
    "corral.service.server",
    "corral.status_client",
    "corral.status_watch",
    "corral.cli_status",
    "corral.lifecycle",
    "corral.observability",
]


@pytest.mark.parametrize("importer", VOCABULARY_ONLY)
def test_observers_depend_on_the_vocabulary_not_the_supervisor(importer: str) -> None:
    assert_never_imports(importer, "corral.supervisor")
    assert_never_imports(importer, "corral.handles")


# The pure decision modules touch no process, thread, socket or worker.
PURE = ["corral.policy", "corral.incarnation", "corral.states"]
MECHANISM = [
    "corral.supervisor",
    "corral.handles",
    "corral.process_worker",
    "corral.thread_worker",
    "corral.worker",
    "corral.listeners",
    "corral.service",
    "corral.metrics",
]


@pytest.mark.parametrize("pure", PURE)
@pytest.mark.parametrize("mechanism", MECHANISM)
def test_decisions_never_import_the_mechanism(pure: str, mechanism: str) -> None:
    assert_never_imports(pure, mechanism)


# What runs inside a worker never reaches the supervisor's side of anything.
SUPERVISOR_SIDE = [
    "corral.supervisor",
    "corral.request_stats.pool",
    "corral.metrics",
    "corral.observability",
    "corral.service",
    "corral.tracing",
    "corral.cli",
]


@pytest.mark.parametrize("side", SUPERVISOR_SIDE)
def test_the_worker_side_stays_light(side: str) -> None:
    assert_never_imports("corral.worker", side)
    assert_never_imports("corral.request_stats.recorder", side)
    assert_never_imports("corral.request_stats.cycle", side)
    assert_never_imports("corral.http_protocol", side)


@pytest.mark.parametrize(
    "protocol_code", ["corral.websocket", "corral.interface", "corral.http_protocol"]
)
def test_the_settings_hold_no_protocol_code(protocol_code: str) -> None:
    """``config`` names choices; the modules that act on them import config, not the reverse."""
    assert_never_imports("corral.config", protocol_code)
