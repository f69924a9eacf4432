"""The package is layered: lower rooms never import higher ones, and no import cycle exists anywhere.

The import graph is read with `ast` from every module, counting imports at module level and inside
functions alike (a late import is still a dependency)."""

from __future__ import annotations

import ast
import sys
from importlib.util import resolve_name
from pathlib import Path

from clipbuild.core.run import run

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clipbuild"
# Lowest first: a module may import its own package's modules and those of the packages before it.
LAYERS = ("core", "formats", "spec", "gentoo", "signing", "jails", "image", "update", "lab", "stages", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The clipbuild modules `name` imports, anywhere in its code."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module or ""
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def layer(name: str) -> int:
    """The rank of a module's room: the root package (its version) lowest, `python -m clipbuild` highest."""
    parts = name.split(".")
    if len(parts) == 1:
        return -1
    if parts[1] == "__main__":
        return len(LAYERS)
    return LAYERS.index(parts[1])


def test_every_module_belongs_to_a_layer():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert loose == []
    assert sorted({n.split(".")[1] for n in MODULES if n.count(".") >= 1} - {*LAYERS, "__main__"}) == []


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{name} imports {target}" for name, targets in GRAPH.items() for target in targets
                    if layer(target) > layer(name))
    assert upward == []


def test_core_and_formats_import_nothing_above_them():
    for low in ("core", "formats"):
        above = sorted(f"{name} imports {target}" for name, targets in GRAPH.items() if layer(name) == LAYERS.index(low)
                       for target in targets if layer(target) > LAYERS.index(low))
        assert above == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself), by Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_there_is_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": set(), "b": {"a"}}) == []


def test_importing_the_plan_loads_nothing_above_core():
    code = ("import clipbuild.core.plan, clipbuild.core.executor, clipbuild.core.report, sys; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('clipbuild'))))")
    loaded = run([sys.executable, "-c", code], cwd=ROOT).stdout.split()
    assert [m for m in loaded if m != "clipbuild" and not m.startswith("clipbuild.core")] == []
