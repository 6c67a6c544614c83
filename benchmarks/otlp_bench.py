"""OTLP export benchmarks against a real receiver (the ``rotel-agent`` binary from the ``rotel`` package).

Usage: python benchmarks/otlp_bench.py [--quick]

1. Cost per span through ``runtel.block`` inside a run: JSON only vs JSON + OTLP (http/protobuf, grpc),
   each in a fresh interpreter (fresh global provider), sampling off.
2. Cost per metric collection of one run (~runtel's instrument set) to the run folder or an OTLP exporter.
3. User-visible cost at exit when the collector is dead (closed port) or hangs (accepts, never answers),
   compared with the same job without OTLP; bounded by RUNTEL_EXPORT_TIMEOUT.
Runs in well under 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import table

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_receiver(folder: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """rotel-agent with the blackhole exporter (no debug printing: we measure the sender, not the printer)."""
    spec = importlib.util.find_spec("rotel")
    assert spec is not None and spec.submodule_search_locations, "pip install rotel"
    binary = Path(next(iter(spec.submodule_search_locations))) / "rotel-agent"
    grpc_port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [str(binary), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
         "--otlp-http-endpoint", f"127.0.0.1:{http_port}", "--exporter", "blackhole",
         "--pid-file", str(folder / "rotel.pid"), "--log-file", str(folder / "rotel.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for port in (grpc_port, http_port):
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    return proc, grpc_port, http_port


def base_env(runs: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_"))}
    env.update(RUNTEL_DIR=str(runs), RUNTEL_SAMPLING="false",
               PYTHONPATH=str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def fresh(code: str, env: dict[str, str]) -> dict[str, float]:
    proc = subprocess.run([PY, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]




SPAN_CODE = """
    import json, statistics, time
    import runtel
    N, REPEATS = {n}, {repeats}
    per = []
    with runtel.run_span("otlp-bench"):
        for _ in range(2000):
            with runtel.block("warm"):
                pass
        for _ in range(REPEATS):
            t = time.perf_counter_ns()
            for _ in range(N):
                with runtel.block("step"):
                    pass
            per.append((time.perf_counter_ns() - t) / N / 1e3)
        t = time.perf_counter()
    end = time.perf_counter() - t  # run end: flush of JSON (and OTLP) exporters
    print(json.dumps({{"median": statistics.median(per), "min": min(per), "run_end_ms": end * 1e3}}))
