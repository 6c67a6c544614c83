"""Forked children (DataLoader-style workers) write their spans into the parent's run at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import runtel
from runtel.config import Settings
from runtel.testing import read_run


@pytest.mark.filterwarnings("ignore:This process.*is multi-threaded:DeprecationWarning")
def test_forked_child_span_on_disk_despite_os_exit(rt: Settings) -> None:
    """A span ended in a forked child that leaves through os._exit is in the parent's spans.jsonl."""
    with runtel.run_span("parent") as run:
        with runtel.block("fork-here") as blk:
            pid = os.fork()
            if pid == 0:  # child: no flush, no atexit
                try:
                    with runtel.block("in-child", pid=os.getpid()):
                        pass
                finally:
                    os._exit(0)
            _, status = os.waitpid(pid, 0)
            assert status == 0
    record, spans = read_run(run.dir)  # type: ignore[arg-type]
    child = [s for s in spans if s.name == "in-child"]
    assert len(child) == 1
    assert child[0].parent_span_id == format(blk.span.get_span_context().span_id, "016x")
    assert record["status"] == "ok"  # the child never finalised the parent's run


def _pids_by_span(run_dir: Path) -> dict[str, tuple[object, object]]:
    """Span name -> (process.pid, process.parent_pid) of the Resource it was written with."""
    import json

    out: dict[str, tuple[object, object]] = {}
    for line in (run_dir / "spans.jsonl").read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            attrs = {a["key"]: a["value"].get("intValue") for a in rs["resource"]["attributes"]}
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    out[span["name"]] = (attrs.get("process.pid"), attrs.get("process.parent_pid"))
    return out


@pytest.mark.filterwarnings("ignore:This process.*is multi-threaded:DeprecationWarning")
def test_forked_childs_spans_name_its_own_process(rt: Settings) -> None:
    """A forked child's spans carry its own process.pid (and the parent's as process.parent_pid), not the
    parent's: Perfetto and Jaeger draw them on the child's process; the parent's spans keep the parent's."""
    with runtel.run_span("parent") as run:
        pid = os.fork()
        if pid == 0:
            try:
                with runtel.block("in-child"):
                    pass
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        with runtel.block("in-parent"):
            pass
    pids = _pids_by_span(run.dir)  # type: ignore[arg-type]
    assert pids["in-child"] == (str(pid), str(os.getpid()))
    assert pids["in-parent"][0] == pids["parent"][0] == str(os.getpid())


@pytest.mark.filterwarnings("ignore:This process.*is multi-threaded:DeprecationWarning")
def test_a_tracer_made_before_the_fork_names_the_child_too(rt: Settings) -> None:
    """A library's tracer made before the fork (FastAPI caches one) keeps the Resource it was made with; its
    spans in the child still carry the child's pid, in a grandchild the grandchild's, and the parent's its own."""
    from opentelemetry import trace

    with runtel.run_span("parent") as run:
        library = trace.get_tracer("a.library")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                with library.start_as_current_span("library-in-child"):
                    pass
                grandchild = os.fork()
                if grandchild == 0:
                    try:
                        with library.start_as_current_span("library-in-grandchild"):
                            pass
                    finally:
                        os._exit(0)
                os.waitpid(grandchild, 0)
                os.write(write, str(grandchild).encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        grandchild_pid = os.read(read, 64).decode()
        os.close(read)
        with library.start_as_current_span("library-in-parent"):
            pass
    pids = _pids_by_span(run.dir)  # type: ignore[arg-type]
    assert pids["library-in-child"] == (str(pid), str(os.getpid()))
    assert pids["library-in-grandchild"] == (grandchild_pid, str(pid))
    assert pids["library-in-parent"][0] == pids["parent"][0] == str(os.getpid())


FORK_DRIVER = """
import os, sys
import runtel

runtel.configure(dir=sys.argv[1], sampling=False, strict=True)
with runtel.run_span("parent") as run:
    print(run.dir, flush=True)
    pid = os.fork()
    if pid:  # the parent waits for the child inside the run, then dies before closing it
        os.waitpid(pid, 0)
        os.kill(os.getpid(), 9)
    with runtel.block("in-child"):
        pass
os._exit(0)  # the child left the parent's `with` normally (its __exit__ ran)
"""


def test_forked_child_leaving_the_run_never_finalises_the_parents_record(tmp_path: Path) -> None:
    """A forked child that leaves `with run_span` normally writes no record and no second run span.

    The parent is killed after the child is done: its record must still say "running" (a reader
    then reports it interrupted), not the child's "ok" and end time.
    """
    import subprocess
    import sys

    script = tmp_path / "drive.py"
    script.write_text(FORK_DRIVER)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "runs")], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "RUNTEL_SAMPLING": "false"})
    assert done.returncode == -9, done.stderr
    record, spans = read_run(Path(done.stdout.split()[0]))
    assert record["status"] == "running" and record["end_time"] is None
    assert [s.name for s in spans] == ["in-child"]  # the child's block, and no run span ended by the child


@pytest.mark.filterwarnings("ignore:This process.*is multi-threaded:DeprecationWarning")
def test_fork_while_threads_record_and_the_sampler_runs_does_not_deadlock(rt_sampling: Settings) -> None:
    """Forking 20 times while 8 threads end 1,200 spans each (exporter, sampler and ticker threads
    busy): every child records its block and exits; every span of threads and children is on disk.
    (Bounded work: an unbounded loop of 8 threads can outrun the exporter's 16,384-span queue.)"""
    import threading

    def hammer(n: int) -> None:
        for _ in range(1200):
            with runtel.block("t"):
                pass

    with runtel.run_span("forky") as run:
        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        pids = []
        try:
            for i in range(20):
                pid = os.fork()
                if pid == 0:
                    try:
                        with runtel.block("child", i=i):
                            pass
                    finally:
                        os._exit(0)
                pids.append(pid)
            statuses = [_wait(pid, 30.0) for pid in pids]
        finally:
            for t in threads:
                t.join()
    assert statuses == [0] * 20
    spans = read_run(run.dir)[1]  # type: ignore[arg-type]
    assert sorted(s.attributes["i"] for s in spans if s.name == "child") == list(range(20))
    assert len([s for s in spans if s.name == "t"]) == 8 * 1200


def _wait(pid: int, timeout: float) -> int:
    """The child's exit status, or -1 after ``timeout`` seconds (the child is then killed: a deadlock)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -1
