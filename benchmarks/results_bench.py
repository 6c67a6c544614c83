"""What recording results costs: ``run.log`` per call (one OTLP/JSON line each) and ``run.set_result``.

Usage: python benchmarks/results_bench.py [--quick]

Wall time per call inside a run with sampling off (the series line goes to metrics.jsonl, the record
is rewritten at most once a second), median of 5 repeats; the machine may be shared, so read the
minimum as the cost and the median as what a loaded machine gives.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import table

import runtel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runtel.configure(dir=tmp, sampling=False)
        cases = {
            "run.log(step=i, loss=..)": lambda run, i: run.log(step=i, loss=1.0 / (i + 1)),
            "run.log(step=i, 4 values)": lambda run, i: run.log(step=i, loss=1.0 / (i + 1), acc=0.5, lr=0.1, f1=0.2),
            "run.set_result(accuracy=..)": lambda run, i: run.set_result(accuracy=i / n),
        }
        for label, call in cases.items():
            per_call = []
            for _ in range(5):
                with runtel.run_span("bench") as run:
                    start = time.perf_counter()
                    for i in range(n):
                        call(run, i)
                    per_call.append((time.perf_counter() - start) / n * 1e6)
            rows.append([label, f"{min(per_call):.1f}", f"{statistics.median(per_call):.1f}"])
    table(f"results API, {n} calls per repeat", ["call", "min µs/call", "median µs/call"], rows)


if __name__ == "__main__":
    main()
