"""``runtel ls`` and ``runtel show``: list recorded runs, and show one run's record and span tree."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runtel import semconv
from runtel.cli import problem, render, run_root
from runtel.rundir.reader import (
    LineStats,
    SpanRecord,
    effective_status,
    git_info,
    list_runs,
    parent_run_id,
    read_record,
    read_spans,
    resolve_run,
    resource_usage,
)
from runtel.rundir.schema import RunRecord

__all__ = ("MAX_TREE_DEPTH", "build_span_tree", "register_ls", "register_show")

#: siblings with the same name are folded into one line when there are more than this many
FOLD_THRESHOLD = 5
#: spans nested deeper than this are not shown (a tree walk must not recurse without bound)
MAX_TREE_DEPTH = 128
_USAGE = semconv.USAGE_PREFIX


def report_record(record: RunRecord) -> None:
    """One :func:`runtel.cli.problem` line per problem the reader found in a run's record."""
    for text in record.get("problems", ()):
        problem(f"run {record.get('id')}: {text}")


def report_lines(run_id: object, stats: LineStats) -> None:
    """One :func:`runtel.cli.problem` line per kind of line skipped in a run's JSON Lines file."""
    for text in stats.problems():
        problem(f"run {run_id}: {text}")


def register_ls(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ls`` sub-command."""
    p = sub.add_parser("ls", help="list recorded runs, newest first", description="List recorded runs, newest first.")
    p.add_argument("--dir", help="run folder root (default: $RUNTEL_DIR or ./runs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-n", "--limit", type=int, default=None, help="show at most N runs")
    p.set_defaults(handler=_cmd_ls)


def register_show(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``show`` sub-command."""
    p = sub.add_parser(
        "show",
        help="show a run's summary and span tree",
        description="Show a run's summary, resource usage and span tree. RUN is a run id, a unique prefix, "
        "a path to a run folder, or 'latest'.",
    )
    p.add_argument("run", help="run id, unique prefix, path, or 'latest'")
    p.add_argument("--dir", help="run folder root (default: $RUNTEL_DIR or ./runs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all-spans", action="store_true", help="do not fold repeated sibling spans")
    p.set_defaults(handler=_cmd_show)


def _summary_row(record: RunRecord) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": record.get("id"),
        "name": record.get("name"),
        "status": effective_status(record),
        "start_time": record.get("start_time"),
        "duration_s": record.get("duration_s"),
        "parent_run_id": parent_run_id(record),
        "dir": record.get("dir"),
    }
    if record.get("problems"):
        row["problems"] = record.get("problems")
    return row


def _cmd_ls(args: argparse.Namespace) -> int:
    runs = list_runs(run_root(args))
    if args.limit is not None:
        runs = runs[: args.limit]
    for record in runs:
        report_record(record)
    rows = [_summary_row(r) for r in runs]
    if args.json:
        render.print_json(rows)
        return 0
    console = render.console()
    if not rows:
        console.print(f"no runs in {run_root(args)}")
        return 0
    console.print(
        render.table(
            None,
            ["id", "name", "status", "start", "duration"],
            [
                [r["id"], r["name"], r["status"], (r["start_time"] or "")[:19].replace("T", " "),
                 render.format_duration(r["duration_s"])]
                for r in rows
            ],
        )
    )
    return 0


# --- span tree ---------------------------------------------------------------------------------------


def _node(span: SpanRecord) -> dict[str, Any]:
    return {
        "name": span.name,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "trace_id": span.trace_id,
        "start_time_unix_nano": span.start_ns,
        "duration_s": round(span.duration_s, 9),
        "status": {0: "unset", 1: "ok", 2: "error"}.get(span.status_code, "unset"),
        "status_message": span.status_message,
        "kind": span.attributes.get(semconv.SPAN_KIND),
        "run_id": span.attributes.get(semconv.RUN_ID),
        "attributes": span.attributes,
        "events": span.events,
        "links": span.links,
        "children": [],
    }


