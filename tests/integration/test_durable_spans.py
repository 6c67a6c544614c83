"""Spans are on disk the moment they end: a process SIGKILLed while its main thread holds the GIL keeps them.

The child records N spans, writes a marker file and enters a C call that never releases the GIL (a
pathological regular expression). No other Python thread can run from then on, so a batch thread
could never write those spans. The test waits 0.5 s after the marker, SIGKILLs the child, and reads
the run folder the way every reader does (``read_spans`` recovers the journal first).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runtel.rundir.journal import recover_spans
from runtel.rundir.reader import read_spans

CHILD = textwrap.dedent(
    """
    import json, os, re, sys, threading
    import runtel

    runs, marker, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    runtel.configure(dir=runs, sampling=False)

    def steps(offset, count):
        for i in range(offset, offset + count):
            with runtel.block("step", i=i):
                pass

    with runtel.run_span("durable") as run:
        print(json.dumps({"dir": str(run.dir), "trace_id": run.trace_id}), flush=True)
        per = n // threads
        workers = [threading.Thread(target=steps, args=(k * per, per)) for k in range(threads - 1)]
        for w in workers:
            w.start()
        steps((threads - 1) * per, n - (threads - 1) * per)
        for w in workers:
            w.join()
        with open(marker, "w"):
            pass
        re.fullmatch(r"(a+)+$", "a" * 34 + "b")  # holds the GIL for minutes: nothing else in Python runs
    """
)


def _killed_child(tmp_path: Path, n: int, threads: int = 1) -> tuple[Path, str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    marker = tmp_path / "in-the-c-call"
    with subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs"), str(marker), str(n), str(threads)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        return _kill_in_c_call(child, marker)


def _kill_in_c_call(child: subprocess.Popen[str], marker: Path) -> tuple[Path, str]:
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "the child never reached the C call"
            time.sleep(0.02)
        time.sleep(0.6)  # the spans ended more than 0.5 s ago; the child is still inside re.fullmatch
        assert child.poll() is None
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert child.returncode == -signal.SIGKILL
    return Path(info["dir"]), info["trace_id"]


def _raw_spans(run_dir: Path) -> list[dict[str, object]]:
    """Every span object of spans.jsonl, each line parsed strictly as an ExportTraceServiceRequest."""
    out = []
    for line in (run_dir / "spans.jsonl").read_text().splitlines():
        message = json.loads(line)
        assert set(message) == {"resourceSpans"}
        for rs in message["resourceSpans"]:
            assert rs["resource"]["attributes"]
            for ss in rs["scopeSpans"]:
                out.extend(ss["spans"])
    return out


@pytest.mark.parametrize("threads", [1, 4])
def test_spans_survive_sigkill_during_a_gil_holding_c_call(tmp_path: Path, threads: int) -> None:
    """N spans ended, then the main thread held the GIL until SIGKILL: exactly those N are read back."""
    n = 500
    run_dir, trace_id = _killed_child(tmp_path, n, threads)
    assert [p for p in os.listdir(run_dir) if p.endswith(".journal")]  # what the kill left: the journal
    spans = [s for s in read_spans(run_dir) if s.name == "step"]
    assert len(spans) == n
    assert {s.trace_id for s in spans} == {trace_id}
    assert sorted(s.attributes["i"] for s in spans) == list(range(n))
    # Recovered for good: standard OTLP/JSON lines, no duplicates, no journal left, a second read changes nothing.
    raw = [s for s in _raw_spans(run_dir) if s["name"] == "step"]
    assert len(raw) == n
    assert not [p for p in os.listdir(run_dir) if p.endswith(".journal")]
    assert recover_spans(run_dir) == 0
    assert len([s for s in read_spans(run_dir) if s.name == "step"]) == n
