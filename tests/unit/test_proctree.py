"""Process-tree reads with real processes: descendants, zombies, vanished processes, threads, retargeting."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from runtel.sampling.proctree import ProcessTree

SLEEPER = [sys.executable, "-c", "import time; time.sleep(30)"]



_preexisting: list[int] = []


@pytest.fixture(autouse=True)
def _ignore_preexisting_children() -> None:
    """Children that other fixtures started in this test process (e.g. a session's OTLP receiver) are not ours."""
    _preexisting[:] = [p.pid for p in psutil.Process().children(recursive=True)]


def _self_tree() -> ProcessTree:
    """This process's tree, minus processes that existed before the test started."""
    return ProcessTree([os.getpid()], exclude_pids=_preexisting)


def test_reads_self_without_descendants() -> None:
    """The current process alone: one process, RSS > 0, USS/PSS read on first sight."""
    tree = _self_tree()
    main, desc, combined, pids = tree.read(time.monotonic(), want_detail=False)
    assert main.processes == 1 and desc.processes == 0 and os.getpid() in pids
    assert main.rss_bytes > 0 and main.uss_bytes is not None and combined.rss_bytes == main.rss_bytes


def test_children_and_grandchildren_are_descendants() -> None:
    """A child that spawns a grandchild: both are counted under descendants."""
    code = "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        tree = _self_tree()
        deadline = time.monotonic() + 10
        desc_count = 0
        while time.monotonic() < deadline and desc_count < 2:
            desc_count = tree.read(time.monotonic(), False).descendants.processes
            time.sleep(0.05)
        assert desc_count == 2
    finally:
        for proc in psutil.Process(child.pid).children(recursive=True):
            proc.kill()
        child.kill()
        child.wait()


def test_zombie_child_is_skipped_without_error() -> None:
    """An exited but unreaped child is not counted as a live process and does not raise."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.02)
        tree = _self_tree()
        _, desc, _, pids = tree.read(time.monotonic(), True)
        assert desc.processes == 0 and child.pid not in pids
    finally:
        child.wait()


def test_process_exiting_between_discovery_and_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A descendant killed right after discovery is tolerated and its CPU seconds are kept."""
    child = subprocess.Popen(SLEEPER)
    try:
        tree = _self_tree()
        tree.read(time.monotonic(), False)
        real = tree._descendants

        def discover_then_kill() -> set[int]:
            found = real()
            child.kill()
            child.wait()
            return found

        monkeypatch.setattr(tree, "_descendants", discover_then_kill)
        _, desc, combined, pids = tree.read(time.monotonic(), False)
        assert desc.processes == 0 and child.pid not in pids
        assert combined.cpu_time_s >= 0.0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_thread_count_includes_extra_threads() -> None:
    """A child with 5 extra threads reports at least 6 threads."""
    code = "import threading, time\n[threading.Thread(target=time.sleep, args=(30,), daemon=True).start() for _ in range(5)]\nprint('ok', flush=True)\ntime.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ok"
        tree = ProcessTree([child.pid])
        main, _, _, _ = tree.read(time.monotonic(), False)
        assert main.threads >= 6
    finally:
        child.kill()
        child.communicate()


def test_set_roots_excluding_self() -> None:
    """Retargeting to a child tracks it as main; excluded pids are never counted."""
    child = subprocess.Popen(SLEEPER)
    try:
        tree = _self_tree()
        tree.set_roots([child.pid], exclude_pids=[os.getpid()])
        main, desc, _, pids = tree.read(time.monotonic(), False)
        assert pids == {child.pid} and main.processes == 1 and desc.processes == 0
    finally:
        child.kill()
        child.wait()


def test_cpu_time_never_decreases_when_a_child_exits() -> None:
    """Cumulative CPU seconds keep the share of a descendant that exited."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt=time.process_time()\nwhile time.process_time()-t<0.6: pass\ntime.sleep(30)",
        ]
    )
    try:
        tree = _self_tree()
        deadline = time.monotonic() + 10
        before = 0.0
        while time.monotonic() < deadline:
            before = tree.read(time.monotonic(), False).descendants.cpu_time_s
            if before >= 0.3:
                break
            time.sleep(0.05)
        child.kill()
        child.wait()
        after = tree.read(time.monotonic(), False).descendants
        assert before >= 0.3 and after.processes == 0 and after.cpu_time_s >= before
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_pss_is_left_out_while_members_changed_without_a_refresh() -> None:
    """Workers joining faster than the refresh bucket allows: a read that could not re-read every member gives
    no PSS (its shares would be of different sharer counts) instead of a too-high one; the next refresh does."""
    tree = _self_tree()
    now = time.monotonic()
    assert tree.read(now, want_detail=False).combined.pss_bytes is not None
    children = []
    try:
        for _ in range(4):  # four membership changes at one instant: the bucket holds three refreshes
            children.append(subprocess.Popen(SLEEPER))
            deadline = time.monotonic() + 10
            while tree.read(now, want_detail=False).descendants.processes < len(children):
                assert time.monotonic() < deadline
        assert tree.read(now, want_detail=False).combined.pss_bytes is None  # changed, not re-read: no PSS
        later = tree.read(now + 1.5, want_detail=False)  # a token back: every member re-read
        assert later.combined.pss_bytes is not None and later.descendants.processes == 4
    finally:
        for child in children:
            child.kill()
            child.wait()
