"""runtel._internals: the C-encoder fast path is on where it should be and is indistinguishable from the public API.

These fail when an interpreter upgrade changes CPython's private ``json.encoder.c_make_encoder``, so the
change is seen in CI instead of runtel quietly falling back to the slower public encoder (or worse).
"""

from __future__ import annotations

import json
import json.encoder
import math
import platform
import threading
from collections import OrderedDict
from decimal import Decimal
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any

import pytest

from runtel import _internals
from runtel._internals import compact_json, json_string

PUBLIC = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=str)


class Color(Enum):
    RED = "red"


class Level(IntEnum):
    HIGH = 3


class Weird:
    def __str__(self) -> str:
        return "wéird \"thing\"\n"


class MyFloat(float):
    pass


class MyStr(str):
    pass


class MyDict(dict):  # type: ignore[type-arg]
    pass


VALUES: list[Any] = [
    None, True, False, 0, -1, 2**64, -(2**70), 1.0, -0.0, 0.1, 1e-320, 1.7976931348623157e308, math.pi,
    "", "plain", "é ü 中文 🙂", "quote \" backslash \\ slash /", "\x00\x01\x1f\x7f", "\u2028\u2029", "\ud800",
    [], {}, (), [1, [2, [3, [4]]]], (1, "two", 3.0), {"a": 1, "b": [True, None]},
    {7: "int key", 2.5: "float key", True: "bool key", None: "none key", "s": "str key"},
    {"nested": {"deeper": {"deepest": [{}, [], ""]}}}, OrderedDict([("z", 1), ("a", 2)]), MyDict(x=1),
    Color.RED, Level.HIGH, MyFloat(2.5), MyStr("sub"), Decimal("1.10"), Path("/tmp/x"), Weird(), {"w": Weird()},
    [Weird(), {Level.HIGH: Level.HIGH}], {"list": list(range(50)), "text": "x" * 500},
    {"config": {"lr": 3e-4, "betas": [0.9, 0.999], "name": "adamw", "layers": 12}, "tags": ["sweep", "baseline"]},
]


def outcome(encode: Any, value: Any) -> tuple[str, str]:
    try:
        return "ok", encode(value)
    except Exception as exc:
        return type(exc).__name__, ""


def test_fast_path_is_on_for_cpython() -> None:
    """On CPython the private constructor exists and passed the import-time probe; if this fails, the
    interpreter changed ``json.encoder.c_make_encoder``: update or drop runtel._internals."""
    if platform.python_implementation() != "CPython":
        pytest.skip("the fast path is a CPython internal")
    assert json.encoder.c_make_encoder is not None
    assert _internals.FAST_JSON is True


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_fast_path_matches_the_public_encoder(value: Any) -> None:
    """The private call and compact_json give exactly the public encoder's text for each value."""
    expected = PUBLIC.encode(value)
    assert compact_json(value) == expected
    if _internals.FAST_JSON:
        assert _internals._fast(value) == expected


def test_failures_are_the_public_encoders() -> None:
    """NaN, infinities and circular references raise ValueError; a tuple key raises TypeError: like the public one."""
    circular: list[Any] = []
    circular.append(circular)
    circular_dict: dict[str, Any] = {}
    circular_dict["self"] = circular_dict
    bad = [math.nan, math.inf, -math.inf, [1, math.nan], {"x": math.inf}, circular, circular_dict, {(1, 2): "tuple"}]
    for value in bad:
        expected = outcome(PUBLIC.encode, value)
        assert expected[0] in ("ValueError", "TypeError"), value
        assert outcome(compact_json, value) == expected
        if _internals.FAST_JSON:
            assert outcome(_internals._fast, value)[0] == expected[0]


def test_circular_check_is_per_call_across_threads() -> None:
    """The same (non-circular) object encoded from many threads at once never trips the circular-reference check."""
    shared = {"a": [{"b": list(range(200))} for _ in range(20)]}
    expected = PUBLIC.encode(shared)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(200):
                assert compact_json(shared) == expected
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_json_string_is_the_encoders_string_literal() -> None:
    """json_string writes a str exactly as the public encoder does (non-ASCII kept)."""
    for text in ("", "é 中 🙂", "\"\\\n\t\x00", "\u2028", "\ud800", MyStr("s")):
        assert json_string(text) == PUBLIC.encode(text)


