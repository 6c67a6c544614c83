"""The mlflow tracker backend against a real local MLflow tracking server, read back with MLflow's client.

MLflow is heavy (~300 MB, never in the ``dev`` extra): it gets its own venv, built once by the
fixture below into build/mlflow-venv (``pip install mlflow==MLFLOW_VERSION``, ~45 s with a warm pip
cache) and reused while the pin is the same. The server runs from that venv as a real subprocess on
127.0.0.1; the runtel run runs in runtel's venv, where mlflow is not installed (the backend speaks
REST with urllib). Without a buildable venv the server test skips loudly, except under CI=true.
"""

from __future__ import annotations

import fcntl
import http.server
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtel.backends.mlflow import MLflowTracker, flatten_params
from runtel.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
#: MLflow >= 3.6 accepts OTLP traces at /v1/traces; pinned so the cached venv stays valid
MLFLOW_VERSION = "3.17.2"
VENV = ROOT / "build" / "mlflow-venv"
READBACK = Path(__file__).with_name("mlflow_readback.py")


def _need(reason: str) -> None:
    """Fail under CI=true (the server test must run there), skip loudly elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (under CI=true the MLflow server test must run)")
    pytest.skip(f"LOUD SKIP: {reason}")


def _mlflow_python() -> Path:
    """build/mlflow-venv's python with mlflow==MLFLOW_VERSION, built once (a file lock serialises xdist workers)."""
    python, marker = VENV / "bin" / "python", VENV / ".runtel-installed"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "mlflow-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == MLFLOW_VERSION and python.exists():
            return python
        shutil.rmtree(VENV, ignore_errors=True)
        started = time.monotonic()
        try:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=300)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            f"mlflow=={MLFLOW_VERSION}"], check=True, capture_output=True, text=True, timeout=900)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            shutil.rmtree(VENV, ignore_errors=True)
            detail = getattr(exc, "stderr", "") or ""
            _need(f"could not build {VENV} with mlflow=={MLFLOW_VERSION}: {exc} {str(detail)[-2000:]}")
        marker.write_text(MLFLOW_VERSION)
        sys.stderr.write(f"built {VENV} (mlflow=={MLFLOW_VERSION}) in {time.monotonic() - started:.0f} s\n")
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real ``mlflow server`` (SQLite store, proxied artifacts) on a free loopback port."""
    python = _mlflow_python()
    home = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    log = (home / "server.log").open("wb")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "PYTHONWARNINGS": "ignore",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner processes (not needed here)
    proc = subprocess.Popen(
        [str(python), "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "artifacts")],
        cwd=home, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240  # a cold start migrates the database: ~15 s idle, longer under load
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up: {(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"uri": uri, "python": python, "home": home}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn workers: the group this test started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # any worker of that group still there
        except ProcessLookupError:
            pass
        log.close()


TRAIN = textwrap.dedent("""
    import os, sys
    import runtel

    os.makedirs("ckpt", exist_ok=True)
    with open("ckpt/shard-0.bin", "wb") as f:
        f.write(b"shard")
    with open("data.csv", "w") as f:
        f.write("x,y\\n1,2\\n")
    with runtel.run_span("train", config={"optim": {"lr": 0.1, "betas": [0.9, 0.99]}, "epochs": 3},
                         tags={"team": "vision"}) as run:
        run.add_source("data.csv")
        run.add_metadata(dataset="cifar10", password="hunter2-secret")
        for step in range(3):
            with runtel.block("epoch"):
                run.log(step, loss=1.0 / (step + 1))
        for step in range(2500):  # 2 full batches through the sender thread, the rest at the end
            run.log(step, grad_norm=step / 1000)
        run.log(0, diverged=float("nan"))
        with open("model.pt", "wb") as f:
            f.write(b"weights")
        run.add_artifact("model", "model.pt")
        run.add_artifact("ckpt", "ckpt")
        run.set_result(accuracy=0.91, verdict="good")
    print(run.id, "mlflow" in sys.modules)
