"""Metric collection driven by runtel: one ticker thread for the process, one :class:`RunMetrics` per open run.

runtel's instruments are all asynchronous (observable) and each observation already is the value to
report: a cumulative counter read from ``/proc`` or a driver, or a current level. The SDK's
``MeterProvider`` would add nothing but aggregation bookkeeping, and creating one per run and
collecting it at the run's end cost ~5 ms — most of a short run. So :class:`RecordingMeter` stands in
for the OTel ``Meter`` when the instruments are registered (the registration code stays plain OTel
API), and :class:`RunMetrics` calls their callbacks, writes the run folder's line directly as
OTLP/JSON text and builds the SDK's ``MetricsData`` only for OTLP exporters. A single daemon
:class:`MetricTicker` collects every open run each ``metric_interval`` seconds; a run's final
collection happens when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from runtel._guard import guard, log_once
from runtel.rundir.otlp_json import metrics_line
from runtel.semconv import RUN_ID

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from runtel.rundir.writer import LineFile

__all__ = ("Instrument", "MetricTicker", "RecordingMeter", "RunMetrics", "observed_run_ids")

#: a metrics.jsonl line holds every series at least this often (else only changed values): under the 5 minutes
#: after which Prometheus drops a series without samples, so a replayed run has no gaps
COMPLETE_EVERY_NS: Final = 240 * 10**9

#: instrument kinds (the OTel API's observable instruments)
COUNTER: Final = "counter"
UP_DOWN_COUNTER: Final = "up_down_counter"
GAUGE: Final = "gauge"


class Instrument(NamedTuple):
    """One observable instrument as registered: what to call and how to report it."""

    name: str
    kind: str
    unit: str
    description: str
    callbacks: tuple[Callable[[Any], Iterable[Any]], ...]


class RecordingMeter:
    """The part of the OTel ``Meter`` API that registers observable instruments; it keeps their definitions."""

    def __init__(self) -> None:
        self.instruments: list[Instrument] = []

    def _add(self, kind: str, name: str, callbacks: Sequence[Any] | None, unit: str, description: str) -> None:
        self.instruments.append(Instrument(name, kind, unit, description, tuple(callbacks or ())))

    def create_observable_counter(self, name: str, callbacks: Sequence[Any] | None = None, unit: str = "",
                                  description: str = "") -> None:
        """Register a monotonic cumulative sum."""
        self._add(COUNTER, name, callbacks, unit, description)

    def create_observable_up_down_counter(self, name: str, callbacks: Sequence[Any] | None = None, unit: str = "",
                                          description: str = "") -> None:
        """Register a non-monotonic cumulative sum."""
        self._add(UP_DOWN_COUNTER, name, callbacks, unit, description)

    def create_observable_gauge(self, name: str, callbacks: Sequence[Any] | None = None, unit: str = "",
                                description: str = "") -> None:
        """Register a gauge."""
        self._add(GAUGE, name, callbacks, unit, description)


_observing = threading.local()


def observed_run_ids() -> Sequence[str]:
    """The run ids of the :class:`RunMetrics` observing in this thread right now (``()`` outside a collection).

    Instruments registered once for every run of a process take their run ids from here, so a run's
    start does not register them again (which cost ~0.1 ms per run).
    """
    return getattr(_observing, "run_ids", ())


class _Options:
    """What the API passes callbacks (``CallbackOptions``): a timeout they may ignore."""

    timeout_millis: float = 10_000


class RunMetrics:
    """One run's metrics: each :meth:`collect` observes every instrument once and writes/exports one request.

    The run folder's ``metrics.jsonl`` gets a line encoded directly as text (no SDK objects, so the
    metrics SDK is not even imported without OTLP), compact but standard OTLP/JSON (docs/metrics.md,
    "Encoding"): the run id, the same for every point of the file, is a Resource attribute there
    (``file_resource``) instead of a point attribute; a series gets a point only when its value
    changed since the last point the file has of it, except in the run's first and final
    (``complete=True``) collections and every :data:`COMPLETE_EVERY_NS`, which have every series; a
    metric's description is written
    with its first point only. OTLP exporters get the SDK's ``MetricsData``, every point with its run id. Sums
    are cumulative from the run's start, or deltas since the previous collection for an OTLP exporter
    that prefers delta temporality (``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``, resolved when
    runtel built the exporter and kept in its ``temporality`` attribute; an exporter without one gets
    cumulative sums). Exporters are never called concurrently (the metrics SDK specification requires that).
    """

    def __init__(self, instruments: Sequence[Instrument], *, json_file: Callable[[], LineFile | None] | None,
                 exporters: Sequence[MetricExporter], resource: Resource, scope: InstrumentationScope,
                 start_ns: int, run_ids: Sequence[str] = (), file_resource: Resource | None = None) -> None:
        self._instruments = tuple(instruments)
        self._run_ids = tuple(run_ids)
        #: the run folder's Resource (with the run id) and the point attribute it makes redundant there
        self._file_resource = file_resource if file_resource is not None else resource
        self._file_run_id = file_resource.attributes.get(RUN_ID) if file_resource is not None else None
        #: series -> value of the last point written to the run folder; metric names written with a description
        self._written: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
        self._described: set[str] = set()
        self._complete_at = 0  # time of the last line with every series (0: none yet)
        self._json_file = json_file
        self._exporters = tuple(exporters)
        self._resource = resource
        self._scope = scope
        self._start_ns = start_ns
        self._lock = threading.Lock()
        self._export_lock = threading.Lock()
        #: gauge points the run logged itself (run.log series) waiting for the next export: (name, attributes,
        #: time, value); the run folder already has them, written by the run when it logged them
        self._pending: list[tuple[str, Mapping[str, Any], int, float]] = []
        # per exporter with delta preference: series -> (previous value, previous time)
        self._previous: dict[int, dict[tuple[str, frozenset[Any]], tuple[float, int]]] = {}

    def _observe(self) -> list[tuple[Instrument, list[Any]]]:
        options = _Options()
        observed: list[tuple[Instrument, list[Any]]] = []
        _observing.run_ids = self._run_ids  # what observed_run_ids() tells shared instruments
        try:
            for instrument in self._instruments:
                points: list[Any] = []
                for callback in instrument.callbacks:
                    try:
                        points.extend(callback(options))
                    except Exception as exc:
                        log_once(f"metric-callback:{instrument.name}", "runtel could not observe %s: %r",
                                 instrument.name, exc)
                if points:
                    observed.append((instrument, points))
        finally:
            _observing.run_ids = ()
        return observed

    def new_segment(self) -> None:
        """The run folder's file starts afresh (e.g. a size-based rotation): its next line holds every series and
        description again, so each file segment reads back on its own."""
        with self._lock:
            self._written.clear()
            self._described.clear()

    def add_gauges(self, points: Iterable[tuple[str, Mapping[str, Any], int, float]]) -> None:
        """Points to send to the OTLP exporters with the next collection (nothing to do without one)."""
        if self._exporters:
            with self._lock:
                self._pending.extend(points)

    def collect(self, timeout_millis: float = 10_000, *, observe: bool = True, complete: bool = False) -> None:
        """Observe now, append to the run folder and export; failures are logged once, never raised.

        The run folder's line is written under a short lock. The export waits for an earlier export
        still in progress (exporters are never called concurrently) no longer than ``timeout_millis``:
        with a collector that never answers, the final collection of a run is bounded like the rest of
        its end, and a skipped export is reported once (cumulative sums catch up at the next one).
        ``observe=False`` sends only the points the run logged itself (``run.log`` series), without a sample.
        ``complete=True`` (the run's final collection) writes every series to the run folder, changed or not.
        """
        deadline = time.monotonic() + timeout_millis / 1000
        with self._lock:
            observed = self._observe() if observe else []
            pending, self._pending = self._pending, []
            if not observed and not pending:
                return
            now = time.time_ns()
            target = self._json_file() if self._json_file is not None else None
            if target is not None and observed:
                with guard("metric-write", "write metrics to the run folder"):
                    if target.full():  # the line opens a new segment (size-based rotation): every series again
                        self._written.clear()
                        self._described.clear()
                        complete = True
                    line = self._line(observed, now, complete)
                    if line:
                        target.write(line)
            payloads = []
            for exporter in self._exporters:
                with guard("metric-export", "export metrics"):
                    payloads.append((exporter, self._metrics_data(exporter, observed, now, pending)))
        if not payloads:
            return
        if not self._export_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            log_once("metric-export-busy", "runtel skipped a metric export: the previous one is still waiting for "
                     "the collector (the run folder has every point)", level=logging.INFO)
            return
        try:
            for exporter, data in payloads:
                with guard("metric-export", "export metrics"):
                    exporter.export(data, timeout_millis=max(0.0, deadline - time.monotonic()) * 1000)
        finally:
            self._export_lock.release()

    def _line(self, observed: list[tuple[Instrument, list[Any]]], now: int, complete: bool = False) -> bytes:
        """The run folder's line: only series whose value changed (all of them when ``complete`` or first)."""
        start = self._start_ns
        run_id = self._file_run_id
        written = self._written
        complete = complete or not written or now - self._complete_at >= COMPLETE_EVERY_NS
        if complete:
            self._complete_at = now
        metrics = []
        for instrument, points in observed:
            kept = []
            for p in points:
                attributes = p.attributes or {}
                if run_id is not None and attributes.get(RUN_ID) == run_id:
                    attributes = {k: v for k, v in attributes.items() if k != RUN_ID}
                try:
                    key = (instrument.name, tuple(attributes.items()))
                    if not complete and key in written and written[key] == p.value:
                        continue  # unchanged (NaN never equals itself: written every time)
                    written[key] = p.value
                except TypeError:  # an unhashable attribute value (a list): always written
                    pass
                kept.append((attributes, 0 if instrument.kind == GAUGE else start, now, p.value))
            if not kept:
                continue
            description = instrument.description
            if description:
                if instrument.name in self._described:
                    description = ""
                else:
                    self._described.add(instrument.name)
            metrics.append((instrument.name, description, instrument.unit,
                            "gauge" if instrument.kind == GAUGE else "sum", instrument.kind == COUNTER, kept))
        return metrics_line(self._file_resource, self._scope, metrics)

    def _metrics_data(self, exporter: MetricExporter, observed: list[tuple[Instrument, list[Any]]],
                      now: int, pending: Sequence[tuple[str, Mapping[str, Any], int, float]] = ()) -> MetricsData:
        from opentelemetry.sdk.metrics import (  # deferred: the OTel SDK, loaded with the first run (~35 ms)
            ObservableCounter,
            ObservableUpDownCounter,
        )
        from opentelemetry.sdk.metrics.export import (  # deferred: the OTel SDK, loaded with the first run (~36 ms)
            AggregationTemporality,
            Gauge,
            Metric,
            MetricsData,
            NumberDataPoint,
            ResourceMetrics,
            ScopeMetrics,
            Sum,
        )

        preferred = getattr(exporter, "temporality", None) or {}  # set by runtel's QuietMetricExporter
        sdk_class = {COUNTER: ObservableCounter, UP_DOWN_COUNTER: ObservableUpDownCounter}
        previous = self._previous.setdefault(id(exporter), {})
        metrics = []
        for instrument, points in observed:
            if instrument.kind == GAUGE:
                data: Any = Gauge(data_points=[
                    NumberDataPoint(attributes=p.attributes, start_time_unix_nano=0, time_unix_nano=now, value=p.value)
                    for p in points
                ])
            else:
                temporality = preferred.get(sdk_class[instrument.kind], AggregationTemporality.CUMULATIVE)
                data_points = []
                for p in points:
                    value, start = p.value, self._start_ns
                    if temporality == AggregationTemporality.DELTA:
                        key = (instrument.name, frozenset((p.attributes or {}).items()))
                        last = previous.get(key)
                        previous[key] = (p.value, now)
                        if last is not None:
                            value, start = p.value - last[0], last[1]
                    data_points.append(NumberDataPoint(attributes=p.attributes, start_time_unix_nano=start,
                                                       time_unix_nano=now, value=value))
                data = Sum(data_points=data_points, aggregation_temporality=temporality,
                           is_monotonic=instrument.kind == COUNTER)
            metrics.append(Metric(name=instrument.name, description=instrument.description, unit=instrument.unit,
                                  data=data))
        by_name: dict[str, list[NumberDataPoint]] = {}
        for name, attributes, time_ns, value in pending:
            by_name.setdefault(name, []).append(NumberDataPoint(attributes=dict(attributes), start_time_unix_nano=0,
                                                                time_unix_nano=time_ns, value=value))
        metrics.extend(Metric(name=name, description="", unit="", data=Gauge(data_points=points))
                       for name, points in by_name.items())
        scope_metrics = ScopeMetrics(scope=self._scope, metrics=metrics, schema_url=self._scope.schema_url or "")
        return MetricsData(resource_metrics=[ResourceMetrics(resource=self._resource, scope_metrics=[scope_metrics],
                                                             schema_url=self._resource.schema_url or "")])

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        """Release the exporters (the final collection is the caller's :meth:`collect`)."""
        for exporter in self._exporters:
            with guard("metric-exporter-shutdown", "shut down a metric exporter"):
                exporter.shutdown(timeout_millis=timeout_millis)


class MetricTicker:
    """A daemon thread that collects the given readers every ``interval`` seconds until stopped.

    It also calls ``on_idle`` about once a second; the runtime uses that to stop the sampler a little
    after the last run closed, so back-to-back runs (a sweep) do not restart threads for every run.
    """

    def __init__(self, interval: float, readers: Callable[[], Iterable[RunMetrics]],
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
