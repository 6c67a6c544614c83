"""block() and @trace: parenting across async and threads, every function kind, metadata kept."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.lowlevel
import pytest

import runtel
from runtel import semconv
from runtel.config import Settings
from runtel.rundir.reader import SpanRecord
from runtel.testing import read_run


def _by_name(spans: list[SpanRecord]) -> dict[str, list[SpanRecord]]:
    out: dict[str, list[SpanRecord]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def test_thousand_concurrent_tasks_each_parent_their_block(rt: Settings) -> None:
    """1,000 concurrent asyncio tasks each open a block; each inner span nests under its own task's block."""

    async def task(i: int) -> None:
        async with runtel.block(f"task-{i}", i=i):
            await asyncio.sleep(0.001 * (i % 7))
            with runtel.block("inner", i=i):
                await asyncio.sleep(0)

    async def main() -> runtel.Run:
        async with runtel.run_span("gather") as run:
            await asyncio.gather(*(task(i) for i in range(1000)))
        return run

    run = asyncio.run(main())
    _, spans = read_run(run.dir)  # type: ignore[arg-type]
    by_id = {s.span_id: s for s in spans}
    root = spans[0]
    inners = [s for s in spans if s.name == "inner"]
    assert len(inners) == 1000
    for inner in inners:
        parent = by_id[inner.parent_span_id]  # type: ignore[index]
        assert parent.name == f"task-{inner.attributes['i']}"
        assert parent.parent_span_id == root.span_id


def test_anyio_task_group_parenting(rt: Settings) -> None:
    """Blocks opened in anyio task-group children are children of the enclosing block."""

    async def child(i: int) -> None:
        async with runtel.block("child", i=i):
            await anyio.lowlevel.checkpoint()

    async def main() -> runtel.Run:
        async with runtel.run_span("tg") as run:
            async with runtel.block("group"):
                async with anyio.create_task_group() as tg:
                    for i in range(5):
                        tg.start_soon(child, i)
        return run

    run = anyio.run(main)
    _, spans = read_run(run.dir)  # type: ignore[arg-type]
    names = _by_name(spans)
    group = names["group"][0]
    assert len(names["child"]) == 5
    assert all(c.parent_span_id == group.span_id for c in names["child"])


def test_threads_with_copied_context(rt: Settings) -> None:
    """A thread started with a copied contextvars context parents its block under the current block."""
    with runtel.run_span("threads") as run:
        with runtel.block("outer"):
            threads = []
            for i in range(4):
                ctx = contextvars.copy_context()
                t = threading.Thread(target=ctx.run, args=(functools.partial(_thread_work, i),))
                threads.append(t)
                t.start()
            for t in threads:
                t.join()
    _, spans = read_run(run.dir)  # type: ignore[arg-type]
    names = _by_name(spans)
    outer = names["outer"][0]
    assert len(names["in-thread"]) == 4
    assert all(s.parent_span_id == outer.span_id for s in names["in-thread"])
    assert all(s.attributes[semconv.RUN_ID] == run.id for s in names["in-thread"])


def _thread_work(i: int) -> None:
    with runtel.block("in-thread", i=i):
        time.sleep(0.001)


def test_block_records_error_and_reraises(rt: Settings) -> None:
    """A failing block has status ERROR, an exception event, and the exception propagates."""
    with runtel.run_span("r") as run:
        with pytest.raises(KeyError):
            with runtel.block("failing"):
                raise KeyError("k")
    _, spans = read_run(run.dir)  # type: ignore[arg-type]
    failing = _by_name(spans)["failing"][0]
    assert failing.status_code == 2
    assert failing.attributes[semconv.ERROR_TYPE] == "KeyError"
    assert failing.events[0]["name"] == "exception"
    assert spans[0].status_code == 1  # handled inside: the run itself is fine