def test_span_storage_shortcuts_read_what_the_public_properties_show() -> None:
    """The SDK still stores attributes, events and links where _internals reads them (else it falls back)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Link

    from runtel import _internals

    tracer = TracerProvider().get_tracer("t")
    other = tracer.start_span("other")
    span = tracer.start_span("s", attributes={"a": 1, "b": "x"}, links=[Link(other.get_span_context(), {"l": 1})])
    span.add_event("e", {"k": "v"})
    span.end()
    stored = _internals.span_attributes(span)
    assert stored is not span.attributes, "the SDK moved a span's attribute store: _internals reads the proxy now"
    assert dict(_internals.attribute_items(stored)) == dict(span.attributes)
    assert isinstance(getattr(stored, "_dict", None), dict), "BoundedAttributes no longer keeps a plain dict"
    assert list(_internals.span_events(span)) == list(span.events)
    assert list(_internals.span_links(span)) == list(span.links)
    assert hasattr(span, "_events") and hasattr(span, "_links")


def test_process_target_and_start_method_are_where_internals_read_them() -> None:
    """multiprocessing still keeps a process's target and its context's start method where _internals looks."""
    import multiprocessing

    from runtel import _internals

    def work() -> None:
        pass

    for method in multiprocessing.get_all_start_methods():
        process = multiprocessing.get_context(method).Process(target=work)
        assert _internals.process_target(process) is work
        assert _internals.process_start_method(process) == method
        _internals.set_process_target(process, print)
        assert _internals.process_target(process) is print


def test_multiprocessing_exit_function_is_recognised() -> None:
    """The frame check finds multiprocessing.util's exit function by the name _internals expects."""
    import multiprocessing.util
    import sys

    from runtel import _internals

    assert callable(getattr(multiprocessing.util, _internals._EXIT_FUNCTION, None))
    seen: list[bool] = []

    def spy(*args: object, **kwargs: object) -> None:
        seen.append(_internals.in_multiprocessing_exit(sys._getframe()))

    exit_function = getattr(multiprocessing.util, _internals._EXIT_FUNCTION)
    exiting = multiprocessing.util._exiting  # type: ignore[attr-defined]
    multiprocessing.util._exiting = False  # type: ignore[attr-defined]
    try:  # the real function, with its finalizer runner and process lookups swapped for harmless ones
        exit_function(_run_finalizers=spy, active_children=list, current_process=lambda: None)
    finally:
        multiprocessing.util._exiting = exiting  # type: ignore[attr-defined]
    assert seen and all(seen)
    assert not _internals.in_multiprocessing_exit(sys._getframe())


