"""``runtel export``: runs recorded offline are re-sent to a real receiver with their original ids and values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from runtel.query.replay import export_runs, ids_to_base64, to_protobuf
from runtel.rundir.reader import iter_jsonl, list_runs, read_record, read_spans

if TYPE_CHECKING:
    from conftest import Receiver

ROOT = Path(__file__).resolve().parents[2]

RECORD = """
import time
import runtel
with runtel.run_span("replay-job", config={"lr": 0.5, "epochs": 3, "amp": True, "arch": "resnet"}):
    with runtel.block("load"):
        time.sleep(0.05)
    with runtel.block("train"):
        time.sleep(0.3)
with runtel.run_span("second-job"):
    time.sleep(0.25)
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_", "TRACEPARENT", "TRACESTATE"))}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder with two runs recorded offline (no OTLP), sampling on so metrics.jsonl is filled."""
    runs = tmp_path_factory.mktemp("replay") / "runs"
    env = {**_env(), "RUNTEL_DIR": str(runs), "RUNTEL_SAMPLE_INTERVAL": "0.05", "RUNTEL_METRIC_INTERVAL": "0.1",
           "RUNTEL_GPU": "none"}
    subprocess.run([sys.executable, "-c", RECORD], env=env, check=True, timeout=60, cwd=runs.parent)
    assert len(list_runs(runs)) == 2
    return runs


def _run_dir(runs: Path, name: str) -> Path:
    return next(Path(r["dir"]) for r in list_runs(runs) if r["name"] == name)


