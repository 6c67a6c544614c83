"""The CLI at scale: every command timed at 10 / 1,000 / 10,000 real runs, in fresh processes.

Usage: python benchmarks/scale_bench.py [--quick] [--sizes 10,1000,10000] [--repeats N] [--scan] [--run-cost]

The runs are real: worker processes call ``runtel.run_span`` (sampling off), with tags, results, one
artifact each, some nested child runs, and one sweep parent with 20 children. The folders are cached
under ``build/scale_bench/<size>/`` (regenerated when this generator changes), so reruns only time.
Each command runs in a fresh ``python -m runtel`` process; min and median of the repeats are printed,
with the ratio of the largest size to the smallest. ``--scan`` also times ``ls`` and ``show latest``
with ``RUNTEL_RUN_INDEX=false`` (every run.json read, as before the index) once per size.
``--run-cost`` instead measures what writing the index adds to a warm run (sampler off / on, on disk
and on tmpfs): fresh processes alternating index on and off, median of each process's warm runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import table

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "scale_bench"
GENERATOR_VERSION = "1"

#: one worker process writes ``count`` runs into ``root``; worker 0 also writes the 20-child sweep
WORKER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import runtel
    root, worker, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    files = root.parent / "files"
    files.mkdir(parents=True, exist_ok=True)
    made = 0
    meta = {}

    def artifact(run, i):
        path = files / f"w{worker}-{i}.txt"
        path.write_text(f"artifact {worker} {i}\\n")
        run.add_artifact("output", path)
        return str(path)

    if worker == 0 and count >= 21:
        with runtel.run_span("sweep", tags={"stage": "sweep"}) as sweep:
            for c in range(20):
                with runtel.run_span(f"trial{c}", tags={"stage": "trial"}) as t:
                    t.set_result(score=c / 20)
        meta["sweep"] = sweep.id
        made += 21
    i = 0
    while made < count:
        stage = ("train", "eval", "prepare")[i % 3]
        kids = 3 if i % 10 == 0 and count - made >= 4 else 0
        with runtel.run_span(stage, tags={"stage": stage, "seed": str(i)}) as run:
            run.set_result(loss=1.0 / (i + 1), acc=0.5 + (i % 50) / 100)
            meta.setdefault("file", artifact(run, i))
            meta["leaf"] = run.id if not kids else meta.get("leaf", run.id)
            for k in range(kids):
                with runtel.run_span(f"{stage}.fold{k}") as fold:
                    fold.log(loss=0.1 * k)
        made += 1 + kids
        i += 1
    print(json.dumps(meta))
""")


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_", "TRACEPARENT"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(RUNTEL_DIR=str(root), RUNTEL_SAMPLING="false", COLUMNS="160", **extra)
    return env


def generate(size: int) -> tuple[Path, dict[str, str]]:
    """The runs root for ``size`` runs (cached), and what the commands need (sweep, leaf, file, ids)."""
    base = CACHE / str(size)
    root, marker = base / "runs", base / "meta.json"
    if marker.is_file():
        meta = json.loads(marker.read_text())
        if meta.get("version") == GENERATOR_VERSION and meta.get("size") == size:
            return root, meta
    shutil.rmtree(base, ignore_errors=True)
    root.mkdir(parents=True)
    workers = 1 if size < 1000 else 2
    shares = [size // workers + (1 if w < size % workers else 0) for w in range(workers)]
    script = base / "worker.py"
    script.write_text(WORKER)
    start = time.perf_counter()
    procs = [subprocess.Popen([PY, str(script), str(root), str(w), str(n)], env=_env(root), cwd=base,
                              stdout=subprocess.PIPE, text=True) for w, n in enumerate(shares)]
    meta: dict[str, str] = {}
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"worker failed ({p.returncode})")
        meta.update({k: v for k, v in json.loads(out.strip().splitlines()[-1]).items() if k not in meta})
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(folders) != size:
        raise RuntimeError(f"expected {size} run folders, found {len(folders)}")
    meta.update(version=GENERATOR_VERSION, size=size, a=folders[1], b=folders[-2],  # type: ignore[dict-item]
                generated_s=f"{time.perf_counter() - start:.1f}")
    meta.setdefault("sweep", meta["leaf"])
    marker.write_text(json.dumps(meta))
    return root, meta


