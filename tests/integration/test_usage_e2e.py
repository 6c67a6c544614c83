"""Resource usage end to end with real processes: `runtel run` on process trees, blocks, CPU, threads, kills.

"True peak" of a process tree is the largest sum of its processes' RSS at one moment. Each process here
writes its own high-water mark (VmHWM from /proc/self/status) before it exits; the small processes are idle
while the big one holds its memory, so the sum of the VmHWMs is the tree's true peak (an upper bound that the
hold makes tight). Sampling runs at 0.1 s, so a 1.5-2 s hold is seen by 15-20 samples.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from runtel.rundir.reader import read_spans

PY = sys.executable
MiB = 2**20

HWM = textwrap.dedent("""
    def vm_hwm():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")
""")

# parent -> child -> grandchild; the grandchild allocates 300 MiB, touches every page and holds it 2 s.
TREE = HWM + textwrap.dedent("""
    import os, subprocess, sys, time
    role, out = sys.argv[1], sys.argv[2]
    below = {"parent": "child", "child": "grandchild"}.get(role)
    if below:
        subprocess.run([sys.executable, __file__, below, out], check=True)
    else:
        n = 300 * 2**20
        buf = bytearray(n)
        buf[::4096] = b"x" * len(range(0, n, 4096))
        time.sleep(float(os.environ.get("HOLD_S", "2.0")))
        del buf
    with open(os.path.join(out, role), "w") as f:
        f.write(str(vm_hwm()))
""")

ALLOC = HWM + textwrap.dedent("""
    import sys, time
    n = 300 * 2**20
    buf = bytearray(n)
    buf[::4096] = b"x" * len(range(0, n, 4096))
    time.sleep(1.5)
    with open(sys.argv[1], "w") as f:
        f.write(str(vm_hwm()))
""")

BLOCK = textwrap.dedent("""
    import subprocess, sys
    import runtel
    with runtel.run_span("blocky"):
        with runtel.block("before"):
            pass
        with runtel.block("alloc"):
            subprocess.run([sys.executable, sys.argv[1], sys.argv[2]], check=True)
""")

# Spins until it has used 2 CPU-seconds (or 4 s passed) and writes its own CPU-seconds / wall-seconds.
BUSY = textwrap.dedent("""
    import sys, time
    t0, c0 = time.monotonic(), time.process_time()
    x = 0
    while time.process_time() - c0 < 2.0 and time.monotonic() - t0 < 4.0:
        x += 1
    with open(sys.argv[1], "w") as f:
        f.write(str((time.process_time() - c0) / (time.monotonic() - t0)))