def runtel_export(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m runtel export ...`` as a real subprocess."""
    return subprocess.run([sys.executable, "-m", "runtel", "export", *args], env=env or _env(), capture_output=True,
                          text=True, timeout=60)


def _metric_names(run_dir: Path) -> set[str]:
    return {m["name"] for line in iter_jsonl(run_dir / "metrics.jsonl") for rm in line["resourceMetrics"]
            for sm in rm["scopeMetrics"] for m in sm["metrics"]}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf", "http/json"])
def test_export_preserves_ids_timestamps_and_attributes(protocol: str, receiver: Receiver, recorded: Path) -> None:
    """Replayed spans keep trace id, span ids, parents and attribute values; metric names arrive too."""
    run_dir = _run_dir(recorded, "replay-job")
    local = {s.span_id: s for s in read_spans(run_dir)}
    trace_id = next(iter(local.values())).trace_id
    run_id = read_record(run_dir)["id"]
    before = len(receiver.spans({trace_id}))
    metrics_before = len(receiver.metrics(run_id))
    proc = runtel_export(str(run_dir), "--protocol", protocol, "--endpoint", receiver.endpoint(protocol))
    assert proc.returncode == 0, proc.stderr
    assert f"sent      {run_id}: 3 spans" in proc.stdout
    assert receiver.wait_for(lambda: len(receiver.spans({trace_id})) >= before + 3)
    received = {s.span_id: s for s in receiver.spans({trace_id})}
    assert set(received) == set(local)
    for span_id, span in local.items():
        assert received[span_id].name == span.name
        assert received[span_id].parent_id == (span.parent_span_id or "")
    root = next(s for s in local.values() if s.name == "replay-job")
    got = received[root.span_id].attributes
    assert (got["config.lr"], got["config.epochs"], got["config.amp"], got["config.arch"]) == ("0.5", "3", "true",
                                                                                               "resnet")
    assert got["runtel.run.id"] == run_id
    names = _metric_names(run_dir)
    assert "process.cpu.time" in names
    assert receiver.wait_for(lambda: len(receiver.metrics(run_id)) > metrics_before)
    assert names <= {m.name for m in receiver.metrics(run_id)}


def test_export_twice_is_harmless(receiver: Receiver, recorded: Path) -> None:
    """Sending the same run twice succeeds both times and delivers the same span ids again (no new ids)."""
    run_dir = _run_dir(recorded, "second-job")
    trace_id = read_spans(run_dir)[0].trace_id
    ids = {s.span_id for s in read_spans(run_dir)}
    before = len(receiver.spans({trace_id}))
    for _ in range(2):
        proc = runtel_export(str(run_dir), "--endpoint", receiver.http_endpoint)
        assert proc.returncode == 0, proc.stderr
    assert receiver.wait_for(lambda: len(receiver.spans({trace_id})) >= before + 2 * len(ids))
    assert {s.span_id for s in receiver.spans({trace_id})} == ids


def test_partial_failure_names_sent_and_unsent_runs(receiver: Receiver, recorded: Path, tmp_path: Path) -> None:
    """One good run and one with an unreadable spans.jsonl: the good one is sent, the bad one named, exit code 1."""
    good = _run_dir(recorded, "second-job")
    bad = tmp_path / "broken-run"
    shutil.copytree(good, bad)
    record = json.loads((bad / "run.json").read_text())
    record["id"] = "broken-run-id"
    (bad / "run.json").write_text(json.dumps(record))
    (bad / "spans.jsonl").unlink()
    (bad / "spans.jsonl").mkdir()  # reading it fails even as root
    proc = runtel_export(str(good), str(bad), "--endpoint", receiver.http_endpoint, "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    by_id = {r["run_id"]: r for r in report["results"]}
    assert by_id[read_record(good)["id"]]["ok"] is True
    assert by_id["broken-run-id"]["ok"] is False and "cannot read" in by_id["broken-run-id"]["error"]
    assert report["ok"] is False


def test_bad_endpoint_reports_every_run_unsent(recorded: Path, closed_port: int) -> None:
    """A refused endpoint: every run is listed as not sent, with the reason, and the exit code is 1."""
    proc = runtel_export("--all", "--dir", str(recorded), "--endpoint", f"http://127.0.0.1:{closed_port}",
                         "--headers", "authorization=Bearer%20hunter2")
    assert proc.returncode == 1
    assert proc.stdout.count("NOT SENT") == 2 and "ConnectionRefused" in proc.stdout
    assert "exported 0 of 2 run(s)" in proc.stderr and "not sent:" in proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr


def test_since_selects_runs_by_start_time(receiver: Receiver, recorded: Path) -> None:
    """--since with an old date exports every run; with a future date there is nothing to export (exit 1)."""
    old = runtel_export("--since", "2000-01-01", "--dir", str(recorded), "--endpoint", receiver.http_endpoint, "--json")
    assert old.returncode == 0, old.stderr
    assert len(json.loads(old.stdout)["results"]) == 2
    future = runtel_export("--since", "2999-01-01T00:00Z", "--dir", str(recorded), "--endpoint", receiver.http_endpoint)
    assert future.returncode == 1 and "no runs to export" in future.stderr
    bad = runtel_export("--since", "last tuesday", "--dir", str(recorded))
    assert bad.returncode == 2 and "not an ISO date" in bad.stderr


def test_python_api_returns_one_result_per_run(receiver: Receiver, recorded: Path) -> None:
    """export_runs() returns an ok ExportResult with span and metric counts for each run."""
    dirs = [r["dir"] for r in list_runs(recorded)]
    results = export_runs(dirs, endpoint=receiver.grpc_endpoint, protocol="grpc", timeout=5, env={})
    assert [r.ok for r in results] == [True, True]
    assert sorted(r.spans for r in results) == [1, 3]
    assert all(r.metric_points > 0 and r.requests >= 2 for r in results)


def test_small_request_limit_splits_batches(receiver: Receiver, recorded: Path) -> None:
    """With a tiny request limit every line goes in its own request and everything still arrives."""
    run_dir = _run_dir(recorded, "replay-job")
    lines = sum(1 for _ in iter_jsonl(run_dir / "spans.jsonl")) + sum(1 for _ in iter_jsonl(run_dir / "metrics.jsonl"))
    [result] = export_runs([run_dir], endpoint=receiver.http_endpoint, env={}, max_request_bytes=1)
    assert result.ok and result.requests == lines and result.spans == 3


def test_ids_become_base64_for_protobuf() -> None:
    """Hex ids are turned into proto3-JSON base64 and parse back to the same bytes."""
    line = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "parentSpanId": "",
        "name": "x", "kind": 1, "startTimeUnixNano": "1", "endTimeUnixNano": "2",
        "links": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b173"}],
    }]}]}]}
    converted = ids_to_base64(line)
    span = converted["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["spanId"] == "7uGbfsPBsXQ=" and span["parentSpanId"] == ""
    message = to_protobuf(line, "traces")
    parsed = message.resource_spans[0].scope_spans[0].spans[0]
    assert parsed.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert parsed.links[0].span_id.hex() == "eee19b7ec3c1b173"


def _extra_span(trace_id: str, span_id: str, **odd: object) -> dict[str, object]:
    return {"traceId": trace_id, "spanId": span_id, "name": "extra", "kind": 1, "startTimeUnixNano": "1000",
            "endTimeUnixNano": "2000", **odd}


def _line(*spans: dict[str, object]) -> str:
    return json.dumps({"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [
        {"scope": {"name": "runtel"}, "spans": list(spans)}]}]})


#: a bad line put first in a copied run's spans.jsonl -> (the ids of the good spans in it, what the warning says)
BAD_SPAN_LINES: dict[str, tuple[Callable[[str], str], set[str], str]] = {
    "resourceSpans is a string": (lambda t: '{"resourceSpans":"str"}', set(), "1 line(s) that are not OTLP/JSON"),
    "a traceId that is a number": (lambda t: _line(_extra_span("5", "b" * 16, traceId=5), _extra_span(t, "c" * 16)),
                                   {"c" * 16}, "1 malformed span(s)"),
    "a start time that is no number": (lambda t: _line(_extra_span(t, "d" * 16, startTimeUnixNano="x"),
                                                       _extra_span(t, "e" * 16)), {"e" * 16}, "1 malformed span(s)"),
    "a span id of the wrong length": (lambda t: _line(_extra_span(t, "abc"), _extra_span(t, "f" * 16)), {"f" * 16},
                                      "1 malformed span(s)"),
}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc", "http/json"])
@pytest.mark.parametrize("case", list(BAD_SPAN_LINES))
def test_a_bad_spans_line_is_skipped_and_every_good_span_sent(case: str, protocol: str, receiver: Receiver,
                                                               recorded: Path, tmp_path: Path) -> None:
    """One line (or one span of a line) that is not OTLP/JSON costs that line (span) only: it is named in one
    warning, every other span arrives, and the exit code is 1 (docs/cli.md, "Corrupt run folders")."""
    source = _run_dir(recorded, "replay-job")
    run_dir = tmp_path / source.name
    shutil.copytree(source, run_dir)
    local = {s.span_id for s in read_spans(source)}
    trace_id = uuid.uuid4().hex  # a trace of this test's own on the shared receiver
    good = (source / "spans.jsonl").read_text().replace(read_spans(source)[0].trace_id, trace_id)
    make_line, extra, warning = BAD_SPAN_LINES[case]
    (run_dir / "spans.jsonl").write_text(make_line(trace_id) + "\n" + good)  # the bad line first
    run_id = read_record(run_dir)["id"]
    proc = runtel_export(str(run_dir), "--protocol", protocol, "--endpoint", receiver.endpoint(protocol))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "NOT SENT" not in proc.stdout, proc.stdout + proc.stderr
    assert f"sent      {run_id}: {len(local | extra)} spans" in proc.stdout, proc.stdout + proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("runtel: warning:")]
    assert len(warnings) == 1, proc.stderr
    assert "spans.jsonl" in warnings[0] and warning in warnings[0] and "not sent" in warnings[0], proc.stderr
    assert receiver.wait_for(lambda: {s.span_id for s in receiver.spans({trace_id})} >= local | extra)
    time.sleep(0.2)  # a span sent by mistake would show up as soon as the rest
    assert {s.span_id for s in receiver.spans({trace_id})} == local | extra


def test_a_bad_metrics_line_is_skipped_and_every_good_point_sent(receiver: Receiver, recorded: Path,
                                                                  tmp_path: Path) -> None:
    """The same for metrics.jsonl: a line that is not OTLP/JSON and a metric whose point has no numeric time are
    skipped and named; every other metric point is sent."""
    source = _run_dir(recorded, "replay-job")
    run_dir = tmp_path / source.name
    shutil.copytree(source, run_dir)
    [clean] = export_runs([source], endpoint=receiver.http_endpoint, env={}, signals=["metrics"])
    assert clean.ok and clean.metric_points > 0
    bad_metric = {"resourceMetrics": [{"resource": {"attributes": []}, "scopeMetrics": [{"metrics": [
        {"name": "odd", "gauge": {"dataPoints": [{"timeUnixNano": "x", "asDouble": 1.0}]}},
        {"name": "fine", "gauge": {"dataPoints": [{"timeUnixNano": "5", "asDouble": 1.0}]}}]}]}]}
    good = (source / "metrics.jsonl").read_text()
    (run_dir / "metrics.jsonl").write_text('{"resourceMetrics":"str"}\n' + json.dumps(bad_metric) + "\n" + good)
    proc = runtel_export(str(run_dir), "--signals", "metrics", "--endpoint", receiver.http_endpoint, "--json")
    assert proc.returncode == 1, proc.stderr
    [result] = json.loads(proc.stdout)["results"]
    assert result["ok"] and result["metric_points"] == clean.metric_points + 1, result
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("runtel: warning:")]
    assert len(warnings) == 2 and all("metrics.jsonl" in w and "not sent" in w for w in warnings), proc.stderr
    assert any("not OTLP/JSON" in w for w in warnings) and any("1 malformed metric(s)" in w for w in warnings)