def commands(meta: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(label, argv) of every command timed."""
    prefix = meta["a"][:-3]
    return [
        ("--version", ["--version"]),
        ("--help", ["--help"]),
        ("ls", ["ls"]),
        ("ls -n 10", ["ls", "-n", "10"]),
        ("ls --name 'train*'", ["ls", "--name", "train*"]),
        ("ls --tag stage=eval", ["ls", "--tag", "stage=eval"]),
        ("ls --status ok", ["ls", "--status", "ok"]),
        ("ls --since 30d", ["ls", "--since", "30d"]),
        ("ls --parent SWEEP", ["ls", "--parent", meta["sweep"]]),
        ("ls --json", ["ls", "--json"]),
        ("show latest", ["show", "latest"]),
        ("show PREFIX", ["show", prefix]),
        ("show LEAF", ["show", meta["leaf"]]),
        ("show SWEEP (20 children)", ["show", meta["sweep"]]),
        ("lineage FILE", ["lineage", meta["file"]]),
        ("compare A B", ["compare", meta["a"], meta["b"]]),
        ("index (up to date)", ["index"]),
    ]


def time_command(argv: list[str], env: dict[str, str], repeats: int) -> tuple[float, float]:
    """(min, median) seconds of ``python -m runtel ARGV`` in fresh processes (one unmeasured warm-up)."""
    times = []
    for n in range(repeats + 1):
        start = time.perf_counter()
        proc = subprocess.run([PY, "-m", "runtel", *argv], env=env, capture_output=True, text=True, timeout=600)
        elapsed = time.perf_counter() - start
        if proc.returncode not in (0,):
            raise RuntimeError(f"runtel {' '.join(argv)} exited {proc.returncode}: {proc.stderr[-500:]}")
        if n:
            times.append(elapsed)
    return min(times), statistics.median(times)


RUN_COST = textwrap.dedent("""
    import json, os, statistics, sys, time
    import runtel
    runtel.configure(dir=sys.argv[1], sampling=sys.argv[2] == "1")
    with runtel.run_span("cold"):
        pass
    times = []
    for i in range(int(sys.argv[3])):
        t = time.perf_counter()
        with runtel.run_span("warm"):
            pass
        times.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"median": statistics.median(times)}))
""")


def bench_run_cost(runs: int, repeats: int) -> None:
    """Warm run_span enter+exit with the index written and without (RUNTEL_RUN_INDEX=false), paired."""
    import tempfile

    places = [("disk (build/)", str(CACHE.parent))] + ([("tmpfs (/dev/shm)", "/dev/shm")]
                                                        if os.access("/dev/shm", os.W_OK) else [])
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for place, base in places:
        for sampling in ("0", "1"):
            got: dict[str, list[float]] = {"on": [], "off": []}
            for _ in range(repeats):
                for mode in ("on", "off"):
                    with tempfile.TemporaryDirectory(dir=base) as tmp:
                        env = _env(Path(tmp), RUNTEL_RUN_INDEX="true" if mode == "on" else "false")
                        proc = subprocess.run([PY, "-c", RUN_COST, tmp, sampling, str(runs)], env=env,
                                              capture_output=True, text=True, timeout=600)
                        if proc.returncode:
                            raise RuntimeError(proc.stderr)
                        got[mode].append(json.loads(proc.stdout)["median"])
            on, off = statistics.median(got["on"]), statistics.median(got["off"])
            diffs = statistics.median(a - b for a, b in zip(got["on"], got["off"], strict=True))
            rows.append([place, "on" if sampling == "1" else "off", f"{off:.3f}", f"{on:.3f}", f"{diffs:+.3f}",
                         f"{on / off:.2f}x"])
    table(f"warm run cost (run_span enter+exit, ms): median of {runs} warm runs per process, median of {repeats} "
          "paired processes", ["run folder", "sampler", "index off", "index on", "on - off (paired)", "on / off"],
          rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--scan", action="store_true", help="also time ls / show latest without the index")
    parser.add_argument("--run-cost", action="store_true", help="only: what the index adds to a warm run")
    args = parser.parse_args()
    if args.run_cost:
        bench_run_cost(50 if args.quick else 200, 3 if args.quick else 7)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    repeats = args.repeats or (3 if args.quick else 7)
    roots = {}
    for size in sizes:
        root, meta = generate(size)
        roots[size] = (root, meta)
        subprocess.run([PY, "-m", "runtel", "index"], env=_env(root), capture_output=True, check=True, timeout=600)
        print(f"{size:>6} runs in {root} (generated in {meta.get('generated_s')} s)", flush=True)
    labels = [label for label, _ in commands(roots[sizes[0]][1])]
    results: dict[str, dict[int, tuple[float, float]]] = {label: {} for label in labels}
    for size in sizes:
        root, meta = roots[size]
        for label, argv in commands(meta):
            results[label][size] = time_command(argv, _env(root), repeats)
    header = ["command"] + [f"{s:,} runs min / median" for s in sizes] + [f"{sizes[-1]:,} / {sizes[0]:,}"]
    rows = []
    for label in labels:
        cells = [f"{results[label][s][0] * 1000:.0f} / {results[label][s][1] * 1000:.0f} ms" for s in sizes]
        ratio = results[label][sizes[-1]][1] / results[label][sizes[0]][1]
        rows.append([label, *cells, f"{ratio:.2f}x"])
    leaf = results["show LEAF"][sizes[-1]][1]
    sweep = results["show SWEEP (20 children)"][sizes[-1]][1]
    table(f"runtel commands, fresh processes, {repeats} repeats (ms)", header, rows)
    print(f"show of a parent with 20 children / show of a leaf at {sizes[-1]:,} runs: {sweep / leaf:.2f}x")
    if args.scan:
        scan_rows = []
        for label, argv in (("ls", ["ls"]), ("show latest", ["show", "latest"])):
            cells = []
            for size in sizes:
                root, _ = roots[size]
                scan, _ = time_command(argv, _env(root, RUNTEL_RUN_INDEX="false"), 1)
                cells.append(f"{scan * 1000:.0f} ms ({scan / results[label][size][0]:.1f}x)")
            scan_rows.append([label, *cells])
        table("without the index (RUNTEL_RUN_INDEX=false: every run.json read), 1 run; (x the index's min)",
              ["command", *[f"{s:,} runs" for s in sizes]], scan_rows)


if __name__ == "__main__":
    main()
