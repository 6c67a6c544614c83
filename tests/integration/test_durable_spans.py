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
from typing import Any

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
    # the spans ended more than 0.5 s ago; the child is still inside re.fullmatch
    info, _ = _kill_after_marker(child, marker, 0.6, "the C call")
    return Path(info["dir"]), info["trace_id"]


def _kill_after_marker(child: subprocess.Popen[str], marker: Path, hold_s: float, what: str) -> tuple[Any, int]:
    """The child's first stdout line (JSON), after SIGKILLing it ``hold_s`` after it wrote ``marker``; and
    when it was killed (``time_ns``). The child must still be running at the kill."""
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, f"the child never reached {what}"
            time.sleep(0.02)
        time.sleep(hold_s)
        assert child.poll() is None
        killed_ns = time.time_ns()
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert child.returncode == -signal.SIGKILL
    return info, killed_ns


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


OPEN_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import runtel

    runs, marker = sys.argv[1], sys.argv[2]
    runtel.configure(dir=runs, sampling=False)
    with runtel.run_span("train", config={"lr": 0.1, "api_key": "sk-live-0123456789abcdef"}) as run:
        print(json.dumps({"dir": str(run.dir), "trace_id": run.trace_id}), flush=True)
        with runtel.block("long", token="sk-live-0123456789abcdef"):  # checkpointed while open, then ends
            time.sleep(1.2)
        for epoch in range(3):
            with runtel.block("epoch", index=epoch):
                for i in range(20):
                    with runtel.block("step", i=i):
                        pass
                if epoch == 2:
                    with runtel.block("eval", password="hunter2-hunter2"):
                        with open(marker, "w"):
                            pass
                        time.sleep(120)
    """
)


def test_open_spans_survive_sigkill(tmp_path: Path) -> None:
    """Killed with its run span, an epoch block and an eval block open for 1.5 s: all three are read back from
    their last checkpoint, marked as not ended (status ERROR, ``runtel.span.unended``), lasting at least 0.5 s,
    redacted; every ended span once and unmarked, a span checkpointed and then ended too."""
    from runtel import semconv
    from runtel.rundir.journal import UNENDED_MESSAGE

    script = tmp_path / "child.py"
    script.write_text(OPEN_CHILD)
    marker = tmp_path / "in-eval"
    with subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs"), str(marker)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        info, killed_ns = _kill_after_marker(child, marker, 1.5, "the eval block")
    run_dir = Path(info["dir"])
    spans = read_spans(run_dir)
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert len(by_name["step"]) == 60 and len(by_name["long"]) == 1 and len(by_name["epoch"]) == 3
    unended = [s for s in spans if s.attributes.get(semconv.SPAN_UNENDED) is True]
    assert sorted(s.name for s in unended) == ["epoch", "eval", "train"]
    for span in unended:
        assert span.status_code == 2 and span.status_message == UNENDED_MESSAGE
        assert span.end_ns - span.start_ns >= 500_000_000 and span.end_ns <= killed_ns
        assert span.trace_id == info["trace_id"]
    assert {s.attributes.get("index") for s in unended if s.name == "epoch"} == {2}
    assert [s.attributes.get("index") for s in by_name["epoch"] if semconv.SPAN_UNENDED not in s.attributes] \
        in ([0, 1], [1, 0])
    long = by_name["long"][0]  # checkpointed twice while open; its own record wins
    assert semconv.SPAN_UNENDED not in long.attributes and long.status_code != 2
    assert long.end_ns - long.start_ns >= 1_200_000_000
    text = (run_dir / "spans.jsonl").read_text()
    assert "sk-live-0123456789abcdef" not in text and "hunter2-hunter2" not in text  # checkpoints are redacted
    assert not [p for p in os.listdir(run_dir) if p.endswith(".journal")]
    assert recover_spans(run_dir) == 0 and len(read_spans(run_dir)) == len(spans)


def test_checkpoints_of_a_long_open_span_stay_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quiet service: its run span open for hours, nothing ending. Its checkpoints are rewritten, not piled
    up: the journal stays under the compaction size, holding the latest checkpoint."""
    import runtel
    from runtel import _sdk
    from runtel.exporters import jsonl
    from runtel.rundir import journal
    from runtel.testing import isolated

    monkeypatch.setattr(jsonl, "OPEN_COMPACT_BYTES", 8 << 10)
    with isolated(tmp_path / "runs", sampling=False):
        with runtel.run_span("service", config={"x": "y" * 500}) as run:
            writer = _sdk.get_runtime()._json_processor
            assert writer is not None
            for i in range(100):
                with runtel.block("step", i=i):
                    pass
            assert list(writer.open_spans.values()) == [run.span]  # ended spans leave it
            now = time.time_ns()
            for k in range(2000):  # 2000 checkpoints: ~17 minutes of a quiet service
                writer._checkpoint(now + (k + 1) * jsonl.OPEN_CHECKPOINT_NS)
            path = run.dir / f".spans.{os.getpid()}.open.journal"
            state = writer._runs[run.id]
            assert state.open_journal is not None and state.open_journal.size <= (8 << 10) + 4096
            frames: dict[int, Any] = {}
            journal._parse(path.read_bytes(), frames)
            opens = [s for _, _, o in frames.values() for s in o]
            assert opens and all(b'"name":"service"' in s for s in opens)
            last_end = int(json.loads(opens[-1])["endTimeUnixNano"])
            final = now + 2000 * jsonl.OPEN_CHECKPOINT_NS
            assert final - jsonl.OPEN_CHECKPOINT_MAX_NS <= last_end <= final  # backed off to at most a minute
        assert not path.exists()  # the run closed normally: journal removed, no unended span written
    assert not [s for s in read_spans(run.dir) if "runtel.span.unended" in s.attributes]


