"""``runtel ls`` and ``runtel show``: list recorded runs, and show one run's record and span tree."""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

from runtel import semconv
from runtel.cli import problem, render, run_root
from runtel.errors import ConfigError
from runtel.query.energy import cpu_energy_factor
from runtel.query.spanagg import (
    FOLD_THRESHOLD,
    FULL_TREE_BYTES,
    Level,
    aggregate_run,
    child_run_levels,
    level_json,
    spans_bytes,
)
from runtel.query.spantree import MAX_TREE_DEPTH, build_span_tree, child_run_trees
from runtel.query.tracker import match_record
from runtel.rundir.index import complete_summaries, list_matching, list_summaries, newest_trees, resolve_run, session
from runtel.rundir.reader import (
    LineStats,
    effective_status,
    git_info,
    loss_notes,
    parent_run_id,
    read_record,
    read_spans,
    resource_usage,
)
from runtel.rundir.schema import STATUS_CORRUPT, STATUSES, RunRecord

__all__ = ("MAX_TREE_DEPTH", "build_span_tree", "parse_since", "register_ls", "register_show", "results_text")

#: rows `runtel ls` draws without -n / --all (rich needs ~1 ms a row: 10,000 rows took 10 s)
DEFAULT_LS_LIMIT = 50
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
    p.add_argument("-n", "--limit", type=_non_negative_int, default=None, metavar="N",
                   help=f"show at most N runs (default: the newest {DEFAULT_LS_LIMIT} in the table, all with --json; 0: all)")
    p.add_argument("--name", help="only runs with this name (shell wildcards allowed: 'train*')")
    p.add_argument("--tag", action="append", default=[], metavar="K=V",
                   help="only runs with this tag (repeatable; a bare tag K of run_span(tags=[...]) is K=true)")
    p.add_argument("--status", choices=[*STATUSES, STATUS_CORRUPT], help="only runs with this status")
    p.add_argument("--since", help="only runs started since: an ISO date/time, or an age like 30m, 2h, 7d")
    p.add_argument("--parent", metavar="ID", help="only the child runs of this run (id or unique prefix)")
    p.add_argument("--all", action="store_true",
                   help="list every run: worker runs too (hidden behind a count otherwise), and no default limit")
    p.set_defaults(handler=_cmd_ls)


def _non_negative_int(text: str) -> int:
    """``-n``'s value: a whole number, 0 or more (argparse reports anything else, exit code 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid non-negative int value: {text!r}")
    return value


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


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: runs named like this are a pool's or a process's workers: listed with --all only
WORKER_SUFFIX = ".worker"


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an age (``90s``, ``30m``, ``2h``, ``7d``, ``1w``) or an ISO date/time (UTC unless it says).

    Raises:
        ConfigError: neither.
    """
    match = _AGE.match(text)
    if match:
        now = now or datetime.now(timezone.utc)
        return now - timedelta(**{_AGE_UNITS[match.group(2)]: float(match.group(1))})
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text!r}: expected an ISO date/time or an age like 30m, 2h, 7d") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _short_number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)[:24]
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def results_text(record: RunRecord, limit: int = 4) -> str:
    """A few results in one cell: final values, then each series' last value (``loss~0.25``)."""
    results = record.get("results") or {}
    parts = [f"{k}={_short_number(v)}" for k, v in (results.get("final") or {}).items()
             if not isinstance(v, (dict, list))]
    series = cast("Mapping[str, Any]", results.get("series") or {})  # validated as a dict, not each entry
    for name, summary in series.items():
        if isinstance(summary, Mapping) and name not in (results.get("final") or {}):
            parts.append(f"{name}~{_series_last(summary)}")
    more = f" +{len(parts) - limit}" if len(parts) > limit else ""
    return " ".join(parts[:limit]) + more


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
    if record.get("results"):
        row["results"] = record.get("results")
    if record.get("problems"):
        row["problems"] = record.get("problems")
    return row


