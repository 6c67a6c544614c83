"""runtel's metrics reach Prometheus and the application's own MeterProvider (docs/jaeger-grafana.md, "Prometheus alone").

* Debian's real ``prometheus`` binary scrapes the ``/metrics`` endpoint of a running job
  (``OTEL_METRICS_EXPORTER=prometheus``) and its HTTP API answers with the job's
  ``process_cpu_time_seconds_total`` and ``process_memory_usage_bytes`` carrying the run id. Under
  ``CI=true`` a missing binary fails the test (``make test`` installs it as root); elsewhere it skips loudly.
* Without the exporter package the run goes on, with one warning naming the extra.
* An SDK ``MeterProvider`` the application set as the global one (here with an ``InMemoryMetricReader``)
  sees runtel's instruments and ``run.log`` series while the run is open, and none of them after.

Each job is a real subprocess (the global MeterProvider can be set once per process).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.exporter.prometheus", reason="LOUD SKIP: pip install 'runtel[prometheus]'")

JOB = textwrap.dedent("""
    import pathlib, sys, time
    import runtel
    stop = pathlib.Path(sys.argv[1])
    with runtel.run_span("prom-job") as run:
        print(run.id, flush=True)
        deadline = time.monotonic() + 90
        while not stop.exists() and time.monotonic() < deadline:
            sum(i * i for i in range(20000))  # some CPU time to report
            run.log(loss=1.0)
            time.sleep(0.05)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is missing under CI=true: `make test` installs Debian's prometheus as root")
        pytest.skip("LOUD SKIP: no prometheus on PATH (apt-get install prometheus, or run `make test` as root)")
    return path


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def job(tmp_path: Path, clean_env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """A running job serving /metrics on a free loopback port: (run id, port)."""
    port = _free_port()
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs"), "RUNTEL_SAMPLING": "true", "RUNTEL_GPU": "none",
           "RUNTEL_SAMPLE_INTERVAL": "0.2", "OTEL_METRICS_EXPORTER": "prometheus",
           "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)}
    stop = tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(stop)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        assert run_id, proc.stderr.read() if proc.stderr else ""
        yield run_id, port
    finally:
        stop.touch()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        assert proc.returncode == 0, err


def test_real_prometheus_scrapes_the_running_job(job: tuple[str, int], tmp_path: Path) -> None:
    """Prometheus (its own TSDB folder, a free port, 1 s scrapes) stores the job's semconv metrics with the run id."""
    binary = _prometheus()
    run_id, job_port = job
    web_port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(textwrap.dedent(f"""
        global:
          scrape_interval: 1s
          evaluation_interval: 1s
        scrape_configs:
          - job_name: runtel
            static_configs:
              - targets: ["127.0.0.1:{job_port}"]
    """))
    log = (tmp_path / "prometheus.log").open("wb")
    server = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{web_port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        api = f"http://127.0.0.1:{web_port}/api/v1/query?query="
        found: dict[str, list[Any]] = {}
        deadline = time.monotonic() + 60
        wanted = ("process_cpu_time_seconds_total", "process_memory_usage_bytes")
        while time.monotonic() < deadline and len(found) < len(wanted):
            for name in wanted:
                if name in found:
                    continue
                query = urllib.parse.quote(f'{name}{{runtel_run_id="{run_id}"}}')
                try:
                    answer = _get(api + query)
                except OSError:
                    break  # Prometheus still starting
                if answer.get("status") == "success" and answer["data"]["result"]:
                    found[name] = answer["data"]["result"]
            time.sleep(0.5)
        assert set(found) == set(wanted), (tmp_path / "prometheus.log").read_text(errors="replace")[-3000:]
        cpu = found["process_cpu_time_seconds_total"]
        assert {r["metric"]["cpu_mode"] for r in cpu} >= {"user", "system"}
        assert any(r["metric"]["runtel_process_scope"] == "main" and float(r["value"][1]) > 0 for r in cpu)
        memory = found["process_memory_usage_bytes"]
        assert any(r["metric"].get("runtel_memory_kind") == "rss" and float(r["value"][1]) > 1e6 for r in memory)
        assert all(r["metric"]["job"] == "runtel" for r in cpu + memory)
        series = _get(api + urllib.parse.quote(f'runtel_result_loss{{runtel_run_id="{run_id}"}}'))
        assert [float(r["value"][1]) for r in series["data"]["result"]] == [1.0]
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_the_endpoint_serves_semconv_names_with_the_run_id(job: tuple[str, int]) -> None:
    """/metrics itself (no Prometheus needed): names translated as the Collector does, one label per run."""
    run_id, port = job
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline and "process_cpu_time_seconds_total{" not in text:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            pass
        time.sleep(0.2)
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    cpu = [line for line in samples if line.startswith("process_cpu_time_seconds_total{")]
    assert cpu and all(f'runtel_run_id="{run_id}"' in line for line in cpu)
    assert any(line.startswith("process_memory_usage_bytes{") for line in samples)
    assert any(line.startswith("target_info{") and 'service_name="prom-job"' in line for line in samples)
    assert "# TYPE process_cpu_time_seconds_total counter" in text


def test_without_the_exporter_package_one_warning_names_the_extra(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """The exporter cannot be imported: the run completes, one warning says `pip install 'runtel[prometheus]'`."""
    script = textwrap.dedent("""
        import sys
        sys.modules["opentelemetry.exporter.prometheus"] = None  # as if the extra were not installed
        import runtel
        for _ in range(2):
            with runtel.run_span("no-prom"):
                pass
    """)
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs"), "OTEL_METRICS_EXPORTER": "prometheus",
           "OTEL_EXPORTER_PROMETHEUS_PORT": str(_free_port())}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("pip install 'runtel[prometheus]'") == 1, proc.stderr
    records = [json.loads((d / "run.json").read_text()) for d in (tmp_path / "runs").iterdir() if d.is_dir()]
    assert [r["status"] for r in records] == ["ok", "ok"]


APPLICATION_PROVIDER = textwrap.dedent("""
    import json, time
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    import runtel

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    def runtel_points():
        data = reader.get_metrics_data()
        out = {}
        for rm in (data.resource_metrics if data else []):
            for sm in rm.scope_metrics:
                if sm.scope.name != "runtel":
                    continue
                for m in sm.metrics:
                    out[m.name] = [dict(p.attributes) | {"value": p.value} for p in m.data.data_points]
        return out

    with runtel.run_span("app-provider") as run:
        time.sleep(0.6)  # a few samples
        run.log(step=3, accuracy=0.75)
        during = runtel_points()
    after = runtel_points()
    print(json.dumps({"run_id": run.id, "during": during, "after": after}))
""")


def test_the_applications_meter_provider_sees_runtels_instruments(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A real SDK MeterProvider set globally with an InMemoryMetricReader: runtel's instruments (process, system,
    energy, run.log series) with the run id while the run is open; nothing of runtel's once it closed."""
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs"), "RUNTEL_SAMPLING": "true", "RUNTEL_GPU": "none",
           "RUNTEL_SAMPLE_INTERVAL": "0.1"}
    proc = subprocess.run([sys.executable, "-c", APPLICATION_PROVIDER], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    run_id, during = result["run_id"], result["during"]
    for name in ("process.cpu.time", "process.memory.usage", "system.memory.usage", "runtel.result.accuracy"):
        assert during.get(name), f"{name} missing from the application's reader: {sorted(during)}"
        assert all(p["runtel.run.id"] == run_id for p in during[name])
    assert [p["value"] for p in during["runtel.result.accuracy"]] == [0.75]
    assert "runtel.step" not in during["runtel.result.accuracy"][0], "a step label would make a series per step"
    rss = [p for p in during["process.memory.usage"]
           if p.get("runtel.memory.kind") == "rss" and p["runtel.process.scope"] == "main"]
    assert rss and rss[0]["value"] > 1e6
    assert not any(result["after"].get(name) for name in during), "a closed run's series must end"


def test_a_port_in_use_warns_once_and_the_run_goes_on(runs_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Another server holds the port: the run completes, one warning names the address and the variable."""
    import logging

    import runtel
    from runtel.testing import isolated

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
        monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
        monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
        with caplog.at_level(logging.WARNING, logger="runtel"), isolated(runs_dir, sampling=False):
            for _ in range(2):
                with runtel.run_span("busy-port") as run:
                    pass
                assert json.loads((Path(run.dir) / "run.json").read_text())["status"] == "ok"
    warnings = [r.getMessage() for r in caplog.records if "could not serve Prometheus" in r.getMessage()]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0] and "OTEL_EXPORTER_PROMETHEUS_PORT" in warnings[0]