def test_many_open_spans_are_checkpointed_within_a_budget(tmp_path: Path) -> None:
    """A service with 300 requests open: at most OPEN_CHECKPOINT_BUDGET checkpoints a round, the rest the next
    round, then none until each one's doubled wait is over (a bounded share of a core, not 300 every 0.5 s)."""
    import runtel
    from runtel import _sdk
    from runtel.exporters import jsonl
    from runtel.testing import isolated

    with isolated(tmp_path / "runs", sampling=False):
        with runtel.run_span("service") as run:
            rt = _sdk.get_runtime()
            writer = rt._json_processor
            assert writer is not None
            requests = [rt.tracer.start_span(f"request {i}") for i in range(300)]
            now = time.time_ns() + jsonl.OPEN_CHECKPOINT_NS
            counts = []
            for k in range(4):
                state = writer._runs.get(run.id)
                before = len(state.open_records) if state is not None else 0
                written_before = state.open_journal.size if state is not None and state.open_journal else 0
                writer._checkpoint(now + k * jsonl.OPEN_CHECKPOINT_NS)
                state = writer._runs[run.id]
                assert state.open_journal is not None
                counts.append((len(state.open_records) - before, state.open_journal.size > written_before))
            assert counts[0] == (jsonl.OPEN_CHECKPOINT_BUDGET, True)  # the oldest first, up to the budget
            assert counts[1] == (301 - jsonl.OPEN_CHECKPOINT_BUDGET, True)  # the rest (and the run span)
            assert counts[3] == (0, False)  # none due yet: each waits twice as long as before
            for span in requests:
                span.end()
            # ended: their own records rule; only the run span's checkpoint is left
            assert list(writer._runs[run.id].open_records) == [run.span.get_span_context().span_id]
    assert not [s for s in read_spans(run.dir) if "runtel.span.unended" in s.attributes]


WORKER_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import runtel

    marker = sys.argv[1]
    for epoch in range(3):  # no run_span: under `runtel run` the first block opens a worker run
        with runtel.block("epoch", index=epoch):
            for i in range(5):
                with runtel.block("step", i=i):
                    pass
            if epoch == 1:
                with runtel.block("eval"):
                    with open(marker, "w") as fh:
                        fh.write(str(os.getpid()))
                    time.sleep(120)
    """
)


def test_open_spans_of_a_worker_run_survive_sigkill(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel run -- python train.py` where train.py only uses blocks (its spans go to a worker run, written
    synchronously, with no journal): its open epoch and eval come back as not ended after a SIGKILL."""
    from runtel import semconv

    script = tmp_path / "train.py"
    script.write_text(WORKER_CHILD)
    marker = tmp_path / "in-eval"
    runs = tmp_path / "runs"
    with subprocess.Popen([sys.executable, "-m", "runtel", "run", "--dir", str(runs), "-q", "--", sys.executable,
                           str(script), str(marker)], env=clean_env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as wrapper:
        try:
            deadline = time.monotonic() + 120
            while not (marker.exists() and marker.read_text()):
                assert wrapper.poll() is None, wrapper.stderr.read() if wrapper.stderr else ""
                assert time.monotonic() < deadline, "the child never reached the eval block"
                time.sleep(0.02)
            time.sleep(1.5)
            os.kill(int(marker.read_text()), signal.SIGKILL)
            wrapper.wait(60)
        finally:
            if wrapper.poll() is None:
                wrapper.kill()
                wrapper.wait(30)
    spans = [s for d in runs.iterdir() if d.is_dir() for s in read_spans(d)]
    unended = sorted((s.name, s.attributes.get("index")) for s in spans if s.attributes.get(semconv.SPAN_UNENDED))
    assert ("epoch", 1) in unended and ("eval", None) in unended, unended
    assert len([s for s in spans if s.name == "step"]) == 10
    assert not [s for s in spans if s.name == "epoch" and s.attributes.get("index") == 0
                and semconv.SPAN_UNENDED in s.attributes]
