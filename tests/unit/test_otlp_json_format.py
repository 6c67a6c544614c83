"""The run folder's spans.jsonl / metrics.jsonl follow the OTLP JSON mapping, so otlpjsonfile and OTLP/HTTP accept them.

Rules checked (opentelemetry-proto ``docs/specification.md``, "JSON Protobuf Encoding"): every line parses as
the protobuf ``Export*ServiceRequest`` with unknown fields rejected, keys are lowerCamelCase (checked
separately: protobuf's ParseDict also accepts the original snake_case names, which OTLP/JSON forbids), enums are integers, 64-bit integers are decimal strings, ids are lowercase hex of the right
length, and no line of a normal run exceeds the 1 MiB token limit of the Collector's fileconsumer.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import ParseDict, ParseError
from opentelemetry import trace as otel_trace
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import runtel
from runtel.config import Settings
from runtel.query.replay import ids_to_base64

MAX_TOKEN = 1024 * 1024
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
INT64_FIELDS = {"startTimeUnixNano", "endTimeUnixNano", "timeUnixNano", "intValue", "asInt", "count",
                "observedTimeUnixNano"}
ENUM_FIELDS = {"kind", "code", "aggregationTemporality"}
HEX_LENGTH = {"traceId": 32, "spanId": 16, "parentSpanId": 16}


@pytest.fixture
def run_dir(rt_sampling: Settings) -> Path:
    """A real run with sampling on: attributes of every type, an error, a link and a CLIENT span."""
    tracer = otel_trace.get_tracer("test.format")
    with runtel.run_span("format-check", config={"lr": 0.1, "layers": [64, 32], "name": "x"}) as run:
        with runtel.block("typed", big=2**62, neg=-7, ratio=0.5, flag=False, tags=["a", "b"]):
            time.sleep(0.3)
        with pytest.raises(ValueError), runtel.block("fails"):
            raise ValueError("boom")
        first = otel_trace.get_current_span().get_span_context()
        with tracer.start_as_current_span("client-call", kind=otel_trace.SpanKind.CLIENT,
                                          links=[otel_trace.Link(first, {"why": "test"})]):
            pass
    assert run.dir is not None
    return Path(run.dir)


def lines(path: Path) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """Raw and parsed lines of a JSON Lines file."""
    with path.open("rb") as f:
        for raw in f:
            assert raw.endswith(b"\n"), "every line ends with a newline"
            yield raw, json.loads(raw)


def walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in a JSON document, depth first."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from walk(v, k)
    elif isinstance(value, list):
        for v in value:
            yield key, v
            yield from walk(v, key)


def check_encoding(message: dict[str, Any]) -> None:
    """Keys, enums, int64 and id rules of the OTLP JSON mapping."""
    for key, value in walk(message):
        if isinstance(key, str) and key:
            assert CAMEL.match(key), f"key {key!r} is not lowerCamelCase"
        if key in ENUM_FIELDS and not isinstance(value, (dict, list)):
            assert isinstance(value, int) and not isinstance(value, bool), f"{key}={value!r} is not an integer enum"
        if key in INT64_FIELDS and not isinstance(value, (dict, list)):
            assert isinstance(value, str) and re.fullmatch(r"-?\d+", value), f"{key}={value!r} is not an int64 string"
        if key == "bucketCounts" and isinstance(value, list):
            assert all(isinstance(v, str) for v in value)
        if key in HEX_LENGTH and isinstance(value, str) and value:
            assert re.fullmatch(rf"[0-9a-f]{{{HEX_LENGTH[key]}}}", value), f"{key}={value!r} is not lowercase hex"


def test_every_span_line_parses_strictly_as_export_trace_request(run_dir: Path) -> None:
    """Each spans.jsonl line parses into ExportTraceServiceRequest with unknown fields rejected."""
    count = 0
    for raw, message in lines(run_dir / "spans.jsonl"):
        assert len(raw) <= MAX_TOKEN
        request = ParseDict(ids_to_base64(message), ExportTraceServiceRequest(), ignore_unknown_fields=False)
        for rs_json, rs in zip(message["resourceSpans"], request.resource_spans, strict=True):
            for ss_json, ss in zip(rs_json["scopeSpans"], rs.scope_spans, strict=True):
                for span_json, span in zip(ss_json["spans"], ss.spans, strict=True):
                    assert span.trace_id.hex() == span_json["traceId"]
                    assert span.span_id.hex() == span_json["spanId"]
                    count += 1
    assert count == 4  # format-check, typed, fails, client-call


def test_span_lines_follow_the_json_mapping(run_dir: Path) -> None:
    """Integer enums (kind, status code), int64 as strings, lowercase hex ids of the right length, camelCase keys."""
    spans: dict[str, dict[str, Any]] = {}
    for _, message in lines(run_dir / "spans.jsonl"):
        check_encoding(message)
        for rs in message["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    spans[span["name"]] = span
    assert spans["client-call"]["kind"] == 3  # SPAN_KIND_CLIENT
    assert spans["typed"]["kind"] == 1  # SPAN_KIND_INTERNAL
    assert spans["fails"]["status"]["code"] == 2  # STATUS_CODE_ERROR
    attrs = {a["key"]: a["value"] for a in spans["typed"]["attributes"]}
    assert any(v == {"intValue": str(2**62)} for v in attrs.values())
    assert spans["client-call"]["links"][0]["spanId"] == spans["format-check"]["spanId"]


def test_metric_lines_parse_as_export_metrics_request(run_dir: Path) -> None:
    """metrics.jsonl lines parse strictly into ExportMetricsServiceRequest and follow the mapping rules."""
    parsed = 0
    names: set[str] = set()
    for raw, message in lines(run_dir / "metrics.jsonl"):
        assert len(raw) <= MAX_TOKEN
        check_encoding(message)
        request = ParseDict(ids_to_base64(message), ExportMetricsServiceRequest(), ignore_unknown_fields=False)
        names |= {m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        parsed += 1
    assert parsed >= 1
    assert "process.cpu.time" in names
    sums = [m for _, msg in lines(run_dir / "metrics.jsonl") for rm in msg["resourceMetrics"]
            for sm in rm["scopeMetrics"] for m in sm["metrics"] if "sum" in m]
    assert all(isinstance(m["sum"]["aggregationTemporality"], int) for m in sums)


def test_strict_parse_rejects_snake_case_and_wrong_signal(run_dir: Path) -> None:
    """The checks have teeth: unknown keys and a span line read as metrics fail to parse; snake_case fails the key rule."""
    _, message = next(lines(run_dir / "spans.jsonl"))
    bad = json.loads(json.dumps(message))
    span = bad["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["spanName"] = span["name"]
    with pytest.raises(ParseError):
        ParseDict(ids_to_base64(bad), ExportTraceServiceRequest(), ignore_unknown_fields=False)
    del span["spanName"]
    span["start_time_unix_nano"] = span.pop("startTimeUnixNano")
    with pytest.raises(AssertionError, match="lowerCamelCase"):
        check_encoding(bad)
    with pytest.raises(ParseError):
        ParseDict(ids_to_base64(message), ExportMetricsServiceRequest(), ignore_unknown_fields=False)
    with pytest.raises(AssertionError):
        check_encoding({"kind": "SPAN_KIND_INTERNAL"})


# --- metrics_line: run-folder metric lines written directly as text -------------------------------------------

_NON_ASCII = "nœud – 東京 ☃"
_METRICS: list[tuple[str, str, str, str, bool, list[tuple[dict[str, Any], int, int, float]]]] = [
    (
        "process.cpu.time", "CPU time", "s", "sum", True,
        [
            ({"cpu.mode": "user", "runtel.run.id": "run-1"}, 1_700_000_000_000_000_000, 1_700_000_001_000_000_000, 3),
            ({"cpu.mode": "system", "flag": True, "n": 2**62, "ratio": 0.25}, 1_700_000_000_000_000_000,
             1_700_000_001_000_000_000, 0.125),
            ({"tags": ["a", _NON_ASCII], "numbers": [1, 2.5], "flag": 1}, 5, 6, 2**53 + 1),
        ],
    ),
    (
        "runtel.process.count", "Processes " + _NON_ASCII, "{process}", "sum", False,
        [({"runtel.process.scope": "combined"}, 7, 8, -2), ({}, 7, 8, 1.5)],
    ),
    (
        "hw.temperature", "", "Cel", "gauge", False,
        [
            ({"hw.id": "GPU-1", _NON_ASCII: _NON_ASCII}, 0, 9, 70.5),
            ({"hw.id": "GPU-2"}, 0, 9, math.nan),
            ({"hw.id": "GPU-3"}, 0, 9, math.inf),
            ({"hw.id": "GPU-4", "off": False}, 0, 9, -math.inf),
            ({"hw.id": "GPU-5"}, 0, 9, 1e-300),
            ({"hw.id": "GPU-6"}, 0, 9, 42),
        ],
    ),
    ("no.description.or.unit", "", "", "gauge", False, [({}, 0, 10, 0)]),
]


def _sdk_metrics_data(resource: Any, scope: Any, given: list[Any] | None = None) -> Any:
    """The same metrics (``_METRICS`` unless given) as SDK objects (what encode_metrics takes)."""
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Gauge,
        Metric,
        MetricsData,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
        Sum,
    )

    metrics = []
    for name, description, unit, kind, monotonic, points in (_METRICS if given is None else given):
        data_points = [NumberDataPoint(attributes=attrs, start_time_unix_nano=start, time_unix_nano=end, value=value)
                       for attrs, start, end, value in points]
        data: Any = (Sum(data_points=data_points, aggregation_temporality=AggregationTemporality.CUMULATIVE,
                         is_monotonic=monotonic) if kind == "sum" else Gauge(data_points=data_points))
        metrics.append(Metric(name=name, description=description, unit=unit, data=data))
    scope_metrics = ScopeMetrics(scope=scope, metrics=metrics, schema_url=scope.schema_url or "")
    return MetricsData(resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[scope_metrics],
                                                         schema_url=resource.schema_url or "")])


@pytest.mark.parametrize("schema_url", ["https://opentelemetry.io/schemas/1.26.0", ""], ids=["schema", "no-schema"])
def test_metrics_line_equals_encode_metrics(schema_url: str) -> None:
    """The text encoder gives the same request as encode_metrics + dumps_line: sums, gauges, ints, floats,
    NaN/infinities, attributes of every type (True kept apart from 1) and non-ASCII text."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from runtel.rundir.otlp_json import dumps_line, encode_metrics, metrics_line

    resource = Resource({"service.name": "trainer", "host.name": _NON_ASCII, "pid": 42, "ratio": 0.5,
                         "labels": ["x", "y"]}, schema_url=schema_url)
    scope = InstrumentationScope("runtel", "1.2.3", schema_url=schema_url or None, attributes={"lib": "runtel"})
    line = metrics_line(resource, scope, _METRICS)
    expected = dumps_line(encode_metrics(_sdk_metrics_data(resource, scope)))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == json.loads(expected)
    assert line == expected  # byte for byte, as the docstring promises (key order, float repr, UTF-8)
    message = json.loads(line)
    assert ("schemaUrl" in message["resourceMetrics"][0]) is bool(schema_url)
    assert ("schemaUrl" in message["resourceMetrics"][0]["scopeMetrics"][0]) is bool(schema_url)
    by_name = {m["name"]: m for m in message["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]}
    assert by_name["process.cpu.time"]["sum"]["isMonotonic"] is True
    assert by_name["runtel.process.count"]["sum"]["isMonotonic"] is False
    assert [p.get("asDouble", p.get("asInt")) for p in by_name["hw.temperature"]["gauge"]["dataPoints"]] == [
        70.5, "NaN", "Infinity", "-Infinity", 1e-300, "42"]
    assert [a["value"] for a in by_name["process.cpu.time"]["sum"]["dataPoints"][2]["attributes"]][2] == {
        "intValue": "1"}


def test_metrics_line_parses_strictly_as_export_metrics_request() -> None:
    """A metrics_line line is a valid ExportMetricsServiceRequest under the OTLP JSON mapping rules."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from runtel.rundir.otlp_json import metrics_line

    resource = Resource({"service.name": "trainer"}, schema_url="https://opentelemetry.io/schemas/1.26.0")
    scope = InstrumentationScope("runtel", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.26.0")
    raw = metrics_line(resource, scope, _METRICS)
    message = json.loads(raw)
    check_encoding(message)
    request = ParseDict(ids_to_base64(message), ExportMetricsServiceRequest(), ignore_unknown_fields=False)
    metrics = request.resource_metrics[0].scope_metrics[0].metrics
    assert [m.name for m in metrics] == [name for name, *_ in _METRICS]
    assert metrics[0].sum.aggregation_temporality == 2 and metrics[0].sum.is_monotonic
    assert metrics[0].sum.data_points[0].as_int == 3
    assert math.isnan(metrics[2].gauge.data_points[1].as_double)
    assert metrics[2].gauge.data_points[0].start_time_unix_nano == 0
    assert metrics_line(resource, scope, []) == b""


# --- spans_line: run-folder span lines written directly as text ------------------------------------------------


def _sdk_spans() -> list[Any]:
    """Finished SDK spans covering what the encoder must handle: every attribute type (NaN and infinities too),
    events, links (local and remote), a remote parent, trace state, dropped counts, both status codes with and
    without a message, non-ASCII text, two scopes and two resources."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags, TraceState

    finished: list[Any] = []
    for n, schema in enumerate(("https://opentelemetry.io/schemas/1.44.0", "")):
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource({"service.name": f"svc-{n}", "host.name": "hôte"}, schema),
                                  span_limits=SpanLimits(max_span_attributes=12, max_events=2, max_links=1))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracers = [provider.get_tracer("scope.a", "1.0", schema_url=schema), provider.get_tracer("scope.b")]
        remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1),
                             trace_state=TraceState([("vendor", "v=1")]))
        with tracers[0].start_as_current_span(
            _NON_ASCII, context=otel_trace.set_span_in_context(NonRecordingSpan(remote)),
            kind=otel_trace.SpanKind.SERVER,
            attributes={"s": "text ☃", "b": True, "i": -(2**62), "f": 0.1, "nan": math.nan, "inf": math.inf,
                        "ninf": -math.inf, "ss": ("a", "b"), "bs": (True, False), "is": (1, 2), "fs": (0.5, math.nan),
                        "empty": ()},
        ) as parent:
            parent.add_event("first", {"k": "v", "n": 3})
            parent.add_event("no attributes")
            parent.add_event("dropped: more than max_events")
            parent.set_status(Status(StatusCode.ERROR, "broke — badly"))
            local = parent.get_span_context()
            with tracers[1].start_as_current_span("child", links=[otel_trace.Link(remote, {"why": "remote"})]) as c:
                c.set_attributes({f"extra.{k}": k for k in range(20)})  # past max_span_attributes: dropped
                c.set_status(Status(StatusCode.OK))
            with tracers[1].start_as_current_span("linked", links=[otel_trace.Link(local), otel_trace.Link(remote)]):
                pass
        finished.extend(memory.get_finished_spans())
    return finished


