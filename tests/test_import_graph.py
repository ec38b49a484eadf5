"""The packages' import graph, read with ``ast`` (nothing is imported): imports go one way and never in a circle.

Rules (docs/DESIGN floors: benchmarks -> study -> eval, train -> mergekit_clip):

1. Module-level imports are acyclic across ``mergekit_clip``, ``train``, ``eval``, ``study`` and ``benchmarks``.
2. Counting function-level imports too (a deferred import is still a dependency; only ``if TYPE_CHECKING:``
   blocks, which never run, are left out), the graph is acyclic except the cycles named in ``KNOWN_CYCLES`` (by one
   of their modules), and that list only shrinks: a new cycle fails, and so does a listed one that is gone.
3. ``mergekit_clip`` imports none of ``train``, ``eval``, ``study``, ``benchmarks`` (at any level); ``train`` and
   ``eval`` import no ``study``/``benchmarks``; ``study`` no ``benchmarks``.

An edge ``a -> b`` is drawn for ``import b``, ``from b import x`` and ``from a import b`` (a submodule); relative
imports are resolved.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("mergekit_clip", "train", "eval", "study", "benchmarks")
FLOOR = {"mergekit_clip": 0, "train": 1, "eval": 1, "study": 2, "benchmarks": 3}

# cycles through deferred imports that remain, each named by one module in it (the cycle may grow or shrink around
# it while its owner works on it). Delete a line when its cycle is broken; the test says so.
KNOWN_CYCLES = {
    "mergekit_clip.detector.model": "build_detector dispatches to forensics_adapter, which builds model's tower",
    "study.protocols": "the protocol registry's protocols import the study runner, which imports the registry",
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for file in (ROOT / package).rglob("*.py"):
            parts = list(file.relative_to(ROOT).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(body: list[ast.stmt], deep: bool):
    """Import statements that run: at module level (``deep=False``: also under if/try/with), or anywhere."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node):
            continue
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not deep:
            continue
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    yield from _imports([c for c in children if isinstance(c, ast.AST)], deep)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        is_package = MODULES[module].name == "__init__.py"
        parts = module.split(".")[: None if is_package else -1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join([*parts, base] if base else parts)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph(deep: bool) -> dict[str, set[str]]:
    graph = {}
    for module, file in MODULES.items():
        tree = ast.parse(file.read_text(encoding="utf-8"))
        targets = {t for node in _imports(tree.body, deep) for t in _targets(module, node)}
        graph[module] = {t for t in targets if t in MODULES and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
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
                    found.append(frozenset(component))
    return found


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert cycles(graph) == [frozenset("abc")]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_module_level_imports_are_acyclic():
    assert cycles(import_graph(deep=False)) == []


def test_no_new_cycle_through_deferred_imports():
    found = cycles(import_graph(deep=True))
    new = [sorted(c) for c in found if not c & set(KNOWN_CYCLES)]
    assert not new, f"new import cycles: {new}"
    gone = [m for m in KNOWN_CYCLES if not any(m in c for c in found)]
    assert not gone, f"cycles broken: delete {gone} from KNOWN_CYCLES"


def test_the_circles_named_in_issue_28_are_gone():
    found = {m for c in cycles(import_graph(deep=True)) for m in c}
    for module in ("eval.report", "eval.robustness", "mergekit_clip.data.pretext", "mergekit_clip.data.synthetic",
                   "train.config", "train.modes.registry", "mergekit_clip.tracking"):  # fmt: skip
        assert module not in found


def test_imports_go_down_the_floors_only():
    upward = [(a, b) for a, targets in import_graph(deep=True).items() for b in targets
              if FLOOR[b.split(".")[0]] > FLOOR[a.split(".")[0]]]  # fmt: skip
    assert upward == []