def build_span_tree(spans: Sequence[SpanRecord], extra_roots: Sequence[dict[str, Any]] = (),
                    problems: list[str] | None = None) -> list[dict[str, Any]]:
    """Nest spans under their parents; spans whose parent is not in the file become roots.

    ``extra_roots`` are already-built trees (child runs' spans) grafted under the span they name as parent.
    Parent links that form a cycle are cut (the earliest span of the cycle becomes a root), and spans
    nested deeper than :data:`MAX_TREE_DEPTH` are left out; both are said in ``problems``.
    """
    nodes = {s.span_id: _node(s) for s in spans}
    parent_of: dict[str, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for node in nodes.values():
        parent = nodes.get(node["parent_span_id"] or "")
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent["children"].append(node)
            parent_of[node["span_id"]] = parent
    for tree in extra_roots:
        parent = nodes.get(tree.get("parent_span_id") or "")
        (parent["children"] if parent is not None else roots).append(tree)
    reached = _reached(roots)
    cut = 0
    for node in sorted(nodes.values(), key=lambda n: n["start_time_unix_nano"]):
        if id(node) not in reached:  # on a parent cycle: no root leads to it
            parent_of[node["span_id"]]["children"].remove(node)
            roots.append(node)
            reached |= _reached([node])
            cut += 1
    if cut and problems is not None:
        problems.append(f"spans.jsonl: {cut} cycle(s) of parent links cut")
    for node in nodes.values():
        node["children"].sort(key=lambda n: n["start_time_unix_nano"])
    roots.sort(key=lambda n: n["start_time_unix_nano"])
    omitted = _limit_depth(roots, MAX_TREE_DEPTH)
    if omitted and problems is not None:
        problems.append(f"spans.jsonl: {omitted} span(s) nested deeper than {MAX_TREE_DEPTH} levels not shown")
    return roots


def _reached(roots: Sequence[dict[str, Any]]) -> set[int]:
    """ids of every node below ``roots`` (iterative)."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(node["children"])
    return seen


def _limit_depth(roots: Sequence[dict[str, Any]], limit: int) -> int:
    """Cut the trees at ``limit`` levels; returns how many spans were cut (iterative)."""
    omitted = 0
    stack = [(node, 1) for node in roots]
    while stack:
        node, depth = stack.pop()
        if depth >= limit and node["children"]:
            dropped = len(_reached(node["children"]))
            node["children"] = []
            node["omitted_descendants"] = dropped
            omitted += dropped
            continue
        stack.extend((child, depth + 1) for child in node["children"])
    return omitted


def _child_run_trees(run_id: str, root: Path, seen: set[str], problems: list[str] | None = None,
                     runs: Sequence[RunRecord] | None = None) -> list[dict[str, Any]]:
    """Span trees of runs that name ``run_id`` as their parent (nested runs and child processes)."""
    runs = list_runs(root) if runs is None else runs
    trees: list[dict[str, Any]] = []
    for record in runs:
        child_id = str(record.get("id"))
        if parent_run_id(record) != run_id or child_id in seen:
            continue
        seen.add(child_id)
        stats = LineStats()
        spans = read_spans(Path(record.get("dir", "")), stats)
        found = [*record.get("problems", ()), *stats.problems()]
        trees.extend(build_span_tree(spans, _child_run_trees(child_id, root, seen, problems, runs), found))
        if problems is not None:
            problems.extend(f"child run {child_id}: {p}" for p in found)
    return trees


def _usage_text(attributes: Mapping[str, Any]) -> str:
    parts = []
    samples = attributes.get(_USAGE + "samples")
    if samples == 0:
        return "[dim](unsampled)[/dim]"
    cpu = attributes.get(_USAGE + "cpu.utilization.mean")
    if isinstance(cpu, (int, float)):
        parts.append(f"cpu {cpu * 100:.0f}%")
    rss = attributes.get(_USAGE + "memory.rss.max.combined") or attributes.get(_USAGE + "memory.rss.max")
    if isinstance(rss, (int, float)):
        parts.append(f"rss {render.format_bytes(rss)}")
    gpu = attributes.get(semconv.USAGE_GPU_MEMORY_TREE_MAX) or attributes.get(semconv.USAGE_GPU_MEMORY_USED_MAX)
    if isinstance(gpu, (int, float)) and gpu:
        parts.append(f"gpu mem {render.format_bytes(gpu)}")
    energy = attributes.get(_USAGE + "energy.total")
    if isinstance(energy, (int, float)) and energy:
        parts.append(f"{energy:.1f} J")
    return "[dim]" + ", ".join(parts) + "[/dim]" if parts else ""


def _label(node: Mapping[str, Any]) -> str:
    from rich.markup import escape  # deferred: rich, only for terminal output (~12 ms)

    status = node["status"]
    mark = {"error": " [red]✗ error[/red]", "ok": ""}.get(status, "")
    kind = node.get("kind")
    name = f"[bold]{escape(node['name'])}[/bold]" if kind == semconv.KIND_RUN else escape(node["name"])
    usage = _usage_text(node["attributes"])
    message = f" [red]{escape(node['status_message'])}[/red]" if status == "error" and node["status_message"] else ""
    return f"{name}  {render.format_duration(node['duration_s'])}{mark}{message}  {usage}".rstrip()


def _add_children(tree: Any, children: Sequence[Mapping[str, Any]], fold: bool) -> None:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for child in children:
        groups.setdefault(child["name"], []).append(child)
    for child in children:
        group = groups.get(child["name"])
        if group is None:
            continue
        if fold and len(group) > FOLD_THRESHOLD:
            del groups[child["name"]]
            durations = [g["duration_s"] for g in group]
            errors = sum(1 for g in group if g["status"] == "error")
            from rich.markup import escape  # deferred: rich, only for terminal output (~12 ms)

            label = (
                f"{escape(child['name'])} ×{len(group)}  total {render.format_duration(sum(durations))}, "
                f"mean {render.format_duration(sum(durations) / len(group))}, max {render.format_duration(max(durations))}"
                + (f" [red]{errors} error(s)[/red]" if errors else "")
            )
            branch = tree.add(label)
            merged: list[Mapping[str, Any]] = [gc for g in group for gc in g["children"]]
            _add_children(branch, merged, fold)
        else:
            branch = tree.add(_label(child))
            _add_children(branch, child["children"], fold)


def _record_summary(record: RunRecord) -> dict[str, Any]:
    git = git_info(record)
    commit = git.get("commit")
    git_text = None
    if isinstance(commit, str) and commit:
        git_text = f"{commit[:12]} ({git.get('branch') or 'detached'}{', dirty' if git.get('dirty') else ''})"
    usage = resource_usage(record)
    summary = {
        "run": record.get("id"),
        "name": record.get("name"),
        "status": effective_status(record),
        "started": record.get("start_time"),
        "duration": render.format_duration(record.get("duration_s")),
        "exit code": record.get("exit_code"),
        "error": (record.get("error") or {}).get("message"),
        "trace id": record.get("trace_id"),
        "parent run": parent_run_id(record),
        "command": (record.get("attributes") or {}).get("runtel.command") or " ".join(record.get("argv") or []),
        "git": git_text,
        "seed": record.get("seed"),
        "tags": ", ".join(f"{k}={v}" for k, v in (record.get("tags") or {}).items()),
        "folder": record.get("dir"),
        "problems": "; ".join(record.get("problems", ())),
    }
    if usage:
        gpu_ram = usage.get("max_gpu_ram") or {}
        gpu = usage.get("gpu_utilization") or {}
        energy = usage.get("energy") or {}
        emissions = usage.get("emissions") or {}
        combined = (usage.get("max_ram") or {}).get("combined") or {}
        cpu_combined = (usage.get("cpu_utilization") or {}).get("combined") or {}
        summary.update(
            {
                "peak RAM (RSS)": render.format_bytes(combined.get("max_rss_bytes")),
                "peak RAM (PSS)": render.format_bytes(combined.get("max_pss_bytes"))
                if combined.get("max_pss_bytes") else None,
                "peak GPU RAM": render.format_bytes(gpu_ram.get("tree_bytes") or gpu_ram.get("system_used_bytes"))
                if (gpu_ram.get("tree_bytes") or gpu_ram.get("system_used_bytes")) else None,
                "CPU cores (mean/max)": _pair_cores(cpu_combined.get("mean_sum_fraction"),
                                                    cpu_combined.get("max_sum_fraction")),
                "GPU util (mean/max)": _pair_pct(gpu.get("mean_fraction"), gpu.get("max_fraction")),
                "energy": f"{energy['total_joules']:.1f} J" + (" (estimated)" if energy.get("estimated") else "")
                if isinstance(energy.get("total_joules"), (int, float)) else None,
                "emissions": f"{emissions['grams_co2eq']:.4f} gCO2eq"
                if isinstance(emissions.get("grams_co2eq"), (int, float)) else None,
                "samples": usage.get("samples"),
            }
        )
    return summary


def _pair_cores(mean: Any, peak: Any) -> str | None:
    if not isinstance(mean, (int, float)) or not isinstance(peak, (int, float)):
        return None
    return f"{mean:.2f} / {peak:.2f}"


def _pair_pct(mean: Any, peak: Any) -> str | None:
    if not isinstance(mean, (int, float)) or not isinstance(peak, (int, float)):
        return None
    return f"{mean * 100:.0f}% / {peak * 100:.0f}%"


def _lineage_lines(record: RunRecord) -> list[str]:
    """One line per artifact, source and metadata key (the details are in run.json / --json)."""
    lines: list[str] = []
    for name, art in (record.get("artifacts") or {}).items():
        digest = str(art.get("hash") or "")[:12]
        size = render.format_bytes(art.get("size"))
        lines.append(f"artifact  {name}: {art.get('path')} ({size}, {art.get('hash_kind', '')} {digest})")
    for src in record.get("sources") or ():
        run_id = src.get("run_id")
        origin = f"run {run_id}" if run_id else src.get("kind", "source")
        what = src.get("artifact_name") or src.get("path")
        lines.append(f"source    {what} <- {origin}")
    for key, value in (record.get("metadata") or {}).items():
        lines.append(f"metadata  {key} = {str(value)[:80]}")
    return lines


def _cmd_show(args: argparse.Namespace) -> int:
    root = run_root(args)
    run_dir = resolve_run(args.run, root)
    record = read_record(run_dir)
    stats = LineStats()
    spans = read_spans(run_dir, stats)
    run_id = str(record.get("id"))
    problems: list[str] = []
    children = _child_run_trees(run_id, run_dir.parent, {run_id}, problems)
    own = [*record.get("problems", ()), *stats.problems()]
    trees = build_span_tree(spans, children, own)
    problems[:0] = [f"run {run_id}: {p}" for p in own]
    for text in problems:
        problem(text)
    if args.json:
        render.print_json({"run": {**record, "status": effective_status(record)}, "spans": trees,
                           "problems": problems})
        return 0
    from rich.markup import escape  # deferred: rich, only for terminal output (~12 ms)
    from rich.panel import Panel  # deferred: rich, only for terminal output (~13 ms)
    from rich.tree import Tree  # deferred: rich, only for terminal output (~19 ms)

    console = render.console()
    summary = _record_summary(record)
    console.print(Panel(escape(render.kv_lines(summary)), title=f"run {escape(str(record.get('id')))}", expand=False))
    config = record.get("config")
    if isinstance(config, Mapping) and config:
        from runtel.values.attributes import to_attributes  # deferred: runtel.values.attributes (~2 ms)

        flat = to_attributes(config, prefix="", max_length=200)
        console.print(Panel(escape(render.kv_lines({k: v for k, v in list(flat.items())[:40]})), title="config",
                            expand=False))
    lineage_lines = _lineage_lines(record)
    if lineage_lines:
        console.print(Panel(escape("\n".join(lineage_lines)), title="artifacts, sources, metadata", expand=False))
    tree = Tree("[bold]spans[/bold]")
    _add_children(tree, trees, fold=not args.all_spans)
    if not trees:
        tree.add("[dim](no spans recorded yet)[/dim]")
    console.print(tree)
    return 0