def _usage_error(args: argparse.Namespace, message: str) -> int:
    """One ``runtel: error:`` line (and the JSON error object under ``--json``), exit code 2: as ``runtel run``."""
    sys.stderr.write(f"runtel: error: {message}\n")
    if args.json:
        sys.stdout.write(json.dumps({"error": message, "type": "UsageError", "problems": []}) + "\n")
    return 2


def _is_worker(record: RunRecord) -> bool:
    return str(record.get("name") or "").endswith(WORKER_SUFFIX)


def _resolve_parent(ref: str, runs: Sequence[RunRecord]) -> str:
    ids = [str(r.get("id")) for r in runs if r.get("id")]
    if ref in ids:
        return ref
    found = [i for i in ids if i.startswith(ref)]
    if len(found) != 1:
        raise ConfigError(f"--parent {ref!r}: {'no run' if not found else f'{len(found)} runs'} match")
    return found[0]


def _filtered(runs: Sequence[RunRecord], args: argparse.Namespace, parent: str | None = None) -> list[RunRecord]:
    """``ls``'s filters (the Tracker's ``match_record``, plus wildcards in ``--name``); ``parent``: the
    ``--parent`` run's id when already resolved."""
    filters: dict[str, Any] = {}
    if args.tag:
        filters["tag"] = list(args.tag)
    if args.since:
        filters["since"] = parse_since(args.since)
    if args.parent:
        filters["parent"] = parent or _resolve_parent(args.parent, runs)
    status = args.status
    out = []
    for record in runs:
        if args.name and not fnmatch.fnmatchcase(str(record.get("name") or ""), args.name):
            continue
        if status is not None and effective_status(record) != status:
            continue
        if filters and not match_record(record, **filters):
            continue
        out.append(record)
    return out


def _tree_order(runs: Sequence[RunRecord]) -> list[tuple[int, RunRecord]]:
    """(depth, record) with each run's children right under it (oldest child first); top level newest first.

    A run whose parent is not among ``runs`` is top level, so the first row is what ``show latest`` shows
    when nothing is filtered.
    """
    ids = {r.get("id") for r in runs}
    children: dict[str, list[RunRecord]] = {}
    top: list[RunRecord] = []
    for record in runs:
        parent = parent_run_id(record)
        if parent is not None and parent in ids and parent != record.get("id"):
            children.setdefault(parent, []).append(record)
        else:
            top.append(record)
    out: list[tuple[int, RunRecord]] = []
    seen: set[int] = set()
    stack: list[tuple[int, RunRecord]] = [(0, r) for r in reversed(top)]
    while stack:  # iterative: parent links come from files and may be arbitrarily deep
        depth, record = stack.pop()
        if id(record) in seen:
            continue
        seen.add(id(record))
        out.append((depth, record))
        kids = children.get(str(record.get("id")), [])
        stack.extend((depth + 1, k) for k in kids)  # list_runs is newest first: popping gives oldest first
    out.extend((0, r) for r in runs if id(r) not in seen)  # parent cycles: still listed
    return out


def _listing(root: Path, args: argparse.Namespace) -> tuple[bool, list[tuple[int, RunRecord]], int, int]:
    """(whether there are runs at all, the rows to show, rows left out, worker runs hidden)."""
    limit = args.limit
    if limit is None and not args.json and not args.all:
        limit = DEFAULT_LS_LIMIT
    filtered = bool(args.name or args.tag or args.status or args.since or args.parent)
    if limit and not filtered and not args.all:  # the default `runtel ls`: the index reads only the rows shown
        found = newest_trees(root, limit, WORKER_SUFFIX)
        if found is not None and found[0]:
            return True, *found
    matched = None
    if filtered:  # the index narrows the runs down; the exact filters below decide
        tags = dict(t.partition("=")[::2] if "=" in t else (t, "true") for t in args.tag)
        since = parse_since(args.since) if args.since else None
        matched = list_matching(root, name=args.name, tags=tags, status=args.status, parent_ref=args.parent,
                                since_ns=int(since.timestamp() * 1e9) if since else None,
                                with_tags=bool(args.tag), with_results=args.json)
    if matched is not None:
        all_runs, total, parent = matched
        runs = _filtered(all_runs, args, parent)
    else:
        all_runs = list_summaries(root, tags=bool(args.tag), results=args.json)  # results: of the rows shown, below
        total = len(all_runs)
        runs = _filtered(all_runs, args)
    hidden = 0
    if not args.all:
        workers = [r for r in runs if _is_worker(r)]
        hidden = len(workers)
        runs = [r for r in runs if not _is_worker(r)]
    ordered = _tree_order(runs)
    more = 0
    if limit:
        more = max(0, len(ordered) - limit)
        ordered = ordered[:limit]
    return total > 0, ordered, more, hidden


