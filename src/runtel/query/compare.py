"""Comparing recorded runs: what differs in config, results and environment, and what each block cost.

Blocks are matched across runs by their *path*: the span names from just below the run's root span down to
the span (``train/epoch/train_step``), so renaming the run (``runtel run --name``) does not break matching.
Child runs (nested runs, and runs started by a command under ``runtel run``) are included where they ran,
exactly as ``runtel show`` nests them. Repeated spans with the same path are aggregated: by default call
count, total / mean / max duration, peak RSS and peak GPU memory (max over calls) and energy (sum over
calls); with ``stat`` one statistic (:data:`STATS`) of each value over the calls.

Every number is compared with the first run: difference (``value - first``) and ratio (``value / first``;
none when the first run's value is 0 or unknown). :func:`compare` is the notebook API; ``runtel compare``
prints the same data (``--json`` as it is).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtel.query.energy import cpu_energy_factor
from runtel.query.spanagg import (
    FULL_TREE_BYTES,
    Usage,
    aggregate_run,
    child_run_levels,
    spans_bytes,
    usage_figures,
    walk_paths,
)
from runtel.query.spantree import build_span_tree, child_run_trees
from runtel.rundir.index import resolve_run
from runtel.rundir.reader import (
    LineStats,
    effective_status,
    environment,
    git_info,
    read_record,
    read_spans,
    resource_usage,
)
from runtel.rundir.schema import RunRecord
from runtel.values.attributes import to_attributes

__all__ = (
    "BLOCK_METRICS",
    "RUN_METRICS",
    "STATS",
    "BlockStats",
    "LoadedRun",
    "block_metric_keys",
    "compare",
    "compare_runs",
    "load_run",
)

_SEP = "/"

#: per-block statistics ``stat`` may name
STATS: tuple[str, ...] = ("min", "max", "mean", "std", "total")
#: differing packages listed at most (a changed environment can differ in hundreds)
MAX_PACKAGE_ROWS = 50

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

#: block metrics without ``stat``: (key, label, unit)
BLOCK_METRICS: tuple[tuple[str, str, str], ...] = (
    ("count", "count", ""),
    ("total_s", "total time", "s"),
    ("mean_s", "mean time", "s"),
    ("max_s", "max time", "s"),
    ("peak_rss_bytes", "peak RSS", "bytes"),
    ("peak_gpu_memory_bytes", "peak GPU RAM", "bytes"),
    ("energy_j", "energy", "J"),
)


def block_metric_keys(stat: str | None = None) -> tuple[tuple[str, str, str], ...]:
    """The block metrics (key, label, unit) of a comparison with ``stat`` (None: :data:`BLOCK_METRICS`)."""
    if stat is None:
        return BLOCK_METRICS
    return (
        ("count", "count", ""),
        ("time_s", f"time ({stat})", "s"),
        ("peak_rss_bytes", f"peak RSS ({stat})", "bytes"),
        ("peak_gpu_memory_bytes", f"peak GPU RAM ({stat})", "bytes"),
        ("energy_j", f"energy ({stat})", "J"),
    )


def _fsum(values: Sequence[float]) -> float:
    """``math.fsum``, or the plain sum where it raises (a hostile inf beside -inf: nan; an overflow: inf)."""
    try:
        return math.fsum(values)
    except (ValueError, OverflowError):
        return sum(values)


def _aggregate(values: Sequence[float], stat: str) -> float | None:
    """``stat`` of ``values``; std is the sample standard deviation (n - 1), none below two values."""
    if not values:
        return None
    if stat == "min":
        return min(values)
    if stat == "max":
        return max(values)
    if stat == "total":
        return _fsum(values)
    if stat == "mean":
        return _fsum(values) / len(values)
    if stat == "std":
        if len(values) < 2:
            return None
        try:
            return statistics.stdev(values)
        except Exception:  # non-finite values: statistics raises ValueError, AttributeError... by version
            return math.nan
    raise ValueError(f"stat must be one of {', '.join(STATS)}, got {stat!r}")


# --- collection ------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@dataclass
class BlockStats:
    """Every span that has one path in one run: its calls' durations and usage."""

    path: str
    kind: str | None = None
    durations: list[float] = field(default_factory=list)
    errors: int = 0
    rss: list[float] = field(default_factory=list)
    gpu_memory: list[float] = field(default_factory=list)
    energy: list[float] = field(default_factory=list)

    def add(self, node: Mapping[str, Any]) -> None:
        """Fold one span (a node of :func:`runtel.query.spantree.build_span_tree`) into the aggregate."""
        attrs: Mapping[str, Any] = node.get("attributes") or {}
        self.kind = self.kind or node.get("kind")
        self.durations.append(float(node.get("duration_s") or 0.0))
        if node.get("status") == "error":
            self.errors += 1
        rss, gpu, energy = usage_figures(attrs)
        if rss is not None:
            self.rss.append(rss)
        if gpu is not None:
            self.gpu_memory.append(gpu)
        if energy is not None:
            self.energy.append(energy)

    def metrics(self, stat: str | None = None) -> dict[str, float | None]:
        """The values compared across runs (see :func:`block_metric_keys`)."""
        n = len(self.durations)
        if stat is not None:
            return {
                "count": float(n),
                "time_s": _aggregate(self.durations, stat),
                "peak_rss_bytes": _aggregate(self.rss, stat),
                "peak_gpu_memory_bytes": _aggregate(self.gpu_memory, stat),
                "energy_j": _aggregate(self.energy, stat),
            }
        total = _fsum(self.durations)
        return {
            "count": float(n),
            "total_s": total,
            "mean_s": total / n if n else None,
            "max_s": max(self.durations) if n else None,
            "peak_rss_bytes": max(self.rss) if self.rss else None,
            "peak_gpu_memory_bytes": max(self.gpu_memory) if self.gpu_memory else None,
            "energy_j": _fsum(self.energy) if self.energy else None,
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


class StreamedBlockStats:
    """:class:`BlockStats` of a run too large to hold: the same metrics from running sums (std by Welford)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.usage = Usage()
        self.errors = 0

    @property
    def kind(self) -> str | None:
        """The span kind (``runtel.kind``) of the path's first span."""
        return self.usage.kind

    def metrics(self, stat: str | None = None) -> dict[str, float | None]:
        """The values compared across runs (see :func:`block_metric_keys`)."""
        u = self.usage
        n = u.durations.n
        if stat is not None:
            if stat not in STATS:
                raise ValueError(f"stat must be one of {', '.join(STATS)}, got {stat!r}")
            return {"count": float(n), "time_s": u.durations.stat(stat), "peak_rss_bytes": u.rss.stat(stat),
                    "peak_gpu_memory_bytes": u.gpu.stat(stat), "energy_j": u.energy.stat(stat)}
        return {
            "count": float(n),
            "total_s": u.durations.total,
            "mean_s": u.durations.total / n if n else None,
            "max_s": u.durations.max if n else None,
            "peak_rss_bytes": u.rss.stat("max"),
            "peak_gpu_memory_bytes": u.gpu.stat("max"),
            "energy_j": u.energy.stat("total"),
        }





def _streamed_blocks(run_dir: Path, record: RunRecord, run_id: str, stats: LineStats,
                     problems: list[str]) -> tuple[dict[str, Any], list[str]]:
    graft = child_run_levels(run_id, run_dir.parent, {run_id}, problems, usage=True)
    agg = aggregate_run(run_dir, stats, graft, usage=True, cpu_energy=cpu_energy_factor(record))
    blocks: dict[str, Any] = {}
    for path, group in walk_paths(agg.root_level(), record.get("span_id")):
        block = blocks.get(path)
        if block is None:
            block = blocks[path] = StreamedBlockStats(path)
        block.errors += group.errors
        if group.usage is not None:
            block.usage.merge(group.usage)
    return blocks, agg.problems()


@dataclass
class LoadedRun:
    """One run to compare: its record and its blocks."""

    ref: str
    record: RunRecord
    blocks: dict[str, Any]  # path -> BlockStats, or StreamedBlockStats for a large run
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
    problems: list[str] = []
    if spans_bytes(run_dir) > FULL_TREE_BYTES:  # a large run: aggregate while reading, in bounded memory
        blocks, late = _streamed_blocks(run_dir, record, run_id, stats, problems)
        own = [*record.get("problems", ()), *stats.problems(), *late]
        problems[:0] = [f"run {run_id}: {p}" for p in own]
        return LoadedRun(ref, record, blocks, problems)
    spans = read_spans(run_dir, stats)
    children = child_run_trees(run_id, run_dir.parent, {run_id}, problems)
    own = [*record.get("problems", ()), *stats.problems()]
    trees = build_span_tree(spans, children, own, cpu_energy=cpu_energy_factor(record))
    problems[:0] = [f"run {run_id}: {p}" for p in own]
    return LoadedRun(ref, record, dict(block_stats(trees, record.get("span_id"))), problems)


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


_MISSING = object()


def _differing(per_run: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Keys whose value is not the same in every run (absent counts as different), in first-seen order."""
    keys: dict[str, None] = {}
    for values in per_run:
        keys.update(dict.fromkeys(values))
    rows = []
    for key in keys:
        got = [values.get(key, _MISSING) for values in per_run]
        if any(g != got[0] or (g is _MISSING) != (got[0] is _MISSING) for g in got):
            rows.append({"key": key, "values": [None if g is _MISSING else g for g in got],
                         "present": [g is not _MISSING for g in got]})
    return rows


def config_diff(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Config keys (flattened: ``model.lr``) that differ between the runs, each with every run's value."""
    flat = []
    for record in records:
        config = record.get("config")
        if isinstance(config, Mapping):
            flat.append(dict(to_attributes(config, prefix="", max_length=200)))
        else:
            flat.append({} if config is None else {"(config)": str(config)[:200]})
    return _differing(flat)


def environment_diff(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Git commit, dirty flag, Python and package versions that differ (at most :data:`MAX_PACKAGE_ROWS` packages)."""
    per_run: list[dict[str, Any]] = []
    for record in records:
        env = environment(record)
        git = git_info(record)
        values: dict[str, Any] = {}
        if git.get("commit"):
            values["git commit"] = str(git.get("commit"))[:12]
            values["git dirty"] = bool(git.get("dirty"))
        python = env.get("python")
        if isinstance(python, Mapping) and python.get("version"):
            values["python"] = str(python.get("version"))
        packages = env.get("packages")
        if isinstance(packages, Mapping):
            values.update({f"package {k}": str(v) for k, v in packages.items()})
        per_run.append(values)
    rows = _differing(per_run)
    packages_rows = [r for r in rows if r["key"].startswith("package ")]
    if len(packages_rows) > MAX_PACKAGE_ROWS:
        keep = {id(r) for r in packages_rows[:MAX_PACKAGE_ROWS]}
        rows = [r for r in rows if not r["key"].startswith("package ") or id(r) in keep]
        rows.append({"key": f"(+{len(packages_rows) - MAX_PACKAGE_ROWS} more packages differ)",
                     "values": [None] * len(records), "present": [False] * len(records)})
    return rows


def _result_values(record: RunRecord) -> dict[str, Any]:
    results = record.get("results") or {}
    values: dict[str, Any] = dict(results.get("final") or {})
    series: Mapping[str, Any] = results.get("series") or {}
    for name, summary in series.items():
        if isinstance(summary, Mapping):
            values[f"{name} (last)"] = summary.get("last")
            values[f"{name} (min)"] = summary.get("min")
    return values


def results_diff(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Every result of any run (final values, each series' last and min): values, and for numbers diff/ratio."""
    per_run = [_result_values(r) for r in records]
    names: dict[str, None] = {}
    for values in per_run:
        names.update(dict.fromkeys(values))
    rows = []
    for name in names:
        raw = [values.get(name) for values in per_run]
        numbers = [_num(v) for v in raw]
        if all(n is not None or v is None for n, v in zip(numbers, raw, strict=True)):
            rows.append({"name": name, "numeric": True, **_compare_values(numbers)})
        else:
            rows.append({"name": name, "numeric": False, "values": raw, "diff": [None] * len(raw),
                         "ratio": [None] * len(raw)})
    return rows


def compare_runs(runs: Sequence[LoadedRun], stat: str | None = None) -> dict[str, Any]:
    """The comparison as plain data (what ``runtel compare --json`` prints)."""
    if stat is not None and stat not in STATS:
        raise ValueError(f"stat must be one of {', '.join(STATS)}, got {stat!r}")
    paths: dict[str, None] = {}
    for run in runs:
        for path in run.blocks:
            paths.setdefault(path, None)
    keys = block_metric_keys(stat)
    blocks = []
    for path in paths:
        present = [path in run.blocks for run in runs]
        kind = next((run.blocks[path].kind for run in runs if path in run.blocks), None)
        per_run = [run.blocks[path].metrics(stat) if path in run.blocks else None for run in runs]
        errors = [run.blocks[path].errors if path in run.blocks else None for run in runs]
        blocks.append(
            {
                "path": path,
                "name": path.rsplit(_SEP, 1)[-1],
                "depth": path.count(_SEP),
                "kind": kind,
                "present": present,
                "errors": errors,
                "metrics": _metric_table(keys, per_run),
            }
        )
    records = [run.record for run in runs]
    return {
        "baseline": runs[0].record.get("id"),
        "stat": stat,
        "runs": [
            {
                "ref": run.ref,
                "id": run.record.get("id"),
                "name": run.record.get("name"),
                "status": effective_status(run.record),
                "dir": run.record.get("dir"),
                "samples": resource_usage(run.record).get("samples"),
                # the run's energy (and so its blocks') is modelled, not measured, in part at least
                "energy_estimated": _energy_estimated(run.record),
            }
            for run in runs
        ],
        "problems": [p for run in runs for p in run.problems],
        "config": config_diff(records),
        "results": results_diff(records),
        "environment": environment_diff(records),
        "run": {"metrics": _metric_table(RUN_METRICS, [run_metrics(run.record) for run in runs])},
        "blocks": blocks,
    }


def _energy_estimated(record: RunRecord) -> bool:
    energy = resource_usage(record).get("energy")
    if isinstance(energy, Mapping) and "estimated" in energy:
        return energy.get("estimated") is True
    return cpu_energy_factor(record) is not None  # a run still open or killed: its start record says so


def compare(*runs: str | os.PathLike[str] | Any, stat: str | None = None,
            dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Compare recorded runs (the first is the baseline): the data ``runtel compare --json`` prints.

    Each run is an id, a unique id prefix, a run folder, ``"latest"``, or an object with a ``dir``
    (a :class:`runtel.Run`, or what :func:`runtel.load` returns). ``stat`` (one of :data:`STATS`) gives
    per-block statistics over the calls of each block; without it, count / total / mean / max time.
    ``dir`` is the runs root (default ``RUNTEL_DIR`` or ``./runs``).

    Example:
        >>> table = runtel.compare("latest", "2026", stat="mean")  # doctest: +SKIP
        >>> table["results"][0]["diff"]  # doctest: +SKIP

    Raises:
        ValueError: fewer than two runs, or an unknown ``stat``.
        runtel.errors.RunNotFound: a run cannot be found.
    """
    if len(runs) < 2:
        raise ValueError("compare needs at least two runs")
    if stat is not None and stat not in STATS:
        raise ValueError(f"stat must be one of {', '.join(STATS)}, got {stat!r}")
    if dir is None:
        from runtel import _sdk  # deferred: the composition root (~60 ms), only for the default root

        dir = _sdk.settings().dir
    root = Path(dir)
    refs = [os.fspath(r) if isinstance(r, (str, os.PathLike)) else os.fspath(r.dir) for r in runs]
    return Comparison(compare_runs([load_run(ref, root) for ref in refs], stat))


class Comparison(dict[str, Any]):
    """What :func:`compare` returns: the plain data (a dict), which a notebook shows as HTML tables."""

    def _repr_html_(self) -> str:
        """Runs, then every section that differs (config, results, environment), then the block table."""
        import html  # deferred: html (~0.3 ms), only when a notebook renders the comparison

        def cell(value: Any) -> str:
            text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
            return f"<td>{html.escape(text if len(text) <= 120 else text[:119] + '…')}</td>"

        def table(title: str, rows: Sequence[Mapping[str, Any]]) -> str:
            if not rows:
                return ""
            columns = list(dict.fromkeys(key for row in rows for key in row))
            head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
            body = "".join("<tr>" + "".join(cell(row.get(c, "")) for c in columns) + "</tr>" for row in rows)
            return f"<h4>{html.escape(title)}</h4><table><tr>{head}</tr>{body}</table>"

        parts = [table("runs", self.get("runs") or [])]
        for section in ("config", "results", "environment"):
            value = self.get(section)
            rows = value if isinstance(value, list) else [{"key": k, "values": v} for k, v in (value or {}).items()]
            parts.append(table(section, [r if isinstance(r, Mapping) else {"value": r} for r in rows]))
        blocks = [{"block": "  " * int(b.get("depth") or 0) + str(b.get("name")),
                   **{key: m.get("values") for key, m in (b.get("metrics") or {}).items() if isinstance(m, Mapping)}}
                  for b in self.get("blocks") or [] if isinstance(b, Mapping)]
        parts.append(table(f"blocks (stat: {self.get('stat') or 'default'})", blocks))
        parts += [f"<p>problem: {html.escape(str(p))}</p>" for p in self.get("problems") or []]
        return "".join(parts)
