"""Bytes of metrics.jsonl per 1 Hz sample: this checkout's encoding beside an older revision's, in one run.

Usage: python benchmarks/metrics_bytes_bench.py [--baseline-rev REV] [--seconds S] [--quick]

Each case is a fresh child process running one real sampled run (default settings: a sample every
1 s, a metrics.jsonl line every ``metric_interval`` s — 10 s now, 5 s before 2026-12-02 — no GPU) of one process, idle (``time.sleep``) or busy (a spin
loop), for ``--seconds``; a "tiny" case is a sampled run of ~1 ms. ``--baseline-rev`` (e.g. the commit
before the compact encoding) runs the same cases with that revision's ``src`` (``git archive``), so the
ratio is measured on the same machine in the same minute. Reported: the file's bytes, its lines, the
mean steady line (neither the first nor the final, which hold every series) and bytes per second of
run, i.e. per 1 Hz sample.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import table

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent("""
    import json, sys, time
    import runtel
    mode, seconds = sys.argv[1], float(sys.argv[2])
    with runtel.run_span("bytes-" + mode) as run:
        end = time.monotonic() + seconds
        if mode == "busy":
            while time.monotonic() < end:
                sum(i * i for i in range(1000))
        elif mode == "idle":
            time.sleep(seconds)
    from runtel.config import resolve_settings
    print(json.dumps({"dir": str(run.dir), "interval": resolve_settings().metric_interval}))
""")


def source_of(rev: str, into: Path) -> Path:
    """``src`` of revision ``rev`` unpacked under ``into``."""
    archive = into / "src.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def measure(src: Path, mode: str, seconds: float, workdir: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_"))}
    env.update(PYTHONPATH=str(src), RUNTEL_DIR=str(workdir / "runs"), RUNTEL_GPU="none")
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(seconds)], env=env, capture_output=True, text=True,
                         check=True, cwd=workdir)
    reply = json.loads(out.stdout.splitlines()[-1])
    run_dir = Path(reply["dir"])
    path = run_dir / "metrics.jsonl"
    sizes = [len(line) for line in path.read_bytes().splitlines(keepends=True)] if path.exists() else []
    steady = sizes[1:-1]
    interval = float(reply["interval"])  # that revision's default metric_interval: one line per interval
    mean_steady = sum(steady) / len(steady) if steady else 0.0
    return {"bytes": sum(sizes), "lines": len(sizes), "first": sizes[0] if sizes else 0, "interval": interval,
            "mean_steady_line": mean_steady, "bytes_per_sample": mean_steady / interval if steady else None,
            "bytes_per_s_total": sum(sizes) / seconds if seconds else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", help="git revision whose src runs the same cases (the 'before')")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="21 s runs")
    args = parser.parse_args()
    seconds = 21.0 if args.quick else args.seconds
    with tempfile.TemporaryDirectory(prefix="runtel-bytes-") as tmp:
        sources = {"this checkout": ROOT / "src"}
        if args.baseline_rev:
            sources[args.baseline_rev] = source_of(args.baseline_rev, Path(tmp))
        results: dict[str, dict[str, dict[str, Any]]] = {}
        for label, src in sources.items():
            for mode, length in (("idle", seconds), ("busy", seconds), ("tiny", 0.001)):
                workdir = Path(tempfile.mkdtemp(dir=tmp))
                results.setdefault(mode, {})[label] = measure(src, mode, length, workdir)
    rows = []
    for mode, by_label in results.items():
        for label, r in by_label.items():
            per_sample = f"{r['bytes_per_sample']:,.0f}" if r["bytes_per_sample"] is not None else "-"
            rows.append([mode, label, f"{r['bytes']:,}", str(r["lines"]), f"{r['first']:,}",
                         f"{r['mean_steady_line']:,.0f}", per_sample])
        if args.baseline_rev:
            new, old = by_label["this checkout"], by_label[args.baseline_rev]
            if new["bytes_per_sample"] and old["bytes_per_sample"]:
                rows.append([mode, "ratio old/new", f"{old['bytes'] / new['bytes']:.1f}x", "", "", "",
                             f"{old['bytes_per_sample'] / new['bytes_per_sample']:.1f}x"])
            else:
                rows.append([mode, "ratio old/new", f"{old['bytes'] / max(1, new['bytes']):.1f}x", "", "", "", ""])
    table(f"metrics.jsonl of one process without GPU, {seconds:g} s runs (sample 1 s, default metric_interval)",
          ["run", "encoding", "bytes", "lines", "first line", "steady line", "bytes / 1 Hz sample"], rows)


if __name__ == "__main__":
    main()
