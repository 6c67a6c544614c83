"""Encode SDK spans and metrics as OTLP/JSON, and decode attribute lists back.

Follows the OTLP JSON mapping (opentelemetry-proto ``docs/specification.md``): lowerCamelCase keys,
hex trace/span ids, enums as integers, 64-bit integers as decimal strings, bytes as base64, and
non-finite doubles as the proto3 JSON strings ``"NaN"``/``"Infinity"``/``"-Infinity"``. One line of
a run folder file is one ``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest``, as the
File Exporter specification asks. ``encode_*`` build the messages as plain dicts (no protobuf), for
callers that inspect them and for OTLP/HTTP JSON metrics; ``spans_line`` and ``metrics_line`` write the
same messages directly as text, which is what the run folder's hot paths use (tests check that both
forms agree byte for byte).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from runtel._internals import (
    SpanFields,
    span_fields,
    stored_dict,
)
from runtel.semconv import RUN_ID
from runtel.values.scalars import INT64_MAX, INT64_MIN, int_text

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricsData
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = (
    "attributes_from_otlp",
    "encode_any_value",
    "encode_attributes",
    "encode_metrics",
    "metrics_line",
    "json_objects",
    "run_id_on_points",
    "framed_line",
    "span_frame",
    "span_text",
    "fields_text",
    "spans_line",
    "encode_resource",
    "encode_scope",
    "encode_span",
    "encode_spans",
    "value_from_otlp",
)

_SPAN_FLAGS_HAS_IS_REMOTE = 0x100
_SPAN_FLAGS_IS_REMOTE = 0x200


def _double(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def encode_any_value(value: object) -> dict[str, Any]:
    """One attribute value as an OTLP ``AnyValue``."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return {"intValue": str(int(value))}
        return {"stringValue": int_text(value)}  # OTLP's intValue is an int64; a bigger int keeps its digits
    if isinstance(value, float):
        return {"doubleValue": _double(value)}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, (bytes, bytearray)):
        return {"bytesValue": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": encode_attributes(value)}}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [encode_any_value(v) for v in value]}}
    if value is None:
        return {}
    return {"stringValue": str(value)}


def encode_attributes(attributes: Mapping[str, object] | None) -> list[dict[str, Any]]:
    """Attributes as a list of OTLP ``KeyValue``."""
    if not attributes:
        return []
    return [{"key": key, "value": encode_any_value(value)} for key, value in attributes.items()]


def encode_resource(resource: Resource) -> dict[str, Any]:
    """The OTLP ``Resource`` message."""
    return {"attributes": encode_attributes(resource.attributes)}


def encode_scope(scope: InstrumentationScope | None) -> dict[str, Any]:
    """The OTLP ``InstrumentationScope`` message."""
    if scope is None:
        return {}
    out: dict[str, Any] = {"name": scope.name}
    if scope.version:
        out["version"] = scope.version
    attributes = getattr(scope, "attributes", None)
    if attributes:
        out["attributes"] = encode_attributes(attributes)
    return out


def _hex_trace(trace_id: int) -> str:
    return format(trace_id, "032x")


def _hex_span(span_id: int) -> str:
    return format(span_id, "016x")


def encode_span(span: ReadableSpan) -> dict[str, Any]:
    """One finished span as an OTLP ``Span`` message."""
    ctx = span.context
    assert ctx is not None
    flags = int(ctx.trace_flags) | _SPAN_FLAGS_HAS_IS_REMOTE
    out: dict[str, Any] = {
        "traceId": _hex_trace(ctx.trace_id),
        "spanId": _hex_span(ctx.span_id),
        "name": span.name,
        "kind": span.kind.value + 1,  # SDK enum starts at INTERNAL=0; OTLP reserves 0 for UNSPECIFIED
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
    }
    trace_state = ctx.trace_state.to_header() if ctx.trace_state else ""
    if trace_state:
        out["traceState"] = trace_state
    parent = span.parent
    if parent is not None:
        out["parentSpanId"] = _hex_span(parent.span_id)
        if parent.is_remote:
            flags |= _SPAN_FLAGS_IS_REMOTE
    out["flags"] = flags
    if span.attributes:
        out["attributes"] = encode_attributes(span.attributes)
    if span.dropped_attributes:
        out["droppedAttributesCount"] = span.dropped_attributes
    if span.events:
        out["events"] = [
            {
                "timeUnixNano": str(event.timestamp),
                "name": event.name,
                "attributes": encode_attributes(event.attributes),
            }
            for event in span.events
        ]
    if span.dropped_events:
        out["droppedEventsCount"] = span.dropped_events
    if span.links:
        links = []
        for link in span.links:
            entry: dict[str, Any] = {
                "traceId": _hex_trace(link.context.trace_id),
                "spanId": _hex_span(link.context.span_id),
                "attributes": encode_attributes(link.attributes),
                "flags": int(link.context.trace_flags)
                | _SPAN_FLAGS_HAS_IS_REMOTE
                | (_SPAN_FLAGS_IS_REMOTE if link.context.is_remote else 0),
            }
            links.append(entry)
        out["links"] = links
    if span.dropped_links:
        out["droppedLinksCount"] = span.dropped_links
    status = span.status
    if status is not None and status.status_code.value:
        st: dict[str, Any] = {"code": status.status_code.value}
        if status.description:
            st["message"] = status.description
        out["status"] = st
    return out


def encode_spans(spans: Iterable[ReadableSpan]) -> dict[str, Any]:
    """A whole ``ExportTraceServiceRequest``: spans grouped by resource and scope."""
    by_resource: dict[int, tuple[Resource, dict[tuple[str, str | None], tuple[Any, list[dict[str, Any]]]]]] = {}
    for span in spans:
        resource = span.resource
        entry = by_resource.setdefault(id(resource), (resource, {}))
        scope = span.instrumentation_scope
        key = (scope.name, scope.version) if scope is not None else ("", None)
        entry[1].setdefault(key, (scope, []))[1].append(encode_span(span))
    return {
        "resourceSpans": [
            {
                "resource": encode_resource(resource),
                "scopeSpans": [
                    {"scope": encode_scope(scope), "spans": encoded, **_schema(scope)}
                    for scope, encoded in scopes.values()
                ],
                **_schema_resource(resource),
            }
            for resource, scopes in by_resource.values()
        ]
    }


def _schema(scope: Any) -> dict[str, str]:
    url = getattr(scope, "schema_url", "") if scope is not None else ""
    return {"schemaUrl": url} if url else {}


def _schema_resource(resource: Resource) -> dict[str, str]:
    url = getattr(resource, "schema_url", "")
    return {"schemaUrl": url} if url else {}


def _number_point(point: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"attributes": encode_attributes(point.attributes)}
    if point.start_time_unix_nano:  # a gauge has none: proto3 leaves a zero field out
        out["startTimeUnixNano"] = str(point.start_time_unix_nano)
    out["timeUnixNano"] = str(point.time_unix_nano)
    if isinstance(point.value, int) and not isinstance(point.value, bool):
        out["asInt"] = str(point.value)
    else:
        out["asDouble"] = _double(float(point.value))
    return out


def _histogram_point(point: Any) -> dict[str, Any]:
    return {
        "attributes": encode_attributes(point.attributes),
        "startTimeUnixNano": str(point.start_time_unix_nano or 0),
        "timeUnixNano": str(point.time_unix_nano),
        "count": str(point.count),
        "sum": _double(float(point.sum)),
        "bucketCounts": [str(c) for c in point.bucket_counts],
        "explicitBounds": [_double(float(b)) for b in point.explicit_bounds],
        "min": _double(float(point.min)),
        "max": _double(float(point.max)),
    }


def _encode_metric(metric: Any) -> dict[str, Any] | None:
    from opentelemetry.sdk.metrics.export import (  # deferred: the OTel SDK, loaded with the first run (~61 ms)
        Gauge,
        Histogram,
        Sum,
    )

    out: dict[str, Any] = {"name": metric.name}
    if metric.description:
        out["description"] = metric.description
    if metric.unit:
        out["unit"] = metric.unit
    data = metric.data
    if isinstance(data, Sum):
        out["sum"] = {
            "dataPoints": [_number_point(p) for p in data.data_points],
            "aggregationTemporality": int(data.aggregation_temporality),
            "isMonotonic": bool(data.is_monotonic),
        }
    elif isinstance(data, Gauge):
        out["gauge"] = {"dataPoints": [_number_point(p) for p in data.data_points]}
    elif isinstance(data, Histogram):
        out["histogram"] = {
            "dataPoints": [_histogram_point(p) for p in data.data_points],
            "aggregationTemporality": int(data.aggregation_temporality),
        }
    else:  # exponential histograms are not produced by runtel's instruments
        return None
    return out


def encode_metrics(data: MetricsData) -> dict[str, Any]:
    """A whole ``ExportMetricsServiceRequest`` from the SDK's ``MetricsData``."""
    resource_metrics = []
    for rm in data.resource_metrics:
        scope_metrics = []
        for sm in rm.scope_metrics:
            metrics = [m for m in (_encode_metric(metric) for metric in sm.metrics) if m is not None]
            if metrics:
                entry: dict[str, Any] = {"scope": encode_scope(sm.scope), "metrics": metrics}
                if sm.schema_url:
                    entry["schemaUrl"] = sm.schema_url
                scope_metrics.append(entry)
        if scope_metrics:
            out: dict[str, Any] = {"resource": encode_resource(rm.resource), "scopeMetrics": scope_metrics}
            if rm.schema_url:
                out["schemaUrl"] = rm.schema_url
            resource_metrics.append(out)
    return {"resourceMetrics": resource_metrics}


# --- direct text encoding of runtel's own metric collections ------------------------------------------------
_quote = json.encoder.encode_basestring  # C; the same output as json.dumps(..., ensure_ascii=False)
_text_cache: dict[int, tuple[Any, str]] = {}


def _cached_text(obj: Any, encode: Any) -> str:
    """JSON text of an immutable SDK object (resource, scope), encoded once while the object lives."""
    hit = _text_cache.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    text = json.dumps(encode(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if len(_text_cache) > 64:
        _text_cache.clear()
    _text_cache[id(obj)] = (obj, text)
    return text


def _any_value_text(value: object) -> str:
    if isinstance(value, str):
        return '{"stringValue":' + _quote(value) + "}"
    if isinstance(value, bool):
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
        return '{"intValue":"' + str(int(value)) + '"}'
    if type(value) is float and math.isfinite(value):
        return '{"doubleValue":' + repr(value) + "}"
    return json.dumps(encode_any_value(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


_kv_cache: dict[tuple[str, type, object], str] = {}


def _kv_text(key: str, value: object) -> str:
    """One ``KeyValue``; the few distinct pairs of runtel's metrics (scope, mode, run id...) are encoded once."""
    if not isinstance(value, (str, bool, int)):
        return '{"key":' + _quote(key) + ',"value":' + _any_value_text(value) + "}"
    cache_key = (key, type(value), value)  # the type keeps True apart from 1
    text = _kv_cache.get(cache_key)
    if text is None:
        if len(_kv_cache) >= 4096:
            _kv_cache.clear()
        text = _kv_cache[cache_key] = '{"key":' + _quote(key) + ',"value":' + _any_value_text(value) + "}"
    return text


def _number_text(value: object) -> str:
    if type(value) is float and math.isfinite(value):
        return '"asDouble":' + repr(value)
    if isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX:
        return '"asInt":"' + str(int(value)) + '"'
    try:
        number = _double(float(value))  # type: ignore[arg-type]
    except OverflowError:  # an int past float's range
        number = "Infinity" if value > 0 else "-Infinity"  # type: ignore[operator]
    return '"asDouble":' + (repr(number) if isinstance(number, float) else '"' + number + '"')


_isfinite = math.isfinite
_str_kv_cache: dict[tuple[str, str], str] = {}
_metric_heads: dict[tuple[str, str, str, str | None, bool], tuple[str, str]] = {}


def _attributes_text(attributes: Mapping[str, object]) -> str:
    """The ``KeyValue`` list of a point; string pairs (nearly all of runtel's) are looked up as the items they are."""
    try:
        texts = [_str_kv_cache.get(item) for item in attributes.items()]  # type: ignore[arg-type]
    except TypeError:  # an unhashable value (a list)
        return ",".join([_kv_text(k, v) for k, v in attributes.items()])
    if None in texts:
        for i, (k, v) in enumerate(attributes.items()):
            if texts[i] is None:
                if type(v) is str:  # only exact str values go in the cache, so True, 1 and 1.0 never meet
                    if len(_str_kv_cache) >= 4096:
                        _str_kv_cache.clear()
                    texts[i] = _str_kv_cache[(k, v)] = '{"key":' + _quote(k) + ',"value":{"stringValue":' \
                        + _quote(v) + "}}"
                else:
                    texts[i] = _kv_text(k, v)
    return ",".join(texts)  # type: ignore[arg-type]


def _metric_head(name: str, description: str, unit: str, kind: str | None, is_monotonic: bool) -> tuple[str, str]:
    """Text before and after a metric's data points, kept for the few metrics a process reports."""
    head = '{"name":' + _quote(name)
    if description:
        head += ',"description":' + _quote(description)
    if unit:
        head += ',"unit":' + _quote(unit)
    if kind == "sum":
        text = (head + ',"sum":{"dataPoints":[',
                '],"aggregationTemporality":2,"isMonotonic":' + ("true" if is_monotonic else "false") + "}}")
    else:
        text = (head + ',"gauge":{"dataPoints":[', "]}}")
    if len(_metric_heads) >= 1024:
        _metric_heads.clear()
    _metric_heads[(name, description, unit, kind, is_monotonic)] = text
    return text


def metrics_line(
    resource: Resource,
    scope: InstrumentationScope,
    metrics: Iterable[tuple[str, str, str, str | None, bool, Iterable[tuple[Mapping[str, object], int, int, float]]]],
) -> bytes:
    """One ``ExportMetricsServiceRequest`` line, written as text without building the message as dicts.

    ``metrics`` holds ``(name, description, unit, kind, is_monotonic, points)`` with kind ``"sum"`` (cumulative)
    or ``"gauge"`` and points ``(attributes, start_ns, time_ns, value)``. The output is what
    :func:`encode_metrics` + :func:`dumps_line` produce for the same data; a run's final collection is
    written at its end, so this path is kept short.
    """
    out = []
    times: dict[tuple[int, int], str] = {}  # a collection has one time and one start: format them once
    for name, description, unit, kind, is_monotonic, points in metrics:
        point_texts = []
        for attributes, start_ns, time_ns, value in points:
            attrs = _attributes_text(attributes) if attributes else ""
            middle = times.get((start_ns, time_ns))
            if middle is None:
                start = '"startTimeUnixNano":"' + str(start_ns) + '",' if start_ns else ""  # gauges have none
                middle = times[(start_ns, time_ns)] = '],' + start + '"timeUnixNano":"' + str(time_ns) + '",'
            if type(value) is float and _isfinite(value):
                number = '"asDouble":' + repr(value)
            else:
                number = _number_text(value)
            point_texts.append('{"attributes":[' + attrs + middle + number + "}")
        head = _metric_heads.get((name, description, unit, kind, is_monotonic))
        if head is None:
            head = _metric_head(name, description, unit, kind, is_monotonic)
        out.append(head[0] + ",".join(point_texts) + head[1])
    if not out:
        return b""
    scope_text = '{"scope":' + _cached_text(scope, encode_scope) + ',"metrics":[' + ",".join(out) + "]"
    if scope.schema_url:
        scope_text += ',"schemaUrl":' + _quote(scope.schema_url)
    line = '{"resourceMetrics":[{"resource":' + _cached_text(resource, encode_resource) + ',"scopeMetrics":[' \
        + scope_text + "}]"
    if getattr(resource, "schema_url", ""):
        line += ',"schemaUrl":' + _quote(resource.schema_url)
    return (line + "}]}\n").encode()


_SPAN_REST = '%016x","name":%s,"kind":%d,"startTimeUnixNano":"%d","endTimeUnixNano":"%d"'
_PARENT_FLAGS = ',"parentSpanId":"%016x","flags":%d'
_SPAN_REST_PARENT = _SPAN_REST + _PARENT_FLAGS
_trace_heads: dict[int, str] = {}
_double_heads: dict[str, str] = {}
_STR_VALUE_CACHED = 256  # string attribute values up to this length have their KeyValue text cached


def _attribute_texts(attributes: Mapping[str, Any]) -> str:
    """The ``KeyValue`` list of span attributes; (key, string value) pairs seen before are one dict lookup.

    A run's spans repeat the same few pairs (run id, span kind, a block's phase...), so they are encoded once.
    """
    out = []
    for key, value in attributes.items():
        cls = type(value)
        if cls is str:
            text = _str_kv_cache.get((key, value))
            if text is None:
                text = '{"key":' + _quote(key) + ',"value":{"stringValue":' + _quote(value) + "}}"
                if len(value) <= _STR_VALUE_CACHED:
                    if len(_str_kv_cache) >= 4096:
                        _str_kv_cache.clear()
                    _str_kv_cache[(key, value)] = text
            out.append(text)
        elif cls is float and _isfinite(value):  # usage figures: a new number on every span, the key text kept
            head = _double_heads.get(key)
            if head is None:
                if len(_double_heads) >= 4096:
                    _double_heads.clear()
                head = _double_heads[key] = '{"key":' + _quote(key) + ',"value":{"doubleValue":'
            out.append(head + repr(value) + "}}")
        else:
            text = _kv_cache.get((key, cls, value)) if cls is bool or cls is int else None  # _kv_text's own cache
            out.append(text if text is not None else _kv_text(key, value))
    return ",".join(out)


_kind_codes: dict[int, int] = {}  # id(SpanKind member) -> its OTLP number (``.value`` is a Python-level property)


def span_text(span: ReadableSpan, extra: Callable[[Mapping[str, object]], str] | None = None) -> str:
    """One span as its OTLP/JSON ``Span`` object (what :func:`encode_span` + ``json.dumps`` give).

    ``extra`` gets the span's attributes and returns encoded ``KeyValue`` text to add (or ``""``).
    """
    return fields_text(span_fields(span), span, extra)


def fields_text(fields: SpanFields, span: ReadableSpan, extra: Callable[[Mapping[str, object]], str] | None = None) -> str:
    """:func:`span_text` of a span whose ``span_fields`` the caller read already.

    The run folder encodes every span in the thread that ends it (see ``exporters.jsonl``), so the
    common span (no events, links or status) is one ``%`` format over its fields and cached attribute texts.
    """
    (name, trace_id, span_id, flags, trace_state, parent_id, parent_remote, kind, start, end, attributes, events,
     links, status, _, _) = fields
    head = _trace_heads.get(trace_id)  # a run's spans share a trace: its hex is formatted once
    if head is None:
        if len(_trace_heads) >= 256:
            _trace_heads.clear()
        head = _trace_heads[trace_id] = f'{{"traceId":"{trace_id:032x}","spanId":"'
    code = _kind_codes.get(id(kind))
    if code is None:
        code = _kind_codes[id(kind)] = kind.value + 1  # SDK enum starts at INTERNAL=0; OTLP reserves 0
    flags = flags | _SPAN_FLAGS_HAS_IS_REMOTE  # an int (TraceFlags is an int subclass)
    header = trace_state.to_header() if trace_state else ""
    if parent_id is not None and not header:  # the common span: one format
        out = head + _SPAN_REST_PARENT % (span_id, _quote(name), code, start or 0, end or 0, parent_id,
                                          flags | _SPAN_FLAGS_IS_REMOTE if parent_remote else flags)
    else:
        out = head + _SPAN_REST % (span_id, _quote(name), code, start or 0, end or 0)
        if header:
            out += ',"traceState":' + _quote(header)
        if parent_id is not None:
            out += _PARENT_FLAGS % (parent_id, flags | _SPAN_FLAGS_IS_REMOTE if parent_remote else flags)
        else:
            out += ',"flags":' + str(flags)
    if attributes:
        raw = stored_dict(attributes)
        pairs = _attribute_texts(raw)
        added = extra(raw) if extra is not None else ""
        out += ',"attributes":[' + (pairs + "," + added if added else pairs) + "]"
        dropped = getattr(attributes, "dropped", 0)
        if dropped:
            out += ',"droppedAttributesCount":' + str(dropped)
    if events or links or not status.is_unset:  # the stored containers: no tuple copies
        out += _span_tail(span, events, links)
    return out + "}"


_link_texts: dict[int, tuple[Any, str]] = {}


def _link_text(link: Any) -> str:
    """One ``Span.Link``; kept per link object while it lives (a service hands every request the same link)."""
    hit = _link_texts.get(id(link))
    if hit is not None and hit[0] is link:
        return hit[1]
    ctx = link.context
    flags = int(ctx.trace_flags) | _SPAN_FLAGS_HAS_IS_REMOTE | (_SPAN_FLAGS_IS_REMOTE if ctx.is_remote else 0)
    text = ('{"traceId":"' + format(ctx.trace_id, "032x") + '","spanId":"' + format(ctx.span_id, "016x")
            + '","attributes":[' + ",".join([_kv_text(k, v) for k, v in (link.attributes or {}).items()])
            + '],"flags":' + str(flags) + "}")
    if len(_link_texts) >= 256:
        _link_texts.clear()
    _link_texts[id(link)] = (link, text)
    return text


def _span_tail(span: ReadableSpan, events: Any = None, links: Any = None) -> str:
    """Events, links and status of a span (the rarer parts), in the order :func:`encode_span` writes them.

    ``events``/``links``: the stored containers when the caller has them (``span.events``/``links`` copy them).
    """
    out = ""
    events = span.events if events is None else events
    if events:
        out += ',"events":[' + ",".join(
            '{"timeUnixNano":"' + str(event.timestamp) + '","name":' + _quote(event.name) + ',"attributes":['
            + ",".join([_kv_text(k, v) for k, v in (event.attributes or {}).items()]) + "]}"
            for event in events
        ) + "]"
    if span.dropped_events:
        out += ',"droppedEventsCount":' + str(span.dropped_events)
    links = span.links if links is None else links
    if links:
        out += ',"links":[' + ",".join([_link_text(link) for link in links]) + "]"
    if span.dropped_links:
        out += ',"droppedLinksCount":' + str(span.dropped_links)
    status = span.status
    if status is not None and status.status_code.value:
        out += ',"status":{"code":' + str(status.status_code.value)
        if status.description:
            out += ',"message":' + _quote(status.description)
        out += "}"
    return out


_frames: dict[tuple[int, int], tuple[Any, Any, tuple[str, str, str, str]]] = {}


def span_frame(resource: Resource, scope: InstrumentationScope | None) -> tuple[str, str, str, str]:
    """The text around a group of spans of one resource and scope in an ``ExportTraceServiceRequest``.

    ``(resource_open, resource_close, scope_open, scope_close)``: a line is ``{"resourceSpans":[`` +
    per resource ``resource_open`` + its scopes (``scope_open`` + span texts joined by commas +
    ``scope_close``, joined by commas) + ``resource_close``, joined by commas, + ``]}``. Kept per
    (resource, scope) object pair: a process has a handful.
    """
    hit = _frames.get((id(resource), id(scope)))
    if hit is not None and hit[0] is resource and hit[1] is scope:
        return hit[2]
    resource_close = "]"
    if getattr(resource, "schema_url", ""):
        resource_close += ',"schemaUrl":' + _quote(resource.schema_url)
    scope_close = "]"
    url = getattr(scope, "schema_url", "") if scope is not None else ""
    if url:
        scope_close += ',"schemaUrl":' + _quote(url)
    frame = ('{"resource":' + _cached_text(resource, encode_resource) + ',"scopeSpans":[', resource_close + "}",
             '{"scope":' + _cached_text(scope, encode_scope) + ',"spans":[', scope_close + "}")
    if len(_frames) > 64:
        _frames.clear()
    _frames[(id(resource), id(scope))] = (resource, scope, frame)
    return frame


def framed_line(groups: Iterable[tuple[tuple[str, str, str, str], Iterable[str]]]) -> str:
    """One ``ExportTraceServiceRequest`` line (without its newline) from encoded spans grouped by frame.

    Groups of the same resource (equal ``resource_open``) share one ``resourceSpans`` entry, and of the
    same scope within it one ``scopeSpans`` entry, in the order they first appear (as :func:`encode_spans`
    groups them); see :func:`span_frame`.
    """
    by_resource: dict[str, tuple[str, dict[str, tuple[str, list[str]]]]] = {}
    for (resource_open, resource_close, scope_open, scope_close), texts in groups:
        entry = by_resource.get(resource_open)
        if entry is None:
            entry = by_resource[resource_open] = (resource_close, {})
        scope = entry[1].get(scope_open)
        if scope is None:
            scope = entry[1][scope_open] = (scope_close, [])
        scope[1].extend(texts)
    return '{"resourceSpans":[' + ",".join(
        resource_open + ",".join(scope_open + ",".join(texts) + scope_close
                                 for scope_open, (scope_close, texts) in scopes.items()) + close
        for resource_open, (close, scopes) in by_resource.items()) + "]}"


def spans_line(spans: Iterable[ReadableSpan], extra: Callable[[Mapping[str, object]], str] | None = None) -> bytes:
    """One ``ExportTraceServiceRequest`` line, written as text: what ``dumps_line(encode_spans(spans))`` gives.

    ``extra`` may return one more encoded ``KeyValue`` for a span with attributes (the run folder's
    "not sampled" marker), appended after its own attributes. Building the message as dicts and then
    encoding them was half the cost of writing a span.
    """
    groups: dict[tuple[int, int], tuple[tuple[str, str, str, str], list[str]]] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        key = (id(resource), id(scope))
        group = groups.get(key)
        if group is None:
            group = groups[key] = (span_frame(resource, scope), [])
        group[1].append(span_text(span, extra))
    return (framed_line(groups.values()) + "\n").encode()


def json_objects(value: object) -> list[dict[str, Any]]:
    """The objects of a JSON list (anything else reads as empty)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def run_id_on_points(message: dict[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl request as live OTLP export sends it: the run id on every point, not on the Resource.

    The run folder states ``runtel.run.id`` once per line as a Resource attribute (docs/metrics.md,
    "Encoding"); a backend filters points by it, so a replay puts it back on each point. Changes
    ``message`` in place and returns it; a line without it on the Resource is left as it is, and so is any part
    that is not shaped like OTLP/JSON (the exporter judges those).
    """
    for rm in json_objects(message.get("resourceMetrics")):
        resource = rm.get("resource")
        attributes = resource.get("attributes") if isinstance(resource, dict) else None
        found = [kv for kv in json_objects(attributes) if kv.get("key") == RUN_ID]
        if not found or not isinstance(resource, dict) or not isinstance(attributes, list):
            continue
        resource["attributes"] = [kv for kv in attributes if kv not in found]
        run_id = found[0]
        for sm in json_objects(rm.get("scopeMetrics")):
            for metric in json_objects(sm.get("metrics")):
                for kind in ("sum", "gauge", "histogram", "exponentialHistogram", "summary"):
                    data = metric.get(kind)
                    for point in json_objects(data.get("dataPoints") if isinstance(data, dict) else None):
                        point_attributes = point.setdefault("attributes", [])
                        if isinstance(point_attributes, list) and not any(
                                isinstance(kv, dict) and kv.get("key") == RUN_ID for kv in point_attributes):
                            point_attributes.append(run_id)
    return message


def value_from_otlp(value: Mapping[str, Any]) -> Any:
    """Decode an OTLP JSON ``AnyValue`` back to a Python value."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [value_from_otlp(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return attributes_from_otlp(value["kvlistValue"].get("values", []))
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    return None


def attributes_from_otlp(attributes: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """Decode an OTLP JSON ``KeyValue`` list into a dict."""
    return {kv["key"]: value_from_otlp(kv.get("value", {})) for kv in attributes or ()}


def dumps_line(message: Mapping[str, Any]) -> bytes:
    """One compact JSON line (UTF-8, newline-terminated) for a JSON Lines file."""
    return (json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode()
