"""The OTLP/JSON lines of a run folder as the protobuf requests a sender posts: checked, counted, batched.

One owner for "what of a run's spans.jsonl / metrics.jsonl can be sent": ``runtel export`` (runtel.query.replay)
and the MLflow backend's trace upload both read through it, so a line or item that does not convert is skipped
and counted in the same :class:`~runtel.rundir.reader.LineStats` for both, and the others are still sent.

A line that is not OTLP/JSON (see :func:`runtel.rundir.reader.otlp_groups`) is skipped, and so is a span or metric
that does not parse into its protobuf message or has trace/span ids of the wrong length (the line's other items
are kept). The protobuf classes come with opentelemetry-exporter-otlp; they are imported on first use.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from runtel.rundir.otlp_json import run_id_on_points
from runtel.rundir.reader import METRIC_KEYS, SPAN_KEYS, LineStats, iter_segments_sized, otlp_groups
from runtel.rundir.schema import METRICS_FILE, SPANS_FILE, segments

__all__ = ("KEYS", "Line", "batches", "checked", "ids_to_base64", "request_class", "signal_lines", "to_protobuf")

_ID_KEYS: Final = ("traceId", "spanId", "parentSpanId")
#: how each signal's request nests its items (resource list, scope list, item list)
KEYS: Final = {"traces": SPAN_KEYS, "metrics": METRIC_KEYS}
_POINT_KINDS: Final = ("sum", "gauge", "histogram", "exponentialHistogram", "summary")


# --- OTLP/JSON -> proto3 JSON --------------------------------------------------------------------------------


def _hex_to_b64(value: object) -> object:
    if not isinstance(value, str) or not value:
        return value
    try:
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    except ValueError:
        return value  # not hex: leave it for the protobuf parser to reject


def ids_to_base64(message: Any) -> Any:
    """A copy of an OTLP/JSON message with hex trace/span ids turned into base64 (proto3 JSON bytes).

    OTLP/JSON deviates from the proto3 JSON mapping only in the ids; after this, the message parses with
    ``google.protobuf.json_format.ParseDict`` into the ``Export*ServiceRequest`` protobuf.
    """
    if isinstance(message, dict):
        return {k: (_hex_to_b64(v) if k in _ID_KEYS else ids_to_base64(v)) for k, v in message.items()}
    if isinstance(message, list):
        return [ids_to_base64(v) for v in message]
    return message


def request_class(signal: str) -> Any:
    if signal == "traces":
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # deferred: the OTLP protobuf classes, only for export (~12 ms)
            ExportTraceServiceRequest,  # deferred: the OTLP protobuf classes, only for export (~13 ms)
        )

        return ExportTraceServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (  # deferred: the OTLP protobuf classes, only for export (~12 ms)
        ExportMetricsServiceRequest,  # deferred: the OTLP protobuf classes, only for export (~13 ms)
    )

    return ExportMetricsServiceRequest


def to_protobuf(message: Mapping[str, Any], signal: str) -> Any:
    """The protobuf ``Export*ServiceRequest`` for an OTLP/JSON message (unknown fields ignored, as OTLP says)."""
    from google.protobuf.json_format import ParseDict  # type: ignore[import-untyped]  # deferred: protobuf's JSON parser, only for export

    return ParseDict(ids_to_base64(dict(message)), request_class(signal)(), ignore_unknown_fields=True)


# --- reading, checking and batching --------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One line of a run's file as it is sent: its parts shaped like OTLP/JSON, their count, its size on disk."""

    message: dict[str, Any]
    size: int
    items: int
    proto: Any = None
    """The line's protobuf ``Export*ServiceRequest``, once checked (:func:`checked`)."""


def _bad_items(stats: LineStats, signal: str, n: int) -> None:
    if signal == "traces":
        stats.bad_records += n
    else:
        stats.bad_metrics += n


def _count(message: Mapping[str, Any], signal: str) -> int:
    """Spans, or metric data points, of a line shaped by :func:`_shaped`."""
    top, scope_key, item_key = KEYS[signal]
    items = (item for rs in message[top] for ss in rs[scope_key] for item in ss[item_key])
    if signal == "traces":
        return sum(1 for _ in items)
    total = 0
    for metric in items:
        for kind in _POINT_KINDS:
            data = metric.get(kind)
            points = data.get("dataPoints") if isinstance(data, dict) else None
            total += len(points) if isinstance(points, list) else 0
    return total


