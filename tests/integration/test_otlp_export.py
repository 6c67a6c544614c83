"""Opt-in OTLP export against a real receiver: what arrives, what never does, and what a dead collector costs."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from runtel.errors import ConfigError
from runtel.exporters.otlp import classify, redact_url, resolve_config
from runtel.rundir.reader import iter_jsonl, read_record, read_spans

if TYPE_CHECKING:
    from conftest import Receiver  # tests/integration/conftest.py (fixtures hand the objects over)

SECRET = "Bearer s3cr3t-t0ken-9f8e7d"

CHILD = """
import sys, time
import runtel
with runtel.run_span("otlp-job", config={"lr": 0.25, "optimizer": "adam"}) as run:
    with runtel.block("train-step"):
        time.sleep(0.35)
print(run.dir)
print("grpc-imported" if "grpc" in sys.modules else "grpc-not-imported")
print("otlp-imported" if any(m.startswith("opentelemetry.exporter.otlp") for m in sys.modules) else "otlp-not-imported")
"""


def run_child(env: dict[str, str], tmp_path: Path, **extra: str) -> tuple[subprocess.CompletedProcess[str], float, Path]:
    """Run the child job with sampling on; return the process, its wall time and its run folder."""
    runs = tmp_path / "runs"
    child_env = {
        **env,
        "RUNTEL_DIR": str(runs),
        "RUNTEL_SAMPLING": "true",
        "RUNTEL_SAMPLE_INTERVAL": "0.05",
        "RUNTEL_METRIC_INTERVAL": "0.2",
        "RUNTEL_GPU": "none",
        **extra,
    }
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CHILD], env=child_env, capture_output=True, text=True, timeout=90,
                          cwd=tmp_path)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    return proc, elapsed, Path(proc.stdout.splitlines()[0])


def assert_run_folder_complete(run_dir: Path) -> None:
    """run.json says ok, both spans are in spans.jsonl and metrics.jsonl has data."""
    record = read_record(run_dir)
    assert record["status"] == "ok"
    names = {s.name for s in read_spans(run_dir)}
    assert names == {"otlp-job", "train-step"}
    assert any(iter_jsonl(run_dir / "metrics.jsonl")), "metrics.jsonl is empty"


def local_metric_names(run_dir: Path) -> set[str]:
    """Metric names recorded in the run folder."""
    return {
        m["name"]
        for line in iter_jsonl(run_dir / "metrics.jsonl")
        for rm in line["resourceMetrics"]
        for sm in rm["scopeMetrics"]
        for m in sm["metrics"]
    }


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf", "http/json"])
def test_spans_and_metrics_arrive_when_opted_in(
    protocol: str, receiver: Receiver, clean_env: dict[str, str], tmp_path: Path
) -> None:
    """With RUNTEL_EXPORTERS=json,otlp the receiver gets the run's spans (names, parents, attributes) and metrics."""
    proc, _, run_dir = run_child(
        clean_env, tmp_path,
        RUNTEL_EXPORTERS="json,otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint(protocol),
    )
    local = {s.name: s for s in read_spans(run_dir)}
    trace_id = local["otlp-job"].trace_id
    run_id = read_record(run_dir)["id"]
    assert receiver.wait_for(lambda: len(receiver.spans({trace_id})) >= 2), receiver.text()[-3000:]
    received = {s.name: s for s in receiver.spans({trace_id})}
    assert received["train-step"].parent_id == local["otlp-job"].span_id
    assert received["otlp-job"].span_id == local["otlp-job"].span_id
    assert received["otlp-job"].parent_id == ""
    assert received["otlp-job"].attributes["config.lr"] == "0.25"
    assert received["otlp-job"].attributes["config.optimizer"] == "adam"
    assert received["train-step"].attributes["runtel.run.id"] == run_id
    expected = {"process.cpu.time", "process.memory.usage", "system.memory.usage"}
    assert expected <= local_metric_names(run_dir)
    assert receiver.wait_for(lambda: expected <= {m.name for m in receiver.metrics(run_id)})
    assert_run_folder_complete(run_dir)
    assert ("grpc-imported" in proc.stdout) == (protocol == "grpc")
    assert "OTLP export" not in proc.stderr


