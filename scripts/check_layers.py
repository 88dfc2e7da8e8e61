#!/usr/bin/env python3
"""The import-layer check: gta_core's packages import only downwards, and no module imports
itself back through others.

Run by .ci/run (and tests/unit/test_layers.py): ``python scripts/check_layers.py [PACKAGE_DIR]``
prints every import that goes up a layer and every import cycle, and exits 1 if there is one.
Every ``import`` counts, the ones inside functions too (they run in the same process); only
those under ``if TYPE_CHECKING:`` do not, as they never run. An edge from a package's
``__init__`` to one of its own modules is how a package loads its parts, not a dependency.

The layers, top to bottom (docs/architecture.md draws them): a module may import its own layer
and the layers below it. A layer lists module prefixes; the longest prefix that matches a
module places it.
"""
from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("command line", ("gta_core.cli", "gta_core.cli_supervisor")),
    ("metrics sidecar and dashboard", ("gta_core.dashboard", "gta_core.metrics.sidecar", "gta_core.metrics.server",
                                       "gta_core.metrics.hosts", "gta_core.metrics.database_gauges")),
    ("supervisor", ("gta_core.supervisor", "gta_core.metrics")),
    ("eager mode", ("gta_core.testing",)),
    ("worker", ("gta_core.worker",)),
    ("integrations", ("gta_core.contrib",)),
    ("public verbs", ("gta_core", "gta_core.submit", "gta_core.asubmit", "gta_core.status", "gta_core.attempts",
                      "gta_core.results", "gta_core.workflows", "gta_core.queues", "gta_core.limits",
                      "gta_core.admin")),
    ("handles and validation", ("gta_core.handles", "gta_core.validation", "gta_core.scopes", "gta_core.outcomes")),
    ("runtime", ("gta_core.runtime", "gta_core.plugins")),
    ("store", ("gta_core.store",)),
    ("db", ("gta_core.db",)),
    ("leaves", ("gta_core.errors", "gta_core.config", "gta_core.hookspecs", "gta_core.tasks", "gta_core.schedules",
                "gta_core.limit_rules")),
]


def layer_of(module: str) -> int:
    """The index of ``module``'s layer in `LAYERS` (0 is the top); ValueError for a module no
    layer names, so a new top-level module must be placed on purpose."""
    best, where = "", -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, where = prefix, index
    if where < 0 or (best == "gta_core" and module != "gta_core"):
        raise ValueError(f"{module}: no layer in scripts/check_layers.py names it; add it to one")
    return where


def modules(package_dir: Path) -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """The nodes of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (inner for child in node.orelse for inner in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The package's modules that ``module`` imports, with the line of each import."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                name = f"{target}.{alias.name}"
                if name in known:
                    yield name, node.lineno
                elif target in known:
                    yield target, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name, node.lineno


def problems(package_dir: Path) -> list[str]:
    """What breaks the layers: upward imports, modules no layer names, and import cycles."""
    known = modules(package_dir)
    found: list[str] = []
    graph: dict[str, set[str]] = {name: set() for name in known}
    for module, path in known.items():
        try:
            here = layer_of(module)
        except ValueError as exc:
            found.append(str(exc))
            continue
        for target, line in imports(module, path, known):
            if target == module:
                continue
            if not (path.name == "__init__.py" and target.startswith(module + ".")):
                graph[module].add(target)
            try:
                there = layer_of(target)
            except ValueError:
                continue  # reported as the module itself
            if there < here:
                found.append(f"{path}:{line}: {module} ({LAYERS[here][0]}) imports {target}, "
                             f"a layer above it ({LAYERS[there][0]})")
    found.extend(f"import cycle among: {', '.join(cycle)}" for cycle in _cycles(graph))
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

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
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def main(argv: list[str]) -> int:
    package_dir = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "gta_core"
    found = problems(package_dir)
    for problem in found:
        print(problem)
    layers = len(LAYERS)
    print(f"check_layers: {len(modules(package_dir))} modules in {layers} layers, "
          f"{len(found)} problem(s)", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
