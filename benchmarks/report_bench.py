"""Size and speed of ``runtel report`` for a big run: 10,000 spans and one hour of 1 Hz samples.

Usage: python benchmarks/report_bench.py

The 10,000 spans are real (a run of 10,000 blocks). An hour of samples cannot be waited for here, so the
run's own last metrics.jsonl line is repeated 3,600 times with its timestamps shifted by one second each
(real OTLP/JSON lines, a synthetic time axis). Reported: the HTML's size (target <= 2 MB), the time to
write it, and, when Debian's chromium is installed, the wall time for headless Chromium to load it and
run its charts (target < 1 s; includes the browser's own start, measured apart on an empty page).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import table

PY = sys.executable
JOB = """
import runtel
with runtel.run_span("big") as run:
    for i in range(10_000):
        with runtel.block("step", index=i):
            pass
print(run.dir)
"""


def _chromium_ms(page: Path, profile: Path) -> float | None:
    chromium = shutil.which("chromium")
    if chromium is None:
        return None
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            "--proxy-server=127.0.0.1:9", "--dump-dom", page.as_uri()]
    t = time.perf_counter()
    subprocess.run(args, capture_output=True, timeout=120, check=True)
    return (time.perf_counter() - t) * 1000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        env = {**os.environ, "RUNTEL_DIR": str(base / "runs"), "RUNTEL_SAMPLE_INTERVAL": "1"}
        run_dir = Path(subprocess.run([PY, "-c", JOB], env=env, capture_output=True, text=True, check=True,
                                      timeout=300).stdout.split()[-1])
        metrics = run_dir / "metrics.jsonl"
        line = metrics.read_text().splitlines()[-1]
        out = []
        for second in range(3600):
            data = json.loads(line)  # a fresh copy of the real line, its times moved by `second` seconds
            for rm in data["resourceMetrics"]:
                for sm in rm["scopeMetrics"]:
                    for metric in sm["metrics"]:
                        body = metric.get("gauge") or metric.get("sum") or {}
                        for point in body.get("dataPoints", ()):
                            point["timeUnixNano"] = str(int(point["timeUnixNano"]) + second * 10**9)
            out.append(json.dumps(data, separators=(",", ":")))
        metrics.write_text("\n".join(out) + "\n")
        from runtel.query.report import write_report

        t = time.perf_counter()
        size = write_report([run_dir], base / "report.html")
        write_ms = (time.perf_counter() - t) * 1000
        empty = base / "empty.html"
        empty.write_text("<html><body>x</body></html>")
        load = _chromium_ms(base / "report.html", base / "p1")
        floor = _chromium_ms(empty, base / "p2")
        rows = [
            ["report size", f"{size / 1e6:.2f} MB", "<= 2 MB"],
            ["time to write it", f"{write_ms:.0f} ms", "-"],
            ["metrics.jsonl read", f"{metrics.stat().st_size / 1e6:.1f} MB, 3,600 lines", "-"],
            ["headless Chromium: load + charts, minus an empty page",
             "no chromium" if load is None or floor is None else f"{load - floor:.0f} ms ({load:.0f} - {floor:.0f})",
             "< 1 s"],
        ]
        table("runtel report of 10,000 spans and one hour of 1 Hz samples", ["what", "value", "target"], rows)


if __name__ == "__main__":
    main()
