"""Runs as Chrome Trace Event JSON, which Perfetto (ui.perfetto.dev) and ``chrome://tracing`` open offline.

Spans become complete events (``ph: "X"``, ``ts``/``dur`` in microseconds from the earliest exported
run's start; the origin is in ``otherData``). Each run is a process track: ``pid`` is the recording
process's ``process.pid`` when the spans' resource has it, else a number per run. Spans carrying
``thread.id`` go on that thread's track; the rest share the run's track, and a span that does not nest
inside the spans already open there (work on another thread that runtel did not label) goes to the
next track where it does, because a trace viewer draws one track as a strict stack. Sampled metrics
from metrics.jsonl become counter events (``ph: "C"``), one counter track per metric and run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from runtel import semconv
from runtel.rundir.otlp_json import attributes_from_otlp
from runtel.rundir.reader import LineStats, SpanRecord, iter_jsonl, read_record, read_spans
from runtel.rundir.schema import METRICS_FILE, SPANS_FILE

__all__ = ("THREAD_ID", "chrome_trace", "write_chrome_trace")

#: the OTel attribute naming the thread a span ran on (spans without it share the run's track)
THREAD_ID = "thread.id"
#: tid of a run's first track for spans without a thread id (overlapping spans take the next ones)
_LANE_TID = 1


def _span_pids(run_dir: Path, stats: LineStats) -> dict[str, int]:
    """span id -> ``process.pid`` of the resource that reported it."""
    out: dict[str, int] = {}
    for request in iter_jsonl(run_dir / SPANS_FILE, stats):
        for rs in request.get("resourceSpans") or ():
            if not isinstance(rs, dict):
                continue
            resource = rs.get("resource") if isinstance(rs.get("resource"), dict) else {}
            pid = attributes_from_otlp((resource or {}).get("attributes")).get(semconv.PROCESS_PID)
            if isinstance(pid, bool) or not isinstance(pid, int):
                continue
            for ss in rs.get("scopeSpans") or ():
                for s in (ss.get("spans") or ()) if isinstance(ss, dict) else ():
                    if isinstance(s, dict) and isinstance(s.get("spanId"), str):
                        out[s["spanId"]] = pid
    return out


def _us(ns: int, origin: int) -> float:
    return (ns - origin) / 1000


def _args(span: SpanRecord) -> dict[str, Any]:
    args: dict[str, Any] = {"span_id": span.span_id, "trace_id": span.trace_id}
    if span.status_code == 2:
        args["status"] = "error"
        if span.status_message:
            args["status_message"] = span.status_message
    args.update(span.attributes)
    return args


class _Lanes:
    """Tracks of one run for spans without a thread id: each track a strict stack of (end ns)."""

    def __init__(self) -> None:
        self.stacks: list[list[int]] = []

    def place(self, start: int, end: int) -> int:
        for i, stack in enumerate(self.stacks):
            while stack and stack[-1] <= start:
                stack.pop()
            if not stack or stack[-1] >= end:
                stack.append(end)
                return i
        self.stacks.append([end])
        return len(self.stacks) - 1


def _counter_events(run_dir: Path, pid: int, origin: int, stats: LineStats) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for request in iter_jsonl(run_dir / METRICS_FILE, stats):
        for rm in request.get("resourceMetrics") or ():
            for sm in (rm.get("scopeMetrics") or ()) if isinstance(rm, dict) else ():
                for metric in (sm.get("metrics") or ()) if isinstance(sm, dict) else ():
                    if isinstance(metric, dict):
                        events.extend(_metric_events(metric, pid, origin))
    return events


def _metric_events(metric: Mapping[str, Any], pid: int, origin: int) -> Iterable[dict[str, Any]]:
    name = metric.get("name")
    data = metric.get("gauge") if isinstance(metric.get("gauge"), dict) else metric.get("sum")
    if not isinstance(name, str) or not isinstance(data, dict):
        return
    unit = metric.get("unit")
    label = f"{name} ({unit})" if isinstance(unit, str) and unit else name
    for point in data.get("dataPoints") or ():
        if not isinstance(point, dict):
            continue
        raw = point.get("asDouble", point.get("asInt"))
        try:
            value = float(raw) if raw is not None else None
            ts = int(point.get("timeUnixNano") or 0)
        except (TypeError, ValueError):
            continue
        if value is None or not ts or value != value or value in (float("inf"), float("-inf")):
            continue
        attributes = attributes_from_otlp(point.get("attributes"))
        attributes.pop(semconv.RUN_ID, None)
        step = attributes.pop(semconv.STEP, None)
        series = ",".join(f"{k}={v}" for k, v in sorted(attributes.items())) or "value"
        event: dict[str, Any] = {"name": label, "ph": "C", "ts": _us(ts, origin), "pid": pid, "args": {series: value}}
        if step is not None:
            event["cat"] = f"step {step}"
        yield event


def chrome_trace(run_dirs: Sequence[Path | str | os.PathLike[str]]) -> dict[str, Any]:
    """The Trace Event JSON object of the runs in ``run_dirs`` (one process track per run)."""
    loaded = []
    problems: list[str] = []
    for i, raw in enumerate(run_dirs):
        run_dir = Path(raw)
        record = read_record(run_dir)
        stats = LineStats()
        spans = read_spans(run_dir, stats)
        pids = _span_pids(run_dir, stats)
        loaded.append((i, run_dir, record, spans, pids, stats))
    starts = [span.start_ns for *_, spans, _, _ in loaded for span in spans]
    for _, _, record, _, _, _ in loaded:
        try:
            starts.append(int(record.get("start_time_unix_nano") or 0))
        except (TypeError, ValueError):
            pass
    origin = min((s for s in starts if s), default=0)
    events: list[dict[str, Any]] = []
    for i, run_dir, record, spans, pids, stats in loaded:
        run_pid = next(iter(pids.values()), None)
        pid = run_pid if run_pid is not None else 1_000_000 + i  # no recorded pid: a number of our own per run
        if any(e.get("pid") == pid and e.get("name") == "process_name" for e in events):
            pid = 1_000_000 + i  # two runs of one process: separate tracks
        run_name = f"{record.get('name') or 'run'} {record.get('id') or run_dir.name}"
        events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": run_name}})
        lanes = _Lanes()
        named: set[int] = set()
        for span in spans:
            thread = span.attributes.get(THREAD_ID)
            if isinstance(thread, int) and not isinstance(thread, bool):
                tid, tname = thread, f"thread {thread}"
            else:
                lane = lanes.place(span.start_ns, max(span.end_ns, span.start_ns))
                tid = _LANE_TID + lane
                tname = "run" if lane == 0 else f"run (overlapping {lane})"
            if tid not in named:
                named.add(tid)
                events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": tname}})
            events.append({
                "name": span.name,
                "cat": str(span.attributes.get(semconv.SPAN_KIND) or "span"),
                "ph": "X",
                "ts": _us(span.start_ns, origin),
                "dur": max(0, span.end_ns - span.start_ns) / 1000,
                "pid": pid,
                "tid": tid,
                "args": _args(span),
            })
        events.extend(_counter_events(run_dir, pid, origin, stats))
        problems.extend(f"run {record.get('id')}: {p}" for p in [*record.get("problems", ()), *stats.problems()])
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"generator": "runtel", "origin_unix_nano": str(origin), "problems": problems},
    }


def write_chrome_trace(run_dirs: Sequence[Path | str | os.PathLike[str]], output: Path | str | os.PathLike[str]) -> dict[str, Any]:
    """Write :func:`chrome_trace` to ``output``; returns the trace written."""
    trace = chrome_trace(run_dirs)
    Path(output).write_text(json.dumps(trace, separators=(",", ":"), default=str), encoding="utf-8")
    return trace