def test_block_attributes_redacted(rt: Settings) -> None:
    """Secret-named block attributes are redacted; ordinary ones kept."""
    with runtel.run_span("r") as run:
        with runtel.block("login", user="ana", password="hunter2", nested={"api_key": "k-123"}):
            pass
    _, spans = read_run(run.dir)  # type: ignore[arg-type]
    attrs = _by_name(spans)["login"][0].attributes
    assert attrs["user"] == "ana"
    assert attrs["password"] == "[REDACTED]"
    assert attrs["nested.api_key"] == "[REDACTED]"
    assert "hunter2" not in (run.dir / "spans.jsonl").read_text()  # type: ignore[union-attr]


# --- @trace -------------------------------------------------------------------------------------------


@runtel.trace
def add(a: int, b: int = 2) -> int:
    """Add two numbers."""
    return a + b


@runtel.trace(name="custom-name", attributes={"stage": "prep"})
def named(x: int) -> int:
    return x


@runtel.trace
async def async_add(a: int, b: int) -> int:
    """Add asynchronously."""
    await asyncio.sleep(0.001)
    return a + b


@runtel.trace
def counter(n: int) -> Iterator[int]:
    """Count with a block per item."""
    for i in range(n):
        with runtel.block("item", i=i):
            yield i


@runtel.trace
async def acounter(n: int) -> AsyncIterator[int]:
    """Count asynchronously."""
    for i in range(n):
        await asyncio.sleep(0)
        with runtel.block("aitem", i=i):
            yield i


class Model:
    @runtel.trace
    def method(self, x: int) -> int:
        return x * 2

    @classmethod
    @runtel.trace
    def cmethod(cls, x: int) -> int:
        return x * 3

    @staticmethod
    @runtel.trace
    def smethod(x: int) -> int:
        return x * 4

    @runtel.trace
    @classmethod
    def outer_cmethod(cls, x: int) -> int:
        return x * 5


def test_trace_keeps_metadata_and_signature() -> None:
    """Name, docstring, signature and coroutine/generator-ness are preserved (FastAPI/click/typer rely on them)."""
    assert add.__name__ == "add" and add.__doc__ == "Add two numbers."
    assert str(inspect.signature(add)) == "(a: 'int', b: 'int' = 2) -> 'int'"
    assert inspect.iscoroutinefunction(async_add)
    assert inspect.isgeneratorfunction(counter)
    assert inspect.isasyncgenfunction(acounter)
    assert str(inspect.signature(async_add)) == "(a: 'int', b: 'int') -> 'int'"


def test_trace_all_function_kinds(rt: Settings) -> None:
    """Sync, async, generators, async generators and all method kinds each produce one span per call."""

    async def drive() -> list[int]:
        assert await async_add(1, 2) == 3
        return [i async for i in acounter(3)]

    with runtel.run_span("kinds") as run:
        assert add(1) == 3
        assert named(5) == 5
        assert list(counter(3)) == [0, 1, 2]
        assert asyncio.run(drive()) == [0, 1, 2]
        m = Model()
        assert m.method(1) == 2
        assert Model.cmethod(1) == 3 and m.cmethod(1) == 3
        assert Model.smethod(1) == 4
        assert Model.outer_cmethod(1) == 5
    _, spans = read_run(run.dir)  # type: ignore[arg-type]
    names = _by_name(spans)
    for expected in ("add", "custom-name", "counter", "async_add", "acounter", "Model.method", "Model.cmethod",
                     "Model.smethod", "Model.outer_cmethod"):
        assert len(names[expected]) == (2 if expected == "Model.cmethod" else 1), expected
    assert names["custom-name"][0].attributes["stage"] == "prep"
    assert names["add"][0].attributes[semconv.CODE_FUNCTION_NAME].endswith("test_blocks.add")
    gen_span = names["counter"][0]
    assert [s.parent_span_id for s in names["item"]] == [gen_span.span_id] * 3
    agen_span = names["acounter"][0]
    assert [s.parent_span_id for s in names["aitem"]] == [agen_span.span_id] * 3
    assert gen_span.attributes["runtel.generator.items"] == 3