@pytest.fixture
def public(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What reached the SDK's public ``Span.set_attributes`` / ``set_attribute`` (the slow path), call by call."""
    from opentelemetry.sdk.trace import Span as SdkSpan

    calls: list[dict[str, Any]] = []
    many, one = SdkSpan.set_attributes, SdkSpan.set_attribute

    def counting(self: SdkSpan, attributes: Any) -> None:
        calls.append(dict(attributes))
        many(self, attributes)

    def counting_one(self: SdkSpan, key: str, value: Any) -> None:
        calls.append({key: value})
        one(self, key, value)

    monkeypatch.setattr(SdkSpan, "set_attributes", counting)
    monkeypatch.setattr(SdkSpan, "set_attribute", counting_one)
    return calls


def _tracer(max_attributes: int) -> Any:
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    return TracerProvider(span_limits=SpanLimits(max_attributes=max_attributes, max_attribute_length=5)).get_tracer("t")


def test_owned_attributes_go_in_directly_and_otherwise_through_the_sdk(public: list[dict[str, Any]]) -> None:
    """set_owned_attributes stores scalars as set_attributes would; limits, ended spans and odd values take the SDK path."""
    tracer = _tracer(4)
    span = tracer.start_span("s")
    _internals.set_owned_attributes(span, {"f": 1.5, "b": True, "i": 3, "s": "short"})
    assert not public, "the SDK moved a span's attribute store or lock: the fast path is off"
    assert dict(span.attributes) == {"f": 1.5, "b": True, "i": 3, "s": "short"}
    _internals.set_owned_attributes(span, {"x": 1.0})  # full (max_attributes=4): the SDK drops the oldest
    assert public == [{"x": 1.0}] and span.dropped_attributes == 1
    other = tracer.start_span("o")
    _internals.set_owned_attributes(other, {"s": "too long"})  # cut by the length limit: the SDK cuts it
    _internals.set_owned_attributes(other, {"t": (1, 2)})  # not a scalar: the SDK copes
    assert dict(other.attributes) == {"s": "too l", "t": (1, 2)}
    other.end()
    _internals.set_owned_attributes(other, {"late": 1})  # ended: the SDK's warning, nothing stored
    assert "late" not in other.attributes
    span.end()


def test_stamping_a_new_span_is_set_owned_attributes_without_the_lock(public: list[dict[str, Any]]) -> None:
    """stamp_new_span / stamp_run_id store what set_attributes would; limits and odd values take the SDK path."""
    span = _tracer(3).start_span("s")
    _internals.stamp_new_span(span, {"a": "id", "k": 2})
    assert not public, "the SDK moved a span's attribute store: the fast path is off"
    _internals.stamp_new_span(span, {"a": "again"})  # a key already there: the SDK replaces it
    _internals.stamp_new_span(span, {"long": "too long", "t": (1, 2)})  # cut, and the dict is full: the SDK copes
    assert len(public) == 2
    assert span.attributes["a"] == "again" and span.attributes.get("long") in (None, "too l")
    span.end()
    other = _tracer(3).start_span("o")
    _internals.stamp_run_id(other, "runtel.run.id", "r-1")
    assert not public[2:] and dict(other.attributes) == {"runtel.run.id": "r-1"}
    _internals.stamp_run_id(other, "runtel.run.id", "r-2")  # already there: the SDK path
    _internals.stamp_run_id(other, "id", "much too long")  # over the length limit: the SDK cuts it
    assert public[2:] == [{"runtel.run.id": "r-2"}, {"id": "much too long"}]
    assert dict(other.attributes) == {"runtel.run.id": "r-2", "id": "much "}
    other.end()


def test_span_fields_are_what_the_public_properties_show() -> None:
    """span_fields reads the SDK's stored fields and the SpanContext tuple; both agree with the properties."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState, set_span_in_context

    tracer = TracerProvider().get_tracer("t")
    remote = SpanContext(0xAB, 0xCD, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("k", "v")]))
    for parent in (None, set_span_in_context(NonRecordingSpan(remote))):
        span = tracer.start_span("s", context=parent, attributes={"a": 1})
        span.add_event("e")
        span.end()
        ctx = span.context
        expected = (span.name, ctx.trace_id, ctx.span_id, ctx.trace_flags, ctx.trace_state,
                    span.parent.span_id if span.parent else None, bool(span.parent and span.parent.is_remote),
                    span.kind, span.start_time, span.end_time)
        fields = _internals.span_fields(span)
        assert fields[:10] == expected
        assert dict(fields[10]) == dict(span.attributes) and list(fields[11]) == list(span.events)
        assert list(fields[12]) == list(span.links) and fields[13] is span.status
    assert _internals._CONTEXT_TUPLE is True, "SpanContext is no longer the tuple span_fields unpacks"


def test_open_span_snapshot_is_the_open_span_ending_now() -> None:
    """A snapshot of an open SDK span has its public fields and the given end; it does not follow later changes;
    an ended span, or one of another SDK, gives None."""
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.trace import Status, StatusCode, set_span_in_context

    tracer = TracerProvider().get_tracer("t")
    parent = tracer.start_span("parent")

    span = tracer.start_span("open", context=set_span_in_context(parent), attributes={"a": 1})
    span.add_event("e", {"k": "v"})
    span.set_status(Status(StatusCode.OK))
    now = span.start_time + 5
    snap = _internals.open_span_snapshot(span, now, ReadableSpan)
    assert snap is not None and snap.end_time == now and snap.start_time == span.start_time
    assert (snap.name, snap.context, snap.parent, snap.kind, snap.resource, snap.instrumentation_scope) == \
        (span.name, span.context, span.parent, span.kind, span.resource, span.instrumentation_scope)
    assert dict(snap.attributes) == {"a": 1} and [e.name for e in snap.events] == ["e"]
    assert snap.status.status_code is StatusCode.OK
    span.set_attribute("b", 2)
    assert dict(snap.attributes) == {"a": 1}  # a copy
    span.end()
    assert _internals.open_span_snapshot(span, now, ReadableSpan) is None
    assert _internals.open_span_snapshot(object(), now, ReadableSpan) is None
    parent.end()


def test_signal_friendly_get_reads_what_simple_queue_get_reads() -> None:
    """SimpleQueue still keeps its lock and reader where signal_friendly_get reads them, and gives the same items."""
    import multiprocessing

    queue = multiprocessing.get_context("spawn").SimpleQueue()
    get = _internals.signal_friendly_get(queue)
    assert get is not None, "SimpleQueue moved its _rlock/_reader: pool workers may hang on a lost SIGTERM again"
    queue.put({"task": 1})
    queue.put(None)
    assert get() == {"task": 1} and get() is None
    assert _internals.signal_friendly_get(object()) is None  # anything else: left alone


def test_environ_bytes_is_a_copy_of_the_bytes_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPython still keeps os.environ as a bytes dict: the copy equals os.environb and is not the live one."""
    import os

    monkeypatch.setenv("RUNTEL_INTERNALS_PROBE", "é")
    copied = _internals.environ_bytes()
    assert copied is not None, "os.environ._data moved: subprocess children in blocks pay ~80 us more"
    assert copied == dict(os.environb) and copied[b"RUNTEL_INTERNALS_PROBE"] == "é".encode()
    copied[b"RUNTEL_INTERNALS_PROBE"] = b"x"
    assert os.environ["RUNTEL_INTERNALS_PROBE"] == "é"


def test_set_provider_resource_reaches_new_tracers() -> None:
    """The SDK's TracerProvider still hands new tracers its _resource."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource({"process.pid": 1}))
    assert _internals.set_provider_resource(provider, Resource({"process.pid": 2}))
    assert provider.get_tracer("t").resource.attributes["process.pid"] == 2  # type: ignore[attr-defined]
    assert provider.resource.attributes["process.pid"] == 2
    assert not _internals.set_provider_resource(object(), Resource({}))
