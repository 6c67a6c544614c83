"""``runtel diff A B [--json]``: why two runs differ — inputs, command line, code, packages, environment, machine.

The comparison is :func:`runtel.query.diff.diff_runs` (read side, returns data); this module only
prints it: one table row per difference (section, key, A, B), or ``--json``. ``runtel compare`` is
the cost view (time, memory, energy per block).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from runtel.cli import render, run_root
from runtel.query.diff import Difference, diff_runs
from runtel.rundir.index import resolve_run
from runtel.rundir.reader import read_record

__all__ = ("register",)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``diff`` sub-command."""
    p = sub.add_parser(
        "diff",
        help="what differs between two runs (config, command line, code, packages, environment, machine)",
        description="List what differs between run A and run B: config (nested keys, key by key), the "
        "command line (argv as recorded, redacted), tags, attributes, metadata, results, seed, git commit "
        "and uncommitted diff, packages (added, removed, "
        "changed versions), environment variables, machine (CPU model, GPUs, driver, CUDA) and Python. "
        "RUN is a run id, a unique prefix, a path to a run folder, or 'latest'. Exit code 0 either way.",
    )
    p.add_argument("a", metavar="A", help="the first run")
    p.add_argument("b", metavar="B", help="the second run")
    p.add_argument("--dir", help="run folder root (default: $RUNTEL_DIR or ./runs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_diff)


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _row(d: Difference) -> list[str]:
    a = "(absent)" if d.kind == "added" else _cell(d.a)
    b = "(absent)" if d.kind == "removed" else _cell(d.b)
    return [d.section, d.key, a, b]


def _cmd_diff(args: argparse.Namespace) -> int:
    root = run_root(args)
    dir_a, dir_b = resolve_run(args.a, root), resolve_run(args.b, root)
    id_a, id_b = str(read_record(dir_a).get("id")), str(read_record(dir_b).get("id"))
    differences = diff_runs(dir_a, dir_b)
    if args.json:
        render.print_json({"a": id_a, "b": id_b, "differences": [d.to_dict() for d in differences]})
        return 0
    from rich.markup import escape  # deferred: rich, only for terminal output (~13 ms)

    console = render.console()
    if not differences:
        console.print(escape(f"runs {id_a} and {id_b}: no differences in config, command line, code, packages, "
                             "environment or machine"))
        return 0
    rows = [[escape(cell) for cell in _row(d)] for d in differences]
    console.print(render.table(escape(f"{id_a} (A) vs {id_b} (B)"), ["section", "key", "A", "B"], rows,
                               title_justify="left"))
    return 0
