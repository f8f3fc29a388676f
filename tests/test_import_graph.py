"""The project's modules import one another without cycles, and none is over the line limit.

Both checks read the source with `ast` only (nothing is imported), so they run in milliseconds.

What counts as an import: every `import` / `from ... import` statement anywhere in a module,
inside functions and under `if TYPE_CHECKING:` too. A deferred import still ties the two
modules together, and a type-only import still means the module knows the other's concrete
class: a stream annotated with its owner's class is written against that class's members.
Deferring an import to dodge a cycle only hides the cycle; the fix is a narrow interface
(a `typing.Protocol`) on the side that calls, implemented by the other. `from pkg import
name` depends on `pkg.name` when that is a module of the project, else on `pkg` itself; a module
does not depend on the packages above it (Python imports them first, but that is nesting, not a
dependency of the module's code).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Import package -> the folder holding it.
PACKAGES = {
    "parrot_integrations": ROOT,
    "parrot_server": ROOT / "server",
    "parrot_kernels": ROOT / "kernels",
}
MAX_LINES = 400


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def project_modules() -> dict[str, Module]:
    modules = {}
    for top, folder in PACKAGES.items():
        for path in sorted((folder / top).rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            name = ".".join(parts)
            modules[name] = Module(name, path, is_package)
    return modules


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def imports_of(module: Module, modules: dict[str, Module]) -> set[str]:
    """The project modules `module` imports (see the module docstring for the rules)."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                # `import a.b.c` runs a.b.c (and binds a): the dependency is the deepest module.
                name = alias.name
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name:
                    targets.add(name)
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source.split(".")[0] not in PACKAGES:
            continue
        for alias in node.names:
            child = f"{source}.{alias.name}"
            if child in modules:
                targets.add(child)
            elif source in modules:
                targets.add(source)
    targets.discard(module.name)
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(m, modules) for name, m in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) through each strongly connected component of more than one
    module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_cycle_in(graph, c) for c in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first search back to it)."""
    start = min(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in parent:
                    parent[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle in strongly connected {sorted(component)}")


def test_the_graph_sees_the_imports_it_should():
    """The graph is not vacuous: known edges are found, and the cycle finder finds cycles."""
    graph = import_graph()
    assert "parrot_integrations.client" in graph["parrot_integrations"]
    assert "parrot_integrations._http" in graph["parrot_integrations.client"]
    assert "parrot_server.core.engine_client" in graph["parrot_server.core.serve_core"]
    assert len(graph) > 100
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(toy) == [["a", "b", "c", "a"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_module_over_the_line_limit():
    modules = project_modules()
    sizes = {
        name: len(m.path.read_text(encoding="utf-8").splitlines()) for name, m in modules.items()
    }
    too_large = sorted(name for name, n in sizes.items() if n > MAX_LINES)
    listed = ", ".join(f"{name} ({sizes[name]})" for name in too_large)
    assert not too_large, f"over {MAX_LINES} lines, split by concept: {listed}"
