"""Runs follow the work into child processes with no helper calls: pools, executors, joblib, subprocesses.

Each case runs a driver in its own interpreter (spawn and forkserver start helper processes that
would outlive the test), then reads every run folder and checks exact span counts and trace ids.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runtel.rundir.reader import SpanRecord, list_runs, read_spans

WORKER = textwrap.dedent(
    """
    import os
    import runtel

    def work(i):
        with runtel.block("work", item=i):
            with runtel.block("inner"):
                pass
        return os.getpid()

    def work_then_exit(i):
        work(i)
        os._exit(0)  # no flush, no atexit, no finalizers

    def dataloader_worker(i):
        runtel.init_worker(i)  # what torch does with worker_init_fn=runtel.init_worker
        return work(i)
    """
)

DRIVER = textwrap.dedent(
    """
    import concurrent.futures, json, multiprocessing, os, subprocess, sys, time
    import runtel
    import rt_follow_worker as w

    def main(mode, out):
        runtel.configure(dir=out, sampling=False, strict=True)
        result = {}
        with runtel.run_span("parent") as run:
            with runtel.block("fanout") as fanout:
                if mode in ("spawn", "forkserver", "fork"):
                    with multiprocessing.get_context(mode).Pool(2) as pool:
                        result["pids"] = pool.map(w.work, range(4))
                elif mode == "executor":
                    ctx = multiprocessing.get_context("spawn")
                    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
                        result["pids"] = list(ex.map(w.work, range(4)))
                elif mode == "joblib":
                    import joblib
                    result["pids"] = joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(w.work)(i) for i in range(4))
                    from joblib.externals.loky import get_reusable_executor
                    get_reusable_executor().shutdown(wait=True)  # loky keeps idle workers: end them now
                elif mode == "os_exit":
                    p = multiprocessing.get_context("spawn").Process(target=w.work_then_exit, args=(7,))
                    p.start(); p.join(60)
                    result["exitcode"] = p.exitcode
                elif mode == "terminate":
                    pool = multiprocessing.get_context("spawn").Pool(2)
                    result["pids"] = pool.map(w.work, range(4))
                    pool.terminate(); pool.join()
                elif mode == "dataloader":
                    for method in ("fork", "spawn"):
                        with multiprocessing.get_context(method).Pool(1) as pool:
                            pool.map(w.dataloader_worker, range(2))
                elif mode == "subprocess":
                    child = [sys.executable, "-c", "import runtel\\nwith runtel.run_span('child'):\\n"
                             "    with runtel.block('work'): pass"]
                    subprocess.run(child, check=True)
                    os.spawnv(os.P_WAIT, sys.executable, child)  # the os.exec*/spawn* family
                elif mode == "env":
                    code = "import os, json; print(json.dumps({k: os.environ.get(k) for k in "
                    code += "('TRACEPARENT', 'RUNTEL_PARENT_RUN_ID')}))"
                    result["child_env"] = json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                                                    capture_output=True, text=True).stdout)
        result.update(run=run.id, trace=run.trace_id, span=run.span_id,
                      fanout=format(fanout.span.get_span_context().span_id, "016x"),
                      env_after={k: os.environ.get(k) for k in ("TRACEPARENT", "RUNTEL_PARENT_RUN_ID")})
        print(json.dumps(result))

    if __name__ == "__main__":
        main(sys.argv[1], sys.argv[2])
    """
)


def _drive(tmp_path: Path, clean_env: dict[str, str], mode: str, **env: str) -> tuple[dict[str, Any], Path]:
    mods = tmp_path / "mods"
    mods.mkdir(exist_ok=True)
    (mods / "rt_follow_worker.py").write_text(WORKER)
    (mods / "driver.py").write_text(DRIVER)
    runs = tmp_path / f"runs-{mode}"
    full_env = {**clean_env, "PYTHONPATH": f"{mods}{os.pathsep}{clean_env['PYTHONPATH']}", **env}
    done = subprocess.run([sys.executable, str(mods / "driver.py"), mode, str(runs)], env=full_env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), runs


def _spans(runs: Path) -> list[SpanRecord]:
    return [s for r in list_runs(runs) for s in read_spans(Path(r["dir"]))]


def _worker_runs(runs: Path, parent: str) -> list[dict[str, Any]]:
    return [r for r in list_runs(runs) if r["id"] != parent]


@pytest.mark.parametrize("mode", ["spawn", "forkserver", "executor", "joblib"])
def test_spawned_pool_workers_record_without_init_worker(tmp_path: Path, clean_env: dict[str, str], mode: str) -> None:
    """Spawn/forkserver Pool, ProcessPoolExecutor and joblib loky: worker runs in the parent's trace."""
    if mode == "joblib" and importlib.util.find_spec("joblib") is None:
        pytest.skip("joblib is not installed")
    out, runs = _drive(tmp_path, clean_env, mode)
    spans = _spans(runs)
    assert len([s for s in spans if s.name == "work"]) == 4
    assert len([s for s in spans if s.name == "inner"]) == 4
    assert {s.trace_id for s in spans} == {out["trace"]}
    workers = _worker_runs(runs, out["run"])
    assert workers and all(r["parent"]["run_id"] == out["run"] for r in workers)
    busy = {s.attributes.get("runtel.run.id") for s in spans if s.name == "work"}
    # A worker that did work closed its run normally; one terminated while still starting (the pool's
    # work was done before it was up) may be "interrupted".
    assert all(r["status"] == "ok" for r in workers if r["id"] in busy), [r["status"] for r in workers]
    assert all(r["status"] != "running" for r in workers)  # a worker terminated while starting still closes
    worker_spans = [s for s in spans if s.attributes.get("runtel.kind") == "run" and s.name == "parent.worker"]
    assert len(worker_spans) == len(workers)
    assert all(s.parent_span_id == out["fanout"] for s in worker_spans)  # under the span current at start
    assert out["env_after"] == {"TRACEPARENT": None, "RUNTEL_PARENT_RUN_ID": None}  # environment put back


