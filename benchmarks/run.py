"""Run every benchmark, side by side, and print their tables (``make bench``).

Usage: python benchmarks/run.py [--quick]

Each script is self-contained and can be run on its own:
  benchmarks/core_bench.py      import cost, @trace/block overhead vs bare OTel, run_span cost vs pycrumbs/kwutil,
                                exporter throughput and memory over 1,000,000 spans
  benchmarks/sampling_bench.py  sampler CPU cost vs gpu_tracker, peak-RSS accuracy, event-loop latency
  benchmarks/otlp_bench.py      OTLP (grpc, http) vs JSON-only cost against a real receiver, dead-endpoint exit cost
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("core_bench.py", "sampling_bench.py", "otlp_bench.py")


def main() -> int:
    extra = [a for a in sys.argv[1:] if a == "--quick"]
    failed = []
    for script in SCRIPTS:
        print(f"\n=== {script} ===", flush=True)
        code = subprocess.call([sys.executable, str(HERE / script), *extra])
        if code != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