def _cmd_ls(args: argparse.Namespace) -> int:
    for item in args.tag:
        if "=" not in item:  # as `runtel run --tag` says it (a bare tag K of run_span(tags=[...]) is K=true)
            return _usage_error(args, f"--tag expects K=V, got {item!r}")
    root = run_root(args)
    any_runs, ordered, more, hidden = _listing(root, args)
    if not args.json:
        complete_summaries(root, [r for _, r in ordered])
    for _, record in ordered:
        report_record(record)
    rows = [{**_summary_row(r), "depth": depth} for depth, r in ordered]
    if args.json:
        render.print_json(rows)
        return 0
    console = render.console()
    if not rows:
        console.print(f"no runs in {root}" if not any_runs else "no runs match")
    else:
        from rich.markup import escape  # deferred: rich, only for terminal output (~12 ms)

        with_results = any(r.get("results") for _, r in ordered)
        columns = ["id", "name", "status", "start", "duration"] + (["results"] if with_results else [])
        table_rows = []
        for depth, record in ordered:
            row = _summary_row(record)
            name = ("  " * (depth - 1) + "└ " if depth else "") + escape(str(row["name"] or ""))
            cells = [row["id"], name, row["status"], (row["start_time"] or "")[:19].replace("T", " "),
                     render.format_duration(row["duration_s"])]
            if with_results:
                cells.append(escape(results_text(record)))
            table_rows.append(cells)
        console.print(render.table(None, columns, table_rows))
    if more:
        console.print(f"{more:,} more run{'s' if more != 1 else ''} not shown: -n N shows N, --all shows every run")
    if hidden:
        console.print(f"+{hidden} worker run{'s' if hidden != 1 else ''}; --all shows them")
    return 0


# --- span tree (built in runtel.query.spantree) -------------------------------------------------------


