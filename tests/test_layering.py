"""The design, enforced: layers import only downward, and no module imports in a circle.

perseus_core is layered (docs/architecture.md):

    wire  <-  plumbing  <-  store  <-  instance  <-  runtime
                              ^------  present  <-  notify

A module may import its own layer and the layers its row below names; the
dashboard builds only on perseus_core, the CLI on both. The library never
imports a UI toolkit. On top of that, the graph of imports between Perseus
modules has no cycle: not one hidden in a function body, and not one made
of imports under `if TYPE_CHECKING:` either (a widget that needs the App's
type to reach into it is the circle this test exists to prevent).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("perseus_core", "perseus_tui", "perseus_cli")

CORE_LAYERS: dict[str, set[str]] = {
    "wire": set(),
    "plumbing": {"wire"},
    "store": {"wire", "plumbing"},
    "present": {"wire", "plumbing", "store"},
    "instance": {"wire", "plumbing", "store"},
    "notify": {"wire", "plumbing", "store", "present"},
    "runtime": {"wire", "plumbing", "store", "instance"},
}
"""Each layer of perseus_core and the layers it may import besides itself."""

FORBIDDEN_THIRD_PARTY = {
    "perseus_core": {"textual", "rich", "click"},
    "perseus_tui": {"click"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {
    _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
}


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def _resolve(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> set[str]:
    """Names imported by `node`, as absolute dotted names (a module where one exists)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    names = set()
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        names.add(candidate if candidate in MODULES else base)
    return names


def _parse_imports(module: str) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in _import_nodes(tree):
        found |= _resolve(module, path.name == "__init__.py", node)
    return found


IMPORTS: dict[str, set[str]] = {module: _parse_imports(module) for module in MODULES}
"""Every module's imports, parsed once when the tests are collected: parsing
later, after other tests have exhausted and unwound the interpreter's
recursion limit (deep-nesting fuzz cases), can trip CPython's AST recursion
check."""


def imports_of(module: str) -> set[str]:
    return IMPORTS[module]


def _perseus_target(name: str) -> str | None:
    """The Perseus module that an imported name lives in, if any."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "perseus_core" and len(parts) > 1 else None


def test_every_core_module_has_a_layer() -> None:
    unplaced = sorted(
        m for m in MODULES if m.startswith("perseus_core.") and _layer(m) not in CORE_LAYERS
    )
    assert unplaced == [], "put these modules in a layer (see docs/architecture.md)"


def test_core_layers_import_only_downward() -> None:
    offenders: dict[str, list[str]] = {}
    for module in MODULES:
        layer = _layer(module)
        if layer is None or layer not in CORE_LAYERS:
            continue
        allowed = CORE_LAYERS[layer] | {layer}
        bad = sorted(
            target
            for name in imports_of(module)
            if (target := _perseus_target(name)) is not None
            and target != "perseus_core"
            and (not target.startswith("perseus_core.") or _layer(target) not in allowed)
        )
        if bad:
            offenders[module] = bad
    assert offenders == {}


@pytest.mark.parametrize("package", sorted(FORBIDDEN_THIRD_PARTY))
def test_forbidden_imports(package: str) -> None:
    forbidden = FORBIDDEN_THIRD_PARTY[package] | (
        {"perseus_cli"} if package == "perseus_tui" else {"perseus_tui", "perseus_cli"}
    )
    offenders = {
        module: sorted(bad)
        for module in MODULES
        if module.split(".")[0] == package
        and (bad := {name.split(".")[0] for name in imports_of(module)} & forbidden)
    }
    assert offenders == {}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    graph = {
        module: {
            target
            for name in imports_of(module)
            if (target := _perseus_target(name)) is not None and target != module
        }
        for module in MODULES
    }
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_leaves_the_garbage_collector_to_applications() -> None:
    # The collector is process-wide: only the applications' policy touches it.
    touching = sorted(m for m in MODULES if "gc" in imports_of(m))
    assert touching == ["perseus_tui.heap"]
