"""What reading counters at block edges costs: per edge, per block, and the per-span ratio vs a plain SDK.

Usage: python benchmarks/edge_bench.py [--quick] [--baseline-rev REV] [--rounds N]

* per edge: ``EdgeReader.read()`` (the process's CPU clock, two ``getrusage``: the thread's CPU and
  high-water mark, the reaped children's; wall clock), without
  energy sources, with a fake RAPL zone (files in a temporary folder, the RAPL read path), with a fake
  NVML GPU (``runtel.testing.FakeNvml``: Python, so it bounds runtel's share, not a real driver's) and with
  four live child processes (their ``/proc/<pid>/stat`` read at every edge, and reused within 5 ms).
* per block / @trace call, all in one process, paired repeats back to back: a plain SDK
  ``TracerProvider`` + ``BatchSpanProcessor`` + no-op exporter against runtel with sampling off (no
  edges) and sampling on at 1 s (edges read, the common case of a block no sample falls into). The
  edge cost per block is the paired difference on - off; the ratio is on / plain SDK. A "floor" row
  swaps the edges for their three system calls each and nothing else (no counters kept, no attribute):
  what any exact edge pays on the machine. Three more "split" rows add one piece each: the hooks' Python
  calls alone (no system call), both edges really read (nothing computed), the block's attributes
  computed but not set; the step from the last to "edges on" is setting and writing the attribute.
* ``--baseline-rev REV``: the same two scripts also run with ``src`` of git revision REV (the "before"),
  alternating processes before / after for ``--rounds`` rounds, so both sides see the same load; each
  cell is the median over rounds of the in-process figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import table

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent

EDGE_CODE = """
import json, statistics, time, tempfile
from pathlib import Path
from runtel.energy.rapl import open_rapl
from runtel.sampling.edges import EdgeReader
from runtel.testing import make_powercap_tree
N, R = {n}, {repeats}

def per_read(reader):
    best = []
    for _ in range(R):
        t = time.perf_counter_ns()
        for _ in range(N):
            reader.read()
        best.append((time.perf_counter_ns() - t) / N / 1e3)
    return statistics.median(best)

out = {{"bare": per_read(EdgeReader())}}
with tempfile.TemporaryDirectory() as tmp:
    make_powercap_tree(Path(tmp), {{"package-0": (0, 2**32)}})
    out["rapl"] = per_read(EdgeReader(open_rapl(Path(tmp))))
from runtel.gpu.nvml import open_nvml
from runtel.testing import FakeGpu, FakeNvml
backend = open_nvml(FakeNvml([FakeGpu()]), env={{}})
backend.read(())  # learns that the device has an energy counter
from runtel.energy.base import EnergyReading
gpu = lambda: tuple(EnergyReading("gpu:" + u, j, e, "nvml") for u, j, e in backend.energy_counters())
out["gpu"] = per_read(EdgeReader(gpu_energy=gpu))
import subprocess, sys
children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(4)]
try:
    pids = [c.pid for c in children]
    # a new tuple per edge: the reader's 5 ms reuse keys on the object, so every edge reads the four processes
    out["tree"] = per_read(EdgeReader(descendants=lambda: tuple(pids)))
    fixed = tuple(pids)
    out["tree_reused"] = per_read(EdgeReader(descendants=lambda: fixed))
finally:
    for c in children:
        c.kill()
        c.wait()
print(json.dumps(out))
"""

SPAN_CODE = """
import json, os, statistics, time
import runtel
from runtel import _sdk
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

