"""Private internals of other projects (CPython, the OpenTelemetry SDK) are used in one place only:
runtel._internals, which checks them at import and has tests that fail when they change."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "runtel"
ISOLATED = SRC / "_internals.py"

#: underscore names of other projects that are public API by convention
ALLOWED_ATTRIBUTES = {
    "_exit",  # os._exit
    "_asdict", "_fields", "_replace", "_make",  # namedtuple's documented API
    "_SubParsersAction",  # argparse: annotations only; add_subparsers() has no public return type
}
#: internals runtel used before, by name: none of them may come back outside runtel._internals
DENIED_TEXT = ("c_make_encoder", "_batch_processor", "_preferred_temporality", "_preferred_aggregation",
               "Queue full")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    foreign: set[str] = set()  # names bound to another project's modules or objects
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not alias.name.startswith("runtel"):
                    foreign.add((alias.asname or alias.name).split(".")[0])
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and not node.module.startswith("runtel") and node.module != "__future__":
            if any(_private(part) for part in node.module.split(".")):
                found.append(f"from {node.module} import ...")
            for alias in node.names:
                foreign.add(alias.asname or alias.name)
                if _private(alias.name):
                    found.append(f"from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in ALLOWED_ATTRIBUTES:
            root: ast.expr = node
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in foreign:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) \
                and _private(node.args[1].value) and node.args[1].value not in ALLOWED_ATTRIBUTES:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    text = path.read_text()
    found.extend(f"mentions {word!r}" for word in DENIED_TEXT if word in text)
    return found


def test_no_private_internals_outside_one_module() -> None:
    """No module but runtel._internals imports, reads or getattr()s another project's private names."""
    problems = {str(path.relative_to(SRC)): v for path in sorted(SRC.rglob("*.py")) if path != ISOLATED
                for v in [_violations(path)] if v}
    assert problems == {}


def test_the_isolating_module_imports_only_the_standard_library() -> None:
    """runtel._internals is a base module: stdlib only, so anything may use it without an import cycle."""
    tree = ast.parse(ISOLATED.read_text())
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            assert name.split(".")[0] in sys.stdlib_module_names or name == "__future__", name
