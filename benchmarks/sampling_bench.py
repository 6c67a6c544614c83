"""Resource-sampler benchmarks, runtel and gpu_tracker side by side in one run.

Usage: python benchmarks/sampling_bench.py [--quick] [--json OUT]

Sections (each prints a table):

1. **Sampler CPU cost** as a share of one core, for a tracked tree of 1 process (this one) and of 16 (this one
   plus 15 idle Python children), at 1 Hz and 10 Hz. runtel's sampler runs in this process (an anyio loop in a
   daemon thread plus anyio worker threads for the reads), so its cost is this process's CPU time
   (``getrusage(RUSAGE_SELF)``: every thread) over a window while the main thread sleeps, minus the same
   window measured with no sampler. Per-thread CPU from ``/proc/self/task`` splits it into the loop thread and
   the worker threads, and ``ms/tick`` divides by the ticks the sampler counted. gpu_tracker's ``Tracker``
   samples from a separate process: its cost is that process's CPU time (``psutil.Process.cpu_times``) over
   the same window. Both sample the same tree at the same nominal interval, one after the other. runtel runs
   with its defaults (USS/PSS every 10 s, CPU energy estimate, no GPU).
2. **Peak RSS of short spikes** at 10 Hz: a child allocates 200 MiB (every page touched), holds it, frees
   it, waits, repeatedly. Both trackers watch that child at the same time; the true peak is the child's
   VmHWM. runtel's timeline also tells how many spikes at least one sample saw.
3. **Event-loop latency** added to an asyncio application in the sampled process: ``await
   asyncio.sleep(0.001)`` in a loop, lateness = elapsed - 1 ms; p50/p99/p99.9/max with no sampler, runtel at
   1 Hz and 10 Hz (tree of 1 and 16) and gpu_tracker at 10 Hz.

Machine noise matters at these levels (a 10 s window at 1 Hz holds 10 ticks); rerun to see the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import csv
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import table

PY = sys.executable
MiB = 2**20
RESULTS: dict[str, Any] = {}

IDLE_CHILD = "import time\nwhile True: time.sleep(3600)\n"

SPIKES = textwrap.dedent("""
    import json, sys, time
    size, hold, gap, count = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    base = status("VmRSS")
    sys.stdin.readline()  # go
    spikes = []
    for _ in range(count):
        t0 = time.time_ns()
        buf = bytearray(size)
        buf[::4096] = b"x" * len(range(0, size, 4096))
        t1 = time.time_ns()
        time.sleep(hold)
        t2 = time.time_ns()
        del buf
        spikes.append([t0, t1, t2])
        time.sleep(gap)
    print(json.dumps({"base": base, "hwm": status("VmHWM"), "spikes": spikes}))
""")




def self_cpu() -> float:
    """CPU seconds of every thread of this process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def thread_cpu() -> dict[str, float]:
    """CPU seconds per Python thread name (``/proc/self/task/<tid>/stat``, 10 ms ticks), same names summed."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        name = names.get(int(tid), "(non-Python thread)")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def have_gpu_tracker() -> bool:
    try:
        import gpu_tracker  # noqa: F401
    except ImportError:
        return False
    return True


# --- the two samplers ----------------------------------------------------------------------------------


class RuntelSampler:
    """runtel's Monitor exactly as a run opens it (defaults; GPU off: this machine has none)."""

    name = "runtel"

    def __init__(self, interval: float, roots: list[int]) -> None:
        from runtel.config import resolve_settings
        from runtel.sampling.monitor import Monitor

        settings = resolve_settings(sample_interval=interval, gpu_backend="none", sampling=True)
        self.monitor = Monitor.open(settings, root_pids=roots)
        assert self.monitor.sampler is not None, self.monitor.reason
        self.sampler = self.monitor.sampler

    def start(self) -> None:
        self.monitor.start()

    def stop(self) -> None:
        self.monitor.close()

    def peak_main_rss(self) -> int:
        return max(s.main.rss_bytes for s in self.sampler.history())


