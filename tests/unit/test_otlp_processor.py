"""The OTLP span processor and metric exporter use only the SDK's public API: drops are counted by runtel,
shutdown is bounded without the SDK's private processor, and the temporality is the one runtel built with."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter, ObservableUpDownCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from runtel._guard import reset_log_once
from runtel._sdk.metrics import RecordingMeter, RunMetrics
from runtel.config import resolve_settings
from runtel.exporters.otlp import (
    ExportConfig,
    Health,
    OtlpSpanProcessor,
    QuietMetricExporter,
    QuietSpanExporter,
    build_metric_exporter,
    build_span_processor,
    temporality_preference,
)

DELTA, CUMULATIVE = AggregationTemporality.DELTA, AggregationTemporality.CUMULATIVE


class StalledCollector(SpanExporter):
    """An exporter that keeps what it is given and holds the first batch until released (a slow collector)."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.received.extend(s.name for s in spans)
        self.entered.set()
        self.release.wait(30)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


@pytest.fixture
def once() -> Iterator[None]:
    reset_log_once()
    yield
    reset_log_once()


def _processor(inner: SpanExporter, queue: int, bound_s: float = 5.0) -> OtlpSpanProcessor:
    config = ExportConfig(signal="traces", protocol="http/json", endpoint="http://127.0.0.1:9/v1/traces")
    return OtlpSpanProcessor(QuietSpanExporter(inner, Health(config)), bound_s, max_queue_size=queue,
                             max_export_batch_size=queue)


def test_full_queue_drops_are_counted_and_warned_once(once: None, caplog: pytest.LogCaptureFixture) -> None:
    """With the collector stalled on one batch and the queue full, each further span is refused and counted; one
    runtel warning, no SDK 'Queue full' line, and every span handed over is either exported or counted."""
    inner = StalledCollector()
    processor = _processor(inner, queue=4)
    taken = threading.Event()
    count_taken = processor.quiet_exporter.on_batch
    assert count_taken is not None

    def on_batch(n: int) -> None:
        count_taken(n)
        taken.set()

    processor.quiet_exporter.on_batch = on_batch
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    caplog.set_level(logging.DEBUG)
    try:
        for i in range(4):  # a full batch: the worker takes it and stalls in the collector
            tracer.start_span(f"s{i}").end()
        assert taken.wait(30) and inner.entered.wait(30)
        for i in range(4, 11):  # 4 fit in the queue again, 3 do not
            tracer.start_span(f"s{i}").end()
        assert processor.dropped_spans == 3
        inner.release.set()
        assert processor.force_flush(30_000)
    finally:
        inner.release.set()
        processor.shutdown()
    assert inner.received == [f"s{i}" for i in range(8)]
    assert len(inner.received) + processor.dropped_spans == 11
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "OTLP export queue is full" in warnings[0].getMessage()
    assert not any("Queue full" in r.getMessage() for r in caplog.records)


def test_unsampled_and_late_spans_are_not_counted(once: None) -> None:
    """Spans the SDK would ignore (not sampled) and spans ending after shutdown take no queue room."""
    inner = StalledCollector()
    inner.release.set()
    processor = _processor(inner, queue=2)
    unsampled = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    unsampled.add_span_processor(processor)
    for _ in range(10):
        unsampled.get_tracer("test").start_span("quiet").end()
    assert processor.dropped_spans == 0 and processor.force_flush(30_000)
    processor.shutdown()
    sampled = TracerProvider(shutdown_on_exit=False)
    sampled.add_span_processor(processor)
    for _ in range(5):
        sampled.get_tracer("test").start_span("late").end()
    assert processor.dropped_spans == 0 and inner.received == []


def test_shutdown_returns_while_an_export_is_stuck(once: None) -> None:
    """A collector stuck on a batch does not hold shutdown past its bound (the SDK's own waits up to 30 s)."""
    inner = StalledCollector()
    processor = _processor(inner, queue=2, bound_s=0.2)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    for i in range(2):
        provider.get_tracer("test").start_span(f"s{i}").end()
    assert inner.entered.wait(30)
    done = threading.Event()
    closer = threading.Thread(target=lambda: (processor.shutdown(), done.set()), daemon=True)
    closer.start()
    try:
        assert done.wait(20), "shutdown waited for the stuck export"
        assert not inner.release.is_set()  # the export really was still stuck when shutdown returned
    finally:
        inner.release.set()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process.*is multi-threaded:DeprecationWarning")
