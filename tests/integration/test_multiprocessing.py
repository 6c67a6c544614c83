"""Worker processes (multiprocessing spawn and fork) record into their parent's trace and reach disk."""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import runtel
from runtel.rundir.reader import SpanRecord, list_runs, read_spans

WORKER_SOURCE = textwrap.dedent(
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
        runtel.flush()
        os._exit(0)
    """
)


@pytest.fixture
def worker_module(tmp_path: Path) -> Iterator[ModuleType]:
    """A worker module importable by spawned children (they inherit sys.path)."""
    pkg = tmp_path / "mods"
    pkg.mkdir()
    (pkg / "rt_mp_worker.py").write_text(WORKER_SOURCE)
    sys.path.insert(0, str(pkg))
    try:
        yield importlib.import_module("rt_mp_worker")
    finally:
        sys.path.remove(str(pkg))
        sys.modules.pop("rt_mp_worker", None)


def _all_spans(runs_dir: Path) -> list[SpanRecord]:
    return [s for r in list_runs(runs_dir) for s in read_spans(Path(r["dir"]))]


SPAWN_DRIVER = textwrap.dedent(
    """
    import json, multiprocessing, sys
    import runtel
    import rt_mp_worker

    if __name__ == "__main__":
        runtel.configure(dir=sys.argv[1], sampling=False, strict=True)
        with runtel.run_span("parent") as run:
            with runtel.block("fanout") as fanout:
                ctx = multiprocessing.get_context("spawn")
                with ctx.Pool(2, initializer=runtel.init_worker, initargs=(runtel.worker_context(),)) as pool:
                    pids = pool.map(rt_mp_worker.work, range(4))
        print(json.dumps({"run": run.id, "trace": run.trace_id, "pids": pids,
                          "fanout": format(fanout.span.get_span_context().span_id, "016x")}))
    """
)


def test_spawn_pool_workers_join_the_parent_trace(
    runs_dir: Path, worker_module: ModuleType, clean_env: dict[str, str]
) -> None:
    """Spawned pool workers open worker runs in the parent's trace, under the span that was current.

    Runs in its own interpreter: spawn starts a resource-tracker process that would outlive the test.
    """
    module_dir = Path(worker_module.__file__).parent
    (module_dir / "driver.py").write_text(SPAWN_DRIVER)
    env = {**clean_env, "PYTHONPATH": f"{module_dir}{os.pathsep}{clean_env['PYTHONPATH']}"}
    done = subprocess.run([sys.executable, str(module_dir / "driver.py"), str(runs_dir)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    parent = json.loads(done.stdout)
    assert os.getpid() not in parent["pids"] and len(parent["pids"]) == 4
    spans = _all_spans(runs_dir)
    work = [s for s in spans if s.name == "work"]
    assert len(work) == 4, [s.name for s in spans]
    assert {s.trace_id for s in spans} == {parent["trace"]}
    workers = [r for r in list_runs(runs_dir) if r["id"] != parent["run"]]
    assert workers and all(r["parent"]["run_id"] == parent["run"] for r in workers)
    assert all(r["status"] == "ok" for r in workers), [r["status"] for r in workers]
    worker_run_spans = [s for s in spans if s.attributes.get("runtel.kind") == "run" and s.name == "parent.worker"]
    assert worker_run_spans and all(s.parent_span_id == parent["fanout"] for s in worker_run_spans)
    by_id = {s.span_id: s for s in spans}
    for s in work:  # each work span hangs (through its worker run) under the parent's fanout block
        assert by_id[s.parent_span_id].parent_span_id == parent["fanout"]


def test_fork_pool_workers_write_into_the_parent_run(rt: object, runs_dir: Path, worker_module: ModuleType) -> None:
    """Forked pool workers' blocks are children of the parent's current span and on disk after the pool."""
    with runtel.run_span("parent") as run:
        with runtel.block("fanout") as fanout:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(2, initializer=runtel.init_worker) as pool:
                pool.map(worker_module.work, range(4))
            fanout_id = format(fanout.span.get_span_context().span_id, "016x")
    assert [r["id"] for r in list_runs(runs_dir)] == [run.id]  # no extra runs: they joined this one
    spans = read_spans(run.dir)
    work = [s for s in spans if s.name == "work"]
    assert len(work) == 4
    assert all(s.trace_id == run.trace_id and s.parent_span_id == fanout_id for s in work)
    assert len([s for s in spans if s.name == "inner"]) == 4
    assert all(s.attributes.get("runtel.run.id") == run.id for s in work)


def test_flush_saves_spans_of_a_process_that_exits_without_atexit(
    rt: object, runs_dir: Path, worker_module: ModuleType
) -> None:
    """runtel.flush() before os._exit writes a forked child's batched spans."""
    with runtel.run_span("parent") as run:
        proc = multiprocessing.get_context("fork").Process(target=worker_module.work_then_exit, args=(7,))
        proc.start()
        proc.join(30)
    assert proc.exitcode == 0
    work = [s for s in read_spans(run.dir) if s.name == "work"]
    assert len(work) == 1 and work[0].attributes.get("item") == 7


def test_worker_context_is_small_and_carries_the_trace(rt: object, runs_dir: Path) -> None:
    """worker_context() holds TRACEPARENT, the parent run id, the runs root and non-default settings."""
    with runtel.run_span("parent") as run:
        ctx = runtel.worker_context()
    assert ctx["TRACEPARENT"].split("-")[1] == run.trace_id
    assert ctx["RUNTEL_PARENT_RUN_ID"] == run.id
    assert Path(ctx["RUNTEL_DIR"]) == runs_dir.resolve()
    assert ctx["RUNTEL_SAMPLING"] == "false"
    assert ctx["RUNTEL_WORKER_NAME"] == "parent.worker"