"""


def bench_spans(env: dict[str, str], grpc_port: int, http_port: int, n: int, repeats: int) -> None:
    modes = {
        "json only": {},
        "json + otlp http/protobuf": {"RUNTEL_EXPORTERS": "json,otlp",
                                      "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{http_port}"},
        "json + otlp grpc": {"RUNTEL_EXPORTERS": "json,otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                             "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{grpc_port}"},
        "json + otlp http/json": {"RUNTEL_EXPORTERS": "json,otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                                  "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{http_port}"},
    }
    results = {name: fresh(SPAN_CODE.format(n=n, repeats=repeats), {**env, **extra}) for name, extra in modes.items()}
    base = results["json only"]["median"]
    table(
        f"cost per span: runtel.block inside a run, {n} spans x {repeats} repeats, median (min), fresh process each",
        ["mode", "us/span", "ratio vs json only", "run end (flush) ms"],
        [[name, f"{r['median']:.1f} ({r['min']:.1f})", f"{r['median'] / base:.2f}x", f"{r['run_end_ms']:.0f}"]
         for name, r in results.items()],
    )


METRIC_CODE = """
    import json, time, tempfile, pathlib
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from runtel.config import resolve_settings
    from runtel.exporters.otlp import build_metric_exporter
    from runtel.rundir.writer import RunSinks
    from runtel._sdk.metrics import RecordingMeter, RunMetrics
    meter = RecordingMeter()
    # roughly runtel's instrument set: ~19 instruments, 1-12 points each, run id on every point
    for i in range(19):
        meter.create_observable_gauge(f"bench.metric.{{i}}", [lambda o, i=i: [Observation(float(i + k),
            {{"runtel.run.id": "r1", "k": str(k)}}) for k in range(1 + i % 12)]], unit="1")
    points = sum(1 + i % 12 for i in range(19))
    protocol = "{protocol}"
    json_file, exporters = None, []
    if protocol == "jsonl":
        sinks = RunSinks(); d = pathlib.Path(tempfile.mkdtemp()); sinks.open("r1", d)
        json_file = lambda: sinks.metrics("r1")
    else:
        exporters = [build_metric_exporter(resolve_settings(env={{"OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                                                                  "OTEL_EXPORTER_OTLP_ENDPOINT": "{endpoint}"}}))]
    metrics = RunMetrics(meter.instruments, json_file=json_file, exporters=exporters,
                         resource=Resource.create({{"service.name": "bench"}}),
                         scope=InstrumentationScope("runtel", "0"), start_ns=time.time_ns())
    for _ in range(20):
        metrics.collect()
    times = []
    for _ in range({n}):
        t = time.perf_counter_ns(); metrics.collect(); times.append((time.perf_counter_ns() - t) / 1e6)
    times.sort()
    ok = all(e.health.failures == 0 for e in exporters)  # no failed export (QuietMetricExporter's health)
    print(json.dumps({{"median": times[len(times) // 2], "p90": times[int(len(times) * 0.9)], "points": points,
                       "ok": str(ok)}}))
"""


def bench_metrics(env: dict[str, str], grpc_port: int, http_port: int, n: int) -> None:
    rows = []
    for protocol, endpoint in (("jsonl", ""), ("http/protobuf", f"http://127.0.0.1:{http_port}"),
                               ("grpc", f"http://127.0.0.1:{grpc_port}"),
                               ("http/json", f"http://127.0.0.1:{http_port}")):
        r = fresh(METRIC_CODE.format(protocol=protocol, endpoint=endpoint, n=n), env)
        rows.append([protocol if protocol != "jsonl" else "metrics.jsonl (local)", int(r["points"]),
                     f"{r['median']:.2f}", f"{r['p90']:.2f}", r["ok"].split(".")[-1]])
    table(f"cost per metric collection of one run (observe + encode + write/export), {n} collections, "
          "after 20 warm-up",
          ["exporter", "points", "ms median", "ms p90", "result"], rows)


EXIT_CODE = """
    import json, time
    t0 = time.perf_counter()
    import runtel
    with runtel.run_span("exit-bench"):
        for _ in range(500):
            with runtel.block("step"):
                pass
    print(json.dumps({"in_process_ms": (time.perf_counter() - t0) * 1e3}))
"""


def bench_exit(env: dict[str, str], repeats: int) -> None:
    dead = free_port()
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)
    hang_port = hang.getsockname()[1]
    rows = []

    def wall(extra: dict[str, str]) -> tuple[float, int]:
        times = []
        lines = 0
        for _ in range(repeats):
            t = time.perf_counter()
            proc = subprocess.run([PY, "-c", textwrap.dedent(EXIT_CODE)], capture_output=True, text=True,
                                  env={**env, **extra}, timeout=120)
            times.append(time.perf_counter() - t)
            assert proc.returncode == 0, proc.stderr
            lines = len([x for x in proc.stderr.splitlines() if x.strip()])
        return statistics.median(times), lines

    base, _ = wall({})
    rows.append(["json only (baseline)", "-", f"{base:.2f}", "-", 0])
    cases = [("dead endpoint (closed port)", dead, "1", "http/protobuf"), ("dead endpoint (closed port)", dead, "1", "grpc"),
             ("dead endpoint (closed port)", dead, "5", "http/protobuf"),
             ("hanging collector (never answers)", hang_port, "1", "http/protobuf"),
             ("hanging collector (never answers)", hang_port, "1", "grpc"),
             ("hanging collector (never answers)", hang_port, "5", "http/protobuf")]
    for label, port, timeout, protocol in cases:
        t, lines = wall({"RUNTEL_EXPORTERS": "json,otlp", "RUNTEL_EXPORT_TIMEOUT": timeout,
                         "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                         "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
        rows.append([f"{label}, {protocol}", timeout, f"{t:.2f}", f"+{t - base:.2f}", lines])
    hang.close()
    table(f"user-visible wall time of a short job (500 blocks, sampling off) incl. interpreter start, {repeats} run(s)",
          ["collector", "RUNTEL_EXPORT_TIMEOUT s", "wall s", "vs baseline s", "stderr lines"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    n, repeats = (5_000, 2) if args.quick else (20_000, 5)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        receiver, grpc_port, http_port = start_receiver(folder)
        try:
            env = base_env(folder / "runs")
            print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, receiver rotel-agent on 127.0.0.1")
            bench_spans(env, grpc_port, http_port, n, repeats)
            bench_metrics(env, grpc_port, http_port, 50 if args.quick else 100)
            bench_exit(env, 1)
        finally:
            receiver.terminate()
            receiver.wait(5)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
