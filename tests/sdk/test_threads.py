"""The run follows the work into threads, thread pools and executors, with no code beyond run_span."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import threading
from pathlib import Path

import pytest

import runtel
from runtel import _sdk
from runtel.config import Settings
from runtel.rundir.reader import read_spans
from runtel.testing import isolated


@runtel.trace
def traced(i: int) -> int:
    return i


def _named(run_dir: Path | None, suffix: str) -> list:  # type: ignore[type-arg]
    assert run_dir is not None
    return [s for s in read_spans(run_dir) if s.name.endswith(suffix)]


def test_seven_calls_through_thread_pool_and_executors_are_seven_spans(rt: Settings) -> None:
    """Thread, ThreadPoolExecutor x4, run_in_executor and asyncio.to_thread: 7 spans of 7, in the run's trace."""

    async def in_loop() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, traced, 5)
        await asyncio.to_thread(traced, 6)

    with runtel.run_span("threads") as run:
        thread = threading.Thread(target=traced, args=(0,))
        thread.start()
        thread.join()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            assert list(pool.map(traced, range(1, 5))) == [1, 2, 3, 4]
        asyncio.run(in_loop())
    spans = _named(run.dir, "traced")
    assert len(spans) == 7
    assert {s.trace_id for s in spans} == {run.trace_id}
    assert {s.parent_span_id for s in spans} == {run.span_id}
    assert all(s.attributes["runtel.run.id"] == run.id for s in spans)


def test_64_threads_of_600_blocks_are_all_on_disk(rt: Settings) -> None:
    """38,400 blocks from 64 threads: every one in spans.jsonl, each under its thread's block."""

    def worker(n: int) -> None:
        with runtel.block("thread", n=n):
            for _ in range(600):
                with runtel.block("b"):
                    pass

    with runtel.run_span("many") as run:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    spans = read_spans(run.dir)  # type: ignore[arg-type]
    blocks = [s for s in spans if s.name == "b"]
    outer = {s.span_id for s in spans if s.name == "thread"}
    assert len(blocks) == 38_400 and len(outer) == 64
    assert {s.trace_id for s in spans} == {run.trace_id}
    assert {s.parent_span_id for s in blocks} == outer


def test_thread_subclass_overriding_run_and_timer_carry_the_run(rt: Settings) -> None:
    """A Thread subclass with its own run() and a threading.Timer run inside the run too."""

    class Worker(threading.Thread):
        def run(self) -> None:
            traced(1)

    with runtel.run_span("sub") as run:
        w = Worker()
        w.start()
        w.join()
        timer = threading.Timer(0.0, traced, args=(2,))
        timer.start()
        timer.join()
    spans = _named(run.dir, "traced")
    assert len(spans) == 2 and {s.parent_span_id for s in spans} == {run.span_id}


def test_span_with_no_run_in_its_context_goes_to_the_process_run(rt: Settings) -> None:
    """A span started in an empty context while a run is open is attributed to the process run."""
    with runtel.run_span("outer") as outer:
        with runtel.run_span("inner"):
            contextvars.Context().run(traced, 1)  # a context that never saw either run
    spans = _named(outer.dir, "traced")
    assert len(spans) == 1 and spans[0].attributes["runtel.run.id"] == outer.id


def test_process_run_is_the_most_recently_opened_root_run(rt: Settings) -> None:
    """Two root runs open at once (one per thread): stray spans go to the one opened last."""
    opened = threading.Event()
    release = threading.Event()
    first: list[runtel.Run] = []

    def hold() -> None:
        with runtel.run_span("first") as run:
            first.append(run)
            opened.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert opened.wait(30)
    try:
        with runtel.run_span("second") as second:
            contextvars.Context().run(traced, 1)
    finally:
        release.set()
        holder.join()
    assert len(_named(second.dir, "traced")) == 1
    assert _named(first[0].dir, "traced") == []


def test_task_submitted_after_the_run_closed_is_not_attributed_to_it(rt: Settings, runs_dir: Path) -> None:
    """A pool thread started inside a run does not keep that run for tasks submitted after it closed."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with runtel.run_span("first") as first:
            pool.submit(traced, 1).result()
        with runtel.run_span("second") as second:
            pass
        router = _sdk.current_runtime().router  # type: ignore[union-attr]
        before = router.unattributed  # type: ignore[union-attr]
        pool.submit(traced, 2).result()
        assert router.unattributed == before + 1  # type: ignore[union-attr]
    finally:
        pool.shutdown()
    assert len(_named(first.dir, "traced")) == 1 and _named(second.dir, "traced") == []


def test_spans_outside_any_run_are_counted_and_reported_once(
    rt: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """With no run open, spans are not recorded: they are counted, and a warning says so once."""
    with runtel.run_span("build"):
        pass
    router = _sdk.current_runtime().router  # type: ignore[union-attr]
    before = router.unattributed  # type: ignore[union-attr]  (the processor lives as long as the provider)
    with caplog.at_level(logging.WARNING, logger="runtel"):
        for i in range(3):
            traced(i)
    assert router.unattributed == before + 3  # type: ignore[union-attr]
    assert len([r for r in caplog.records if "no run was open" in r.getMessage()]) == 1


def test_propagate_false_leaves_threads_alone(runs_dir: Path) -> None:
    """RUNTEL_PROPAGATE=false: a plain Thread does not see the run (its span falls back to the process run)."""
    seen: list[object] = []
    with isolated(runs_dir, sampling=False, propagate=False):
        with runtel.run_span("off"):
            t = threading.Thread(target=lambda: seen.append(runtel.current_run()))
            t.start()
            t.join()
    assert seen == [None]


def test_span_ending_after_its_run_closed_is_counted_and_reported(
    rt: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Work still running in a thread when its run closes: its span is not written, but counted and reported."""
    from runtel.exporters.jsonl import late_spans

    before = late_spans()
    started, go = threading.Event(), threading.Event()

    def late() -> None:
        with runtel.block("late"):
            started.set()
            go.wait(30)

    with runtel.run_span("short") as run:
        thread = threading.Thread(target=late)
        thread.start()
        assert started.wait(30)
    with caplog.at_level(logging.WARNING, logger="runtel"):
        go.set()
        thread.join()
        runtel.flush()
    assert late_spans() == before + 1
    assert len([r for r in caplog.records if "ended after run" in r.getMessage()]) == 1
    assert _named(run.dir, "late") == []


def test_a_full_export_queue_makes_producers_write_instead_of_dropping(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 64-span batches, 16 threads ending 2,000 spans each: all 32,000 on disk (the SDK's queue would drop).

    There is no queue to fill: the thread that fills a batch writes it, racing the others and the flusher.
    """
    from runtel._sdk import runtime

    monkeypatch.setattr(runtime, "_MAX_BATCH", 64)

    def worker() -> None:
        for _ in range(2000):
            with runtel.block("b"):
                pass

    with isolated(runs_dir, sampling=False):
        with runtel.run_span("burst") as run:
            threads = [threading.Thread(target=worker) for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    assert len(_named(run.dir, "b")) == 32_000
    assert not [p for p in os.listdir(run.dir) if p.endswith(".journal")]  # a closed run leaves no journal