def _usage_text(attributes: Mapping[str, Any]) -> str:
    """A span's usage in one line: counter figures (CPU, energy) always, sampled peaks where samples fell."""
    parts = []
    samples = attributes.get(_USAGE + "samples")
    cpu_time = attributes.get(semconv.USAGE_CPU_TIME)
    if samples == 0 and not isinstance(cpu_time, (int, float)):
        return "[dim](unsampled)[/dim]"
    cpu = attributes.get(_USAGE + "cpu.utilization.mean")
    if isinstance(cpu_time, (int, float)):  # counters at the edges: every block has it, sampled or not
        text = f"cpu {render.format_duration(cpu_time)}"
        children = attributes.get(semconv.USAGE_CPU_TIME_CHILDREN)
        if isinstance(children, (int, float)) and children > 0:
            text += f" ({render.format_duration(children)} child processes)"
        if attributes.get(semconv.USAGE_CPU_TIME_CHILDREN_PARTIAL) is True:
            text += " (live child processes not counted: more than 16, or unreadable)"
        parts.append(text + (f" at {cpu * 100:.0f}%" if isinstance(cpu, (int, float)) else ""))
    elif isinstance(cpu, (int, float)):
        parts.append(f"cpu {cpu * 100:.0f}%")
    rss = attributes.get(_USAGE + "memory.rss.max.combined") or attributes.get(_USAGE + "memory.rss.max")
    if isinstance(rss, (int, float)):
        parts.append(f"rss {render.format_bytes(rss)}")
    pss = attributes.get(_USAGE + "memory.pss.max.combined")
    processes = attributes.get(semconv.USAGE_PROCESSES_MAX)
    if isinstance(pss, (int, float)) and isinstance(processes, int) and processes > 1:
        parts.append(f"pss {render.format_bytes(pss)}")  # a tree of forked workers: shared pages counted once
    gpu = attributes.get(semconv.USAGE_GPU_MEMORY_TREE_MAX) or attributes.get(semconv.USAGE_GPU_MEMORY_USED_MAX)
    if isinstance(gpu, (int, float)) and gpu:
        parts.append(f"gpu mem {render.format_bytes(gpu)}")
    energy = attributes.get(_USAGE + "energy.total")
    if isinstance(energy, (int, float)) and energy:
        estimated = attributes.get(semconv.USAGE_ENERGY_ESTIMATED)
        parts.append(render.format_joules(energy) + (" est." if estimated else ""))
    if samples == 0 and not isinstance(rss, (int, float)):
        parts.append("peaks unsampled")
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

            cpu = [g["attributes"].get(semconv.USAGE_CPU_TIME) for g in group]
            energy = [g["attributes"].get(semconv.USAGE_ENERGY_TOTAL) for g in group]
            label = (
                f"{escape(child['name'])} ×{len(group)}  total {render.format_duration(sum(durations))}, "
                f"mean {render.format_duration(sum(durations) / len(group))}, max {render.format_duration(max(durations))}"
                + (f" [red]{errors} error(s)[/red]" if errors else "")
                + _group_usage_text(_total(cpu), _total(energy),
                                    any(g["attributes"].get(semconv.USAGE_ENERGY_ESTIMATED) for g in group))
            )
            branch = tree.add(label)
            merged: list[Mapping[str, Any]] = [gc for g in group for gc in g["children"]]
            _add_children(branch, merged, fold)
        else:
            branch = tree.add(_label(child))
            _add_children(branch, child["children"], fold)


def _total(values: Sequence[object]) -> float | None:
    """The sum of the numbers among ``values`` (booleans are not numbers); None when there is none."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(numbers) if numbers else None


def _group_usage_text(cpu_s: float | None, joules: float | None, estimated: bool) -> str:
    """A folded group's summed CPU time and energy, as the end of its line ("" when it has neither)."""
    parts = []
    if cpu_s is not None:
        parts.append(f"cpu {render.format_duration(cpu_s)}")
    if joules:
        parts.append(render.format_joules(joules) + (" est." if estimated else ""))
    return "  [dim]" + ", ".join(parts) + " in all[/dim]" if parts else ""


