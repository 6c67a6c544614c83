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
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from runtel import semconv
from runtel._guard import log_once
from runtel.exporters.otlp_json import spans_line

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = ("JsonlSpanExporter", "LineFile", "RunSinks")

_logger = logging.getLogger("runtel.exporters")


class LineFile:
    """An append-only JSON Lines file written with one ``write()`` per line batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()
        self.lines = 0

    def write(self, data: bytes) -> bool:
        """Append ``data`` (whole lines); return False (and log once) if the file cannot be written."""
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                self.lines += data.count(b"\n")
                return True
            except OSError as exc:
                log_once(f"write:{self.path}", "runtel could not write %s: %s (the run goes on without it)",
                         self.path, exc)
                return False

    def close(self) -> None:
        """Close the descriptor; a later write reopens it."""
        with self._lock:
            if self._fd is not None:
                try:
                    os.close(self._fd)
                finally:
                    self._fd = None


class RunSinks:
    """The open runs' files, looked up by run id from the exporter threads."""

    def __init__(self) -> None:
        self._spans: dict[str, LineFile] = {}
        self._metrics: dict[str, LineFile] = {}
        self._lock = threading.Lock()

    def open(self, run_id: str, run_dir: Path) -> None:
        """Start routing the run's spans and metrics to files in ``run_dir``."""
        with self._lock:
            self._spans[run_id] = LineFile(run_dir / "spans.jsonl")
            self._metrics[run_id] = LineFile(run_dir / "metrics.jsonl")

    def close(self, run_id: str) -> None:
        """Stop routing to the run (after its final flush) and close its files."""
        with self._lock:
            files = [self._spans.pop(run_id, None), self._metrics.pop(run_id, None)]
        for f in files:
            if f is not None:
                f.close()

    def spans(self, run_id: str) -> LineFile | None:
        """The spans file of an open run."""
        return self._spans.get(run_id)

    def metrics(self, run_id: str) -> LineFile | None:
        """The metrics file of an open run."""
        return self._metrics.get(run_id)

    def open_ids(self) -> list[str]:
        """Ids of the runs currently routed."""
        with self._lock:
            return list(self._metrics)


_MARKED_KINDS = (semconv.KIND_BLOCK, semconv.KIND_FUNCTION)
_SAMPLES_KEY = semconv.USAGE_PREFIX + "samples"
_UNSAMPLED = '{"key":"' + _SAMPLES_KEY + '","value":{"intValue":"0"}}'  # one encoded OTLP KeyValue


class JsonlSpanExporter(SpanExporter):
    """Writes each batch of spans, grouped by run, as one OTLP/JSON line per run.

    With ``mark_unsampled`` (the resource sampler is on), block and function spans that no sample
    fell into are written with ``runtel.usage.samples = 0``: an explicit "not measured", added here
    in the exporter thread instead of costing an attribute on every short span's hot path.
    """

    def __init__(self, sinks: RunSinks, *, mark_unsampled: bool = False) -> None:
        self._sinks = sinks
        self.mark_unsampled = mark_unsampled

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Route and append; never raises."""
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
                    log_once(f"late-span:{run_id}", "runtel dropped %d span(s) that ended after run %s closed",
                             len(group), run_id, level=logging.DEBUG)
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
