"""The dependency rules of docs/architecture.md hold: the import-linter contracts and no import cycles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_are_kept() -> None:
    """The layers, the test-kit ban and acyclic siblings of pyproject.toml's [tool.importlinter]."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
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
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_counting_imports_inside_functions() -> None:
    """grimp reads every import statement, nested in functions or not (type-checking imports aside)."""
    g = grimp.build_graph("runtel", exclude_type_checking_imports=True, cache_dir=None)
    graph = {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above would see one."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _function_level_imports(path: Path) -> list[tuple[int, int]]:
    """(first line, last line) of every import inside a function, outside ``if TYPE_CHECKING:``."""
    import ast

    found: list[tuple[int, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child.lineno, child.end_lineno or child.lineno))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def test_every_function_level_import_says_what_it_defers() -> None:
    """An import inside a function is there to defer a cost; a comment on it (or just above) says which."""
    missing = []
    for path in sorted((ROOT / "src" / "runtel").rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for first, last in _function_level_imports(path):
            span = lines[max(0, first - 2):last]
            if not any("#" in line for line in span):
                missing.append(f"{path.relative_to(ROOT)}:{first}: {lines[first - 1].strip()}")
    assert missing == [], "\n".join(missing)


def test_no_module_imports_another_modules_private_names() -> None:
    """``from runtel.a import _helper`` hides a dependency: a name used by another module is public there.

    Private *modules* (``runtel._context``, ``runtel._sdk``...) are the base layer's named parts and may be
    imported; private *names* inside a module belong to that module.
    """
    import ast

    src = Path(__file__).resolve().parents[2] / "src"
    found = []
    for path in sorted((src / "runtel").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                    and node.module.startswith("runtel")):
                continue
            package = src / node.module.replace(".", "/")
            for alias in node.names:
                is_module = (package / f"{alias.name}.py").exists() or (package / alias.name).is_dir()
                if alias.name.startswith("_") and not alias.name.startswith("__") and not is_module:
                    found.append(f"{path.relative_to(src)}: from {node.module} import {alias.name}")
    assert not found, "\n".join(found)
