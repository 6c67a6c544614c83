"""Per-signal OTLP export against real HTTP receivers on 127.0.0.1: a trace-only backend, a backend refusing one
batch with a reason, gzip, the User-Agent, and the standard per-signal selectors, live and in ``runtel export``."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from runtel._version import __version__
from runtel.exporters.otlp import USER_AGENT, judge, server_reason
from runtel.query.replay import export_runs
from runtel.rundir.reader import list_runs, read_record, read_spans

ROOT = Path(__file__).resolve().parents[2]
REASON = "span 'bad-step' has an invalid attribute\x1b[31m token=ghp_abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass
class Request:
    """One POST the receiver got, decoded."""

    path: str
    headers: dict[str, str]
    status: int
    spans: list[str] = field(default_factory=list)
    points: int = 0


def _decode(path: str, content_type: str, body: bytes) -> dict[str, Any]:
    if "protobuf" in content_type:
        cls = ExportTraceServiceRequest if path.endswith("traces") else ExportMetricsServiceRequest
        return MessageToDict(cls.FromString(body))
    return dict(json.loads(body))


def _span_names(message: dict[str, Any]) -> list[str]:
    return [s["name"] for rs in message.get("resourceSpans", []) for ss in rs.get("scopeSpans", [])
            for s in ss.get("spans", [])]


def _points(message: dict[str, Any]) -> int:
    total = 0
    for rm in message.get("resourceMetrics", []):
        for sm in rm.get("scopeMetrics", []):
            for metric in sm.get("metrics", []):
                for kind in ("sum", "gauge", "histogram"):
                    total += len(metric.get(kind, {}).get("dataPoints", []))
    return total


class Backend:
    """A real OTLP/HTTP receiver whose answers the test sets: 404 for a signal, 400 with a reason for one span."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.metrics_status = 200
        self.reject_span: str | None = None
        self.lock = threading.Lock()
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                content_type = self.headers.get("Content-Type", "")
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, 200)
                answer, answer_type = b"", "application/json"
                if self.path.endswith("/v1/metrics") and backend.metrics_status != 200:
                    request.status = backend.metrics_status
                else:
                    message = _decode(self.path, content_type, body)
                    request.spans, request.points = _span_names(message), _points(message)
                    if backend.reject_span and backend.reject_span in request.spans:
                        request.status = 400
                        if "protobuf" in content_type:
                            from google.rpc import status_pb2  # type: ignore[import-untyped]

                            answer = status_pb2.Status(code=3, message=REASON).SerializeToString()
                            answer_type = "application/x-protobuf"
                        else:
                            answer = json.dumps({"code": 3, "message": REASON}).encode()
                with backend.lock:
                    backend.requests.append(request)
                self.send_response(request.status)
                self.send_header("Content-Type", answer_type)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self, *, metrics_status: int = 200, reject_span: str | None = None) -> None:
        with self.lock:
            self.requests.clear()
        self.metrics_status, self.reject_span = metrics_status, reject_span

    def got(self, suffix: str, status: int | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.endswith(suffix) and (status is None or r.status == status)]

    def span_names(self) -> list[str]:
        return [name for r in self.got("/v1/traces", 200) for name in r.spans]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.05)
        return condition()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    server = Backend()
    yield server
    server.close()


CHILD = """
import time
import runtel
with runtel.run_span("signals-job") as run:
    for name in ("good-1", "bad-step", "good-2"):
        with runtel.block(name):
            time.sleep(0.1)
print(run.dir)
"""
ALL_SPANS = {"signals-job", "good-1", "bad-step", "good-2"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_", "TRACEPARENT", "TRACESTATE"))}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def run_job(tmp_path: Path, backend: Backend, **extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The child job with OTLP opted in to ``backend`` (one span per batch, metrics every 0.2 s)."""
    settings = {"RUNTEL_DIR": str(tmp_path / "runs"), "RUNTEL_SAMPLE_INTERVAL": "0.05",
                "RUNTEL_METRIC_INTERVAL": "0.2", "RUNTEL_GPU": "none", "RUNTEL_EXPORT_TIMEOUT": "2",
                "RUNTEL_EXPORTERS": "json,otlp", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1",
                "OTEL_EXPORTER_OTLP_ENDPOINT": backend.endpoint, **extra}
    env = _env(**{k: v for k, v in settings.items() if v != ""})  # "" unsets a default above
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.splitlines()[0])
    assert {s.name for s in read_spans(run_dir)} == ALL_SPANS  # the run folder keeps everything, always
    return proc, run_dir


