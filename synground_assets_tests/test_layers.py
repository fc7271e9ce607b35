"""The package's shape, pinned: no import cycle, and no layer importing a higher one.

Every `import` counts, also one inside a function: a lazy import hides a cycle from Python, not
from a reader. Layers, lowest first (`LAYERS` below): the role contract `roles/`, settings and small
helpers, `models/` and `grounding/` (the framework-free core), `quality/`, the recipe book, `tiny/`,
`datasets/`, `adapters/`, `resources/`, `pipeline/` (no Dagster), then the Dagster layer (`assets/`,
`schedules`, `definitions`, `ops/`...) that only wires.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import synground_assets

PACKAGE = Path(synground_assets.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module name an `import` or `from ... import` in the file names (with the imported
    names appended, since `from pkg import mod` imports a module too)."""
    names = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_name(path).split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
IMPORTS = {name: imported_names(path) for name, path in MODULES.items()}
GRAPH = {name: {other for other in imports if other in MODULES and other != name} for name, imports in IMPORTS.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of two or more modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def test_cycle_finder_finds_a_planted_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert strongly_connected(GRAPH) == []


# Folders that gather modules of different layers: each of their modules is a part of its own.
MIXED = {"config", "ops", "records"}


def part(module: str) -> str:
    """'synground_assets.roles.catalog' -> 'roles'; 'synground_assets.config.settings' -> 'config.settings'."""
    names = module.split(".")[1:]
    if len(names) > 1 and names[0] in MIXED:
        return ".".join(names[:2])
    return names[0] if names else ""


# The layers below Dagster, lowest first: a part imports itself and the parts of lower layers only,
# with no exception. `roles` is the contract (result types, Protocols, the catalog), below every
# adapter; `adapters` holds the models that play the roles and the suite that builds them.
LAYERS = (
    ("roles", "config", "config.settings"),
    ("records", "records.items", "records.previews", "ops", "ops.permissions", "ops.processes"),
    ("models",),
    ("grounding",),
    ("quality",),
    ("config.recipes",),
    ("tiny",),
    ("datasets",),
    ("records.evaluation_sets",),
    ("adapters",),
    ("resources",),
    ("pipeline",),
)
ALLOWED = {part: {lower for layer in LAYERS[:level] for lower in layer}
           for level, layer in enumerate(LAYERS) for part in layer}
NEVER_BELOW_DAGSTER = {"assets", "definitions", "schedules", "ops.run_health", "dead_runs", "relaunch", "ops.scale",
                       "ops.cli", "partitions"}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_layers_import_only_lower_layers(name):
    mine = part(name)
    reached = {part(other) for other in GRAPH[name]} - {mine, ""}
    if mine in ALLOWED:
        assert reached <= ALLOWED[mine], f"{name} imports {sorted(reached - ALLOWED[mine])}"
    if mine in {"grounding", "models", "quality", "roles", "tiny", "adapters", "resources", "pipeline", "datasets"}:
        assert not reached & NEVER_BELOW_DAGSTER, (f"{name} imports the Dagster layer: "
                                                   f"{sorted(reached & NEVER_BELOW_DAGSTER)}")
    if mine in {"grounding", "models", "quality", "roles", "tiny", "adapters", "pipeline", "datasets", "records.items"}:
        dagster = sorted(n for n in IMPORTS[name] if n == "dagster" or n.startswith("dagster."))
        assert not dagster, f"{name} imports Dagster ({dagster}); only the asset layer wires Dagster"


def test_private_dagster_names_come_through_one_module():
    private = sorted(name for name, imports in IMPORTS.items()
                     if any(i.startswith("dagster._") for i in imports) and not name.endswith(".dagster_internals"))
    assert private == []


def test_synground_variables_are_read_in_settings_only():
    """Paths and knobs come from `config/settings.py` (and the resources built on it), never from an
    environment read deep in a module."""
    readers = sorted(name for name, path in MODULES.items() if name != "synground_assets.config.settings"
                     and re.search(r"(environ|getenv)\b[^\n]*SYNGROUND_", path.read_text()))
    assert readers == []