def test_generator_span_covers_iteration_not_caller(rt: Settings) -> None:
    """A generator's span lasts over its whole iteration, while the caller's code between items is not inside it."""
    with runtel.run_span("gen") as run:
        for _ in counter(2):
            with runtel.block("consumer"):
                time.sleep(0.02)
    _, spans = read_run(run.dir)  # type: ignore[arg-type]
    names = _by_name(spans)
    gen_span = names["counter"][0]
    assert gen_span.duration_s >= 0.04
    assert all(c.parent_span_id == spans[0].span_id for c in names["consumer"])


def test_generator_closed_early_ends_span(rt: Settings) -> None:
    """Breaking out of a traced generator still ends its span (status unset, not an error)."""
    with runtel.run_span("early") as run:
        gen = counter(10)
        for value in gen:
            if value == 1:
                break
        gen.close()
    _, spans = read_run(run.dir)  # type: ignore[arg-type]
    gen_span = _by_name(spans)["counter"][0]
    assert gen_span.status_code != 2
    assert gen_span.attributes["runtel.generator.items"] == 2


def test_generator_send_and_throw(rt: Settings) -> None:
    """send() and throw() pass through the traced generator unchanged."""

    @runtel.trace
    def echo() -> Iterator[int]:
        total = 0
        while True:
            try:
                received = yield total
            except ValueError:
                total = -1
                continue
            total += received

    with runtel.run_span("echo") as run:
        g = echo()
        assert next(g) == 0
        assert g.send(5) == 5
        assert g.throw(ValueError) == -1
        g.close()
    assert _by_name(read_run(run.dir)[1])["echo"]  # type: ignore[arg-type]


def test_trace_error_in_async_function(rt: Settings) -> None:
    """An exception inside a traced coroutine is recorded on its span and re-raised to the awaiter."""

    @runtel.trace
    async def broken() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("nope")

    with runtel.run_span("err") as run:
        with pytest.raises(RuntimeError, match="nope"):
            asyncio.run(broken())
    span = _by_name(read_run(run.dir)[1])["test_trace_error_in_async_function.<locals>.broken"][0]  # type: ignore[arg-type]
    assert span.status_code == 2


def test_trace_outside_a_run_is_harmless(rt: Settings, runs_dir: object) -> None:
    """Traced functions and blocks outside any run just run (no folder is created)."""
    with runtel.block("lonely"):
        assert add(2, 3) == 5
    assert list(runs_dir.iterdir()) == []  # type: ignore[attr-defined]


def test_trace_rejects_non_callables() -> None:
    """Decorating something that is not a function is a clear TypeError at decoration time."""
    with pytest.raises(TypeError):
        runtel.trace(42)  # type: ignore[call-overload]


def test_short_blocks_are_marked_unsampled(rt_sampling: Settings) -> None:
    """A block no sample fell into is written with runtel.usage.samples = 0; a long one gets real numbers."""
    from runtel import _sdk

    with runtel.run_span("usage") as run:
        runtime = _sdk.get_runtime()
        sampler = runtime.monitor.sampler if runtime is not None and runtime.monitor is not None else None
        assert sampler is not None
        deadline = time.monotonic() + 30
        ticks = sampler.ticks
        while sampler.ticks <= max(ticks, 1):  # just after a tick (the second: the loop is warm), the next 50 ms off
            assert time.monotonic() < deadline, "the sampling loop never ticked"
            time.sleep(0.001)
        with runtel.block("short"):
            pass
        with runtel.block("long"):
            time.sleep(0.3)
    _, spans = read_run(run.dir)  # type: ignore[arg-type]
    names = _by_name(spans)
    samples = semconv.USAGE_PREFIX + "samples"
    assert names["short"][0].attributes[samples] == 0
    assert names["short"][0].attributes.get(semconv.USAGE_PREFIX + "cpu.utilization.max") is None
    assert names["long"][0].attributes[samples] >= 2
    assert names["usage"][0].attributes[samples] >= 2  # runs always have their start and end samples