class GpuTrackerSampler:
    """gpu_tracker's Tracker (a sampler process); ``cpu_seconds`` reads that process's CPU time."""

    name = "gpu_tracker"

    def __init__(self, interval: float, pid: int | None, workdir: Path, timeline: Path | None = None) -> None:
        from gpu_tracker import Tracker

        extra: dict[str, Any] = {} if timeline is None else {"tracking_file": str(timeline), "overwrite": True}
        self.tracker = Tracker(sleep_time=interval, ram_unit="bytes", disable_logs=True, process_id=pid,
                               resource_usage_file=str(workdir / f"gt-{time.monotonic_ns()}.pkl"), **extra)
        self.timeline = timeline
        self.proc: Any = None

    def start(self) -> None:
        import psutil

        before = {c.pid for c in psutil.Process().children()}
        self.tracker.start()
        new = [c for c in psutil.Process().children() if c.pid not in before]
        self.proc = new[0] if new else None

    def cpu_seconds(self) -> float:
        if self.proc is None:
            return float("nan")
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        self.tracker.stop()

    def peak_main_rss(self) -> int:
        return int(self.tracker.resource_usage.max_ram.main.total_rss)

    def main_ram_rows(self) -> list[tuple[float, float]]:
        """``(timestamp_s, main_ram_bytes)`` from the CSV timeline (two static-data rows, then a header)."""
        if self.timeline is None or not self.timeline.exists():
            return []
        lines = self.timeline.read_text().splitlines()[2:]
        return [(float(r["timestamp"]), float(r["main_ram"])) for r in csv.DictReader(lines)]


# --- 1. CPU cost ---------------------------------------------------------------------------------------


def measure_runtel(interval: float, window: float) -> dict[str, float]:
    sampler = RuntelSampler(interval, [os.getpid()])
    sampler.start()
    time.sleep(max(1.0, 2 * interval))  # first ticks (first sightings read USS/PSS) are not steady state
    c0, th0, k0, t0 = self_cpu(), thread_cpu(), sampler.sampler.ticks, time.monotonic()
    time.sleep(window)
    c1, th1, k1, t1 = self_cpu(), thread_cpu(), sampler.sampler.ticks, time.monotonic()
    procs = sampler.sampler.latest.combined.processes if sampler.sampler.latest else 0
    sampler.stop()
    loop = th1.get("runtel-sampler", 0.0) - th0.get("runtel-sampler", 0.0)
    workers = sum(v - th0.get(k, 0.0) for k, v in th1.items() if k.startswith("AnyIO"))
    return {"cpu_s": c1 - c0, "wall_s": t1 - t0, "ticks": k1 - k0, "loop_s": loop, "workers_s": workers,
            "processes": procs}


def measure_gpu_tracker(interval: float, window: float, workdir: Path) -> dict[str, float]:
    sampler = GpuTrackerSampler(interval, None, workdir)
    sampler.start()
    time.sleep(max(1.5, 2 * interval))
    c0, t0 = sampler.cpu_seconds(), time.monotonic()
    time.sleep(window)
    c1, t1 = sampler.cpu_seconds(), time.monotonic()
    sampler.stop()
    return {"cpu_s": c1 - c0, "wall_s": t1 - t0}


def measure_baseline(window: float) -> float:
    c0, t0 = self_cpu(), time.monotonic()
    time.sleep(window)
    return (self_cpu() - c0) / (time.monotonic() - t0)