def test_forked_child_starts_with_an_empty_count(once: None) -> None:
    """The SDK empties its queue in a forked child; the count follows, so the child is not refused spans."""
    inner = StalledCollector()
    processor = _processor(inner, queue=2)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    try:
        for i in range(2):
            tracer.start_span(f"s{i}").end()
        assert inner.entered.wait(30)
        for i in range(2, 5):
            tracer.start_span(f"s{i}").end()
        assert processor.dropped_spans == 1  # the parent's queue is full
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code only
            before = processor.dropped_spans
            for i in range(2):
                tracer.start_span(f"child{i}").end()
            os._exit(0 if processor.dropped_spans == before else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        inner.release.set()
        processor.shutdown()


def test_queue_and_batch_sizes_come_from_the_settings_environment(once: None) -> None:
    """OTEL_BSP_MAX_QUEUE_SIZE / OTEL_BSP_MAX_EXPORT_BATCH_SIZE set the bound runtel counts against."""
    env = {"RUNTEL_EXPORTERS": "json,otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_BSP_MAX_QUEUE_SIZE": "64",
           "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16"}
    processor = build_span_processor(resolve_settings(env))
    assert isinstance(processor, OtlpSpanProcessor)
    try:
        assert processor.max_queue_size == 64
    finally:
        processor.shutdown()
    default = build_span_processor(resolve_settings({**env, "OTEL_BSP_MAX_QUEUE_SIZE": "lots",
                                                     "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": ""}))
    assert isinstance(default, OtlpSpanProcessor)
    try:
        assert default.max_queue_size == 2048
    finally:
        default.shutdown()


@pytest.mark.parametrize(("protocol", "preference", "counter", "observable_counter"), [
    ("http/protobuf", None, CUMULATIVE, CUMULATIVE),
    ("http/protobuf", "delta", DELTA, DELTA),
    ("grpc", "DELTA ", DELTA, DELTA),
    ("http/protobuf", "lowmemory", DELTA, CUMULATIVE),
    ("http/protobuf", "nonsense", CUMULATIVE, CUMULATIVE),
    ("http/json", "delta", CUMULATIVE, CUMULATIVE),
])
def test_metric_exporter_keeps_the_temporality_it_was_built_with(
    protocol: str, preference: str | None, counter: AggregationTemporality, observable_counter: AggregationTemporality,
) -> None:
    """build_metric_exporter resolves OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE once and keeps it (as the
    SDK's OTLP exporters map it); up-down counters stay cumulative; runtel's HTTP/JSON exporter stays cumulative."""
    env = {"RUNTEL_EXPORTERS": "json,otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    if preference is not None:
        env["OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"] = preference
    exporter = build_metric_exporter(resolve_settings(env))
    assert isinstance(exporter, QuietMetricExporter)
    assert exporter.temporality == temporality_preference(env, protocol)
    assert exporter.temporality[Counter] == exporter.temporality[Histogram] == counter
    assert exporter.temporality[ObservableCounter] == observable_counter
    assert exporter.temporality[ObservableUpDownCounter] == CUMULATIVE


class KeepingExporter(MetricExporter):
    """An SDK metric exporter that keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.received.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def test_run_metrics_sends_deltas_to_an_exporter_built_for_delta() -> None:
    """RunMetrics takes the preference from the QuietMetricExporter runtel built: 5 then 3 for a counter at 5, 8."""
    env = {"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"}
    values = iter([5, 8])
    meter = RecordingMeter()
    meter.create_observable_counter("test.counter", [lambda _: [Observation(next(values))]])
    inner = KeepingExporter()
    config = ExportConfig(signal="metrics", protocol="http/protobuf", endpoint="http://127.0.0.1:9/v1/metrics")
    exporter = QuietMetricExporter(inner, Health(config), temporality=temporality_preference(env, "http/protobuf"))
    metrics = RunMetrics(meter.instruments, json_file=None, exporters=[exporter], resource=Resource.create({}),
                         scope=InstrumentationScope("test"), start_ns=time.time_ns())
    metrics.collect()
    metrics.collect()
    sums = [d.resource_metrics[0].scope_metrics[0].metrics[0].data for d in inner.received]
    assert [s.aggregation_temporality for s in sums] == [DELTA, DELTA]
    assert [s.data_points[0].value for s in sums] == [5, 3]
