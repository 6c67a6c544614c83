"""``runtel compare RUN_A RUN_B [RUN...]``: what differs between runs, and what each block cost.

The data is :func:`runtel.query.compare.compare_runs` (blocks matched by path, child runs included,
values relative to the first run); this module prints it: config diff, results diff, environment
diff, run-level usage, then the per-block table. ``--json`` prints the data as it is.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import Any

from runtel.cli import problem, render, run_root
from runtel.query.compare import BLOCK_METRICS, RUN_METRICS, STATS, block_metric_keys, compare_runs, load_run

__all__ = ("BLOCK_METRICS", "RUN_METRICS", "compare_runs", "register")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``compare`` sub-command."""
    p = sub.add_parser(
        "compare",
        help="compare runs block by block",
        description="Compare two or more runs: the config keys, results, commit and packages that differ, "
        "run-level resource usage, and per block (matched by the path of span names below the run span) count, "
        "time, peak RSS, peak GPU memory and energy, with differences and ratios relative to the first run. "
        "RUN is a run id, a unique prefix, a path to a run folder, or 'latest'.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="runs to compare (the first one is the baseline)")
    p.add_argument("--dir", help="run folder root (default: $RUNTEL_DIR or ./runs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--stat", choices=STATS, help="per block, this statistic of each value over the block's calls "
                   "(std: sample standard deviation) instead of count/total/mean/max time")
    p.set_defaults(handler=_cmd_compare)




# --- rendering -------------------------------------------------------------------------------------------


def _fmt_count(value: float) -> str:
    return f"{value:.0f}"


def _fmt_cores(value: float) -> str:
    return f"{value:.2f}"


def _fmt_grams(value: float) -> str:
    return f"{value:.4f} g"


def _fmt_seconds(value: float) -> str:
    return "-" + render.format_duration(-value) if value < 0 else render.format_duration(abs(value))


def _fmt_bytes(value: float) -> str:
    return "-" + render.format_bytes(-value) if value < 0 else render.format_bytes(abs(value))


_FORMATS: dict[str, Callable[[float], str]] = {
    "s": _fmt_seconds,
    "bytes": _fmt_bytes,
    "cores": _fmt_cores,
    "J": render.format_joules,
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
    if diff is None or diff != diff:  # NaN: no difference to print (math.isnan fails on huge ints)
        return text
    sign = "-" if diff < 0 else "+"
    extra = f"{sign}{fmt(abs(diff))}"
    if ratio is not None:
        extra += f", ×{ratio:.2f}"
    return f"{text} ({extra})"


def _all_missing(metric: Mapping[str, Any]) -> bool:
    return all(v is None for v in metric["values"])


def _value_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)[:80]


def _result_cell(row: Mapping[str, Any], i: int) -> str:
    value = row["values"][i]
    text = _value_text(value)
    diff, ratio = row["diff"][i], row["ratio"][i]
    if i == 0 or diff is None or not row.get("numeric") or diff != diff:  # NaN
        return text
    extra = f"{'-' if diff < 0 else '+'}{abs(diff):.4g}"
    if ratio is not None:
        extra += f", ×{ratio:.3g}"
    return f"{text} ({extra})"


def _print_diffs(result: Mapping[str, Any], headers: list[str]) -> None:
    """Config, results and environment tables (only the rows that differ, and every result)."""
    from rich.markup import escape  # deferred: rich, only for terminal output (~13 ms)
    from rich.table import Table  # deferred: rich, only for terminal output (~16 ms)

    console = render.console()
    n = len(headers)
    for title, rows in (("config (keys that differ)", result.get("config") or []),
                        ("environment (what differs)", result.get("environment") or [])):
        if not rows:
            continue
        table = Table(title=title, title_justify="left")
        table.add_column("key", overflow="fold")
        for header in headers:
            table.add_column(header, overflow="fold")
        for row in rows:
            cells = [_value_text(v) if p else "[dim](absent)[/dim]" for v, p in
                     zip(row["values"], row.get("present", [True] * n), strict=False)]
            table.add_row(escape(str(row["key"])), *(c if c.startswith("[dim]") else escape(c) for c in cells))
        console.print(table)
    results = result.get("results") or []
    if results:
        table = Table(title="results (relative to the baseline)", title_justify="left")
        table.add_column("result", overflow="fold")
        for header in headers:
            table.add_column(header, overflow="fold")
        for row in results:
            table.add_row(escape(str(row["name"])), *(escape(_result_cell(row, i)) for i in range(n)))
        console.print(table)


def _print(result: Mapping[str, Any]) -> None:
    from rich.markup import escape  # deferred: rich, only for terminal output (~13 ms)
    from rich.table import Table  # deferred: rich, only for terminal output (~16 ms)

    console = render.console()
    runs = result["runs"]
    headers = [f"{escape(str(r['id']))}\n{escape(str(r['name']))} [{escape(str(r['status']))}]" for r in runs]
    headers[0] += "\n(baseline)"
    _print_diffs(result, headers)

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
    estimated = [str(r["id"]) for r in runs if r.get("energy_estimated")]
    if estimated:
        which = "every run" if len(estimated) == len(runs) else ", ".join(escape(e) for e in estimated)
        console.print(f"[dim]energy is estimated for {which} (CPU time x a TDP model, no energy counter; "
                      "`runtel show` gives the assumption)[/dim]")

    if not result["blocks"]:
        console.print("[dim](no blocks recorded in these runs)[/dim]")
        return
    block_table = Table(title="blocks (matched by path; values relative to the baseline)", title_justify="left")
    block_table.add_column("block", overflow="fold")
    block_table.add_column("metric")
    for header in headers:
        block_table.add_column(header, overflow="fold")
    block_labels = {key: label for key, label, _unit in block_metric_keys(result.get("stat"))}
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
    result = compare_runs(runs, args.stat)
    for text in result["problems"]:
        problem(text)
    if args.json:
        render.print_json(result)
        return 0
    _print(result)
    return 0
