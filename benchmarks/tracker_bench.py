"""What tracker backends (``RUNTEL_TRACKER``) add to ``run.log`` and to a run's start and end.

Usage: python benchmarks/tracker_bench.py [--quick] [--mlflow http://127.0.0.1:5000]

Side by side in one process, cases interleaved per repeat: the run folder alone, plus a backend that
does nothing (the fan-out's own cost), plus, with ``--mlflow``, the MLflow backend against that server
(points buffered and sent 1000 per request). Wall time, sampling off, median of 5 repeats; the machine
may be shared, so read ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import table

import runtel
from runtel import _sdk
from runtel.backends.base import TrackerWriter


class NoopWriter(TrackerWriter):
    """Receives every write and keeps nothing."""

    def __init__(self, root: Any, config: str | None) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    parser.add_argument("--mlflow", help="tracking server URI: also measure the mlflow backend")
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000
    cases: dict[str, tuple[str, ...]] = {
        "runfolder": ("runfolder",),
        "runfolder + no-op backend": ("runfolder", "__main__:NoopWriter"),
    }
    if args.mlflow:
        os.environ["MLFLOW_TRACKING_URI"] = args.mlflow
        cases["runfolder + mlflow"] = ("runfolder", "mlflow")
    log_us: dict[str, list[float]] = {k: [] for k in cases}
    start_ms: dict[str, list[float]] = {k: [] for k in cases}
    end_ms: dict[str, list[float]] = {k: [] for k in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(5):
            for label, trackers in cases.items():
                _sdk.reset()
                runtel.configure(dir=tmp, sampling=False, trackers=trackers)
                t0 = time.perf_counter()
                span = runtel.run_span("bench", config={"lr": 0.1})
                run = span.__enter__()
                t1 = time.perf_counter()
                for i in range(n):
                    run.log(step=i, loss=1.0 / (i + 1))
                t2 = time.perf_counter()
                span.__exit__(None, None, None)
                t3 = time.perf_counter()
                errors = (run.record.get("trackers") or {}).get("mlflow", {}).get("errors")
                if errors:
                    raise SystemExit(f"mlflow backend failed: {run.record['trackers']['mlflow']}")
                log_us[label].append((t2 - t1) / n * 1e6)
                start_ms[label].append((t1 - t0) * 1e3)
                end_ms[label].append((t3 - t2) * 1e3)
    base = statistics.median(log_us["runfolder"])
    rows = [[label, f"{min(log_us[label]):.1f}", f"{statistics.median(log_us[label]):.1f}",
             f"{statistics.median(log_us[label]) / base:.2f}", f"{statistics.median(start_ms[label]):.1f}",
             f"{statistics.median(end_ms[label]):.1f}"] for label in cases]
    table(f"run.log with tracker backends, {n} calls per run, 5 repeats",
          ["RUNTEL_TRACKER", "min µs/log", "median µs/log", "× runfolder", "start ms", "end ms"], rows)


if __name__ == "__main__":
    main()