def runtel_export(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtel", "export", *args], env=_env(**extra), capture_output=True,
                          text=True, timeout=60)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run recorded offline (no OTLP), for ``runtel export``."""
    runs = tmp_path_factory.mktemp("signals") / "runs"
    env = _env(RUNTEL_DIR=str(runs), RUNTEL_SAMPLE_INTERVAL="0.05", RUNTEL_METRIC_INTERVAL="0.1", RUNTEL_GPU="none")
    subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, timeout=60, cwd=runs.parent,
                   capture_output=True)
    return Path(list_runs(runs)[0]["dir"])


# --- a trace-only backend -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_live_run_to_a_trace_only_backend(protocol: str, backend: Backend, tmp_path: Path) -> None:
    """/v1/metrics answers 404: every span arrives, one note names the signal and endpoint, metrics are tried once."""
    backend.reset(metrics_status=404)
    proc, _ = run_job(tmp_path, backend, OTEL_EXPORTER_OTLP_PROTOCOL=protocol)
    assert backend.wait_for(lambda: set(backend.span_names()) == ALL_SPANS), backend.span_names()
    lines = _lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert f"metrics not accepted by {backend.endpoint}/v1/metrics (HTTP 404)" in lines[0]
    assert len(backend.got("/v1/metrics")) == 1, "a signal the backend does not take is not sent again"


def test_export_to_a_trace_only_backend_exits_0(backend: Backend, offline_run: Path) -> None:
    """`runtel export`: spans sent, one note, exit 0; --json says which signal was not accepted."""
    backend.reset(metrics_status=405)
    proc = runtel_export(str(offline_run), "--endpoint", backend.endpoint)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(backend.span_names()) == ALL_SPANS
    notes = [line for line in _lines(proc.stderr) if "not accepted" in line]
    assert notes == [f"runtel: note: metrics not accepted by {backend.endpoint}/v1/metrics: HTTP 405; that signal "
                     "was not sent "
                     "(the run folders keep it)"], proc.stderr
    assert "NOT SENT" not in proc.stdout
    proc = runtel_export(str(offline_run), "--endpoint", backend.endpoint, "--json")
    assert proc.returncode == 0, proc.stdout
    out = json.loads(proc.stdout)
    assert out["ok"] and out["not_accepted"] == [f"metrics not accepted by {backend.endpoint}/v1/metrics: HTTP 405"]
    assert out["results"][0]["spans"] == 4 and out["results"][0]["metric_points"] == 0


def test_export_json_is_not_ok_when_a_line_was_skipped(backend: Backend, offline_run: Path, tmp_path: Path) -> None:
    """A damaged spans.jsonl line is skipped and named: the good spans still arrive, and --json says ``"ok": false``
    with the skip in the run's result, as the exit status 1 does."""
    import shutil

    backend.reset()
    run_dir = tmp_path / offline_run.name
    shutil.copytree(offline_run, run_dir)
    with open(run_dir / "spans.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"resourceSpans": [ not json\n')
    proc = runtel_export(str(run_dir), "--endpoint", backend.endpoint, "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] is False and out["results"][0]["ok"] is True
    assert out["results"][0]["skipped"], out
    assert "not sent" in proc.stderr
    assert backend.wait_for(lambda: set(backend.span_names()) == ALL_SPANS)


# --- one batch refused with a reason --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_live_run_one_rejected_batch_drops_only_that_batch(protocol: str, backend: Backend, tmp_path: Path) -> None:
    """A 400 (with a google.rpc.Status reason) for the batch holding one span: the other spans and the metrics still
    arrive, and the one warning carries the server's reason, escaped and redacted."""
    backend.reset(reject_span="bad-step")
    proc, run_dir = run_job(tmp_path, backend, OTEL_EXPORTER_OTLP_PROTOCOL=protocol)
    run_id = read_record(run_dir)["id"]
    assert backend.wait_for(lambda: set(backend.span_names()) == ALL_SPANS - {"bad-step"}), backend.span_names()
    assert backend.wait_for(lambda: sum(r.points for r in backend.got("/v1/metrics", 200)) > 0)
    assert len(backend.got("/v1/traces", 400)) == 1
    lines = _lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert f"{backend.endpoint}/v1/traces rejected a batch of 1 spans (HTTP 400: span 'bad-step' has an invalid" in lines[0]
    assert "\x1b" not in lines[0] and "\\x1b[31m" in lines[0]
    assert "ghp_abcdefghijklmnopqrstuvwxyz0123456789" not in lines[0]
    assert run_id  # the run folder has every span (checked in run_job)


def test_export_one_rejected_batch_sends_the_rest(backend: Backend, offline_run: Path) -> None:
    """Replay with one request per line: the refused batch is counted with its reason, the other spans and every
    metric point arrive, and the run is not ok (a batch the backend takes did not arrive: exit 1)."""
    backend.reset(reject_span="bad-step")
    result = export_runs([offline_run], endpoint=backend.endpoint, env={}, max_request_bytes=1)[0]
    refused = {name for r in backend.got("/v1/traces", 400) for name in r.spans}
    assert "bad-step" in refused
    assert set(backend.span_names()) == ALL_SPANS - refused
    assert result.rejected_spans == len(refused) and result.spans == 4 - len(refused)
    assert result.metric_points > 0 and result.metric_points == sum(r.points for r in backend.got("/v1/metrics"))
    assert not result.ok and "span 'bad-step' has an invalid attribute" in result.rejections[0]
    proc = runtel_export(str(offline_run), "--endpoint", backend.endpoint)
    assert proc.returncode == 1 and "rejected by the endpoint" in proc.stderr, proc.stderr


# --- gzip, User-Agent, per-signal selectors -------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_live_gzip_and_user_agent(protocol: str, backend: Backend, tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_COMPRESSION=gzip: every request is gzip-encoded and decodes to the run's spans; the
    User-Agent names runtel and the OTel exporter."""
    backend.reset()
    run_job(tmp_path, backend, OTEL_EXPORTER_OTLP_PROTOCOL=protocol, OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
    assert backend.wait_for(lambda: set(backend.span_names()) == ALL_SPANS)
    assert backend.wait_for(lambda: len(backend.got("/v1/metrics")) > 0)
    for request in backend.got(""):
        assert request.headers.get("content-encoding") == "gzip", request.path
        assert request.headers["user-agent"].startswith(f"runtel/{__version__} OTel-OTLP-Exporter-Python/")


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_export_gzip_and_user_agent(protocol: str, backend: Backend, offline_run: Path) -> None:
    """`runtel export` honours the per-signal compression variable and sends runtel's User-Agent."""
    backend.reset()
    proc = runtel_export(str(offline_run), "--endpoint", backend.endpoint, "--protocol", protocol,
                         OTEL_EXPORTER_OTLP_TRACES_COMPRESSION="gzip")
    assert proc.returncode == 0, proc.stderr
    assert set(backend.span_names()) == ALL_SPANS
    assert {r.headers.get("content-encoding") for r in backend.got("/v1/traces")} == {"gzip"}
    assert {r.headers.get("content-encoding") for r in backend.got("/v1/metrics")} == {None}
    assert {r.headers["user-agent"] for r in backend.got("")} == {USER_AGENT}


def test_live_metrics_only_by_the_standard_selectors(backend: Backend, tmp_path: Path) -> None:
    """OTEL_TRACES_EXPORTER=none + OTEL_METRICS_EXPORTER=otlp (no RUNTEL_EXPORTERS): only metrics are sent."""
    backend.reset()
    proc, _ = run_job(tmp_path, backend, RUNTEL_EXPORTERS="", OTEL_TRACES_EXPORTER="none",
                      OTEL_METRICS_EXPORTER="otlp")
    assert backend.wait_for(lambda: len(backend.got("/v1/metrics", 200)) > 0)
    assert backend.got("/v1/traces") == []
    assert _lines(proc.stderr) == []


def test_live_traces_only_by_the_standard_selectors(backend: Backend, tmp_path: Path) -> None:
    """OTEL_TRACES_EXPORTER=otlp + OTEL_METRICS_EXPORTER=none: only spans are sent."""
    backend.reset()
    run_job(tmp_path, backend, RUNTEL_EXPORTERS="", OTEL_TRACES_EXPORTER="otlp", OTEL_METRICS_EXPORTER="none")
    assert backend.wait_for(lambda: set(backend.span_names()) == ALL_SPANS)
    assert backend.got("/v1/metrics") == []


@pytest.mark.parametrize("how", ["--signals", "env"])
def test_export_metrics_only(how: str, backend: Backend, offline_run: Path) -> None:
    """`runtel export --signals metrics`, or OTEL_TRACES_EXPORTER=none, sends metrics and no span."""
    backend.reset()
    if how == "--signals":
        proc = runtel_export(str(offline_run), "--endpoint", backend.endpoint, "--signals", "metrics")
    else:
        proc = runtel_export(str(offline_run), "--endpoint", backend.endpoint, OTEL_TRACES_EXPORTER="none")
    assert proc.returncode == 0, proc.stderr
    assert backend.got("/v1/traces") == []
    assert sum(r.points for r in backend.got("/v1/metrics")) > 0
    assert ": 0 spans," in proc.stdout


def test_export_per_signal_endpoints(backend: Backend, offline_run: Path) -> None:
    """OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT are used verbatim, each for its own signal."""
    backend.reset()
    proc = runtel_export(str(offline_run), OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{backend.endpoint}/t/v1/traces",
                         OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=f"{backend.endpoint}/m/v1/metrics")
    assert proc.returncode == 0, proc.stderr
    assert {r.path for r in backend.got("")} == {"/t/v1/traces", "/m/v1/metrics"}


def test_export_a_dead_traces_endpoint_does_not_stop_metrics(backend: Backend, offline_run: Path,
                                                              closed_port: int) -> None:
    """Traces to a closed port, metrics to a live backend: every metric point arrives; exit 1 names the traces."""
    backend.reset()
    proc = runtel_export(str(offline_run), "--json", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{closed_port}",
                         OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=f"{backend.endpoint}/v1/metrics",
                         OTEL_EXPORTER_OTLP_TIMEOUT="1")
    assert proc.returncode == 1, proc.stdout
    result = json.loads(proc.stdout)["results"][0]
    assert result["spans"] == 0 and "traces to http://127.0.0.1:" in result["error"]
    assert result["metric_points"] > 0 and result["metric_points"] == sum(r.points for r in backend.got("/v1/metrics"))


def test_grpc_gzip_is_really_used(tmp_path: Path, offline_run: Path) -> None:
    """A gRPC server with gzip disabled refuses what runtel sends with OTEL_EXPORTER_OTLP_COMPRESSION=gzip (live and
    `runtel export --compression gzip`): proof the messages were compressed; uncompressed they arrive."""
    server = GrpcTraceOnly(options=(("grpc.compression_enabled_algorithms_bitset", 1),))  # identity only
    try:
        env = _env(RUNTEL_DIR=str(tmp_path / "runs"), RUNTEL_SAMPLING="false", RUNTEL_EXPORT_TIMEOUT="2",
                   OTEL_TRACES_EXPORTER="otlp", OTEL_METRICS_EXPORTER="none", OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
                   OTEL_EXPORTER_OTLP_ENDPOINT=server.endpoint, OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
        proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "traces not accepted by" in proc.stderr and "'gzip' is disabled" in proc.stderr, proc.stderr
        assert server.spans == []
        proc = runtel_export(str(offline_run), "--protocol", "grpc", "--endpoint", server.endpoint, "--signals",
                             "traces", "--compression", "gzip", "--json")
        assert json.loads(proc.stdout)["results"][0]["spans"] == 0 and server.spans == []
        proc = runtel_export(str(offline_run), "--protocol", "grpc", "--endpoint", server.endpoint, "--signals",
                             "traces")
        assert proc.returncode == 0, proc.stderr
        assert set(server.spans) == ALL_SPANS
    finally:
        server.server.stop(0)


# --- pure rules -----------------------------------------------------------------------------------------------


def test_failures_are_sorted_by_status() -> None:
    """404/405/501 and UNIMPLEMENTED: not accepted; other 4xx and INVALID_ARGUMENT: that batch; the rest: down."""
    assert judge("Failed to export metrics batch code: 404, reason: Not Found").kind == "not-accepted"
    assert judge("x", 405).kind == "not-accepted" and judge("x", 501).kind == "not-accepted"
    assert judge("error code: StatusCode.UNIMPLEMENTED, error details: unknown service").kind == "not-accepted"
    rejected = judge("HTTP 400", 400, "bad span")
    assert (rejected.kind, rejected.text) == ("rejected", "HTTP 400: bad span")
    grpc = judge("error code: StatusCode.INVALID_ARGUMENT, error details: bad span id")
    assert (grpc.kind, grpc.text) == ("rejected", "INVALID_ARGUMENT: bad span id")
    for status in (429, 408, 500, 503):
        assert judge(f"HTTP {status}", status).kind == "down"
    assert judge("ConnectionRefused").kind == "down"
    assert "hunter2" not in judge("HTTP 401", 401, "bad key hunter2", ["hunter2"]).text


def test_server_reason_is_bounded_escaped_and_redacted() -> None:
    """The server's answer goes to a log line: one line, no control characters, no credentials, at most 200 chars."""
    text = server_reason(json.dumps({"message": "line1\nline2\x07 Bearer abcdefghijklmnop" + "x" * 500}).encode(),
                         "application/json")
    assert "\n" not in text and "\x07" not in text and len(text) <= 200
    assert "abcdefghijklmnop" not in text
    assert server_reason(b"\xff\xfeplain").endswith("plain")


# --- gRPC: a trace-only server answers UNIMPLEMENTED for metrics ------------------------------------------------


class GrpcTraceOnly:
    """A real gRPC server on 127.0.0.1 with only the OTLP TraceService: metrics calls get UNIMPLEMENTED."""

    def __init__(self, options: tuple[tuple[str, int], ...] = ()) -> None:
        from concurrent import futures

        import grpc  # type: ignore[import-untyped]
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        self.spans: list[str] = []
        self.user_agents: list[str] = []
        self.metrics_calls = 0  # never incremented: the service is not there
        owner = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                owner.user_agents += [v for k, v in context.invocation_metadata() if k == "user-agent"]
                owner.spans += _span_names(MessageToDict(request))
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=list(options))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.server)  # type: ignore[no-untyped-call]
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def grpc_traces() -> Iterator[GrpcTraceOnly]:
    server = GrpcTraceOnly()
    yield server
    server.server.stop(0)


def test_grpc_trace_only_live_and_export(grpc_traces: GrpcTraceOnly, tmp_path: Path, offline_run: Path) -> None:
    """gRPC UNIMPLEMENTED for metrics: one note live, spans arrive, `runtel export` exits 0; runtel's User-Agent."""
    env = _env(RUNTEL_DIR=str(tmp_path / "runs"), RUNTEL_SAMPLE_INTERVAL="0.05", RUNTEL_METRIC_INTERVAL="0.2",
               RUNTEL_GPU="none", RUNTEL_EXPORT_TIMEOUT="2", RUNTEL_EXPORTERS="json,otlp",
               OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_ENDPOINT=grpc_traces.endpoint,
               OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = _lines(proc.stderr)
    assert len(lines) == 1 and "metrics not accepted by" in lines[0] and "(UNIMPLEMENTED: " in lines[0], proc.stderr
    assert set(grpc_traces.spans) == ALL_SPANS
    grpc_traces.spans.clear()
    proc = runtel_export(str(offline_run), "--protocol", "grpc", "--endpoint", grpc_traces.endpoint,
                         "--compression", "gzip")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "metrics not accepted by" in proc.stderr and "UNIMPLEMENTED" in proc.stderr
    assert set(grpc_traces.spans) == ALL_SPANS
    assert grpc_traces.user_agents and all(ua.startswith(f"runtel/{__version__} OTel-OTLP-Exporter-Python/")
                                           for ua in grpc_traces.user_agents), grpc_traces.user_agents


def test_rejections_after_the_first_are_counted_and_reported_at_exit(caplog: pytest.LogCaptureFixture) -> None:
    """The first refused batch is warned about; the total is reported once at exit and kept in losses()."""
    from runtel.exporters.otlp import health_for, losses, report_losses, resolve_config

    config = resolve_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9/rejecting"}, "traces")
    health = health_for(config)
    for _ in range(3):
        assert health.failed("HTTP 400", 400, "bad span", items=2).kind == "rejected"
    assert health.allow(), "a refused batch puts nothing into back-off"
    with caplog.at_level("WARNING"):
        report_losses()
    assert "http://127.0.0.1:9/rejecting/v1/traces rejected 3 batches in all (6 spans)" in caplog.text
    assert losses()["traces http://127.0.0.1:9"]["rejected_items"] == 6


def test_per_signal_selectors_in_settings() -> None:
    """Either selector naming otlp opts in; each signal then goes to OTLP unless its own selector excludes it."""
    from runtel.config import resolve_settings

    s = resolve_settings({"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "otlp"})
    assert (s.otlp_traces, s.otlp_metrics) == (False, True)
    s = resolve_settings({"OTEL_TRACES_EXPORTER": "otlp"})
    assert (s.otlp_traces, s.otlp_metrics) == (True, True)  # the specification's default for metrics is otlp
    s = resolve_settings({"RUNTEL_EXPORTERS": "json,otlp", "OTEL_METRICS_EXPORTER": "prometheus"})
    assert (s.otlp_traces, s.otlp_metrics, s.metrics_exporter) == (True, False, ("prometheus",))
    s = resolve_settings({"OTEL_TRACES_EXPORTER": "console"})  # the application's own SDK's business
    assert not s.otlp_enabled and not s.otlp_traces
    assert not resolve_settings({}, exporters=["json"], traces_exporter="otlp").otlp_traces  # argument wins
    assert resolve_settings({}, metrics_exporter=["otlp"]).otlp_metrics


def test_unknown_compression_is_a_config_error(offline_run: Path) -> None:
    """An unusable OTEL_EXPORTER_OTLP_COMPRESSION is refused before anything is sent (live: logged once, no OTLP)."""
    from runtel.errors import ConfigError
    from runtel.exporters.otlp import resolve_config

    with pytest.raises(ConfigError, match="brotli"):
        resolve_config({"OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "brotli"}, "metrics")
    assert resolve_config({"OTEL_EXPORTER_OTLP_COMPRESSION": "GZIP"}, "traces").compression == "gzip"
    proc = runtel_export(str(offline_run), "--endpoint", "http://127.0.0.1:9", OTEL_EXPORTER_OTLP_COMPRESSION="brotli")
    assert proc.returncode == 1 and "compression 'brotli' is not supported" in proc.stderr, proc.stderr
