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

from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, MetricsData

from runtel._guard import guard

__all__ = ("MetricTicker", "PulledMetricReader")


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