def test_nothing_is_sent_without_opt_in(receiver: Receiver, clean_env: dict[str, str], tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT alone is not an opt-in: nothing arrives and no exporter is even imported."""
    proc, _, run_dir = run_child(clean_env, tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_endpoint)
    assert_run_folder_complete(run_dir)
    trace_id = read_spans(run_dir)[0].trace_id
    run_id = read_record(run_dir)["id"]
    time.sleep(1.0)  # the receiver prints within ~50 ms of a request; give a late one a chance to show up
    assert receiver.spans({trace_id}) == []
    assert receiver.metrics(run_id) == []
    assert run_id not in receiver.text()
    assert "otlp-not-imported" in proc.stdout and "grpc-not-imported" in proc.stdout


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_dead_endpoint_costs_a_bounded_exit_and_one_warning(
    protocol: str, clean_env: dict[str, str], tmp_path: Path, closed_port: int
) -> None:
    """A closed port: exit within ~RUNTEL_EXPORT_TIMEOUT, exit code 0, one warning line, local folder complete."""
    port = closed_port
    proc, elapsed, run_dir = run_child(
        clean_env, tmp_path,
        RUNTEL_EXPORTERS="json,otlp",
        RUNTEL_EXPORT_TIMEOUT="1",
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_HEADERS=f"authorization={SECRET.replace(' ', '%20')}",
    )
    # a hang guard, not a speed claim (that is otlp_bench's exit table): unbounded, the SDK's retries with
    # back-off take over a minute; bounded, ~1 s. 30 s leaves room for a loaded machine.
    assert elapsed < 30.0, f"exit took {elapsed:.1f} s"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "OTLP export to http://127.0.0.1:" in lines[0] and "failed (ConnectionRefused)" in lines[0]
    assert "s3cr3t" not in proc.stderr
    assert_run_folder_complete(run_dir)


def test_hanging_collector_is_bounded_by_export_timeout(clean_env: dict[str, str], tmp_path: Path) -> None:
    """A collector that accepts connections but never answers costs about RUNTEL_EXPORT_TIMEOUT, not 10 s x retries."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)  # never accept()ed: requests sit in the backlog unanswered
        port = server.getsockname()[1]
        proc, elapsed, run_dir = run_child(
            clean_env, tmp_path,
            RUNTEL_EXPORTERS="json,otlp",
            RUNTEL_EXPORT_TIMEOUT="1",
            OTEL_EXPORTER_OTLP_TIMEOUT="120",  # unbounded, one request alone would wait 120 s
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        )
    assert elapsed < 30.0, f"exit took {elapsed:.1f} s"  # a hang guard (see above), bounded it takes ~1-2 s
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr
    assert "failed (Timeout)" in proc.stderr
    assert_run_folder_complete(run_dir)


def _all_files_text(folder: Path) -> Iterator[tuple[Path, str]]:
    for path in folder.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes().decode("utf-8", "replace")


def test_authorization_header_is_sent_but_never_written(
    receiver: Receiver, clean_env: dict[str, str], tmp_path: Path
) -> None:
    """An authorization header reaches the exporter config but never the run folder, run.json or stderr."""
    proc, _, run_dir = run_child(
        clean_env, tmp_path,
        RUNTEL_EXPORTERS="json,otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_endpoint,
        OTEL_EXPORTER_OTLP_HEADERS=f"Authorization={SECRET.replace(' ', '%20')},x-team=ml",
    )
    trace_id = read_spans(run_dir)[0].trace_id
    assert receiver.wait_for(lambda: len(receiver.spans({trace_id})) >= 2)
    for path, text in _all_files_text(run_dir):
        assert "s3cr3t" not in text, f"secret leaked into {path}"
    assert "s3cr3t" not in proc.stderr and "s3cr3t" not in proc.stdout
    config = resolve_config({"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc"}, "traces")
    assert config.headers == {"authorization": "Bearer abc"}
    assert "abc" not in repr(config)


# --- configuration rules (pure) ------------------------------------------------------------------------------


def test_protocol_precedence_follows_the_spec() -> None:
    """Per-signal protocol > OTEL_EXPORTER_OTLP_PROTOCOL > http/protobuf."""
    assert resolve_config({}, "traces").protocol == "http/protobuf"
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json"}
    assert resolve_config(env, "traces").protocol == "grpc"
    assert resolve_config(env, "metrics").protocol == "http/json"
    with pytest.raises(ConfigError):
        resolve_config({"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, "traces")


def test_endpoints_defaults_and_signal_paths() -> None:
    """HTTP appends /v1/<signal> to the base endpoint, uses a per-signal endpoint verbatim; gRPC defaults to 4317."""
    assert resolve_config({}, "traces").endpoint == "http://localhost:4318/v1/traces"
    assert resolve_config({}, "metrics", protocol="grpc").endpoint == "http://localhost:4317"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:9/x"}
    assert resolve_config(env, "traces").endpoint == "http://c:4318/v1/traces"
    assert resolve_config(env, "metrics").endpoint == "http://m:9/x"


def test_timeout_is_seconds_and_capped_by_export_timeout() -> None:
    """OTEL_EXPORTER_OTLP_TIMEOUT is read in seconds (as the Python SDK does) and capped at the exit bound."""
    assert resolve_config({"OTEL_EXPORTER_OTLP_TIMEOUT": "3"}, "traces").timeout == 3.0
    assert resolve_config({"OTEL_EXPORTER_OTLP_TIMEOUT": "10000"}, "traces", cap_timeout=5.0).timeout == 5.0
    assert resolve_config({"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2", "OTEL_EXPORTER_OTLP_TIMEOUT": "7"},
                          "traces").timeout == 2.0


def test_log_texts_never_carry_credentials() -> None:
    """Endpoints lose user-info and query; unknown failure texts lose header values."""
    assert redact_url("https://user:pw@c.example:4318/v1/traces?token=x", keep_path=False) == "https://c.example:4318"
    assert "hunter2" not in classify("server said: bad header hunter2", ["hunter2"])
    assert classify("Failed to export spans batch code: 503, reason: Service Unavailable") == "HTTP 503"
    assert classify("error code: StatusCode.UNAUTHENTICATED") == "UNAUTHENTICATED"


@pytest.mark.parametrize("status", [429, 503, 500])
def test_retryable_statuses_are_reported_as_such(status: int, clean_env: dict[str, str], tmp_path: Path) -> None:
    """A collector answering 429/503 (with Retry-After) is reported with that status as retryable, not as a
    timeout; a 500 is reported as HTTP 500. Either way one line, and the run folder is complete."""
    import http.server
    import threading

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proc, _, run_dir = run_child(
            clean_env, tmp_path,
            RUNTEL_EXPORTERS="json,otlp",
            RUNTEL_EXPORT_TIMEOUT="1",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
        )
    finally:
        server.shutdown()
        server.server_close()
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    if status == 500:
        assert "failed (HTTP 500)" in lines[0], lines[0]
    else:
        assert f"failed (HTTP {status} " in lines[0] and "retryable" in lines[0], lines[0]
    assert_run_folder_complete(run_dir)


SERIES_CHILD = """
import runtel
with runtel.run_span("series-job") as run:
    for step in range(3):
        run.log(step=step, loss=1.0 / (step + 1))
print(run.dir)
"""


def test_run_log_series_reach_the_collector(receiver: Receiver, clean_env: dict[str, str], tmp_path: Path) -> None:
    """run.log points go to OTLP as gauges carrying the run id and step, as they go to metrics.jsonl."""
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs"), "RUNTEL_SAMPLING": "true", "RUNTEL_GPU": "none",
           "RUNTEL_EXPORTERS": "json,otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
           "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint("http/protobuf")}
    proc = subprocess.run([sys.executable, "-c", SERIES_CHILD], env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_id = read_record(Path(proc.stdout.split()[0]))["id"]
    assert "runtel.result.loss" in local_metric_names(Path(proc.stdout.split()[0]))
    assert receiver.wait_for(lambda: "runtel.result.loss" in {m.name for m in receiver.metrics(run_id)}), \
        receiver.text()[-3000:]