@contextmanager
def idle_children(n: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    kids = [subprocess.Popen([PY, "-c", IDLE_CHILD]) for _ in range(n)]
    time.sleep(0.5 + 0.05 * n)  # let them finish starting (imports) before anything is measured
    try:
        yield kids
    finally:
        for kid in kids:
            kid.kill()
        for kid in kids:
            kid.wait()


def bench_cost(window: float, workdir: Path, gt: bool, latency_window: float, rounds: int) -> None:
    rows: list[list[object]] = []
    detail: list[list[object]] = []
    latency: dict[str, dict[str, float]] = {}
    cost: dict[str, Any] = {}
    for tree in (1, 16):
        with idle_children(tree - 1):
            base = measure_baseline(window)
            for interval in (1.0, 0.1):
                hz = f"{1 / interval:.0f} Hz"
                # 1 Hz: a longer window (more ticks, and two USS/PSS detail reads instead of a lucky 0 or 1)
                r = measure_runtel(interval, window * (2 if interval == 1.0 else 1))
                pct = max(0.0, r["cpu_s"] / r["wall_s"] - base) * 100
                target = 0.3 if interval == 1.0 else 3.0
                g_pct: float | None = None
                if gt:
                    g = measure_gpu_tracker(interval, window, workdir)
                    g_pct = g["cpu_s"] / g["wall_s"] * 100
                ratio = f"{g_pct / pct:.1f}x" if g_pct is not None and pct > 0 else "-"
                rows.append([tree, hz, f"{pct:.3f}%", f"<= {target}%" + (" ok" if pct <= target else " MISSED"),
                             "-" if g_pct is None else f"{g_pct:.2f}%", ratio])
                ms_tick = r["cpu_s"] / max(1, r["ticks"]) * 1000
                detail.append([tree, hz, int(r["processes"]), int(r["ticks"]), f"{ms_tick:.2f}",
                               f"{r['loop_s'] * 1000:.0f}", f"{r['workers_s'] * 1000:.0f}",
                               f"{(r['cpu_s'] - r['loop_s'] - r['workers_s']) * 1000:.0f}"])
                cost[f"tree{tree}_{hz.replace(' ', '')}"] = {"runtel_pct": pct, "gpu_tracker_pct": g_pct,
                                                            "runtel_ms_per_tick": ms_tick, "baseline_pct": base * 100}
            latency.update(bench_latency(tree, workdir, gt, latency_window, rounds))
    table(f"1. Sampler CPU cost, % of one core ({window:.0f} s windows, runtel at 1 Hz {2 * window:.0f} s; idle "
          "baseline subtracted for runtel)",
          ["tree", "rate", "runtel", "target", "gpu_tracker", "gpu_tracker/runtel"], rows)
    table("   runtel breakdown: CPU per tick and by thread over the window (thread CPU in 10 ms ticks)",
          ["tree", "rate", "procs seen", "ticks", "ms CPU/tick", "loop thread ms", "worker threads ms",
           "other ms (main, exited threads, rounding)"], detail)
    RESULTS["cost"] = cost
    print_latency(latency, latency_window, rounds)


def tick_anatomy(repeats: int) -> None:
    """Where a tick's CPU goes: the reads themselves, timed directly in this thread (tree of 16)."""
    with idle_children(15):
        sampler = RuntelSampler(0.1, [os.getpid()]).sampler
        sampler._read_proc()
        parts: list[list[object]] = []
        for label, fn in (
            ("tree.read (16 processes, /proc)", lambda: sampler.tree.read(time.monotonic(), False)),
            ("tree.read with USS/PSS (every 10 s)", lambda: sampler.tree.read(time.monotonic(), True)),
            ("system read (cpu_percent + meminfo)", sampler._read_system),
            ("_read_proc (tree + system + energy estimate)", sampler._read_proc),
            ("os.listdir('/proc')", lambda: os.listdir("/proc")),
        ):
            n = repeats if "USS" not in label else max(5, repeats // 20)
            t0 = time.thread_time()
            for _ in range(n):
                fn()
            parts.append([label, f"{(time.thread_time() - t0) / n * 1000:.3f}"])
    table("   tick anatomy: CPU ms per call, measured directly (compare with ms CPU/tick above)", ["part", "ms"],
          parts)


# --- 3. event-loop latency -----------------------------------------------------------------------------


async def _probe(duration: float) -> list[tuple[int, int, float]]:
    """``(start_ns, end_ns, lateness_s)`` of each ``await asyncio.sleep(0.001)`` for ``duration`` seconds."""
    out: list[tuple[int, int, float]] = []
    end = time.perf_counter() + duration
    while True:
        w0, t0 = time.time_ns(), time.perf_counter()
        if t0 >= end:
            return out
        await asyncio.sleep(0.001)
        out.append((w0, time.time_ns(), time.perf_counter() - t0 - 0.001))


_GC_PAUSES: list[float] = []
_gc_start = [0.0]


def _gc_callback(phase: str, info: dict[str, int]) -> None:
    """Collector pauses (any thread) while a probe runs: they show up as loop lateness too."""
    if phase == "start":
        _gc_start[0] = time.perf_counter()
    else:
        _GC_PAUSES.append(time.perf_counter() - _gc_start[0])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def bench_latency(tree: int, workdir: Path, gt: bool, window: float, rounds: int) -> dict[str, dict[str, float]]:
    """Conditions interleaved in ``rounds`` rounds, so load from elsewhere on the machine hits them alike."""
    makers: dict[str, Callable[[], Any] | None] = {
        "no sampler": None,
        "runtel 1 Hz": lambda: RuntelSampler(1.0, [os.getpid()]),
        "runtel 10 Hz": lambda: RuntelSampler(0.1, [os.getpid()]),
    }
    if gt:
        makers["gpu_tracker 10 Hz"] = lambda: GpuTrackerSampler(0.1, None, workdir)
    late: dict[str, list[float]] = {k: [] for k in makers}
    on_tick: dict[str, list[float]] = {k: [] for k in makers}
    gc_max: dict[str, float] = {k: 0.0 for k in makers}
    for _ in range(rounds):
        for label, make in makers.items():
            sampler = make() if make is not None else None
            if sampler is not None:
                sampler.start()
                time.sleep(0.6)
            _GC_PAUSES.clear()
            gc.callbacks.append(_gc_callback)
            try:
                probe = asyncio.run(_probe(window))
            finally:
                gc.callbacks.remove(_gc_callback)
                if sampler is not None:
                    sampler.stop()
            gc_max[label] = max([gc_max[label], *_GC_PAUSES])
            late[label].extend(x[2] for x in probe)
            if isinstance(sampler, RuntelSampler):
                # iterations during which a tick started (a snapshot's time is the start of its reads)
                ticks = sorted(snap.time_ns for snap in sampler.sampler.history())
                for w0, w1, lateness in probe:
                    i = bisect.bisect_left(ticks, w0 - 1_000_000)
                    if i < len(ticks) and ticks[i] <= w1:
                        on_tick[label].append(lateness)
    out = {}
    for label, values in late.items():
        out[f"tree {tree}: {label}"] = {
            "n": len(values), "p50_ms": _pct(values, 0.5) * 1000, "p99_ms": _pct(values, 0.99) * 1000,
            "p999_ms": _pct(values, 0.999) * 1000, "max_ms": max(values) * 1000,
            "mean_ms": sum(values) / len(values) * 1000,
            "tick_n": len(on_tick[label]),
            "tick_mean_ms": sum(on_tick[label]) / len(on_tick[label]) * 1000 if on_tick[label] else float("nan"),
            "tick_max_ms": max(on_tick[label]) * 1000 if on_tick[label] else float("nan"),
            "gc_max_ms": gc_max[label] * 1000,
        }
    return out


def print_latency(latency: dict[str, dict[str, float]], window: float, rounds: int) -> None:
    rows = []
    for label, r in latency.items():
        base = latency[label.split(":")[0] + ": no sampler"]
        added = r["p99_ms"] - base["p99_ms"]
        ok = "" if "runtel 10 Hz" not in label else (" ok" if added < 1.0 else " MISSED (target < 1 ms)")
        tick = "-" if r["tick_n"] == 0 else f"{r['tick_mean_ms']:.3f} / {r['tick_max_ms']:.3f} (n={int(r['tick_n'])})"
        rows.append([label, int(r["n"]), f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['p999_ms']:.3f}",
                     f"{r['max_ms']:.3f}", f"{added:+.3f}{ok}", tick, f"{r['gc_max_ms']:.1f}"])
    table(f"3. Event-loop lateness of `await asyncio.sleep(0.001)` in the sampled process (ms; {rounds} interleaved "
          f"rounds x {window:.1f} s per condition)",
          ["condition", "iterations", "p50", "p99", "p99.9", "max", "added p99", "iterations with a tick: mean / max",
           "longest GC pause"], rows)
    RESULTS["latency"] = latency


# --- 2. short spikes ------------------------------------------------------------------------------------


def bench_spikes(count: int, workdir: Path, gt: bool) -> None:
    """Both trackers watch one child that makes ``count`` 200 MiB spikes; the child's VmHWM is the truth.

    A spike is "seen at full height" when a sample read >= baseline + 180 MiB between its allocation start and
    its free. runtel's snapshot time is when its reads start; gpu_tracker stamps a timeline row after its 0.1 s
    cpu_percent wait, i.e. ~0.1 s after it read RAM, so its window is shifted by 0.05-0.25 s (spikes are 0.35 s
    apart, so a row cannot be attributed to the wrong spike).
    """
    rows: list[list[object]] = []
    results = []
    script = workdir / "spikes.py"
    script.write_text(SPIKES)
    for hold in (0.15, 0.02):
        child = subprocess.Popen([PY, str(script), str(200 * MiB), str(hold), "0.35", str(count)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        ours = RuntelSampler(0.1, [child.pid])
        theirs = GpuTrackerSampler(0.1, child.pid, workdir, workdir / f"timeline-{hold}.csv") if gt else None
        ours.start()
        if theirs is not None:
            theirs.start()
        time.sleep(1.0)
        out, _ = child.communicate("go\n", timeout=120)
        time.sleep(0.3)
        ours.stop()
        if theirs is not None:
            theirs.stop()
        data = json.loads(out.strip().splitlines()[-1])
        true_peak = int(data["hwm"])
        full = data["base"] + 180 * MiB
        spikes = data["spikes"]
        history = ours.sampler.history()
        r_seen = sum(1 for t0, _t1, t2 in spikes if any(t0 <= s.time_ns <= t2 and s.main.rss_bytes >= full
                                                        for s in history))
        r_peak = ours.peak_main_rss()
        g_cell, g_seen_cell, g_peak, g_seen = "-", "-", None, None
        if theirs is not None:
            g_peak = theirs.peak_main_rss()
            timeline = theirs.main_ram_rows()
            g_seen = sum(1 for t0, _t1, t2 in spikes if any(t0 / 1e9 + 0.05 <= ts <= t2 / 1e9 + 0.25 and ram >= full
                                                            for ts, ram in timeline))
            g_cell = f"{g_peak / MiB:.1f} ({(g_peak - true_peak) / true_peak * 100:+.1f}%)"
            g_seen_cell = f"{g_seen}/{len(spikes)} ({len(timeline)} rows)"
        fault_ms = sum(t1 - t0 for t0, t1, _ in spikes) / len(spikes) / 1e6
        rows.append([f"{hold * 1000:.0f} ms (+{fault_ms:.0f} ms fault-in)", f"{true_peak / MiB:.1f}",
                     f"{r_peak / MiB:.1f} ({(r_peak - true_peak) / true_peak * 100:+.1f}%)",
                     f"{r_seen}/{len(spikes)} ({len(history)} samples)", g_cell, g_seen_cell])
        results.append({"hold_s": hold, "fault_in_ms": fault_ms, "true_peak": true_peak, "runtel_peak": r_peak,
                        "runtel_seen": r_seen, "spikes": len(spikes), "gpu_tracker_peak": g_peak,
                        "gpu_tracker_seen": g_seen})
    table(f"2. Peak RSS of {count} spikes of 200 MiB at 10 Hz sampling (MiB; error vs the child's VmHWM; "
          "seen = a sample at full height)",
          ["hold", "true peak", "runtel peak", "runtel seen", "gpu_tracker peak", "gpu_tracker seen"], rows)
    RESULTS["spikes"] = results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short windows: a smoke run, numbers are noisy")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("this benchmark reads /proc: Linux only")
    window = 2.0 if args.quick else 10.0
    latency_window, rounds = (1.0, 1) if args.quick else (1.5, 3)
    gt = have_gpu_tracker()
    started = time.monotonic()
    print(f"sampling_bench: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
          f"gpu_tracker {'installed' if gt else 'NOT installed (pip install gpu-tracker==5.0.1)'}"
          f"{', quick mode' if args.quick else ''}")
    if gt:
        import gpu_tracker  # noqa: F401  (import it up front: 0.5-1 s of pandas/SQLAlchemy, not part of a window)
    threading.current_thread().name = "bench-main"
    with tempfile.TemporaryDirectory(prefix="runtel-sampling-bench-") as tmp:
        workdir = Path(tmp)
        bench_cost(window, workdir, gt, latency_window, rounds)
        tick_anatomy(100 if args.quick else 400)
        bench_spikes(4 if args.quick else 10, workdir, gt)
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(RESULTS, indent=2))


if __name__ == "__main__":
    main()