def test_forked_pool_workers_write_into_the_parent_run(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A fork Pool without init_worker: every span in the parent's run, under the current block."""
    out, runs = _drive(tmp_path, clean_env, "fork")
    assert [r["id"] for r in list_runs(runs)] == [out["run"]]
    spans = _spans(runs)
    work = [s for s in spans if s.name == "work"]
    assert len(work) == 4 and len([s for s in spans if s.name == "inner"]) == 4
    assert {s.parent_span_id for s in work} == {out["fanout"]}
    assert {s.trace_id for s in spans} == {out["trace"]}


def test_spawned_worker_leaving_through_os_exit_keeps_its_spans(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A spawned process that ends with os._exit (no flush, no atexit): both its spans are on disk."""
    out, runs = _drive(tmp_path, clean_env, "os_exit")
    assert out["exitcode"] == 0
    spans = _spans(runs)
    assert [s.attributes.get("item") for s in spans if s.name == "work"] == [7]
    assert len([s for s in spans if s.name == "inner"]) == 1
    assert {s.trace_id for s in spans} == {out["trace"]}


def test_terminated_pool_keeps_its_spans(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """Pool.terminate() (SIGTERM to every worker): all 8 spans on disk, the worker runs closed."""
    out, runs = _drive(tmp_path, clean_env, "terminate")
    spans = _spans(runs)
    assert len([s for s in spans if s.name == "work"]) == 4 and len([s for s in spans if s.name == "inner"]) == 4
    assert {s.trace_id for s in spans} == {out["trace"]}


def test_init_worker_accepts_a_dataloader_worker_id(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """init_worker(int), as torch's worker_init_fn calls it, in fork and spawn workers: no error, spans kept."""
    out, runs = _drive(tmp_path, clean_env, "dataloader")
    spans = _spans(runs)
    assert len([s for s in spans if s.name == "work"]) == 4
    assert {s.trace_id for s in spans} == {out["trace"]}


def test_subprocess_and_spawnv_children_join_the_trace(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """subprocess.run and os.spawnv children (no inject_env) record their runs in the parent's trace: the
    subprocess child under the block that started it, the os.spawnv one (os.environ as it is) under the run."""
    out, runs = _drive(tmp_path, clean_env, "subprocess")
    children = _worker_runs(runs, out["run"])
    assert len(children) == 2
    assert all(r["parent"]["run_id"] == out["run"] for r in children)
    assert sorted(r["parent"]["span_id"] for r in children) == sorted([out["fanout"], out["span"]])
    spans = _spans(runs)
    assert len([s for s in spans if s.name == "work"]) == 2
    assert {s.trace_id for s in spans} == {out["trace"]}


def test_propagation_opt_out(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """RUNTEL_PROPAGATE=false: children see no trace context, and pool workers open no runs."""
    out, runs = _drive(tmp_path, clean_env, "env", RUNTEL_PROPAGATE="false")
    assert out["child_env"] == {"TRACEPARENT": None, "RUNTEL_PARENT_RUN_ID": None}
    out, runs = _drive(tmp_path, clean_env, "spawn", RUNTEL_PROPAGATE="false")
    assert _worker_runs(runs, out["run"]) == []


def test_child_environment_carries_the_run(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """While the run is open a subprocess child's environment holds the TRACEPARENT of the span that started
    it (the block around subprocess.run) and the run id; os.environ the run span's; after, nothing."""
    out, _ = _drive(tmp_path, clean_env, "env")
    assert out["child_env"]["RUNTEL_PARENT_RUN_ID"] == out["run"]
    assert out["child_env"]["TRACEPARENT"].split("-")[1:3] == [out["trace"], out["fanout"]]
    assert out["env_after"] == {"TRACEPARENT": None, "RUNTEL_PARENT_RUN_ID": None}