""")

THREADS = textwrap.dedent("""
    import threading, time
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
""")


def _env(clean_env: dict[str, str], runs: Path, **extra: str) -> dict[str, str]:
    return {**clean_env, "RUNTEL_DIR": str(runs), "RUNTEL_SAMPLING": "true", "RUNTEL_SAMPLE_INTERVAL": "0.1",
            "RUNTEL_GPU": "none", **extra}


def _runtel_run(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """`python -m runtel run -- ARGS`; returns the wrapper's run record."""
    proc = subprocess.run([PY, "-m", "runtel", "run", "--name", "wrapper", "--", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    runs = Path(env["RUNTEL_DIR"])
    (record,) = [r for r in (json.loads((p / "run.json").read_text()) for p in runs.iterdir() if p.is_dir()) if r["name"] == "wrapper"]
    return record


def _tree_run(tmp_path: Path, clean_env: dict[str, str]) -> tuple[dict[str, Any], dict[str, int]]:
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    out = tmp_path / "hwm"
    out.mkdir()
    record = _runtel_run([PY, str(script), "parent", str(out)], _env(clean_env, tmp_path / "runs"), tmp_path)
    hwm = {role: int((out / role).read_text()) for role in ("parent", "child", "grandchild")}
    return record, hwm


def test_runtel_run_grandchild_peak_within_ten_percent(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel run` reports the tree's peak RSS (a 300 MiB great-grandchild of the wrapper) within 10%."""
    record, hwm = _tree_run(tmp_path, clean_env)
    assert hwm["grandchild"] > 300 * MiB
    ram = record["resource_usage"]["max_ram"]
    tree_peak = sum(hwm.values())
    # combined = the command's whole tree (parent + child + grandchild), never the wrapper
    assert abs(ram["combined"]["max_rss_bytes"] - tree_peak) <= 0.10 * tree_peak, (ram, hwm)
    below = hwm["child"] + hwm["grandchild"]
    assert abs(ram["descendants"]["max_rss_bytes"] - below) <= 0.10 * below, (ram, hwm)
    assert record["resource_usage"]["cpu_utilization"]["max_processes"] == 3


def test_runtel_run_excludes_the_wrapper(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """The wrapper's own memory and threads are never counted: main scope is the command's process."""
    script = tmp_path / "idle.py"
    script.write_text(HWM + "import sys, time\ntime.sleep(1.0)\nopen(sys.argv[1], 'w').write(str(vm_hwm()))\n")
    record = _runtel_run([PY, str(script), str(tmp_path / "hwm")], _env(clean_env, tmp_path / "runs"), tmp_path)
    command_hwm = int((tmp_path / "hwm").read_text())
    usage = record["resource_usage"]
    main = usage["max_ram"]["main"]["max_rss_bytes"]
    # the wrapper (python + runtel + OpenTelemetry) is ~35 MiB; the idle command ~10 MiB
    assert abs(main - command_hwm) <= 0.10 * command_hwm + 1 * MiB, (main, command_hwm)
    assert usage["cpu_utilization"]["max_threads"]["main"] == 1


def test_block_reports_child_peak(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A block that runs a 300 MiB child carries the child's peak in its descendants' RSS attribute (within 10%)."""
    (tmp_path / "alloc.py").write_text(ALLOC)
    (tmp_path / "blocky.py").write_text(BLOCK)
    hwm_file = tmp_path / "hwm"
    env = _env(clean_env, tmp_path / "runs")
    proc = subprocess.run([PY, str(tmp_path / "blocky.py"), str(tmp_path / "alloc.py"), str(hwm_file)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    true_peak = int(hwm_file.read_text())
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    spans = {s.name: s for s in read_spans(run_dir)}
    attrs = spans["alloc"].attributes
    assert attrs["runtel.usage.samples"] >= 5
    reported = attrs["runtel.usage.memory.rss.max.descendants"]
    assert abs(reported - true_peak) <= 0.10 * true_peak, (reported, true_peak)
    assert attrs["runtel.usage.memory.rss.max.combined"] >= reported
    assert spans["before"].attributes.get("runtel.usage.memory.rss.max.descendants", 0) < 50 * MiB


def test_busy_and_idle_children(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A CPU-busy command shows > 0.7 of a core on average, an idle one < 0.1 (both wrapped by `runtel run`)."""
    (tmp_path / "busy.py").write_text(BUSY)
    ratio_file = tmp_path / "ratio"
    env = _env(clean_env, tmp_path / "busy-runs")
    busy = _runtel_run([PY, str(tmp_path / "busy.py"), str(ratio_file)], env, tmp_path)
    own = float(ratio_file.read_text())  # < 1 only if the machine was too loaded to give it a core
    busy_mean = busy["resource_usage"]["cpu_utilization"]["combined"]["mean_sum_fraction"]
    assert busy_mean >= 0.7 * own, (busy_mean, own)
    assert busy_mean > 0.7 or own < 0.85, (busy_mean, own)
    idle = _runtel_run([PY, "-c", "import time; time.sleep(2.5)"], _env(clean_env, tmp_path / "idle-runs"), tmp_path)
    idle_mean = idle["resource_usage"]["cpu_utilization"]["combined"]["mean_sum_fraction"]
    assert idle_mean < 0.1, idle_mean


def test_thread_count(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A command with 5 extra threads reports exactly 6 threads at peak (the wrapper's own are not counted)."""
    (tmp_path / "threads.py").write_text(THREADS)
    record = _runtel_run([PY, str(tmp_path / "threads.py")], _env(clean_env, tmp_path / "runs"), tmp_path)
    threads = record["resource_usage"]["cpu_utilization"]["max_threads"]
    assert threads["main"] == 6 and threads["combined"] == 6, threads


def _data_points(metrics_file: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in metrics_file.read_text().splitlines():
        try:
            request = json.loads(line)
        except ValueError:
            continue  # a torn last line
        for rm in request.get("resourceMetrics", ()):
            for sm in rm.get("scopeMetrics", ()):
                for metric in sm.get("metrics", ()):
                    for kind in ("sum", "gauge", "histogram"):
                        if kind in metric:
                            counts[metric["name"]] = counts.get(metric["name"], 0) + len(metric[kind]["dataPoints"])
    return counts


def test_killed_run_keeps_its_timeline(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """SIGKILL after a few metric exports: metrics.jsonl keeps the samples, run.json says running, ls says interrupted."""
    runs = tmp_path / "runs"
    env = _env(clean_env, runs, RUNTEL_METRIC_INTERVAL="0.2")
    proc = subprocess.Popen([PY, "-m", "runtel", "run", "--", PY, "-c", "import time; time.sleep(60)"], env=env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        metrics: Path | None = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = list(runs.glob("*/metrics.jsonl"))
            if found and len(found[0].read_text().splitlines()) >= 3:
                metrics = found[0]
                break
            time.sleep(0.05)
        assert metrics is not None, "no metric exports within 30 s"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the wrapper and its command: nothing gets to clean up
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    points = _data_points(metrics)
    assert points.get("process.memory.usage", 0) >= 2 and points.get("process.cpu.utilization", 0) >= 2, points
    record = json.loads((metrics.parent / "run.json").read_text())
    assert record["status"] == "running" and "resource_usage" not in record
    ls = subprocess.run([PY, "-m", "runtel", "ls", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True,
                        timeout=60)
    assert ls.returncode == 0, ls.stderr
    (row,) = json.loads(ls.stdout)
    assert row["id"] == record["id"] and row["status"] == "interrupted"


def test_short_hold_still_seen(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A 0.5 s hold of 300 MiB deep in the tree is still caught (within 10%) at 0.1 s sampling."""
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    out = tmp_path / "hwm"
    out.mkdir()
    record = _runtel_run([PY, str(script), "parent", str(out)], _env(clean_env, tmp_path / "runs", HOLD_S="0.5"),
                         tmp_path)
    hwm = {role: int((out / role).read_text()) for role in ("parent", "child", "grandchild")}
    peak = sum(hwm.values())
    assert abs(record["resource_usage"]["max_ram"]["combined"]["max_rss_bytes"] - peak) <= 0.10 * peak


SPIKE = HWM + textwrap.dedent("""
    import sys, time
    time.sleep(0.3)
    n = 200 * 2**20
    buf = bytearray(n)
    buf[::4096] = b"x" * len(range(0, n, 4096))
    time.sleep(0.02)
    del buf
    hwm = vm_hwm()
    x = 0
    t0 = time.process_time()
    while time.process_time() - t0 < 0.2:  # some CPU time for the kernel to count
        x += 1
    time.sleep(0.3)
    with open(sys.argv[1], "w") as f:
        f.write(str(hwm))
""")


def test_runtel_run_peak_between_samples_comes_from_the_kernel(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A 20 ms spike of 200 MiB between two samples (1 s apart) is not missed: `runtel run` takes its command's
    peak RSS from wait4 (exactly the child's VmHWM) as a floor of the combined peak, and records the kernel's
    counts in run.json's `command_rusage`."""
    script = tmp_path / "spike.py"
    script.write_text(SPIKE)
    out = tmp_path / "hwm.txt"
    env = _env(clean_env, tmp_path / "runs", RUNTEL_SAMPLE_INTERVAL="1.0")
    record = _runtel_run([PY, str(script), str(out)], env, tmp_path)
    hwm = int(out.read_text())
    assert hwm > 200 * MiB
    usage = record["command_rusage"]
    assert usage["max_rss_bytes"] == hwm  # ru_maxrss and VmHWM are the same kernel counter
    assert usage["user_cpu_s"] + usage["system_cpu_s"] >= 0.2
    ram = record["resource_usage"]["max_ram"]
    assert ram["combined"]["max_rss_bytes"] >= hwm
    if ram["main"]["max_rss_bytes"] < 0.9 * hwm:  # the samples missed the spike (nearly always: 1 s apart)
        assert ram["combined"]["max_rss_bytes"] == hwm
