"""Metric collection driven by runtel: one ticker thread for the process, one reader per open run.

The SDK's periodic reader starts a thread per reader and joins it on shutdown (milliseconds per run);
with a reader per run that cost dominates a short run. Here each run's ``MeterProvider`` gets a
:class:`PulledMetricReader` that exports whenever it is collected, and a single daemon
:class:`MetricTicker` collects every open run's reader each ``metric_interval`` seconds. A run's
final collection happens synchronously when it ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricReader, MetricsData

from runtel import semconv
from runtel._guard import guard, log_once
from runtel.exporters.jsonl import RunSinks
from runtel.exporters.otlp_json import dumps_line, encode_metrics

__all__ = ("JsonlMetricExporter", "MetricTicker", "PulledMetricReader")


class PulledMetricReader(MetricReader):
    """Forwards each collection to its exporters (the local file, and OTLP when opted in)."""

    def __init__(self, exporters: Sequence[MetricExporter]) -> None:
        first = exporters[0] if exporters else None
        super().__init__(
            preferred_temporality=getattr(first, "_preferred_temporality", None),
            preferred_aggregation=getattr(first, "_preferred_aggregation", None),
        )
        self._exporters = tuple(exporters)
        self._lock = threading.Lock()

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        with self._lock:  # exporters are never called concurrently, as the metrics SDK spec requires
            for exporter in self._exporters:
                with guard("metric-export", "export metrics"):
                    exporter.export(metrics_data, timeout_millis=timeout_millis)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Collect now and flush the exporters."""
        super().force_flush(timeout_millis=timeout_millis)
        return all(e.force_flush(timeout_millis) for e in self._exporters)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Shut the exporters down (the final collection is the caller's ``collect()``)."""
        for exporter in self._exporters:
            with guard("metric-exporter-shutdown", "shut down a metric exporter"):
                exporter.shutdown(timeout_millis=timeout_millis)


class MetricTicker:
    """A daemon thread that collects the given readers every ``interval`` seconds until stopped.

    It also calls ``on_idle`` about once a second; the runtime uses that to stop the sampler a little
    after the last run closed, so back-to-back runs (a sweep) do not restart threads for every run.
    """

    def __init__(self, interval: float, readers: Callable[[], Iterable[MetricReader]],
                 on_idle: Callable[[], bool] | None = None) -> None:
        self._interval = interval
        self._readers = readers
        self._on_idle = on_idle
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start ticking (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="runtel-metrics", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        wake = min(self._interval, 1.0)
        next_collect = time.monotonic() + self._interval
        while not self._stop.wait(wake):
            if time.monotonic() >= next_collect:
                next_collect += self._interval
                for reader in list(self._readers()):
                    with guard("metric-collect", "collect metrics"):
                        reader.collect()
            if self._on_idle is not None:
                with guard("metric-idle", "stop idle sampling"):
                    if self._on_idle():
                        return

    def stop(self, timeout: float = 2.0) -> None:
        """Stop ticking; returns promptly (the thread wakes on the stop event)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


def _split_by_run(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Split an encoded metrics request into one request per run id found on its data points."""
    per_run: dict[str, dict[str, Any]] = {}
    for rm in message["resourceMetrics"]:
        for sm in rm["scopeMetrics"]:
            for metric in sm["metrics"]:
                kind = next(k for k in ("sum", "gauge", "histogram") if k in metric)
                points_by_run: dict[str, list[dict[str, Any]]] = {}
                for point in metric[kind]["dataPoints"]:
                    run_id = next(
                        (kv["value"].get("stringValue") for kv in point["attributes"] if kv["key"] == semconv.RUN_ID),
                        None,
                    )
                    if run_id:
                        points_by_run.setdefault(run_id, []).append(point)
                for run_id, points in points_by_run.items():
                    req = per_run.setdefault(run_id, {"resourceMetrics": []})
                    rms = req["resourceMetrics"]
                    if not rms or rms[-1]["_src"] is not rm:
                        rms.append({"_src": rm, "resource": rm["resource"], "scopeMetrics": []})
                    sms = rms[-1]["scopeMetrics"]
                    if not sms or sms[-1]["_src"] is not sm:
                        sms.append({"_src": sm, "scope": sm["scope"], "metrics": []})
                    sms[-1]["metrics"].append({**{k: v for k, v in metric.items() if k != kind},
                                               kind: {**metric[kind], "dataPoints": points}})
    for req in per_run.values():
        for rm_out in req["resourceMetrics"]:
            rm_out.pop("_src")
            for sm_out in rm_out["scopeMetrics"]:
                sm_out.pop("_src")
    return per_run


class JsonlMetricExporter(MetricExporter):
    """Appends each collection, split by the ``runtel.run.id`` data-point attribute, to the runs' files."""

    def __init__(self, sinks: RunSinks, on_export: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._sinks = sinks
        self._on_export = on_export

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        """Route and append; never raises."""
        try:
            ok = True
            for run_id, request in _split_by_run(encode_metrics(metrics_data)).items():
                target = self._sinks.metrics(run_id)
                if target is not None:
                    ok = target.write(dumps_line(request)) and ok
            return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE
        except Exception as exc:
            log_once("metric-export", "runtel could not export metrics to the run folder: %r", exc, exc_info=True)
            return MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Writes are synchronous."""
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to release."""
