"""`runtel export --format chrome-trace`: a Trace Event file Perfetto and chrome://tracing open."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

import runtel
from runtel.cli import main as cli_main
from runtel.config import Settings
from runtel.query.chrome_trace import chrome_trace
from runtel.rundir.reader import read_spans

_REQUIRED = {"X": {"name", "ph", "ts", "dur", "pid", "tid"}, "C": {"name", "ph", "ts", "pid", "args"},
             "M": {"name", "ph", "pid", "args"}}


def _validate(trace: dict[str, object]) -> list[dict[str, object]]:
    """The Trace Event format's rules this exporter uses: object form, required fields, ph types, µs numbers."""
    assert isinstance(trace["traceEvents"], list)
    events: list[dict[str, object]] = trace["traceEvents"]  # type: ignore[assignment]
    for event in events:
        ph = event["ph"]
        assert ph in _REQUIRED, event
        missing = _REQUIRED[ph] - set(event)  # type: ignore[index]
        assert not missing, (missing, event)
        assert isinstance(event["pid"], int) and isinstance(event["name"], str)
        if ph in ("X", "C"):
            assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0
        if ph == "X":
            assert isinstance(event["tid"], int) and isinstance(event["dur"], (int, float)) and event["dur"] >= 0
        if ph == "C":
            assert all(isinstance(v, (int, float)) for v in event["args"].values())  # type: ignore[attr-defined]
    return events


def _nested_per_track(events: list[dict[str, object]]) -> None:
    """On each (pid, tid) track complete events form a strict stack (what viewers draw)."""
    tracks: dict[tuple[object, object], list[dict[str, object]]] = {}
    for e in events:
        if e["ph"] == "X":
            tracks.setdefault((e["pid"], e["tid"]), []).append(e)
    for track in tracks.values():
        open_ends: list[float] = []
        for e in sorted(track, key=lambda e: (e["ts"], -e["dur"])):  # type: ignore[operator]
            start, end = float(e["ts"]), float(e["ts"]) + float(e["dur"])  # type: ignore[arg-type]
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            assert not open_ends or end <= open_ends[-1] + 1e-3, e
            open_ends.append(end)


def test_export_chrome_trace(rt_sampling: Settings, runs_dir: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    with runtel.run_span("train") as run:
        run.log(step=0, loss=1.0)
        for epoch in range(3):
            with runtel.block("epoch", index=epoch), runtel.block("step"):
                time.sleep(0.01)

        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

        def first() -> None:
            with runtel.block("side"):
                a_in.set()
                b_in.wait(10)
            a_out.set()

        def second() -> None:
            a_in.wait(10)
            with runtel.block("side"):
                b_in.set()
                a_out.wait(10)

        # spans without thread ids that overlap without nesting (ordered by events, not by timing)
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        run.log(step=1, loss=0.5)
    out = tmp_path / "trace.json"
    assert cli_main(["export", run.id, "--dir", str(runs_dir), "--format", "chrome-trace", "-o", str(out)]) == 0
    assert "spans" in capsys.readouterr().err
    events = _validate(json.loads(out.read_text()))
    spans = read_spans(run.dir)  # type: ignore[arg-type]
    complete = [e for e in events if e["ph"] == "X"]
    assert len(complete) == len(spans) == 9
    assert sorted(e["name"] for e in complete) == sorted(s.name for s in spans)
    _nested_per_track(events)
    assert len({e["tid"] for e in complete}) >= 2  # the two overlapping "side" spans cannot share one track
    root = next(e for e in complete if e["name"] == "train")
    assert root["ts"] == 0 and root["args"]["runtel.run.id"] == run.id  # type: ignore[index]
    epoch = next(e for e in complete if e["name"] == "epoch")
    span = next(s for s in spans if s.name == "epoch")
    assert epoch["dur"] == pytest.approx((span.end_ns - span.start_ns) / 1000)  # microseconds
    counters = [e for e in events if e["ph"] == "C"]
    names = {e["name"] for e in counters}
    assert "runtel.result.loss" in names and len(names) > 1  # sampled metrics too (the run end collects once)
    loss = [e["args"] for e in counters if e["name"] == "runtel.result.loss"]
    assert loss == [{"value": 1.0}, {"value": 0.5}]


def test_chrome_trace_of_two_runs_and_no_pid(rt: Settings, runs_dir: Path) -> None:
    made = []
    for name in ("a", "b"):
        with runtel.run_span(name) as run, runtel.block("x"):
            pass
        made.append(run)
    trace = chrome_trace([r.dir for r in made])  # type: ignore[misc]
    events = _validate(trace)
    processes = [e for e in events if e["name"] == "process_name"]
    assert len(processes) == 2 and len({e["pid"] for e in processes}) == 2
    assert sum(1 for e in events if e["ph"] == "X") == 4


def test_child_runs_are_process_tracks(rt: Settings, runs_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with runtel.run_span("sweep") as sweep:
        for i in range(2):
            with runtel.run_span("trial", tags={"i": str(i)}), runtel.block("fit"):
                pass
    out = tmp_path / "t.json"
    assert cli_main(["export", sweep.id, "--dir", str(runs_dir), "--format", "chrome-trace", "-o", str(out)]) == 0
    events = _validate(json.loads(out.read_text()))
    assert [e["args"]["name"].split()[0] for e in events if e["name"] == "process_name"] == \
        ["sweep", "trial", "trial"]  # type: ignore[index]
    assert sum(1 for e in events if e["ph"] == "X") == 1 + 2 * 2
    assert cli_main(["export", sweep.id, "--dir", str(runs_dir), "--format", "chrome-trace", "-o", str(out),
                     "--no-children"]) == 0
    assert sum(1 for e in json.loads(out.read_text())["traceEvents"] if e["ph"] == "X") == 1
