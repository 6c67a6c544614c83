"""runtel's OTLP metric exporter keeps the temporality it was built with instead of reading the SDK's private copy."""

from __future__ import annotations

import time
from typing import Any

import pytest
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter, ObservableUpDownCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from runtel._sdk.metrics import RecordingMeter, RunMetrics
from runtel.config import resolve_settings
from runtel.exporters.otlp import (
    ExportConfig,
    Health,
    QuietMetricExporter,
    build_metric_exporter,
    temporality_preference,
)

DELTA, CUMULATIVE = AggregationTemporality.DELTA, AggregationTemporality.CUMULATIVE


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
