"""Rotated and large runs: every reader follows the segments and reads each span exactly once, and the folded
(streaming) ``show`` prints what the full tree prints."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runtel
from runtel.cli import main
from runtel.cli import show as show_cmd
from runtel.query import compare as compare_mod
from runtel.query.chrome_trace import chrome_trace
from runtel.query.replay import export_runs
from runtel.rundir import reader
from runtel.rundir.reader import LineStats, iter_span_rows, iter_spans, list_runs, read_spans
from runtel.rundir.schema import metric_segments, span_segments

ROOT = Path(__file__).resolve().parents[2]

RECORD = """
import time
import runtel
with runtel.run_span("big"):
    for e in range(3):
        with runtel.block("epoch"):
            for i in range(40):
                with runtel.block("step"):
                    if i % 10 == 0:
                        with runtel.block("io"):
                            pass
                runtel.flush()
            with runtel.block("eval"):
                pass
    with runtel.block("final"):
        try:
            with runtel.block("boom"):
                raise ValueError("bad")
        except ValueError:
            pass
    with runtel.run_span("inner"):
        for _ in range(7):
            with runtel.block("inner-step"):
                pass
    for _ in range(3):
        with runtel.block("tail"):
            pass
    time.sleep(0.5)  # several metric exports: metrics.jsonl rotates too
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run written through a 4 KB rotation size (many segments), with a nested child run."""
    root = tmp_path_factory.mktemp("large") / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_", "TRACEPARENT"))}
    env.update({"PYTHONPATH": str(ROOT / "src"), "RUNTEL_DIR": str(root), "RUNTEL_ROTATE_BYTES": "4096",
                "RUNTEL_SAMPLE_INTERVAL": "0.05", "RUNTEL_METRIC_INTERVAL": "0.1", "RUNTEL_GPU": "none"})
    subprocess.run([sys.executable, "-c", RECORD], env=env, check=True, timeout=120, cwd=root.parent)
    return root


def _big(runs: Path) -> Path:
    return next(Path(str(r["dir"])) for r in list_runs(runs) if r["name"] == "big")


def _span_ids_on_disk(run_dir: Path) -> list[str]:
    ids = []
    for path in span_segments(run_dir):
        for line in path.read_bytes().splitlines():
            ids += [s["spanId"] for rs in json.loads(line)["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    return ids


def test_run_is_written_in_segments(runs: Path) -> None:
    run_dir = _big(runs)
    names = [p.name for p in span_segments(run_dir)]
    assert len(names) >= 5 and names[:2] == ["spans.jsonl", "spans.2.jsonl"]
    assert metric_segments(run_dir)
    ids = _span_ids_on_disk(run_dir)
    assert len(ids) == len(set(ids)) == 1 + 3 * (1 + 40 + 4 + 1) + 2 + 3  # run, epochs, final + boom, tails (inner: its own folder)


def _metric_names(line: bytes) -> set[str]:
    message = json.loads(line)
    return {m["name"] for rm in message["resourceMetrics"] for sm in rm["scopeMetrics"] for m in sm["metrics"]}


def test_each_metrics_segment_reads_on_its_own(runs: Path) -> None:
    """Lines hold only the series that changed, so the first line of every segment restates every series
    known by then (one that first appears later, e.g. with the second sample, cannot be in an earlier one)."""
    paths = metric_segments(_big(runs))
    assert len(paths) >= 2
    seen: set[str] = set()
    for path in paths:
        lines = path.read_bytes().splitlines()
        first = _metric_names(lines[0])
        assert seen <= first, (path.name, sorted(seen - first))
        for line in lines:
            seen |= _metric_names(line)
    assert len(seen) >= 5


def _show(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["show", *args]) == 0
    return capsys.readouterr().out


def _count_nodes(nodes: list[dict[str, Any]], run_id: str) -> int:
    return sum((n.get("run_id") == run_id) + _count_nodes(n["children"], run_id) for n in nodes)


@pytest.mark.parametrize("fast", [True, False], ids=["msgspec", "json"])
def test_every_reader_reads_each_span_once(runs: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    if not fast:
        monkeypatch.setattr(reader, "_fast", [None])
    run_dir = _big(runs)
    run_id = run_dir.name
    expected = sorted(_span_ids_on_disk(run_dir))
    assert sorted(s.span_id for s in read_spans(run_dir)) == expected
    assert sorted(s.span_id for s in iter_spans(run_dir)) == expected
    stats = LineStats()
    assert sorted(r[0] for r in iter_span_rows(run_dir, stats)) == expected and not stats.problems()
    assert sorted(s.span_id for s in runtel.load(str(run_dir)).spans) == expected

    full = json.loads(_show([str(run_dir), "--json"], capsys))
    assert "folded" not in full and _count_nodes(full["spans"], run_id) == len(expected)
    monkeypatch.setattr(show_cmd, "FULL_TREE_BYTES", 0)
    folded = json.loads(_show([str(run_dir), "--json"], capsys))
    assert folded["folded"] is True and folded["span_count"] == len(expected) and folded["problems"] == []


def test_folded_show_prints_what_the_full_tree_prints(runs: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _big(runs)
    full = _show([str(run_dir)], capsys)
    monkeypatch.setattr(show_cmd, "FULL_TREE_BYTES", 0)
    folded = _show([str(run_dir)], capsys)
    assert "folded while reading" in folded
    assert "epoch ×" not in full and "step ×40" in full and "inner-step ×7" in full and "boom" in full
    # a folded line sums its spans' CPU time and energy, as each span's own line shows them
    steps = [line for line in full.splitlines() if "step ×40" in line]
    assert len(steps) == 3, steps  # one per epoch
    for line in steps:
        assert "cpu " in line and "J est." in line and line.endswith("in all"), line
    head = [line for line in full.splitlines()]
    heading = next(i for i, line in enumerate(head) if line.startswith("spans"))
    assert folded.splitlines()[heading].startswith("spans (")
    assert folded.splitlines()[heading + 1:] == head[heading + 1:]
    assert folded.splitlines()[:heading] == head[:heading]


@pytest.mark.parametrize("stat", [None, *compare_mod.STATS])
def test_compare_reads_every_segment_streamed_or_not(runs: Path, monkeypatch: pytest.MonkeyPatch,
                                                     stat: str | None) -> None:
    """compare's block table from running sums (a large run) equals the one from every span's values."""
    run_dir = _big(runs)
    full = compare_mod.load_run(str(run_dir), runs)
    assert full.blocks["epoch/step"].metrics()["count"] == 120
    assert full.blocks["epoch/step/io"].metrics()["count"] == 12
    assert full.blocks["inner/inner-step"].metrics()["count"] == 7
    monkeypatch.setattr(compare_mod, "FULL_TREE_BYTES", 0)
    streamed = compare_mod.load_run(str(run_dir), runs)
    assert isinstance(streamed.blocks["epoch/step"], compare_mod.StreamedBlockStats)
    assert list(streamed.blocks) == list(full.blocks)
    for path, block in full.blocks.items():
        other = streamed.blocks[path]
        assert (other.kind, other.errors) == (block.kind, block.errors), path
        got, want = other.metrics(stat), block.metrics(stat)
        assert [k for k, v in got.items() if v is None] == [k for k, v in want.items() if v is None], path
        assert {k: v for k, v in got.items() if v is not None} == pytest.approx(
            {k: v for k, v in want.items() if v is not None}, rel=1e-9, abs=1e-12), path
    both = compare_mod.compare_runs([full, streamed], stat)
    assert [b["path"] for b in both["blocks"]] == list(full.blocks)


def test_chrome_trace_reads_every_segment(runs: Path, tmp_path: Path) -> None:
    run_dir = _big(runs)
    out = tmp_path / "trace.json"
    assert main(["export", "--format", "chrome-trace", "--no-children", "-o", str(out), str(run_dir)]) == 0
    trace = json.loads(out.read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert sorted(e["args"]["span_id"] for e in spans) == sorted(_span_ids_on_disk(run_dir))
    assert any(e["ph"] == "C" for e in trace["traceEvents"])


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"path": self.path, "body": json.loads(body)})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    _Collector.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_otlp_export_sends_every_segment(runs: Path, collector: str) -> None:
    run_dir = _big(runs)
    (result,) = export_runs([run_dir], endpoint=collector, protocol="http/json", env={})
    assert result.ok, result.error
    sent = [s["spanId"] for r in _Collector.received if r["path"].endswith("/v1/traces")
            for rs in r["body"]["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert sorted(sent) == sorted(_span_ids_on_disk(run_dir)) and result.spans == len(sent)
    on_disk = [json.loads(line) for p in metric_segments(run_dir) for line in p.read_bytes().splitlines()]
    points = sum(len(m[kind]["dataPoints"]) for r in on_disk for rm in r["resourceMetrics"] for sm in rm["scopeMetrics"]
                 for m in sm["metrics"] for kind in ("gauge", "sum", "histogram") if kind in m)
    assert len(metric_segments(run_dir)) > 1 and result.metric_points == points > 0


def _point(t: int, value: float, **attrs: str) -> dict[str, Any]:
    return {"timeUnixNano": str(t), "asDouble": value,
            "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]}


def test_metric_readers_accept_several_points_per_metric_and_segments(tmp_path: Path, collector: str) -> None:
    """Any valid OTLP/JSON metrics line: several points per metric, of several timestamps, in two segments."""
    run_dir = tmp_path / "runs" / "20261202T000000Z-m-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"id": run_dir.name, "name": "m", "status": "ok",
                                                  "start_time_unix_nano": "1000000000"}))
    t0 = 1_000_000_000
    for n, name in enumerate(("metrics.jsonl", "metrics.2.jsonl")):
        line = {"resourceMetrics": [{"resource": {"attributes": []}, "scopeMetrics": [{"scope": {"name": "runtel"}, "metrics": [
            {"name": "cpu", "unit": "1", "gauge": {"dataPoints": [_point(t0 + (n * 3 + i) * 10**9, 0.5 + i, core=str(c))
                                                                  for i in range(3) for c in range(2)]}},
            {"name": "bytes", "unit": "By", "sum": {"aggregationTemporality": 2, "isMonotonic": True,
                                                    "dataPoints": [_point(t0 + (n * 3 + i) * 10**9, 10.0 * i) for i in range(3)]}},
        ]}]}]}
        (run_dir / name).write_text(json.dumps(line) + "\n")
    trace = chrome_trace([run_dir])
    counters = [e for e in trace["traceEvents"] if e["ph"] == "C"]
    assert len(counters) == 2 * (6 + 3) and trace["otherData"]["problems"] == []
    assert len({e["ts"] for e in counters if e["name"] == "cpu (1)"}) == 6  # every timestamp kept
    (result,) = export_runs([run_dir], endpoint=collector, protocol="http/json", env={})
    assert result.ok and result.metric_points == 18 and result.spans == 0
