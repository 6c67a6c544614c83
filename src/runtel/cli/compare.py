"""``runtel compare RUN_A RUN_B [RUN...]``: compare recorded runs block by block.

Blocks are matched across runs by their *path*: the span names from just below the run's root span down to
the span (``train/epoch/train_step``), so renaming the run (``runtel run --name``) does not break matching.
Child runs (nested runs, and runs started by a command under ``runtel run``) are included where they ran,
exactly as ``runtel show`` nests them. Repeated spans with the same path are aggregated: call count, total /
mean / max duration, peak RSS and peak GPU memory (max over calls) and energy (sum over calls).

Every value is compared with the first run: difference (``value - first``) and ratio (``value / first``; none
when the first run's value is 0 or unknown). A run-level section compares run.json ``resource_usage``
(wall time, peak RAM, CPU mean, peak GPU memory, energy, emissions). ``--json`` prints the same data.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtel import semconv
from runtel.cli import problem, render, run_root
from runtel.cli.show import _child_run_trees, build_span_tree
from runtel.rundir.reader import LineStats, effective_status, read_record, read_spans, resolve_run, resource_usage
from runtel.rundir.schema import RunRecord

__all__ = ("BLOCK_METRICS", "RUN_METRICS", "compare_runs", "register")

_RSS = f"{semconv.USAGE_MEMORY_PREFIX}{semconv.MEMORY_KIND_RSS}.max.{semconv.SCOPE_COMBINED}"
_SEP = "/"

#: run-level metrics: (key, label, unit)
RUN_METRICS: tuple[tuple[str, str, str], ...] = (
    ("wall_s", "wall time", "s"),
    ("peak_rss_bytes", "peak RAM (RSS)", "bytes"),
    ("cpu_mean_cores", "CPU mean (cores)", "cores"),
    ("cpu_time_s", "CPU time", "s"),
    ("peak_gpu_memory_bytes", "peak GPU RAM", "bytes"),
    ("energy_j", "energy", "J"),
    ("emissions_g", "emissions", "gCO2eq"),
)

#: block metrics: (key, label, unit)
BLOCK_METRICS: tuple[tuple[str, str, str], ...] = (
    ("count", "count", ""),
    ("total_s", "total time", "s"),
    ("mean_s", "mean time", "s"),
    ("max_s", "max time", "s"),
    ("peak_rss_bytes", "peak RSS", "bytes"),
    ("peak_gpu_memory_bytes", "peak GPU RAM", "bytes"),
    ("energy_j", "energy", "J"),
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``compare`` sub-command."""
    p = sub.add_parser(
        "compare",
        help="compare runs block by block",
        description="Compare two or more runs: run-level resource usage, and per block (matched by the path of "
        "span names below the run span) count, time, peak RSS, peak GPU memory and energy, with differences and "
        "ratios relative to the first run. RUN is a run id, a unique prefix, a path to a run folder, or 'latest'.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="runs to compare (the first one is the baseline)")
    p.add_argument("--dir", help="run folder root (default: $RUNTEL_DIR or ./runs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_compare)




# --- collection ------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _opt_max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _opt_sum(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


@dataclass
class BlockStats:
    """Aggregate of every span that has one path in one run."""

    path: str
    kind: str | None = None
    durations: list[float] = field(default_factory=list)
    errors: int = 0
    peak_rss_bytes: float | None = None
    peak_gpu_memory_bytes: float | None = None
    energy_j: float | None = None

    def add(self, node: Mapping[str, Any]) -> None:
        """Fold one span (a node of :func:`runtel.cli.show.build_span_tree`) into the aggregate."""
        attrs: Mapping[str, Any] = node.get("attributes") or {}
        self.kind = self.kind or node.get("kind")
        self.durations.append(float(node.get("duration_s") or 0.0))
        if node.get("status") == "error":
            self.errors += 1
        self.peak_rss_bytes = _opt_max(self.peak_rss_bytes, _num(attrs.get(_RSS)))
        gpu = _num(attrs.get(semconv.USAGE_GPU_MEMORY_TREE_MAX))
        if gpu is None:
            gpu = _num(attrs.get(semconv.USAGE_GPU_MEMORY_USED_MAX))
        self.peak_gpu_memory_bytes = _opt_max(self.peak_gpu_memory_bytes, gpu)
        self.energy_j = _opt_sum(self.energy_j, _num(attrs.get(semconv.USAGE_ENERGY_TOTAL)))

    def metrics(self) -> dict[str, float | None]:
        """The values compared across runs (see :data:`BLOCK_METRICS`)."""
        n = len(self.durations)
        total = sum(self.durations)
        return {
            "count": float(n),
            "total_s": total,
            "mean_s": total / n if n else None,
            "max_s": max(self.durations) if n else None,
            "peak_rss_bytes": self.peak_rss_bytes,
            "peak_gpu_memory_bytes": self.peak_gpu_memory_bytes,
            "energy_j": self.energy_j,
        }


def block_stats(trees: Sequence[Mapping[str, Any]], root_span_id: str | None) -> dict[str, BlockStats]:
    """Blocks by path, in first-seen order (depth first, by start time).

    The run's own span (``root_span_id``) is not a block: paths start below it. Other top-level spans (e.g.
    spans whose parent was never written) keep their own name as the first path element.
    """
    out: dict[str, BlockStats] = {}

    def visit(node: Mapping[str, Any], prefix: str) -> None:
        path = f"{prefix}{_SEP}{node['name']}" if prefix else str(node["name"])
        stats = out.get(path)
        if stats is None:
            stats = out[path] = BlockStats(path)
        stats.add(node)
        for child in node.get("children") or ():
            visit(child, path)

    for tree in trees:
        if root_span_id is not None and tree.get("span_id") == root_span_id:
            for child in tree.get("children") or ():
                visit(child, "")
        else:
            visit(tree, "")
    return out


def run_metrics(record: RunRecord) -> dict[str, float | None]:
    """Run-level values from run.json (``resource_usage`` plus the recorded duration)."""
    usage = resource_usage(record)
    gpu_ram = usage.get("max_gpu_ram") or {}
    compute = usage.get("compute_time") or {}
    wall = _num(record.get("duration_s"))
    gpu = _num(gpu_ram.get("tree_bytes"))
    return {
        "wall_s": wall if wall is not None else _num(compute.get("wall_seconds")),
        "peak_rss_bytes": _num(((usage.get("max_ram") or {}).get("combined") or {}).get("max_rss_bytes")),
        "cpu_mean_cores": _num(((usage.get("cpu_utilization") or {}).get("combined") or {}).get("mean_sum_fraction")),
        "cpu_time_s": _num(compute.get("cpu_seconds")),
        "peak_gpu_memory_bytes": gpu if gpu is not None else _num(gpu_ram.get("system_used_bytes")),
        "energy_j": _num((usage.get("energy") or {}).get("total_joules")),
        "emissions_g": _num((usage.get("emissions") or {}).get("grams_co2eq")),
    }


@dataclass
class LoadedRun:
    """One run to compare: its record and its blocks."""

    ref: str
    record: RunRecord
    blocks: dict[str, BlockStats]
    problems: list[str] = field(default_factory=list)


def load_run(ref: str, root: Path) -> LoadedRun:
    """Resolve ``ref`` and read its record and span tree (child runs included).

    Raises:
        RunNotFound: nothing matches ``ref``.
        RunFolderError: the folder cannot be read.
    """
    run_dir = resolve_run(ref, root)
    record = read_record(run_dir)
    run_id = str(record.get("id"))
    stats = LineStats()
    spans = read_spans(run_dir, stats)
    problems: list[str] = []
    children = _child_run_trees(run_id, run_dir.parent, {run_id}, problems)
    own = [*record.get("problems", ()), *stats.problems()]
    trees = build_span_tree(spans, children, own)
    problems[:0] = [f"run {run_id}: {p}" for p in own]
    return LoadedRun(ref, record, block_stats(trees, record.get("span_id")), problems)


# --- comparison ------------------------------------------------------------------------------------------


def _compare_values(values: Sequence[float | None]) -> dict[str, list[float | None]]:
    base = values[0] if values else None
    diffs: list[float | None] = []
    ratios: list[float | None] = []
    for value in values:
        if value is None or base is None:
            diffs.append(None)
            ratios.append(None)
            continue
        diffs.append(value - base)
        ratios.append(value / base if base != 0 else None)
    return {"values": list(values), "diff": diffs, "ratio": ratios}


def _metric_table(
    keys: Iterable[tuple[str, str, str]], per_run: Sequence[Mapping[str, float | None] | None]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, _label, unit in keys:
        values = [None if m is None else m.get(key) for m in per_run]
        out[key] = {"unit": unit, **_compare_values(values)}
    return out


def compare_runs(runs: Sequence[LoadedRun]) -> dict[str, Any]:
    """The comparison as plain data (what ``--json`` prints)."""
    paths: dict[str, None] = {}
    for run in runs:
        for path in run.blocks:
            paths.setdefault(path, None)
    blocks = []
    for path in paths:
        present = [path in run.blocks for run in runs]
        kind = next((run.blocks[path].kind for run in runs if path in run.blocks), None)
        per_run = [run.blocks[path].metrics() if path in run.blocks else None for run in runs]
        errors = [run.blocks[path].errors if path in run.blocks else None for run in runs]
        blocks.append(
            {
                "path": path,
                "name": path.rsplit(_SEP, 1)[-1],
                "depth": path.count(_SEP),
                "kind": kind,
                "present": present,
                "errors": errors,
                "metrics": _metric_table(BLOCK_METRICS, per_run),
            }
        )
    return {
        "baseline": runs[0].record.get("id"),
        "runs": [
            {
                "ref": run.ref,
                "id": run.record.get("id"),
                "name": run.record.get("name"),
                "status": effective_status(run.record),
                "dir": run.record.get("dir"),
                "samples": resource_usage(run.record).get("samples"),
            }
            for run in runs
        ],
        "problems": [p for run in runs for p in run.problems],
        "run": {"metrics": _metric_table(RUN_METRICS, [run_metrics(run.record) for run in runs])},
        "blocks": blocks,
    }


# --- rendering -------------------------------------------------------------------------------------------


def _fmt_count(value: float) -> str:
    return f"{value:.0f}"


def _fmt_cores(value: float) -> str:
    return f"{value:.2f}"


def _fmt_joules(value: float) -> str:
    return f"{value:.1f} J" if abs(value) >= 1 else f"{value * 1000:.0f} mJ"


def _fmt_grams(value: float) -> str:
    return f"{value:.4f} g"


def _fmt_seconds(value: float) -> str:
    return render.format_duration(abs(value)) if value >= 0 else "-" + render.format_duration(-value)


def _fmt_bytes(value: float) -> str:
    return render.format_bytes(abs(value)) if value >= 0 else "-" + render.format_bytes(-value)


_FORMATS: dict[str, Callable[[float], str]] = {
    "s": _fmt_seconds,
    "bytes": _fmt_bytes,
    "cores": _fmt_cores,
    "J": _fmt_joules,
    "gCO2eq": _fmt_grams,
    "": _fmt_count,
}


def _cell(metric: Mapping[str, Any], i: int) -> str:
    fmt = _FORMATS.get(str(metric.get("unit")), _fmt_cores)
    value = metric["values"][i]
    if value is None:
        return "-"
    text = fmt(value)
    if i == 0:
        return text
    diff, ratio = metric["diff"][i], metric["ratio"][i]
    if diff is None:
        return text
    sign = "+" if diff >= 0 else "-"
    extra = f"{sign}{fmt(abs(diff))}"
    if ratio is not None:
        extra += f", ×{ratio:.2f}"
    return f"{text} ({extra})"


def _all_missing(metric: Mapping[str, Any]) -> bool:
    return all(v is None for v in metric["values"])


def _print(result: Mapping[str, Any]) -> None:
    from rich.markup import escape  # deferred: rich, only for terminal output (~13 ms)
    from rich.table import Table  # deferred: rich, only for terminal output (~16 ms)

    console = render.console()
    runs = result["runs"]
    headers = [f"{escape(str(r['id']))}\n{escape(str(r['name']))} [{escape(str(r['status']))}]" for r in runs]
    headers[0] += "\n(baseline)"

    run_table = Table(title="runs", title_justify="left")
    run_table.add_column("metric")
    for header in headers:
        run_table.add_column(header, overflow="fold")
    labels = {key: label for key, label, _unit in RUN_METRICS}
    for key, metric in result["run"]["metrics"].items():
        if _all_missing(metric):
            continue
        run_table.add_row(labels.get(key, key), *(_cell(metric, i) for i in range(len(runs))))
    console.print(run_table)

    if not result["blocks"]:
        console.print("[dim](no blocks recorded in these runs)[/dim]")
        return
    block_table = Table(title="blocks (matched by path; values relative to the baseline)", title_justify="left")
    block_table.add_column("block", overflow="fold")
    block_table.add_column("metric")
    for header in headers:
        block_table.add_column(header, overflow="fold")
    block_labels = {key: label for key, label, _unit in BLOCK_METRICS}
    for block in result["blocks"]:
        indent = "  " * int(block["depth"])
        name = f"{indent}{escape(str(block['name']))}"
        if not all(block["present"]):
            name += " [dim](not in every run)[/dim]"
        first = True
        for key, metric in block["metrics"].items():
            if _all_missing(metric):
                continue
            block_table.add_row(
                name if first else "",
                block_labels.get(key, key),
                *(_cell(metric, i) for i in range(len(runs))),
                end_section=False,
            )
            first = False
        block_table.add_section()
    console.print(block_table)


def _cmd_compare(args: argparse.Namespace) -> int:
    root = run_root(args)
    refs: list[str] = list(args.runs)
    if len(refs) < 2:
        sys.stderr.write("runtel: error: compare needs at least two runs\n")
        return 2
    runs = [load_run(ref, root) for ref in refs]
    result = compare_runs(runs)
    for text in result["problems"]:
        problem(text)
    if args.json:
        render.print_json(result)
        return 0
    _print(result)
    return 0
