"""What following the work costs: per-span wall time against a plain SDK, thread and child-process starts.

Usage: python benchmarks/propagation_bench.py [--quick] [--spans-only]

* per span: ``@runtel.trace`` / ``runtel.block`` inside a run against a plain SDK ``TracerProvider``
  + ``BatchSpanProcessor`` + a no-op exporter in the same process (not the global provider, so
  runtel's processor is not on its path). Wall time per span, exporter threads included, paired
  repeats (each repeat measures all three back to back).
* thread start inside a run with the thread patch switched on and off (paired, same process), and
  ``subprocess.run(["true"])`` inside a run, at its own level and inside a block (where the child gets
  an environment copy carrying the block), with ``RUNTEL_PROPAGATE=true`` against ``false``
  (fresh interpreters). Minimums: the machine these ran on was shared, medians drifted with load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import table

PY = sys.executable

SPAN_CODE = """
import json, os, statistics, time
import runtel
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

class NoOp(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

plain = TracerProvider()
plain_processor = BatchSpanProcessor(NoOp(), max_queue_size=16384, schedule_delay_millis=200, max_export_batch_size=1024)
plain.add_span_processor(plain_processor)
tracer = plain.get_tracer("bench")
runtel.configure(dir=os.environ["BENCH_DIR"], sampling=False)
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

results = {{"bare": [], "trace": [], "block": []}}
with runtel.run_span("overhead") as run:
    from runtel import _sdk
    rt = _sdk.get_runtime()
    for _ in range(2000):
        bare(); traced(); blk()
    for _ in range(R):
        for name, fn, flush in (("bare", bare, plain_processor), ("trace", traced, rt.span_processors[0]),
                                ("block", blk, rt.span_processors[0])):
            flush.force_flush()
            t = time.perf_counter_ns()
            for _ in range(N):
                fn()
            flush.force_flush()  # wall time includes writing them out
            results[name].append((time.perf_counter_ns() - t) / N / 1e3)
out = {{k: statistics.median(v) for k, v in results.items()}}
out["trace_ratio"] = statistics.median(t / b for t, b in zip(results["trace"], results["bare"]))
out["block_ratio"] = statistics.median(t / b for t, b in zip(results["block"], results["bare"]))
print(json.dumps(out))
"""

THREAD_CODE = """
import json, os, statistics, threading, time
import runtel
from runtel import _propagation
runtel.configure(dir=os.environ["BENCH_DIR"], sampling=False)
N, R = {n}, {repeats}

def starts():
    t = time.perf_counter_ns()
    for _ in range(N):
        th = threading.Thread(target=lambda: None); th.start(); th.join()
    return (time.perf_counter_ns() - t) / N / 1e3

on, off = [], []
with runtel.run_span("starts"):
    with runtel.block("here"):
        for _ in range(R):  # the patch stays installed; `active` switches it, paired back to back
            _propagation.active = True
            on.append(starts())
            _propagation.active = False
            off.append(starts())
        _propagation.active = True
print(json.dumps({{"on": min(on), "off": min(off), "diff": statistics.median(a - b for a, b in zip(on, off))}}))
"""

PROC_CODE = """
import json, os, subprocess, time
import runtel
runtel.configure(dir=os.environ["BENCH_DIR"], sampling=False)
N = {n}
def starts():
    best = []
    for _ in range(5):
        t = time.perf_counter_ns()
        for _ in range(N):
            subprocess.run(["true"])
        best.append((time.perf_counter_ns() - t) / N / 1e3)
    return min(best)
with runtel.run_span("starts"):
    proc = starts()
    with runtel.block("launch"):  # inside a block the child gets the block's TRACEPARENT (an environment copy)
        in_block = starts()
print(json.dumps({{"proc": proc, "in_block": in_block}}))
"""


def fresh(code: str, env: dict[str, str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench.py"
        script.write_text(textwrap.dedent(code))
        done = subprocess.run([PY, str(script)], capture_output=True, text=True, timeout=900,
                              env={**os.environ, **env, "BENCH_DIR": str(Path(tmp) / "runs")})
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def bench_spans(n: int, repeats: int) -> None:
    r = fresh(SPAN_CODE.format(n=n, repeats=repeats), {})
    table(
        f"per-span wall time inside a run vs a plain SDK TracerProvider + BatchSpanProcessor + no-op exporter "
        f"(same process), median of {repeats} x {n}",
        ["what", "us/span", "ratio vs plain SDK (paired median)", "target"],
        [
            ["plain SDK start_as_current_span", f"{r['bare']:.2f}", "1.00", "-"],
            ["@runtel.trace on a no-op function", f"{r['trace']:.2f}", f"{r['trace_ratio']:.2f}", "<= 1.25"],
            ["with runtel.block(...)", f"{r['block']:.2f}", f"{r['block_ratio']:.2f}", "-"],
        ],
    )


def bench_starts(n: int, repeats: int, rounds: int) -> None:
    r = fresh(THREAD_CODE.format(n=n, repeats=repeats), {})
    on_runs = [fresh(PROC_CODE.format(n=n // 10), {"RUNTEL_PROPAGATE": "true"}) for _ in range(rounds)]
    off_runs = [fresh(PROC_CODE.format(n=n // 10), {"RUNTEL_PROPAGATE": "false"}) for _ in range(rounds)]
    on, off = [x["proc"] for x in on_runs], [x["proc"] for x in off_runs]
    on_block, off_block = [x["in_block"] for x in on_runs], [x["in_block"] for x in off_runs]
    table(
        f"starting work inside a run, propagation on vs off (threads: min of {repeats} paired rounds of {n}, and "
        f"the median paired difference; subprocess: min over {rounds} fresh processes of 5 x {n // 10})",
        ["what", "off, us", "on, us", "added, us"],
        [
            ["Thread start + join", f"{r['off']:.1f}", f"{r['on']:.1f}", f"{r['on'] - r['off']:+.1f} (paired median "
             f"{r['diff']:+.1f})"],
            ['subprocess.run(["true"])', f"{min(off):.0f}", f"{min(on):.0f}", f"{min(on) - min(off):+.0f}"],
            ['subprocess.run(["true"]) inside a block', f"{min(off_block):.0f}", f"{min(on_block):.0f}",
             f"{min(on_block) - min(off_block):+.0f}"],
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--spans-only", action="store_true", help="only the per-span table")
    parser.add_argument("--repeats", type=int, help="paired repeats of the per-span loops (default 7, quick 3)")
    args = parser.parse_args()
    bench_spans(2_000 if args.quick else 20_000, args.repeats or (3 if args.quick else 7))
    if not args.spans_only:
        bench_starts(200 if args.quick else 1_000, 3 if args.quick else 5, 3 if args.quick else 5)


if __name__ == "__main__":
    main()
