"""``runtel export``: send recorded runs to an OTLP endpoint (Collector, Jaeger, ...) with their original ids,
or write them as a Chrome Trace Event file for Perfetto / ``chrome://tracing`` (``--format chrome-trace``)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from runtel.cli import problem, render, run_root
from runtel.errors import ConfigError, RunNotFound
from runtel.rundir.index import resolve_run
from runtel.rundir.reader import list_runs, read_record_or_corrupt
from runtel.rundir.schema import RunRecord

__all__ = ("parse_since", "register")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export`` sub-command."""
    p = sub.add_parser(
        "export",
        help="send recorded runs to an OTLP endpoint (replay offline runs)",
        description="Send the spans and metrics of recorded runs to an OTLP endpoint, keeping their trace ids, "
        "span ids, timestamps and attributes, so runs recorded offline show up in Jaeger/Grafana. Sending a run "
        "twice is harmless. Defaults come from OTEL_EXPORTER_OTLP_* (per-signal variables first; protocol "
        "http/protobuf, endpoint http://localhost:4318, or :4317 for grpc) and OTEL_TRACES_EXPORTER / "
        "OTEL_METRICS_EXPORTER (a signal set to none is not sent). A signal the endpoint does not take "
        "(HTTP 404/405/501, gRPC UNIMPLEMENTED: a trace-only backend) is noted once, not an error. Exit code 0: "
        "everything the endpoint takes arrived; 1: a run, a signal, a batch or a line was not sent (unreadable run, "
        "a line or span not OTLP/JSON, connection failure, timeout, 5xx, or a batch refused with a 4xx: "
        "the server's reason is printed); "
        "2: bad arguments. With --format "
        "chrome-trace, write the runs' spans and sampled metrics to a Trace Event JSON file instead "
        "(opens offline in ui.perfetto.dev or chrome://tracing).",
    )
    p.add_argument("runs", nargs="*", metavar="RUN", help="run id, unique prefix, path, or 'latest'")
    p.add_argument("--all", action="store_true", help="every run in the run folder root")
    p.add_argument("--since", type=parse_since, metavar="DATE",
                   help="only runs started at or after DATE (ISO date or date-time; UTC unless it has an offset)")
    p.add_argument("--endpoint", help="OTLP endpoint base URL (default: $OTEL_EXPORTER_OTLP_ENDPOINT)")
    p.add_argument("--protocol", choices=("grpc", "http/protobuf", "http/json"),
                   help="OTLP protocol (default: $OTEL_EXPORTER_OTLP_PROTOCOL or http/protobuf)")
    p.add_argument("--headers", metavar="K=V,...",
                   help="extra request headers, e.g. authorization=Bearer%%20xyz (values are never printed)")
    p.add_argument("--timeout", type=float, metavar="S", help="seconds per request (default: 10)")
    p.add_argument("--signals", type=_parse_signals, metavar="LIST",
                   help="comma list of traces,metrics to send (default: both, minus a signal whose "
                   "OTEL_<SIGNAL>_EXPORTER is none)")
    p.add_argument("--compression", choices=("gzip", "deflate", "none"),
                   help="request compression (default: $OTEL_EXPORTER_OTLP_[<SIGNAL>_]COMPRESSION or none)")
    p.add_argument("--format", choices=("otlp", "chrome-trace"), default="otlp",
                   help="otlp: send to an endpoint (default); chrome-trace: write a Perfetto / chrome://tracing file")
    p.add_argument("-o", "--output", metavar="FILE", default="trace.json",
                   help="with --format chrome-trace: the file to write (default: trace.json)")
    p.add_argument("--no-children", action="store_true",
                   help="with --format chrome-trace: only the named runs, not the runs nested in them")
    p.add_argument("--dir", help="run folder root (default: $RUNTEL_DIR or ./runs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_export)


def _parse_signals(raw: str) -> tuple[str, ...]:
    """``traces,metrics`` (either or both).

    Raises:
        argparse.ArgumentTypeError: an unknown signal or an empty list.
    """
    names = tuple(dict.fromkeys(part.strip().lower() for part in raw.split(",") if part.strip()))
    unknown = [n for n in names if n not in ("traces", "metrics")]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected traces, metrics or traces,metrics, got {raw!r}")
    return names


def parse_since(raw: str) -> datetime:
    """An ISO date (``2026-11-23``) or date-time (``2026-11-23T19:30``, ``...+01:00``, ``...Z``) as aware UTC.

    Raises:
        argparse.ArgumentTypeError: not an ISO date or date-time.
    """
    text = raw.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or date-time: {raw!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _start_ns(record: RunRecord) -> int:
    try:
        return int(record.get("start_time_unix_nano") or 0)
    except (TypeError, ValueError):
        return 0


def _select(args: argparse.Namespace) -> list[Path]:
    root = run_root(args)
    if args.all or (args.since is not None and not args.runs):
        records = list_runs(root)
    else:
        if not args.runs:
            raise ConfigError("name the runs to export (RUN ...), or use --all / --since")
        records = [read_record_or_corrupt(resolve_run(ref, root)) for ref in args.runs]
    if args.since is not None:
        cutoff = int(args.since.timestamp() * 1e9)
        records = [r for r in records if _start_ns(r) >= cutoff]
    dirs: list[Path] = []
    seen: set[str] = set()
    for record in sorted(records, key=_start_ns):  # oldest first
        path = str(record["dir"])
        if path not in seen:
            seen.add(path)
            dirs.append(Path(path))
    return dirs


def _cmd_chrome_trace(args: argparse.Namespace) -> int:
    from runtel.query.chrome_trace import write_chrome_trace  # deferred: runtel.query.chrome_trace (~3 ms)

    run_dirs = _select(args)
    if not run_dirs:
        raise RunNotFound(f"no runs to export in {run_root(args)}")
    if not args.no_children:
        from runtel.query.nesting import with_nested_runs  # deferred: the read side, for this command only

        run_dirs = [run_dir for run_dir, _parent in with_nested_runs(run_dirs, run_root(args))]
    written = write_chrome_trace(run_dirs, args.output)  # streamed: bounded memory for any run size
    for text in written["problems"]:
        problem(text)
    spans, counters = written["spans"], written["counter_events"]
    if args.json:
        render.print_json({"output": str(args.output), "runs": [str(d) for d in run_dirs], "spans": spans,
                           "counter_events": counters})
    else:
        sys.stderr.write(f"runtel: wrote {args.output}: {len(run_dirs)} run(s), {spans} spans, {counters} counter "
                         "events (open it in https://ui.perfetto.dev or chrome://tracing; nothing is uploaded)\n")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if args.format == "chrome-trace":
        return _cmd_chrome_trace(args)
    from runtel.exporters.otlp import (  # deferred: runtel.exporters.otlp (~70 ms)
        parse_headers,
        resolve_config,
    )
    from runtel.query.replay import (  # deferred: runtel.query.replay (~77 ms)
        default_signals,
        export_runs,
        total_bytes,
    )

    run_dirs = _select(args)
    if not run_dirs:
        raise RunNotFound(f"no runs to export in {run_root(args)}")
    headers = parse_headers(args.headers) if args.headers else None
    env = dict(os.environ)
    if args.endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = args.endpoint
        env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
        env.pop("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", None)
    signals = args.signals if args.signals is not None else default_signals(env)
    if not signals:
        raise ConfigError("no signal to send: OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER both exclude otlp "
                          "(use --signals traces,metrics)")
    targets = {s: resolve_config(env, s, protocol=args.protocol).display_endpoint for s in signals}
    target = ", ".join(dict.fromkeys(targets.values()))
    options = {"endpoint": args.endpoint, "protocol": args.protocol, "headers": headers, "timeout": args.timeout,
               "env": os.environ, "signals": signals, "compression": args.compression}

    total = total_bytes(run_dirs)
    show_bar = not args.json and sys.stderr.isatty() and total > 0
    if show_bar:
        from rich.console import Console  # deferred: rich, only for terminal output (~18 ms)
        from rich.progress import (  # deferred: rich, only for terminal output (~26 ms)
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn("exporting"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                      console=Console(file=sys.stderr), transient=True) as bar:
            task = bar.add_task("export", total=total)
            results = export_runs(run_dirs, progress=lambda n: bar.advance(task, n), **options)
    else:
        results = export_runs(run_dirs, **options)

    failed = [r for r in results if not r.ok]
    notes = list(dict.fromkeys(note for r in results for note in r.not_accepted))
    for r in results:
        for text in r.skipped:
            problem(f"run {r.run_id}: {text}, not sent")
    if args.json:
        # "ok" agrees with the exit status: a line skipped as unreadable is data that was not sent (exit 1)
        skipped = any(r.skipped for r in results)
        render.print_json({"endpoint": target, "signals": list(signals), "not_accepted": notes,
                           "results": [r.to_dict() for r in results], "ok": not failed and not skipped})
        return 1 if failed or skipped else 0
    for note in notes:  # once per signal and endpoint, not once per run
        sys.stderr.write(f"runtel: note: {note}; that signal was not sent (the run folders keep it)\n")
    out = sys.stdout
    for r in results:
        sent = f"{r.spans} spans, {r.metric_points} metric points"
        if r.ok:
            out.write(f"sent      {r.run_id}: {sent}\n")
        else:
            out.write(f"NOT SENT  {r.run_id}: {r.error} (sent: {sent})\n")
    ok = [r for r in results if r.ok]
    summary = (f"runtel: exported {len(ok)} of {len(results)} run(s) to {target} "
               f"({sum(r.spans for r in results)} spans, {sum(r.metric_points for r in results)} metric points)")
    rejected = sum(r.rejected_spans for r in results), sum(r.rejected_points for r in results)
    if any(rejected):
        summary += f"; rejected by the endpoint: {rejected[0]} spans, {rejected[1]} metric points"
    if failed:
        summary += f"; not sent: {', '.join(r.run_id for r in failed)}"
    sys.stderr.write(summary + "\n")
    return 1 if failed else 0
