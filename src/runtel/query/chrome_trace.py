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
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from runtel import semconv
from runtel.rundir.otlp_json import attributes_from_otlp
from runtel.rundir.reader import (
    METRIC_KEYS,
    LineStats,
    decode_attributes,
    iter_metric_lines,
    iter_span_batches,
    iter_span_rows,
    otlp_groups,
    read_record,
)

__all__ = ("THREAD_ID", "chrome_trace", "iter_chrome_trace", "write_chrome_trace")

#: the OTel attribute naming the thread a span ran on (spans without it share the run's track)
THREAD_ID = "thread.id"
#: tid of a run's first track for spans without a thread id (overlapping spans take the next ones)
_LANE_TID = 1


def _run_pid(run_dir: Path) -> int | None:
    """The ``process.pid`` of the first resource in the run's spans that has one (read until found)."""
    for resource, _spans in iter_span_batches(run_dir, LineStats()):
        pid = attributes_from_otlp(resource.get("attributes")).get(semconv.PROCESS_PID)
        if isinstance(pid, int) and not isinstance(pid, bool):
            return pid
    return None


def _us(ns: int, origin: int) -> float:
    return (ns - origin) / 1000


def _args(span_id: str, trace_id: str, code: int, message: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {"span_id": span_id, "trace_id": trace_id}
    if code == 2:
        args["status"] = "error"
        if message:
            args["status_message"] = message
    args.update(attributes)
    return args


def _thread_of(attrs: object) -> int | None:
    """The ``thread.id`` attribute of a span's raw attributes (decoded only if their text names it)."""
    if attrs is None:
        return None
    if attrs.__class__ is not list:
        attrs = attrs if isinstance(attrs, bytes) else bytes(attrs)  # type: ignore[call-overload]  # msgspec.Raw
        if THREAD_ID.encode() not in attrs:
            return None
    thread = decode_attributes(attrs).get(THREAD_ID)
    return thread if isinstance(thread, int) and not isinstance(thread, bool) else None


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


def _counter_events(run_dir: Path, pid: int, origin: int, stats: LineStats) -> Iterator[dict[str, Any]]:
    """The counter events of a run's metrics.jsonl; what is not OTLP/JSON is skipped and counted in ``stats``."""
    for request in iter_metric_lines(run_dir, stats):
        for _rm, _sm, metrics in otlp_groups(request, METRIC_KEYS, stats):
            for metric in metrics:
                if isinstance(metric, dict):
                    yield from _metric_events(metric, pid, origin)
                else:
                    stats.bad_metrics += 1


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


class _Plan:
    """Pass one over a run's spans: its earliest start, and the track of each span (by file position)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.stats = LineStats()
        """What reading spans.jsonl met (both passes)."""
        self.metric_stats = LineStats()
        """What reading metrics.jsonl met: its own, so each problem names the file it is in."""
        self.record = read_record(run_dir)
        self.start = 0
        # per span in file order: start, end, and its tid (0 = not yet placed; -1 = a duplicate, skipped)
        starts, ends, tids = array("q"), array("q"), array("q")
        recent: set[str] = set()
        older: set[str] = set()
        for sid, _trace, _parent, _name, start, end, _code, _message, attrs in iter_span_rows(run_dir, self.stats):
            starts.append(start)
            ends.append(max(end, start))
            if sid in recent or sid in older:
                tids.append(-1)
                continue
            recent.add(sid)
            if len(recent) >= _RECENT_IDS:
                older, recent = recent, set()
            thread = _thread_of(attrs)
            tids.append(thread if thread is not None and thread > 0 else 0)
            if start and (not self.start or start < self.start):
                self.start = start
        lanes = _Lanes()
        order = [i for i in range(len(tids)) if tids[i] == 0]
        order.sort(key=ends.__getitem__)  # two stable sorts: by start, ties by end, without a tuple per span
        order.sort(key=starts.__getitem__)
        for i in order:
            tids[i] = -2 - lanes.place(starts[i], ends[i])  # lane k is stored as -2 - k until written
        del order
        self.tids = tids
        self.spans = sum(1 for t in tids if t != -1)


#: span ids remembered to skip duplicates (two generations of this many)
_RECENT_IDS = 1 << 17


def _run_events(i: int, plan: _Plan, origin: int, taken_pids: set[int]) -> Iterator[dict[str, Any]]:
    """The events of one run: its track names, its spans (file order) and its counters."""
    run_dir, record, stats = plan.run_dir, plan.record, plan.stats
    run_pid = _run_pid(run_dir)
    pid = run_pid if run_pid is not None else 1_000_000 + i  # no recorded pid: a number of our own per run
    if pid in taken_pids:
        pid = 1_000_000 + i  # two runs of one process: separate tracks
    taken_pids.add(pid)
    run_name = f"{record.get('name') or 'run'} {record.get('id') or run_dir.name}"
    yield {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": run_name}}
    named: set[int] = set()
    tids = plan.tids
    k = -1
    for sid, trace_id, _parent, name, start, end, code, message, attrs in iter_span_rows(run_dir, LineStats()):
        k += 1
        if k >= len(tids) or tids[k] == -1:
            continue  # a duplicate (or a line written after pass one): skipped
        tid = tids[k]
        if tid <= -2:
            lane = -2 - tid
            tid = _LANE_TID + lane
            tname = "run" if lane == 0 else f"run (overlapping {lane})"
        else:
            tname = f"thread {tid}"
        if tid not in named:
            named.add(tid)
            yield {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": tname}}
        attributes = decode_attributes(attrs, stats)
        yield {
            "name": name,
            "cat": str(attributes.get(semconv.SPAN_KIND) or "span"),
            "ph": "X",
            "ts": _us(start, origin),
            "dur": max(0, end - start) / 1000,
            "pid": pid,
            "tid": tid,
            "args": _args(sid, trace_id, code, message, attributes),
        }
    yield from _counter_events(run_dir, pid, origin, plan.metric_stats)


def _origin(plans: Sequence[_Plan]) -> int:
    starts = [p.start for p in plans]
    for plan in plans:
        try:
            starts.append(int(plan.record.get("start_time_unix_nano") or 0))
        except (TypeError, ValueError):
            pass
    return min((s for s in starts if s), default=0)


def _problems(plans: Sequence[_Plan]) -> list[str]:
    return [f"run {p.record.get('id')}: {text}" for p in plans
            for text in [*p.record.get("problems", ()), *p.stats.problems(), *p.metric_stats.problems()]]


def iter_chrome_trace(run_dirs: Sequence[Path | str | os.PathLike[str]]) -> tuple[Iterator[dict[str, Any]],
                                                                                  dict[str, Any]]:
    """(the trace events of the runs, streamed; ``otherData``) — bounded memory whatever the runs' size.

    Two passes over each run's spans: the first finds the time origin and each span's track, the second
    yields the events (in file order; viewers sort by time). ``otherData["problems"]`` is complete once
    the events are consumed.
    """
    plans = [_Plan(Path(raw)) for raw in run_dirs]
    origin = _origin(plans)
    other: dict[str, Any] = {"generator": "runtel", "origin_unix_nano": str(origin), "problems": []}

    def events() -> Iterator[dict[str, Any]]:
        taken: set[int] = set()
        for i, plan in enumerate(plans):
            yield from _run_events(i, plan, origin, taken)
        other["problems"] = _problems(plans)

    return events(), other


def chrome_trace(run_dirs: Sequence[Path | str | os.PathLike[str]]) -> dict[str, Any]:
    """The Trace Event JSON object of the runs in ``run_dirs`` (one process track per run), in memory."""
    events, other = iter_chrome_trace(run_dirs)
    trace_events = list(events)
    return {"traceEvents": trace_events, "displayTimeUnit": "ms", "otherData": other}


def write_chrome_trace(run_dirs: Sequence[Path | str | os.PathLike[str]],
                       output: Path | str | os.PathLike[str]) -> dict[str, Any]:
    """Write the trace to ``output`` event by event (bounded memory); returns ``otherData`` with the counts
    ``spans`` and ``counter_events``."""
    events, other = iter_chrome_trace(run_dirs)
    spans = counters = 0
    with open(output, "w", encoding="utf-8") as f:
        f.write('{"traceEvents":[')
        first = True
        for event in events:
            if event["ph"] == "X":
                spans += 1
            elif event["ph"] == "C":
                counters += 1
            f.write(("" if first else ",\n") + json.dumps(event, separators=(",", ":"), default=str))
            first = False
        f.write('],"displayTimeUnit":"ms","otherData":' + json.dumps(other, separators=(",", ":"), default=str) + "}")
    return {**other, "spans": spans, "counter_events": counters}
