"""The offline default: spans.jsonl and metrics.jsonl in each run folder.

Each line is one OTLP/JSON ``ExportTraceServiceRequest`` (or ``ExportMetricsServiceRequest``) as in
the OpenTelemetry File Exporter specification. Spans are routed to the run they belong to by their
``runtel.run.id`` attribute (stamped when the span starts), so spans from other instrumentations made
inside a run land in the same file. Lines are appended with a single ``write()`` on an ``O_APPEND``
descriptor: a batch is on disk as soon as it is exported, and forked workers writing to the same file
cannot interleave within a line. Export never raises; a write failure is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from runtel import semconv
from runtel._guard import log_once
from runtel.rundir.otlp_json import spans_line
from runtel.rundir.writer import RunSinks

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan


_logger = logging.getLogger("runtel.exporters")


_MARKED_KINDS = (semconv.KIND_BLOCK, semconv.KIND_FUNCTION)


_SAMPLES_KEY = semconv.USAGE_PREFIX + "samples"


_UNSAMPLED = '{"key":"' + _SAMPLES_KEY + '","value":{"intValue":"0"}}'  # one encoded OTLP KeyValue


_late = [0]


def late_spans() -> int:
    """Spans this process dropped because they ended after their run had closed."""
    return _late[0]


class JsonlSpanExporter(SpanExporter):
    """Writes each batch of spans, grouped by run, as one OTLP/JSON line per run.

    With ``mark_unsampled`` (the resource sampler is on), block and function spans that no sample
    fell into are written with ``runtel.usage.samples = 0``: an explicit "not measured", added here
    in the exporter thread instead of costing an attribute on every short span's hot path.
    """

    def __init__(self, sinks: RunSinks, *, mark_unsampled: bool = False) -> None:
        self._sinks = sinks
        self.mark_unsampled = mark_unsampled
        #: told how many spans each export received (a batch processor counting its queue sets it)
        self.on_batch: Callable[[int], None] | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Route and append; never raises."""
        on_batch = self.on_batch
        if on_batch is not None:
            on_batch(len(spans))
        try:
            groups: dict[str, list[ReadableSpan]] = {}
            for span in spans:
                attributes = span.attributes
                run_id = attributes.get(semconv.RUN_ID) if attributes else None
                if isinstance(run_id, str):
                    groups.setdefault(run_id, []).append(span)
            ok = True
            for run_id, group in groups.items():
                target = self._sinks.spans(run_id)
                if target is None:
                    _late[0] += len(group)
                    log_once("late-span", "runtel dropped %d span(s) that ended after run %s closed (work still "
                             "running when its run ended; the total is reported at exit)", len(group), run_id)
                    continue
                ok = target.write(spans_line(group, _unsampled_marker if self.mark_unsampled else None)) and ok
            return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE
        except Exception as exc:  # never let an encoding bug reach the SDK worker or the user
            log_once("span-export", "runtel could not export spans to the run folder: %r", exc, exc_info=True)
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Nothing to release: files belong to the runs."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Writes are synchronous, so there is nothing buffered here."""
        return True


def _unsampled_marker(span: ReadableSpan) -> str:
    """``runtel.usage.samples = 0`` for a block or function span that no sample fell into, else nothing."""
    attributes = span.attributes
    if attributes and attributes.get(semconv.SPAN_KIND) in _MARKED_KINDS and _SAMPLES_KEY not in attributes:
        return _UNSAMPLED
    return ""