""")


@pytest.mark.timeout(1200)
def test_a_run_lands_in_a_real_mlflow_server(mlflow_server: dict[str, Any], tmp_path: Path,
                                            clean_env: dict[str, str]) -> None:
    """`runtel run -- python train.py`: params, metrics (finals, series with steps), tags, artifacts, nesting
    and the linked trace of both runs, read back with MLflow's client."""
    (tmp_path / "train.py").write_text(TRAIN)
    runs = tmp_path / "runs"
    env = {**clean_env, "RUNTEL_TRACKER": "runfolder,mlflow", "MLFLOW_TRACKING_URI": mlflow_server["uri"],
           "MLFLOW_EXPERIMENT_NAME": "runtel-test", "RUNTEL_DIR": str(runs)}
    proc = subprocess.run([sys.executable, "-m", "runtel", "run", "--name", "job", "--", sys.executable, "train.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_id, imported = proc.stdout.split()
    assert imported == "False"  # the backend never imports mlflow
    record = json.loads((runs / run_id / "run.json").read_text())
    wrapper_id = record["parent"]["run_id"]
    wrapper = json.loads((runs / wrapper_id / "run.json").read_text())
    info, outer = record["trackers"]["mlflow"], wrapper["trackers"]["mlflow"]
    assert "errors" not in info and "errors" not in outer, (info, outer)
    assert info["metrics"] == 2505 and info["artifacts"] == 2 and info["spans"] == 4
    back = subprocess.run([str(mlflow_server["python"]), str(READBACK), mlflow_server["uri"], info["run_id"],
                           outer["run_id"]],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert back.returncode == 0, back.stderr[-3000:]
    both = json.loads(back.stdout.strip().splitlines()[-1])
    got, job = both[info["run_id"]], both[outer["run_id"]]
    assert got["status"] == "FINISHED" and got["experiment_name"] == "runtel-test"
    assert got["experiment_id"] == info["experiment_id"]
    assert got["params"] == {"optim.lr": "0.1", "optim.betas": "[0.9, 0.99]", "epochs": "3"}
    assert math.isnan(got["metrics"].pop("diverged"))  # a NaN point reaches MLflow as NaN
    assert got["metrics"] == {"accuracy": 0.91, "loss": pytest.approx(1 / 3), "grad_norm": 2.499}
    assert got["history_steps"]["grad_norm"] == list(range(2500))
    assert [(s, v) for s, v, _t in got["loss"]] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    tags = got["tags"]
    assert tags["mlflow.runName"] == "train" and tags["team"] == "vision" and tags["runtel.run.id"] == run_id
    assert tags["mlflow.parentRunId"] == outer["run_id"]  # nested under the wrapper's MLflow run
    assert tags["runtel.metadata.dataset"] == "cifar10" and "hunter2" not in json.dumps(tags)
    assert tags["runtel.result.verdict"] == "good"
    assert tags["runtel.source.0"].startswith(f"file:{tmp_path / 'data.csv'} hash=")
    assert got["artifacts"] == ["ckpt/shard-0.bin", "model/model.pt"] and got["model_bytes"] == "weights"
    assert job["status"] == "FINISHED" and job["tags"]["mlflow.runName"] == "job"
    # One trace across both processes, linked to both MLflow runs.
    for side in (got, job):
        [trace] = side["traces"]
        assert trace["trace_id"] == "tr-" + record["trace_id"] == "tr-" + wrapper["trace_id"]
        assert trace["spans"] == sorted(["job", "train", "epoch", "epoch", "epoch"])
        assert trace["root_attributes"]["runtel.run.id"].strip('"') == wrapper_id


def test_a_server_that_is_down_never_breaks_the_run(runs_dir: Path, tmp_path: Path,
                                                    clean_env: dict[str, str]) -> None:
    """Connection refused at run start: one warning, counted in run.json, the run folder complete."""
    env = {**clean_env, "RUNTEL_TRACKER": "runfolder,mlflow", "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_free_port()}",
           "RUNTEL_DIR": str(runs_dir)}
    script = ("import runtel\nwith runtel.run_span('train') as run:\n    run.log(0, loss=1.0)\n"
              "    run.set_result(accuracy=0.5)\nprint(run.id)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((runs_dir / proc.stdout.strip() / "run.json").read_text())
    assert record["status"] == "ok" and record["results"]["final"] == {"accuracy": 0.5}
    info = record["trackers"]["mlflow"]
    assert info["errors"] == 1 and info["dropped"] == 3 and "Connection refused" in info["error"]
    assert proc.stderr.count("tracker backend 'mlflow' failed") == 1


def test_configuration_errors_are_clear() -> None:
    """No http(s) tracking URI is a ConfigError naming the variables; params flatten as MLflow keys."""
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        MLflowTracker(None, None, env={})
    with pytest.raises(ConfigError, match="databricks"):
        MLflowTracker(None, None, env={"MLFLOW_TRACKING_URI": "databricks"})
    assert MLflowTracker(None, "http://h:5000/", env={}).uri == "http://h:5000"
    assert flatten_params({"a": {"b c": 1, "d:e": True}, "f": None}) == {"a.b c": "1", "a.d_e": "True", "f": "None"}


def test_a_server_lost_mid_run_is_reported_once(runs_dir: Path, tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A server that creates the run and then goes away: the run ends ok, the loss is counted in run.json.

    A real HTTP server on loopback answers runs/create and log-batch (the params) as MLflow does, then
    closes; the series sent from the sender thread and everything at the end meet a closed port.
    """
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.path)
            body = json.dumps({"run": {"info": {"run_id": "abc123", "artifact_uri": "mlflow-artifacts:/0/abc123/artifacts"}}}
                              if self.path.endswith("runs/create") else {}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop = tmp_path / "stop-server"
    script = textwrap.dedent(f"""
        import os, time, runtel
        with runtel.run_span("train", config={{"lr": 0.1}}) as run:
            open({str(stop)!r}, "w").close()
            while os.path.exists({str(stop)!r}):
                time.sleep(0.05)
            for step in range(2500):
                run.log(step, loss=1.0)
            run.set_result(accuracy=0.5)
        print(run.id)
    """)
    env = {**clean_env, "RUNTEL_TRACKER": "runfolder,mlflow", "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
           "RUNTEL_DIR": str(runs_dir)}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not stop.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()  # the port is closed from here on
        stop.unlink(missing_ok=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert seen == ["/api/2.0/mlflow/runs/create", "/api/2.0/mlflow/runs/log-batch"]  # the run, its params
    record = json.loads((runs_dir / out.strip() / "run.json").read_text())
    assert record["status"] == "ok" and record["results"]["final"] == {"accuracy": 0.5}
    info = record["trackers"]["mlflow"]
    assert info["run_id"] == "abc123" and info["errors"] == 1 and "dropped" not in info
    assert "metric batches not sent" in info["error"] and "Connection refused" in info["error"]
    assert err.count("tracker backend 'mlflow' failed") == 1


def test_a_damaged_spans_line_costs_only_itself(runs_dir: Path, tmp_path: Path, clean_env: dict[str, str]) -> None:
    """The trace upload reads spans.jsonl as `runtel export` does: a line that is not JSON and a span with a bad id
    are skipped and named in run.json's tracker error; every other span, the damaged line's good one too, arrives.

    A loopback HTTP server answers MLflow's REST calls and keeps the OTLP/protobuf bodies posted to /v1/traces.
    """
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    traces: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/v1/traces":
                traces.append(body)
            answer = json.dumps({"run": {"info": {"run_id": "abc123", "artifact_uri": "mlflow-artifacts:/0/abc123/artifacts"}}}
                                if self.path.endswith("runs/create") else {}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    good = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "survivor", "kind": 1,
            "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
    damaged = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {"name": "x"}, "spans": [
        {**good, "traceId": "zz", "name": "bad-id"}, good]}]}]}
    script = textwrap.dedent(f"""
        import json, runtel
        with runtel.run_span("train") as run:
            with runtel.block("step"):
                pass
            with open(run.dir / "spans.jsonl", "a", encoding="utf-8") as fh:
                fh.write('{{"resourceSpans": [ not json\\n')
                fh.write(json.dumps({damaged!r}) + "\\n")
        print(run.id)
    """)
    env = {**clean_env, "RUNTEL_TRACKER": "runfolder,mlflow",
           "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{server.server_address[1]}", "RUNTEL_DIR": str(runs_dir)}
    try:
        proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    record = json.loads((runs_dir / proc.stdout.strip() / "run.json").read_text())
    info = record["trackers"]["mlflow"]
    assert info["errors"] == 1, info
    assert "1 line(s) that are not a JSON object skipped, not sent" in info["error"], info["error"]
    assert "1 malformed span(s) skipped, not sent" in info["error"], info["error"]
    names = []
    for body in traces:
        request = ExportTraceServiceRequest.FromString(body)
        names += [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert sorted(names) == ["step", "survivor", "train"], names
    assert proc.stderr.count("tracker backend 'mlflow' failed") == 1