def test_spans_line_equals_encode_spans() -> None:
    """spans_line gives byte for byte what dumps_line(encode_spans(...)) gives, grouped the same way."""
    from runtel.rundir.otlp_json import dumps_line, encode_spans, spans_line

    spans = _sdk_spans()
    assert len(spans) == 6
    assert any(s.dropped_attributes for s in spans) and any(s.dropped_events for s in spans)
    assert any(s.dropped_links for s in spans)
    expected = dumps_line(encode_spans(spans))
    assert spans_line(spans) == expected
    for single in spans:
        assert spans_line([single]) == dumps_line(encode_spans([single]))


def test_spans_line_parses_strictly_as_export_trace_request() -> None:
    """A spans_line line is a valid ExportTraceServiceRequest under the OTLP JSON mapping rules."""
    from runtel.rundir.otlp_json import spans_line

    message = json.loads(spans_line(_sdk_spans()))
    check_encoding(message)
    request = ParseDict(ids_to_base64(message), ExportTraceServiceRequest(), ignore_unknown_fields=False)
    assert sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans) == 6


def test_unsampled_marker_goes_on_unsampled_blocks_only() -> None:
    """The run folder's marker: block and function spans without runtel.usage.samples get samples = 0 (after
    their own attributes); a block that has it, a run span and a span without attributes are left as they are."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from runtel import semconv
    from runtel.exporters.jsonl import _unsampled_marker
    from runtel.rundir.otlp_json import attributes_from_otlp, spans_line

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    samples = semconv.USAGE_PREFIX + "samples"
    cases = {
        "block": ({semconv.SPAN_KIND: semconv.KIND_BLOCK, "x": 1}, 0),
        "function": ({semconv.SPAN_KIND: semconv.KIND_FUNCTION}, 0),
        "sampled block": ({semconv.SPAN_KIND: semconv.KIND_BLOCK, samples: 3}, 3),
        "run": ({semconv.SPAN_KIND: semconv.KIND_RUN}, None),
        "bare": ({}, None),
    }
    for name, (attributes, _) in cases.items():
        with tracer.start_as_current_span(name, attributes=attributes):
            pass
    message = json.loads(spans_line(memory.get_finished_spans(), _unsampled_marker))
    written = {s["name"]: s.get("attributes", []) for s in message["resourceSpans"][0]["scopeSpans"][0]["spans"]}
    for name, (attributes, expected) in cases.items():
        decoded = attributes_from_otlp(written[name])
        assert decoded.get(samples) == expected, name
        if expected == 0:
            assert written[name][-1]["key"] == samples  # appended after the span's own attributes
            assert {k: v for k, v in decoded.items() if k != samples} == attributes


def test_metrics_line_keeps_equal_looking_attribute_values_apart() -> None:
    """Attribute texts are cached per (key, str value): "1", 1, 1.0 and True under one key stay distinct, in any
    order, and a list value (unhashable) is encoded too."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from runtel.rundir.otlp_json import dumps_line, encode_metrics, metrics_line

    resource = Resource({"service.name": "t"})
    scope = InstrumentationScope("runtel", "1")
    values: list[Any] = ["1", 1, 1.0, True, "True", ["1"], "1"]
    for order in (values, list(reversed(values))):
        metrics = [("m", "", "", "gauge", False, [({"k": v, "run": "r"}, 0, 5, 2.0) for v in order])]
        line = metrics_line(resource, scope, metrics)
        assert line == dumps_line(encode_metrics(_sdk_metrics_data(resource, scope, metrics)))
        attrs = [p["attributes"][0]["value"] for p in
                 json.loads(line)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"]]
        assert len({json.dumps(a) for a in attrs}) == 6  # "1" twice, the rest each distinct