def _add_levels(tree: Any, level: Level, depth: int = 1, estimated: bool = False) -> None:
    """A folded tree (see :mod:`runtel.query.spanagg`): members one by one, folded groups as one line.

    ``estimated``: the run's CPU energy is an estimate (a folded group's energy then includes it).
    """
    from rich.markup import escape  # deferred: rich, only for terminal output (~12 ms)

    items: list[tuple[int, Any, Any]] = []
    for group in level.values():
        if group.members is None:
            items.append((group.first, group, group.children))
        else:
            items.extend((m.start, m, m.children) for m in group.members)
    items.sort(key=lambda item: item[0])
    for _, item, children in items:
        if getattr(item, "members", ()) is None:  # a folded group
            total = item.total_ns / 1e9
            label = (f"{escape(item.name)} ×{item.count}  total {render.format_duration(total)}, "
                     f"mean {render.format_duration(total / item.count)}, max {render.format_duration(item.max_ns / 1e9)}"
                     + (f" [red]{item.errors} error(s)[/red]" if item.errors else ""))
            if item.totals is not None:
                totals = item.totals.as_json()
                label += _group_usage_text(totals.get("cpu_s"), totals.get("energy_j"), estimated)
        else:
            attributes = item.attributes()
            label = _label({"name": item.name, "status": {0: "unset", 1: "ok", 2: "error"}.get(item.status, "unset"),
                            "kind": attributes.get(semconv.SPAN_KIND), "attributes": attributes,
                            "duration_s": item.duration_ns / 1e9, "status_message": item.status_message})
        branch = tree.add(label)
        if children and depth >= MAX_TREE_DEPTH:
            branch.add("[dim]… deeper spans not shown[/dim]")
        elif children:
            _add_levels(branch, children, depth + 1, estimated)



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
        "error": _error_text(record.get("error")),
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
        cpu_section: Any = usage.get("cpu_utilization") or {}
        processes = cpu_section.get("max_processes") if isinstance(cpu_section.get("max_processes"), int) else 1
        energy_section: Any = energy
        method: Any = energy_section.get("method") or {}
        summary.update(
            {
                "peak RAM (RSS)": render.format_bytes(combined.get("max_rss_bytes"))
                + (" — shared pages counted in every process" if processes > 1 else "")
                + (" (exact: kernel high-water mark)" if usage.get("peak_rss_exact") and processes <= 1 else "")
                if combined.get("max_rss_bytes") else None,
                "peak RAM (PSS)": render.format_bytes(combined.get("max_pss_bytes"))
                + " — shared pages split among the processes sharing them"
                if combined.get("max_pss_bytes") else None,
                "peak RAM (USS)": render.format_bytes(combined.get("max_uss_bytes")) + " — private pages only"
                if combined.get("max_uss_bytes") else None,
                "CPU time": _cpu_time_text(usage.get("compute_time") or {}),
                "peak GPU RAM": render.format_bytes(gpu_ram.get("tree_bytes") or gpu_ram.get("system_used_bytes"))
                if (gpu_ram.get("tree_bytes") or gpu_ram.get("system_used_bytes")) else None,
                "CPU cores (mean/max)": _pair_cores(cpu_combined.get("mean_sum_fraction"),
                                                    cpu_combined.get("max_sum_fraction")),
                "GPU util (mean/max)": _pair_pct(gpu.get("mean_fraction"), gpu.get("max_fraction")),
                "energy": f"{energy['total_joules']:.1f} J" + (" (estimated)" if energy.get("estimated") else "")
                if isinstance(energy.get("total_joules"), (int, float)) else None,
                "energy estimate": method.get("assumption") if energy.get("estimated") else None,
                "emissions": f"{emissions['grams_co2eq']:.4f} gCO2eq"
                if isinstance(emissions.get("grams_co2eq"), (int, float)) else None,
                "samples": usage.get("samples"),
            }
        )
    return summary


def _cpu_time_text(compute: Mapping[str, Any]) -> str | None:
    seconds = compute.get("cpu_seconds")
    if not isinstance(seconds, (int, float)):
        return None
    how = "counters at the edges" if compute.get("cpu_seconds_source") == "edge counters" else "sampled"
    floors = compute.get("floors") or []
    if floors:
        how += ", at least " + " and ".join(str(f) for f in floors)
    children = compute.get("children_cpu_seconds")
    if isinstance(children, (int, float)) and children > 0:
        how += f"; {children:.2f} s of it child processes"
    return f"{seconds:.2f} s ({how})"


def _series_last(summary: Any) -> str:
    """A series' last value; ``nan``/``inf`` for one JSON cannot hold (``last_text``)."""
    if not isinstance(summary, dict):
        return str(_short_number(None))
    text = summary.get("last_text")
    if summary.get("last") is None and isinstance(text, str) and text in ("nan", "inf", "-inf"):
        return text
    return str(_short_number(summary.get("last")))


def _error_text(error: object) -> str | None:
    """``KeyError: 'k'`` from the record's ``error`` (its type's last dotted part, then the message)."""
    if not isinstance(error, dict):
        return None
    kind = str(error.get("type") or "").rsplit(".", 1)[-1]
    message = error.get("message")
    if kind and message:
        return f"{kind}: {message}"
    return kind or (str(message) if message else None)


