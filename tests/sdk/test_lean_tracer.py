"""runtel's lean tracer makes the spans the SDK's ``Tracer.start_span`` makes, for every kind of parent.

Both tracers come from one provider (runtel's default sampler, real processors); each span is started the
SDK's way and the lean way under the same parent and with the same arguments, then both are compared
field by field — everything but the new span id and the clock — as the processors received them.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from runtel._sdk.ids import IndependentIdGenerator
from runtel._sdk.sampler import ParentBasedAlwaysOn
from runtel._sdk.tracer import LeanTracer, lean_tracer


class Starts(SpanProcessor):
    """Records what ``on_start`` saw."""

    def __init__(self) -> None:
        self.started: list[tuple[Any, Any]] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append((span, parent_context))


def _provider(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter, Starts]:
    provider = TracerProvider(sampler=ParentBasedAlwaysOn(), id_generator=IndependentIdGenerator(),
                              shutdown_on_exit=False, **kwargs)
    exporter, starts = InMemorySpanExporter(), Starts()
    provider.add_span_processor(starts)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter, starts


def _parents() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [("none", None), ("invalid", trace.set_span_in_context(trace.INVALID_SPAN))]
    for remote, flags, state in itertools.product((False, True), (0, 1, 2, 3), (None, TraceState([("v", "x1")]))):
        ctx = SpanContext(0xABC, 0xDEF, is_remote=remote, trace_flags=TraceFlags(flags), trace_state=state)
        out.append((f"remote={remote} flags={flags} state={bool(state)}", trace.set_span_in_context(NonRecordingSpan(ctx))))
    return out


def _view(span: Any) -> dict[str, Any]:
    """What a processor or exporter reads of a span, without its own ids and clock (a root's trace id is new)."""
    ctx = span.get_span_context() if not isinstance(span, ReadableSpan) else span.context
    finished = isinstance(span, ReadableSpan) and span.end_time is not None
    out: dict[str, Any] = {
        # an exporter is handed the SDK's ReadableSpan copy, or the lean span itself: the same fields
        "non_recording": type(span).__name__ == "NonRecordingSpan", "recording": None if finished else span.is_recording(),
        "flags": int(ctx.trace_flags), "state": ctx.trace_state.to_header(),
        "remote": ctx.is_remote, "valid": ctx.is_valid,
    }
    if isinstance(span, ReadableSpan):
        out.update(
            name=span.name, parent=span.parent, kind=span.kind, attributes=dict(span.attributes or {}),
            events=[(e.name, dict(e.attributes or {})) for e in span.events],
            links=[(link.context, dict(link.attributes or {})) for link in span.links],
            status=(span.status.status_code, span.status.description), resource=span.resource,
            scope=span.instrumentation_scope, dropped=(span.dropped_attributes, span.dropped_events, span.dropped_links),
            ended=span.end_time is not None and span.end_time >= (span.start_time or 0),
        )
    return out


def _both(provider: TracerProvider) -> tuple[Any, LeanTracer]:
    sdk = provider.get_tracer("t", "1.0", schema_url="https://opentelemetry.io/schemas/1.26.0")
    lean = lean_tracer(sdk)
    assert isinstance(lean, LeanTracer), "the lean path is off: the SDK's Span changed"
    return sdk, lean


@pytest.mark.parametrize(("label", "parent"), _parents(), ids=[label for label, _ in _parents()])
def test_every_parent_gets_the_span_the_sdk_makes(label: str, parent: Any) -> None:
    provider, exporter, starts = _provider()
    sdk, lean = _both(provider)
    link = Link(SpanContext(0x1, 0x2, is_remote=True), {"why": "because"})
    args: dict[str, Any] = {"context": parent, "kind": SpanKind.CLIENT, "attributes": {"a": 1, "l": [1, 2], "bad": object()},
                            "links": [link]}
    views = []
    for tracer in (sdk, lean):
        exporter.clear()
        starts.started.clear()
        span = tracer.start_span("s", **args)
        seen_at_start = [(_view(s), c is parent) for s, c in starts.started]
        span.set_attribute("later", "x")
        span.add_event("e", {"k": "v"})
        span.add_link(SpanContext(0x3, 0x4, is_remote=False))
        span.set_status(Status(StatusCode.ERROR, "no"))
        view = _view(span)
        span.end()
        views.append((view, seen_at_start, [_view(s) for s in exporter.get_finished_spans()]))
        if parent is not None and trace.get_current_span(parent).get_span_context().is_valid:
            assert span.get_span_context().trace_id == 0xABC
    assert views[0] == views[1]


def test_root_spans_get_fresh_trace_ids_and_children_their_parents() -> None:
    provider, exporter, _ = _provider()
    _, lean = _both(provider)
    root = lean.start_span("root")
    child = lean.start_span("child", context=trace.set_span_in_context(root))
    other = lean.start_span("other")
    for span in (child, other, root):
        span.end()
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    assert by_name["child"].parent == root.get_span_context()
    assert by_name["child"].context.trace_id == root.get_span_context().trace_id != other.get_span_context().trace_id
    assert len({s.context.span_id for s in by_name.values()}) == 3


def test_limits_exceptions_and_ended_spans_behave_as_the_sdks(caplog: pytest.LogCaptureFixture) -> None:
    limits = SpanLimits(max_span_attributes=2, max_events=1, max_links=1, max_span_attribute_length=3)
    provider, exporter, _ = _provider(span_limits=limits)
    views = []
    for tracer in _both(provider):
        exporter.clear()
        span = tracer.start_span("s", attributes={"b": 2, "c": 3, "a": "long text"})
        try:
            raise ValueError("boom")
        except ValueError as exc:
            span.record_exception(exc)
        span.add_event("second")
        span.add_link(SpanContext(0x5, 0x6, is_remote=False))
        span.add_link(SpanContext(0x7, 0x8, is_remote=False))
        span.end()
        caplog.clear()  # the warnings of an ended span's calls (a limit's warning may be logged once per process)
        with caplog.at_level(logging.WARNING):
            span.set_attribute("late", 1)
            span.add_event("late")
            span.add_link(SpanContext(0x9, 0xA, is_remote=False))
            span.end()
        (done,) = exporter.get_finished_spans()
        views.append((_view(done), [(e.attributes or {}).get("exception.type") for e in done.events],
                      sorted(r.getMessage() for r in caplog.records)))
    assert views[0] == views[1]
    assert views[1][0]["dropped"] == (1, 1, 1) and views[1][0]["attributes"] == {"c": 3, "a": "lon"}


def test_events_from_many_threads_are_all_kept() -> None:
    """The events list a lean span makes at its first event is made once, under the span's lock."""
    provider, exporter, _ = _provider(span_limits=SpanLimits(max_events=10_000))
    _, lean = _both(provider)
    for _ in range(20):
        span = lean.start_span("s")
        barrier = threading.Barrier(8)

        def add(span: Any = span, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            for i in range(50):
                span.add_event(f"e{i}")

        threads = [threading.Thread(target=add) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        span.end()
    assert all(len(s.events) == 400 for s in exporter.get_finished_spans())


def test_other_samplers_disabled_tracers_and_other_sdks_take_the_sdks_path() -> None:
    other = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False).get_tracer("t")
    assert lean_tracer(other) is other
    assert lean_tracer(trace.NoOpTracer()).__class__ is trace.NoOpTracer
    provider, _, _ = _provider()
    sdk, lean = _both(provider)
    sdk.sampler = ALWAYS_ON  # replaced after the build: the SDK's own path from then on
    span = lean.start_span("s")
    assert span.is_recording() and type(span).__name__ == "_Span"
    span.end()


def test_a_parent_that_is_not_a_span_context_is_refused_like_the_sdk_does() -> None:
    class Odd(NonRecordingSpan):
        def get_span_context(self) -> Any:
            return "not a context"

    provider, _, _ = _provider()
    for tracer in _both(provider):
        with pytest.raises(TypeError, match="parent_span_context must be a SpanContext"):
            tracer.start_span("s", context=trace.set_span_in_context(Odd(trace.INVALID_SPAN_CONTEXT)))


def test_runtel_starts_its_spans_on_the_lean_path(tmp_path: Any) -> None:
    import runtel
    from runtel import _sdk

    runtel.configure(dir=str(tmp_path), sampling=False)
    with runtel.run_span("lean"), runtel.block("b") as block:
        runtime = _sdk.get_runtime()
        assert runtime is not None and isinstance(runtime.tracer, LeanTracer)
        assert type(block.span).__name__ == "LeanSpan"


def test_spans_without_events_share_no_lock() -> None:
    """Every lean span without events or links shares one empty list: reading it takes no lock that another
    thread (or a parent at a fork) could hold; appending to it is refused, never shared."""
    provider, _, _ = _provider()
    _, lean = _both(provider)
    first, second = lean.start_span("a"), lean.start_span("b")
    shared = first._events  # type: ignore[attr-defined]
    assert shared is second._events  # type: ignore[attr-defined]
    with shared._lock:  # held, as by a thread at a fork
        assert second.events == () and second.links == () and tuple(shared) == ()
    with pytest.raises(TypeError):
        shared.append("x")
    second.add_event("own")
    assert second._events is not shared and [e.name for e in second.events] == ["own"]  # type: ignore[attr-defined]
    assert first.events == ()
    first.end()
    second.end()


def test_processors_get_a_copy_and_a_forked_child_its_own_resource() -> None:
    """As the SDK: on_end receives a ReadableSpan copy (deep-copyable), and the tracer's resource is read at
    each start (a forked child's provider replaces it)."""
    import copy

    from opentelemetry.sdk.resources import Resource

    provider, exporter, _ = _provider()
    sdk, lean = _both(provider)
    lean.start_span("s").end()
    (done,) = exporter.get_finished_spans()
    assert type(done) is ReadableSpan and copy.deepcopy(done).name == "s"
    sdk._set_resource(Resource.create({"service.instance.id": "child"}))  # what the SDK does after a fork
    span = lean.start_span("after")
    assert span.resource.attributes["service.instance.id"] == "child"  # type: ignore[attr-defined]
    span.end()
