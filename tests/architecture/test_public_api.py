"""The public surface and the dependency rules stay honest."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import runtel

SRC = Path(__file__).resolve().parents[2] / "src" / "runtel"

#: base modules import only the standard library and other base modules
BASE = {"errors", "semconv", "_version", "values", "redaction", "config", "_guard"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_all_names_resolve() -> None:
    """Every name in runtel.__all__ exists, and the version matches the installed metadata."""
    for name in runtel.__all__:
        assert getattr(runtel, name) is not None, name
    assert runtel.__version__ == version("runtel")
    assert runtel.run_span.__module__ == "runtel"


def test_import_has_no_side_effects(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`import runtel` starts no thread, writes no file, and loads no SDK, gRPC, psutil, NVML or rich."""
    code = (
        "import json, sys, threading, runtel\n"
        "heavy = [m for m in ('grpc', 'opentelemetry.sdk', 'opentelemetry.sdk.trace', 'psutil', 'pynvml', 'rich',"
        " 'anyio', 'numpy') if m in sys.modules]\n"
        "print(json.dumps({'threads': threading.active_count(), 'heavy': heavy}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {"threads": 1, "heavy": []}
    assert list(tmp_path.iterdir()) == []


def test_base_modules_import_only_stdlib() -> None:
    """errors, semconv, config, values (every module of the package), redaction and _guard depend on the
    standard library only."""
    stdlib = set(sys.stdlib_module_names)
    checked = []
    for name in BASE:
        paths = sorted((SRC / name).rglob("*.py")) if (SRC / name).is_dir() else [SRC / f"{name}.py"]
        for path in paths:
            rel = path.relative_to(SRC)
            checked.append(rel.as_posix())
            for module in _imports(path):
                top = module.split(".")[0]
                if top == "runtel":
                    assert module.split(".")[1] in BASE, f"{rel} imports {module}"
                else:
                    assert top in stdlib or top == "__future__", f"{rel} imports {module}"
    assert "values/attributes.py" in checked  # the package's modules were walked, not just __init__
    # values/__init__ re-exports nothing, so importing one values module does not load the others
    assert _imports(SRC / "values" / "__init__.py") == set()


def test_library_never_imports_cli_or_testing() -> None:
    """Only the CLI imports runtel.cli and nothing in src imports runtel.testing (deps point one way)."""
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.parts[0] in ("cli", "testing") or rel.name == "__main__.py":
            continue
        for module in _imports(path):
            assert not module.startswith("runtel.testing"), f"{rel} imports {module}"
            assert not module.startswith("runtel.cli"), f"{rel} imports {module}"


def test_only_exporters_otlp_imports_grpc_and_otlp_exporters() -> None:
    """The OTLP exporters (and gRPC) are imported only by the modules that send over the network."""
    allowed = {Path("exporters/otlp.py"), Path("query/replay.py")}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        for module in _imports(path):
            if module.startswith(("grpc", "opentelemetry.exporter.otlp")):
                assert rel in allowed, f"{rel} imports {module}"


def test_facade_names_come_from_modules_that_own_them() -> None:
    """Each public name is defined by the module the facade loads it from, and listed in that module's __all__."""
    import importlib

    lazy: dict[str, str] = runtel._LAZY  # type: ignore[attr-defined]
    assert set(runtel.__all__) == set(lazy) | {"__version__"}
    for name, module_name in lazy.items():
        module = importlib.import_module(module_name)
        assert name in module.__all__, f"{module_name}.__all__ lacks {name}"


def test_measure_is_public_and_lazy(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """runtel.measure / runtel.Measurement come from the facade; a window works in a fresh interpreter."""
    assert {"measure", "Measurement"} <= set(runtel.__all__)
    code = (
        "import json, runtel\n"
        "with runtel.measure('w') as m:\n"
        "    sum(range(10**5))\n"
        "print(json.dumps({'cpu': m.cpu_s, 'wall': m.wall_s, 'type': type(m).__name__}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["type"] == "Measurement" and result["cpu"] > 0 and result["wall"] > 0


def test_compatibility_aliases_are_the_moved_objects() -> None:
    """runtel.tracker, runtel.lineage and runtel.replay re-export the very objects of their new homes."""
    import importlib

    for alias, home in (("runtel.tracker", "runtel.query.tracker"), ("runtel.lineage", "runtel.rundir.artifacts"),
                        ("runtel.replay", "runtel.query.replay")):
        old, new = importlib.import_module(alias), importlib.import_module(home)
        assert old.__all__, alias
        for name in old.__all__:
            assert getattr(old, name) is getattr(new, name), f"{alias}.{name}"