def _shaped(message: Mapping[str, Any], signal: str, stats: LineStats) -> dict[str, Any] | None:
    """The parts of a parsed line that are shaped like OTLP/JSON (resource and scope entries that are objects,
    each with a list of item objects); the rest is counted in ``stats``. None when no item is left."""
    top, scope_key, item_key = KEYS[signal]
    resources: list[dict[str, Any]] = []
    last: object = None
    for rs, ss, items in otlp_groups(message, KEYS[signal], stats):
        good = [item for item in items if isinstance(item, dict)]
        _bad_items(stats, signal, len(items) - len(good))
        if not good:
            continue
        if rs is not last:  # the scopes of one resource come one after the other
            resources.append({**rs, scope_key: []})
            last = rs
        resources[-1][scope_key].append({**ss, item_key: good})
    return {top: resources} if resources else None


def _parse_errors() -> tuple[type[BaseException], ...]:
    from google.protobuf.json_format import ParseError  # deferred: protobuf's JSON parser, as in to_protobuf

    return ParseError, TypeError, ValueError, KeyError, AttributeError, RecursionError


def _proto(message: Mapping[str, Any], signal: str) -> Any:
    """:func:`to_protobuf`, and for spans a check of the id lengths the OTLP spec requires.

    Raises:
        ParseError, ValueError, ...: the message does not parse, or an id has the wrong length.
    """
    request = to_protobuf(message, signal)
    if signal == "traces":
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    if (len(span.trace_id) != 16 or len(span.span_id) != 8 or len(span.parent_span_id) not in (0, 8)
                            or any(len(link.trace_id) != 16 or len(link.span_id) != 8 for link in span.links)):
                        raise ValueError("a trace id that is not 16 bytes or a span id that is not 8")
    return request


def checked(line: Line, signal: str, stats: LineStats) -> Line | None:
    """The line with its protobuf message, without the items that do not convert (counted in ``stats``).

    The whole line is tried first; only a line that fails is tried one item at a time (with its resource
    and scope). None when no item converts.
    """
    errors = _parse_errors()
    try:
        return Line(line.message, line.size, line.items, _proto(line.message, signal))
    except errors:
        pass
    top, scope_key, item_key = KEYS[signal]
    resources = []
    for rs in line.message[top]:
        resource = {k: v for k, v in rs.items() if k != scope_key}
        scopes = []
        for ss in rs[scope_key]:
            scope = {k: v for k, v in ss.items() if k != item_key}
            good = []
            for item in ss[item_key]:
                try:
                    _proto({top: [{**resource, scope_key: [{**scope, item_key: [item]}]}]}, signal)
                except errors:
                    _bad_items(stats, signal, 1)
                    continue
                good.append(item)
            if good:
                scopes.append({**scope, item_key: good})
        if scopes:
            resources.append({**resource, scope_key: scopes})
    if not resources:
        return None
    message = {top: resources}
    return Line(message, line.size, _count(message, signal), _proto(message, signal))


def signal_lines(run_dir: Path, signal: str, stats: LineStats, *, check: bool) -> Iterator[Line]:
    """The lines of a run's file of one signal (rotated segments too) as they are sent; what cannot be sent is
    skipped and counted in ``stats``. ``check``: convert each to protobuf (:func:`checked`)."""
    paths = segments(run_dir, SPANS_FILE if signal == "traces" else METRICS_FILE)
    for message, size in iter_segments_sized(paths, stats):
        shaped = _shaped(message, signal, stats)
        if shaped is None:
            continue
        if signal == "metrics":  # the run id goes back on each point, as live export sends it
            shaped = run_id_on_points(shaped)
        line = Line(shaped, size, _count(shaped, signal))
        kept = checked(line, signal, stats) if check else line
        if kept is not None:
            yield kept


def batches(lines: Iterable[Line], limit: int) -> Iterator[list[Line]]:
    """Lines in requests of at most ``limit`` bytes (a larger single line goes alone)."""
    batch: list[Line] = []
    size = 0
    for line in lines:
        if batch and size + line.size > limit:
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += line.size
    if batch:
        yield batch
