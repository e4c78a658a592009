"""The apps depend on each other one way only.

Every project module is parsed with ``ast`` and each import in it, at module level or inside a
function, becomes an edge from the module's app to the imported app. The layering this checks:

- no app imports the project package ``edm`` (it holds settings and wiring, which name the apps);
- ``common`` imports no other project app (every app may use it);
- ``queues`` (the scheduler core) imports nothing from ``monitoring`` (the observability layer);
- the app-to-app graph has no cycle.
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "common", "config", "contacts", "deliverability", "monitoring", "queues")
PROJECT = "edm"
PACKAGES = (*APPS, PROJECT)

Edge = tuple[str, str]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(source: str, package: str) -> list[tuple[str, int]]:
    """Every module an import statement in ``source`` names, with its line; ``package`` is the one
    the source belongs to, which relative imports start from."""
    tree = ast.parse(source)
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((name, node.lineno))
    return found


def _edges() -> dict[Edge, list[str]]:
    """(importing package, imported package) -> the places (file:line) that import across."""
    edges: dict[Edge, list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = _module_name(path)
            parent = module if path.name == "__init__.py" else module.rpartition(".")[0]
            for name, line in _imported_modules(path.read_text(encoding="utf-8"), parent):
                target = name.split(".")[0]
                if target in PACKAGES and target != package:
                    edges[(package, target)].append(f"{path.relative_to(ROOT)}:{line}")
    return edges


def _report(edges: dict[Edge, list[str]], wanted: list[Edge]) -> str:
    return "\n".join(f"{src} -> {dst}: {place}" for src, dst in wanted for place in edges[(src, dst)])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle found by a depth-first walk, as the list of packages along it."""
    cycles: list[list[str]] = []
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_the_walk_sees_function_level_and_relative_imports() -> None:
    source = "import os\ndef f():\n    from monitoring.models import Alert\n    from ..models import Task\n"
    assert _imported_modules(source, "queues.scheduler") == [("os", 1), ("monitoring.models", 3), ("queues.models", 4)]


def test_the_cycle_finder_reports_a_cycle_with_its_packages() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_app_imports_the_project_package() -> None:
    edges = _edges()
    wanted = [(app, PROJECT) for app in APPS if (app, PROJECT) in edges]
    assert not wanted, "apps import edm (move the helper into common):\n" + _report(edges, wanted)


def test_common_imports_no_other_project_app() -> None:
    edges = _edges()
    wanted = [("common", dst) for dst in PACKAGES if ("common", dst) in edges]
    assert not wanted, "common imports a project app:\n" + _report(edges, wanted)


def test_queues_imports_nothing_from_monitoring() -> None:
    edges = _edges()
    wanted = [("queues", "monitoring")] if ("queues", "monitoring") in edges else []
    assert not wanted, "the scheduler core imports the observability layer:\n" + _report(edges, wanted)


def test_the_app_import_graph_has_no_cycle() -> None:
    edges = _edges()
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst in edges:
        graph[src].add(dst)
    cycles = _cycles(graph)
    wanted = sorted({(a, b) for cycle in cycles for a, b in itertools.pairwise(cycle)})
    assert not cycles, "cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles) + "\n" + _report(edges, wanted)
