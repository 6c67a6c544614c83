"""``runtel report RUN [RUN ...] -o report.html``: one self-contained HTML file (see ``query.report``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtel.cli import problem, render, run_root
from runtel.query.report import write_report
from runtel.rundir.index import resolve_run

__all__ = ("register",)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` sub-command."""
    p = sub.add_parser(
        "report",
        help="write an offline HTML report of one run, or a comparison of several",
        description="Write one self-contained HTML file (no network: charts and data inline): summary, results, "
                    "config, a timeline of spans, resources over time with blocks marked, the per-block usage "
                    "table, artifacts; for several runs, their results side by side and series overlaid. Data "
                    "that could not be read (skipped lines of spans.jsonl, say) is one warning each, as for "
                    "show; the file is written and the exit code is 1.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run id, unique id prefix, folder path or 'latest'")
    p.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default: report.html)")
    p.add_argument("--dir", help="run folder root (default: $RUNTEL_DIR or ./runs)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    root = run_root(args)
    dirs = [resolve_run(ref, root) for ref in args.runs]
    problems: list[str] = []
    size = write_report(dirs, Path(args.output), problems=problems)
    for text in problems:
        problem(text)  # the exit code is 1, as for show and compare of the same runs
    if args.json:
        render.print_json({"output": str(args.output), "bytes": size, "runs": [str(d) for d in dirs],
                           "problems": problems})
    else:
        sys.stderr.write(f"runtel: wrote {args.output} ({size / 1024:.0f} KiB, {len(dirs)} run(s))\n")
    return 0
