"""What writing run.json costs per run: today's whole-file replacement against the earlier in-place pwrite.

Usage: python benchmarks/record_write_bench.py [--runs N] [--repeats R]

A run writes its record twice: at the start (created with O_EXCL, the same in both designs) and at
the end (the final, longer record). The earlier design overwrote the file in place with one
``pwrite`` (a full disk could tear it); :class:`runtel.rundir.writer.RecordWriter` writes a temporary
file and renames it over run.json. Each measurement is a fresh run folder: mkdir, start record,
final record. Measured on tmpfs (/dev/shm) and on the disk holding the system temp folder,
interleaved, medians of the repeats.
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

from runtel.rundir.writer import RecordWriter, record_text

START = {"schema": "runtel.run/1", "id": "x", "status": "running", "config": {"lr": 0.1, "layers": [64, 64]},
         "attributes": {f"a{i}": "v" * 20 for i in range(20)}, "environment": {"packages": {f"p{i}": "1.0"
                                                                                       for i in range(80)}}}
FINAL = {**START, "status": "ok", "duration_s": 0.0012,
         "resource_usage": {"cpu": {f"k{i}": i * 0.5 for i in range(60)}}}


def in_place(path: Path, data: dict[str, Any], created: bool) -> None:
    """The earlier RecordWriter: O_EXCL create, then one pwrite from offset 0 (shorter texts padded)."""
    body = (record_text(data) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | (0 if created else os.O_CREAT | os.O_EXCL), 0o644)
    try:
        size = os.fstat(fd).st_size if created else 0
        if len(body) < size:
            body = body[:-1] + b" " * (size - len(body)) + b"\n"
        os.pwrite(fd, body, 0)
    finally:
        os.close(fd)


def one_round(base: str, runs: int) -> tuple[float, float]:
    """Median ms per run for (in place, replace whole), interleaved run by run."""
    old, new = [], []
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        for i in range(runs):
            d = Path(tmp, f"old-{i}")
            t = time.perf_counter()
            d.mkdir()
            in_place(d / "run.json", START, False)
            in_place(d / "run.json", FINAL, True)
            old.append((time.perf_counter() - t) * 1e3)
            d = Path(tmp, f"new-{i}")
            t = time.perf_counter()
            d.mkdir()
            w = RecordWriter(d / "run.json")
            w.write(START)
            w.write(FINAL)
            new.append((time.perf_counter() - t) * 1e3)
    return statistics.median(old), statistics.median(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    places = [("tmpfs (/dev/shm)", "/dev/shm")] if os.access("/dev/shm", os.W_OK) else []
    places.append((f"disk ({tempfile.gettempdir()})", tempfile.gettempdir()))
    rows = []
    for label, base in places:
        results = [one_round(base, args.runs) for _ in range(args.repeats)]
        old = statistics.median(r[0] for r in results)
        new = statistics.median(r[1] for r in results)
        rows.append([label, f"{old:.3f}", f"{new:.3f}", f"{new - old:+.3f}"])
    table(f"run.json per run (mkdir + start record + final record), median of {args.repeats} x {args.runs} runs",
          ["where", "in-place pwrite ms", "temp file + rename ms", "difference ms"], rows)


if __name__ == "__main__":
    main()