class NoOp(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

plain = TracerProvider()
plain_processor = BatchSpanProcessor(NoOp(), max_queue_size=16384, schedule_delay_millis=200, max_export_batch_size=1024)
plain.add_span_processor(plain_processor)
tracer = plain.get_tracer("bench")
runtel.configure(dir=os.environ["BENCH_DIR"], sampling=True, sample_interval=1.0, gpu_backend="none")
N, R = {n}, {repeats}

@runtel.trace
def traced():
    pass

def blk():
    with runtel.block("blk"):
        pass

def bare():
    with tracer.start_as_current_span("bare"):
        pass

import resource
_clock, _usage, _THREAD, _CHILDREN = time.process_time_ns, resource.getrusage, resource.RUSAGE_THREAD, resource.RUSAGE_CHILDREN

def floor_edge(end=False):  # the system calls an edge cannot do without, nothing else
    return _clock(), _usage(_THREAD), _usage(_CHILDREN)

def floor_attributes(start, start_ns=0):
    floor_edge(True)
    return {{}}

names = ("bare", "block_off", "block_on", "trace_off", "trace_on", "block_floor", "block_calls", "block_reads",
         "block_unset")
results = {{k: [] for k in names}}
with runtel.run_span("edges") as run:
    rt = _sdk.get_runtime()
    monitor = rt.monitor
    flush = rt.span_processors[0]
    real_attributes, reader = monitor.block_attributes, monitor.edges
    kept = monitor.edge()

    def kept_edge(end=False):  # the hooks' Python calls only: no system call, no attribute
        return kept

    def no_attributes(start, start_ns=0):
        return {{}}

    def reads_only(start, start_ns=0):  # both real edge reads, nothing computed from them
        reader.read(True)
        return {{}}

    def unset(start, start_ns=0):  # the real end of a block, its attribute not set on the span
        real_attributes(start, start_ns)
        return {{}}

    swaps = {{"floor": (floor_edge, floor_attributes), "calls": (kept_edge, no_attributes),
             "reads": (None, reads_only), "unset": (None, unset)}}

    def timed(fn, processor, edges, swap=None):
        rt.monitor = monitor if edges else None  # the same runtime, its edge reads switched on or off
        if swap is not None:  # a part of the edges' work only, to split their cost
            edge, attributes = swaps[swap]
            if edge is not None:
                monitor.edge = edge
            monitor.block_attributes = attributes
        processor.force_flush()
        t = time.perf_counter_ns()
        for _ in range(N):
            fn()
        processor.force_flush()  # wall time includes writing them out
        rt.monitor = monitor
        monitor.__dict__.pop("edge", None)
        monitor.__dict__.pop("block_attributes", None)
        return (time.perf_counter_ns() - t) / N / 1e3

    for _ in range(2000):
        bare(); traced(); blk()
    for _ in range(R):
        results["bare"].append(timed(bare, plain_processor, False))
        results["block_off"].append(timed(blk, flush, False))
        results["block_on"].append(timed(blk, flush, True))
        results["trace_off"].append(timed(traced, flush, False))
        results["trace_on"].append(timed(traced, flush, True))
        for swap in ("floor", "calls", "reads", "unset"):
            results["block_" + swap].append(timed(blk, flush, True, swap))
out = {{k: statistics.median(v) for k, v in results.items()}}
for swap in ("floor", "calls", "reads", "unset"):
    part = results["block_" + swap]
    out[swap + "_edge_us"] = statistics.median(a - b for a, b in zip(part, results["block_off"]))
    out[swap + "_ratio"] = statistics.median(a / b for a, b in zip(part, results["bare"]))
for kind in ("block", "trace"):
    on, off = results[kind + "_on"], results[kind + "_off"]
    out[kind + "_edge_us"] = statistics.median(a - b for a, b in zip(on, off))
    out[kind + "_ratio_on"] = statistics.median(a / b for a, b in zip(on, results["bare"]))
    out[kind + "_ratio_off"] = statistics.median(a / b for a, b in zip(off, results["bare"]))
print(json.dumps(out))
"""


def fresh(code: str, src: Path | None = None) -> dict[str, float]:
    """Run ``code`` in a new interpreter (with ``src`` first on the path when given); its last line as JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_"))}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench.py"
        script.write_text(textwrap.dedent(code))
        done = subprocess.run([PY, str(script)], capture_output=True, text=True, timeout=900,
                              env={**env, "BENCH_DIR": str(Path(tmp) / "runs")})
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def source_of(rev: str, into: Path) -> Path:
    """``src`` of revision ``rev`` unpacked under ``into``."""
    archive = into / "src.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def medians(results: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline-rev", help="git revision whose src runs the same cases (the 'before')")
    parser.add_argument("--rounds", type=int, default=2, help="before/after process pairs with --baseline-rev")
    args = parser.parse_args()
    n, repeats = (2_000, 5) if args.quick else (20_000, 9)
    with tempfile.TemporaryDirectory() as tmp:
        sides: dict[str, Path | None] = {"this checkout": None}
        if args.baseline_rev:
            sides = {args.baseline_rev: source_of(args.baseline_rev, Path(tmp)), "this checkout": None}
        rounds = max(1, args.rounds) if args.baseline_rev else 1
        edges: dict[str, list[dict[str, float]]] = {k: [] for k in sides}
        spans: dict[str, list[dict[str, float]]] = {k: [] for k in sides}
        for _ in range(rounds):
            for label, src in sides.items():
                edges[label].append(fresh(EDGE_CODE.format(n=n * 5, repeats=repeats), src))
            for label, src in sides.items():
                spans[label].append(fresh(SPAN_CODE.format(n=n, repeats=repeats), src))
    labels = list(sides)
    e = {k: medians(v) for k, v in edges.items()}
    r = {k: medians(v) for k, v in spans.items()}
    note = f", median of {rounds} alternating processes per side" if rounds > 1 else ""
    table(
        f"one edge read (EdgeReader.read), median of {repeats} x {n * 5}{note}",
        ["counters", *(f"us/edge ({k})" for k in labels)],
        [
            ["CPU (process clock; thread + high-water mark: one getrusage), children's getrusage, clock", *(f"{e[k]['bare']:.2f}" for k in labels)],
            ["+ one RAPL zone (sysfs file read; fake tree)", *(f"{e[k]['rapl']:.2f}" for k in labels)],
            ["+ one GPU energy counter (FakeNvml: Python, not a driver)", *(f"{e[k]['gpu']:.2f}" for k in labels)],
            ["+ 4 live child processes (/proc/<pid>/stat each)", *(f"{e[k].get('tree', float('nan')):.2f}" for k in labels)],
            ["+ 4 live child processes, read reused (edges within 5 ms)",
             *(f"{e[k].get('tree_reused', float('nan')):.2f}" for k in labels)],
        ],
    )
    for label in labels:
        x = r[label]
        table(
            f"{label}: per span inside a run: plain SDK vs runtel with edge reads off/on (sampling at 1 s, no sample "
            f"in the blocks), same process, paired median of {repeats} x {n}{note}",
            ["what", "us/span", "edge cost, us (paired on - off)", "ratio vs plain SDK", "target"],
            [
                ["plain SDK start_as_current_span", f"{x['bare']:.2f}", "-", "1.00", "-"],
                ["runtel.block, edges off", f"{x['block_off']:.2f}", "-", f"{x['block_ratio_off']:.2f}", "-"],
                ["runtel.block, edges on", f"{x['block_on']:.2f}", f"{x['block_edge_us']:+.2f}",
                 f"{x['block_ratio_on']:.2f}", "<= 1.25"],
                *([what, f"{x['block_' + swap]:.2f}", f"{x[swap + '_edge_us']:+.2f}", f"{x[swap + '_ratio']:.2f}", "-"]
                  for what, swap in (
                      ("  split: the edge hooks' Python calls only (no system call)", "calls"),
                      ("  split: the edges' 6 system calls only (the floor)", "floor"),
                      ("  split: both edges read, no attribute computed", "reads"),
                      ("  split: the block's attributes computed, not set", "unset"),
                  )),
                ["@runtel.trace, edges off", f"{x['trace_off']:.2f}", "-", f"{x['trace_ratio_off']:.2f}", "-"],
                ["@runtel.trace, edges on", f"{x['trace_on']:.2f}", f"{x['trace_edge_us']:+.2f}",
                 f"{x['trace_ratio_on']:.2f}", "<= 1.25"],
            ],
        )


if __name__ == "__main__":
    main()