def _pair_cores(mean: Any, peak: Any) -> str | None:
    if not isinstance(mean, (int, float)) or not isinstance(peak, (int, float)):
        return None
    return f"{mean:.2f} / {peak:.2f}"


def _pair_pct(mean: Any, peak: Any) -> str | None:
    if not isinstance(mean, (int, float)) or not isinstance(peak, (int, float)):
        return None
    return f"{mean * 100:.0f}% / {peak * 100:.0f}%"


def _result_lines(record: RunRecord) -> list[str]:
    """Final results, then one line per series: last (at its step), min, max, count."""
    results = record.get("results") or {}
    lines = [f"{k} = {_short_number(v) if not isinstance(v, (dict, list)) else str(v)[:80]}"
             for k, v in (results.get("final") or {}).items()]
    series = cast("Mapping[str, Any]", results.get("series") or {})  # validated as a dict, not each entry
    for name, summary in series.items():
        if not isinstance(summary, Mapping):
            continue
        lines.append(f"{name}: last {_series_last(summary)} (step {summary.get('last_step')}), "
                     f"min {_short_number(summary.get('min', '-'))}, max {_short_number(summary.get('max', '-'))}, "
                     f"{summary.get('count')} points")
    if results.get("series_dropped"):
        lines.append(f"({results['series_dropped']} series not recorded: over the limit)")
    return lines


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
    with session():  # resolving the run and finding its child runs: one refresh of the run index
        return _show(args)


def _show(args: argparse.Namespace) -> int:
    root = run_root(args)
    run_dir = resolve_run(args.run, root)
    record = read_record(run_dir)
    stats = LineStats()
    run_id = str(record.get("id"))
    problems: list[str] = []
    folded: Level | None = None
    trees: list[dict[str, Any]] = []
    span_count = 0
    if args.all_spans or spans_bytes(run_dir) <= FULL_TREE_BYTES:
        spans = read_spans(run_dir, stats)
        children = child_run_trees(run_id, run_dir.parent, {run_id}, problems)
        own = [*record.get("problems", ()), *loss_notes(record), *stats.problems()]
        trees = build_span_tree(spans, children, own, cpu_energy=cpu_energy_factor(record))
    else:  # a large run: fold while reading, in bounded memory
        graft = child_run_levels(run_id, run_dir.parent, {run_id}, problems, totals=True)
        agg = aggregate_run(run_dir, stats, graft, totals=True, cpu_energy=cpu_energy_factor(record))
        span_count = agg.spans
        own = [*record.get("problems", ()), *loss_notes(record), *stats.problems(), *agg.problems()]
        folded = agg.root_level()
    problems[:0] = [f"run {run_id}: {p}" for p in own]
    for text in problems:
        problem(text)
    if args.json:
        out: dict[str, Any] = {"run": {**record, "status": effective_status(record)}}
        if folded is not None:  # groups of more than FOLD_THRESHOLD same-name siblings are one node each
            out.update({"spans": level_json(folded, limit=MAX_TREE_DEPTH), "folded": True, "span_count": span_count})
        else:
            out["spans"] = trees
        out["problems"] = problems
        render.print_json(out)
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
    result_lines = _result_lines(record)
    if result_lines:
        console.print(Panel(escape("\n".join(result_lines)), title="results", expand=False))
    lineage_lines = _lineage_lines(record)
    if lineage_lines:
        console.print(Panel(escape("\n".join(lineage_lines)), title="artifacts, sources, metadata", expand=False))
    if folded is not None:
        tree = Tree(f"[bold]spans[/bold] [dim]({span_count:,} spans, folded while reading)[/dim]")
        _add_levels(tree, folded, estimated=cpu_energy_factor(record) is not None)
    else:
        tree = Tree("[bold]spans[/bold]")
        _add_children(tree, trees, fold=not args.all_spans)
    if not trees and not folded:
        tree.add("[dim](no spans recorded yet)[/dim]")
    console.print(tree)
    return 0
