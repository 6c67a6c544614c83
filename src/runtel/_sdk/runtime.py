"""The runtime: the OpenTelemetry providers, exporters, sampler and metric ticker runtel built, and the open runs.

Built once per process on the first run (see ``process.get_runtime``):

* a ``TracerProvider`` — the application's own SDK provider if it already installed one (runtel
  attaches to it), else a new one that becomes the global provider so other instrumentations' spans
  join the run;
* one :class:`~runtel._sdk.tracing.RunProcessor` per provider, attached once for the life of the
  process. It stamps each starting span with the id of the run open in its parent context and
  forwards ended spans to the current processors: the run folder's
  :class:`~runtel.exporters.jsonl.JsonlSpanWriter` (each span journaled on disk by the thread that
  ends it, batched into spans.jsonl lines; no queue, no exporter thread), and OTLP's batch processor
  only when opted in. Reconfiguring swaps what it forwards to;
* per open run, a :class:`~runtel._sdk.metrics.RunMetrics` that calls runtel's observable
  instruments (which read the sampler's latest snapshot) and writes the run's metrics.jsonl (and
  OTLP when opted in) — no ``MeterProvider`` per run;
* the sampler (:class:`~runtel.sampling.monitor.Monitor`), running while at least one run is open.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import trace

from runtel import _propagation, semconv
from runtel._guard import guard, log_once
from runtel._internals import set_provider_resource
from runtel._version import __version__
from runtel.config import Settings, settings_env
from runtel.exporters.prometheus import start_endpoint
from runtel.rundir.writer import RunSinks, set_shared

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from runtel._sdk.bridge import MeterBridge
    from runtel._sdk.metrics import Instrument, MetricTicker, RunMetrics
    from runtel._sdk.scrub import Scrubber
    from runtel._sdk.tracing import RunProcessor
    from runtel.environment import Environment
    from runtel.exporters.jsonl import JsonlSpanWriter
    from runtel.exporters.prometheus import PrometheusEndpoint
    from runtel.redaction import Redactor
    from runtel.rundir.writer import RunSinks
    from runtel.sampling.monitor import Monitor


_logger = logging.getLogger("runtel.sdk")


_attached: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


#: ids independent of the (often seeded) global random state; see ids.py
_ID_GENERATOR: Any = None


#: providers runtel itself created (a later runtime in the same process still owns them)
_created: weakref.WeakSet[Any] = weakref.WeakSet()


# The run folder's span batches: a line of spans.jsonl per this many spans or this many seconds
# (each span is on disk in the run's journal from the moment it ends; see exporters/jsonl.py).
_BATCH_DELAY_S = 0.2


_MAX_BATCH = 1_024


#: seconds the sampler keeps running after the last run closed (back-to-back runs reuse it)
_LINGER = 2.0

#: seconds the exit hook always allows for the local files, however little of the export deadline is left
_EXIT_GRACE_S = 0.5


class OpenRun(Protocol):
    """What the runtime needs of a run it routes (the recording side's ``Run``; typed here, not imported)."""

    id: str
    dir: Path | None
    start_time_ns: int
    parent_id: str | None

    def finish_at_exit(self) -> None:
        """End the run as interrupted: the interpreter is exiting with it open."""


class Runtime:
    """Everything runtel built for this process, and the open runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        set_shared(settings.shared_run_dir)  # modes of the run folders and files created from now on
        self.sinks: RunSinks = RunSinks(rotate_bytes=settings.rotate_bytes)
        self.provider: TracerProvider | None = None
        self.owns_provider = False
        self.tracer: trace.Tracer = trace.get_tracer(semconv.INSTRUMENTATION_SCOPE, __version__)
        self.router: RunProcessor | None = None
        self.span_processors: list[SpanProcessor] = []
        self._json_processor: JsonlSpanWriter | None = None
        self.run_metrics: dict[str, RunMetrics | None] = {}
        self._instruments: tuple[Monitor, tuple[Instrument, ...], InstrumentationScope] | None = None
        self._ticker: MetricTicker | None = None
        self._idle_since: float | None = None
        #: when the network export of the last run to end must be over (bounds the exit hook's wait)
        self._export_deadline: float | None = None
        self.monitor: Monitor | None = None
        #: the Prometheus pull endpoint (OTEL_METRICS_EXPORTER=prometheus), started with the first run
        self.prometheus: PrometheusEndpoint | None = None
        self._prometheus_tried = False
        #: set once runtel's instruments were attached to an SDK MeterProvider (see _sdk/bridge.py)
        self._bridge: MeterBridge | None = None
        self._redactor: Redactor | None = None
        self._scrubber: Scrubber | None = None
        self.open_runs: dict[str, OpenRun] = {}
        #: open runs with no enclosing run open in this process, oldest first (see process_run)
        self._roots: list[OpenRun] = []
        #: the first environment capture of the process (its Resource attributes build the provider's Resource)
        self.environment: Environment | None = None
        self._lock = threading.RLock()
        self._built = False
        self._pid = os.getpid()
        #: the global TracerProvider when tracing was built (a different one later is a late provider)
        self._global_provider: object = None

    @property
    def redactor(self) -> Redactor:
        """The process-wide redactor (built once from the settings)."""
        r = self._redactor
        if r is None:
            from runtel.redaction import Redactor  # deferred: runtel.redaction (~0.3 ms)

            r = self._redactor = Redactor(self.settings.redact_patterns, allow_keys=self.settings.redact_allow)
        return r

    @property
    def scrubber(self) -> Scrubber:
        """The scrubbing stage every span and Resource passes before export (see ``scrub.py``)."""
        s = self._scrubber
        if s is None:
            from runtel._sdk.scrub import Scrubber  # deferred: runtel._sdk.scrub (~23 ms)

            s = self._scrubber = Scrubber(self.redactor, max_length=self.settings.attribute_max_length)
        return s

    # --- building ------------------------------------------------------------------------------
    def ensure_built(self, run_name: str) -> None:
        """Build providers and exporters on first use (idempotent, thread-safe)."""
        if self._built:
            return
        with self._lock:
            if not self._built:
                self._build_tracing(run_name)
                self._built = True

    def _resource_attributes(self, run_name: str) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            semconv.SERVICE_NAME: self.settings.service_name or run_name,
            semconv.SERVICE_VERSION: self.settings.env.get("OTEL_SERVICE_VERSION", "") or None,
        }
        env = self.environment
        if env is not None:
            attrs.update(env.resource)
        return {k: v for k, v in attrs.items() if v is not None}

    def _span_limits(self) -> Any:
        """The SDK's default of 128 attributes per span is too few for a run span (config, environment,
        usage); runtel's own provider allows 1,024 unless the standard variables say otherwise."""
        from opentelemetry.sdk.trace import SpanLimits  # deferred: the OTel SDK, loaded with the first run (~23 ms)

        env = self.settings.env
        if env.get("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT") or env.get("OTEL_ATTRIBUTE_COUNT_LIMIT"):
            return SpanLimits()
        return SpanLimits(max_span_attributes=1024)

    def _build_tracing(self, run_name: str) -> None:
        global _ID_GENERATOR
        _drop_bad_limit_variables()
        if _ID_GENERATOR is None:
            from runtel._sdk.ids import IndependentIdGenerator  # deferred: runtel._sdk.ids (~23 ms)

            _ID_GENERATOR = IndependentIdGenerator()
        from opentelemetry.sdk.resources import Resource  # deferred: the OTel SDK, loaded with the first run (~15 ms)
        from opentelemetry.sdk.trace import TracerProvider  # deferred: the OTel SDK, loaded with the first run (~23 ms)

        from runtel._sdk.tracing import RunProcessor  # deferred: runtel._sdk.tracing (~23 ms)
        from runtel.exporters.jsonl import JsonlSpanWriter  # deferred: runtel.exporters.jsonl (~24 ms)

        current = trace.get_tracer_provider()
        adopted = _sdk_provider(current)
        if adopted is not None:
            provider = adopted  # the application's own SDK (or logfire's): add to it, never replace it
            self.owns_provider = adopted in _created
        else:
            # Redacted once here (OTEL_RESOURCE_ATTRIBUTES is merged in by create): spans and metrics share it.
            resource = self.scrubber.resource(Resource.create(self._resource_attributes(run_name)))
            from runtel._sdk.sampler import (  # deferred: the OTel SDK's sampling, loaded with the first run (~1 ms)
                ParentBasedAlwaysOn,
                is_default_sampler,
            )

            # The SDK's default decision without its per-span allocations; any sampler the user names is the SDK's.
            sampler = ParentBasedAlwaysOn() if is_default_sampler(self.settings.env.get("OTEL_TRACES_SAMPLER")) else None
            provider = TracerProvider(resource=resource, shutdown_on_exit=False, span_limits=self._span_limits(),
                                      id_generator=_ID_GENERATOR, sampler=sampler)
            _created.add(provider)
            self.owns_provider = True
            if isinstance(current, trace.ProxyTracerProvider):
                trace.set_tracer_provider(provider)
                _watch_late_providers()
        self.provider = provider
        self._global_provider = trace.get_tracer_provider()
        router = _attached.get(provider)
        if router is None:
            router = RunProcessor()
            provider.add_span_processor(router)
            _attached[provider] = router
        router.scrubber = self.scrubber
        _quiet_attribute_drops()
        self.router = router
        router.warn_unattributed = self.owns_provider
        processors: list[SpanProcessor] = []
        if self.settings.json_enabled:
            self._json_processor = JsonlSpanWriter(self.sinks, mark_unsampled=self.settings.sampling,
                                                   batch=_MAX_BATCH, delay=_BATCH_DELAY_S)
            self._json_processor.scrub = self.scrubber.span  # open spans are checkpointed redacted, as ended ones
            processors.append(self._json_processor)
        if self.settings.otlp_traces:
            with guard("otlp-build", "set up OTLP span export"):
                from runtel.exporters.otlp import build_span_processor  # deferred: runtel.exporters.otlp (~55 ms)

                processors.append(build_span_processor(self.settings))
        self.span_processors = processors
        router.delegates = tuple(processors)
        router.open_spans = self._json_processor.open_spans if self._json_processor is not None else None
        from runtel._sdk.tracer import lean_tracer  # deferred: runtel._sdk.tracer (~1 ms)

        self.tracer = lean_tracer(provider.get_tracer(semconv.INSTRUMENTATION_SCOPE, __version__,
                                                      schema_url=semconv.SCHEMA_URL))

    def _open_run_metrics(self, run: OpenRun, monitor: Monitor) -> RunMetrics | None:
        """The run's own metrics: runtel's instruments read the sampler and carry the run id.

        One collector per run (not per process) so a finished run's series end with it: a sweep of
        thousands of nested runs keeps collection cost and memory flat.
        """
        from opentelemetry.sdk.resources import Resource  # deferred: the OTel SDK, loaded with the first run (~15 ms)

        # deferred: the OTel SDK, loaded with the first run (~0.5 ms)
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from runtel._sdk.metrics import (  # deferred: runtel._sdk.metrics (~1 ms)
            MetricTicker,
            RecordingMeter,
            RunMetrics,
            observed_run_ids,
        )

        exporters: list[Any] = []
        if self.settings.otlp_metrics:  # OTEL_METRICS_EXPORTER=prometheus alone is not OTLP (see _start_prometheus)
            with guard("otlp-metrics-build", "set up OTLP metric export"):
                from runtel.exporters import otlp  # deferred: the OTLP exporters (~90 ms), only with OTLP opted in

                exporters.append(otlp.build_metric_exporter(self.settings))
        json_file = functools.partial(self.sinks.metrics, run.id) if self.settings.json_enabled else None
        if json_file is None and not exporters:
            return None
        if self._ticker is None:
            self._ticker = MetricTicker(self.settings.metric_interval, self._collected_runs, self._stop_if_idle)
        self._ticker.start()
        if self._instruments is None or self._instruments[0] is not monitor:
            # Registered once per sampler, for every run: each RunMetrics names its run while it observes.
            meter = RecordingMeter()
            monitor.register_instruments(meter, observed_run_ids)
            scope = InstrumentationScope(semconv.INSTRUMENTATION_SCOPE, __version__, semconv.SCHEMA_URL)
            self._instruments = (monitor, tuple(meter.instruments), scope)
        _, instruments, scope = self._instruments
        resource = self.scrubber.resource(self.provider.resource if self.provider is not None else Resource.create({}))
        return RunMetrics(instruments, json_file=json_file, exporters=exporters, resource=resource, scope=scope,
                          start_ns=run.start_time_ns, run_ids=(run.id,), file_resource=self.run_resource(run.id))

    def run_resource(self, run_id: str) -> Any:
        """The Resource of a run folder's metrics.jsonl: the provider's, plus ``runtel.run.id`` (the same for
        every point of the file, so stated once per line instead of on every point; docs/metrics.md)."""
        from opentelemetry.sdk.resources import Resource  # deferred: the OTel SDK, loaded with the first run (~15 ms)

        base = self.scrubber.resource(self.provider.resource if self.provider is not None else Resource.create({}))
        return Resource({**base.attributes, semconv.RUN_ID: run_id}, base.schema_url)

    def prepare_monitor(self) -> None:
        """Open (not start) the resource sampler, so the GPU inventory is known before the first run."""
        if not self.settings.sampling or self.monitor is not None:
            return
        with guard("monitor-open", "open the resource sampler"):
            from runtel.sampling.monitor import Monitor  # deferred: runtel.sampling.monitor (~6 ms)

            self.monitor = Monitor.open(self.settings)

    def _start_monitor(self) -> None:
        """Start the resource sampler (first open run)."""
        if not self.settings.sampling:
            return
        self.prepare_monitor()
        if self.monitor is not None:
            with guard("monitor-start", "start the resource sampler"):
                self.monitor.start()

    # --- run bookkeeping -----------------------------------------------------------------------
    def open_run(self, run: OpenRun) -> None:
        """Route the run's telemetry to its folder; start sampling with the first run."""
        with self._lock:
            first = not self.open_runs
            nested = run.parent_id is not None and run.parent_id in self.open_runs
            self.open_runs[run.id] = run
            if not nested:
                self._roots.append(run)
            self._set_process_run()
            self._idle_since = None
            if run.dir is not None:
                self.sinks.open(run.id, run.dir)
                if self._json_processor is not None:
                    self._json_processor.start()
            if first:
                self._start_monitor()
        monitor = self.monitor
        if monitor is not None and monitor.enabled:
            with guard("run-metrics", "set up the run's metrics"):
                self.run_metrics[run.id] = self._open_run_metrics(run, monitor)
        with guard("meter-bridge", "expose runtel's metrics to a MeterProvider"):
            self._attach_meter_providers()
        if self._built and trace.get_tracer_provider() is not self._global_provider:
            current = trace.get_tracer_provider()
            inner = getattr(current, "provider", current)
            if inner not in _attached:
                log_once("late-tracer-provider", LATE_PROVIDER)

    def _attach_meter_providers(self) -> None:
        """runtel's instruments on the Prometheus endpoint's provider and the application's SDK MeterProvider.

        Checked at every run start (a dict look-up without either), so a provider the application sets
        up between runs is fed from its next run on.
        """
        if not self._prometheus_tried:
            with self._lock:  # runs opening in two threads start one endpoint
                if not self._prometheus_tried:
                    self._start_prometheus()
                    self._prometheus_tried = True  # once per runtime, whether selected or not
        if self.prometheus is None and "opentelemetry.sdk.metrics" not in sys.modules:
            return  # no SDK MeterProvider can exist: nothing to feed (the common case costs this look-up)
        from runtel._sdk.bridge import application_meter_provider  # deferred: runtel._sdk.bridge (~1 ms)

        ours = [self.prometheus.provider] if self.prometheus is not None else []
        providers = [*ours, application_meter_provider(ours)]
        providers = [p for p in providers if p is not None]
        if providers:
            from runtel._sdk.bridge import BRIDGE  # deferred: runtel._sdk.bridge, loaded just above

            self._bridge = BRIDGE
            for provider in providers:
                BRIDGE.attach(provider, self)

    def _start_prometheus(self) -> None:
        """The /metrics endpoint and the private MeterProvider around its reader, if OTEL_METRICS_EXPORTER asks."""
        if "prometheus" not in (self.settings.metrics_exporter or ()):
            return
        endpoint = start_endpoint(self.settings.env)
        if endpoint is None:
            return
        from opentelemetry.sdk.metrics import MeterProvider  # deferred: the metrics SDK, loaded by the exporter
        from opentelemetry.sdk.resources import Resource  # deferred: the OTel SDK, loaded with the first run

        base = self.provider.resource if self.provider is not None else Resource.create({})
        endpoint.provider = MeterProvider(metric_readers=[endpoint.reader], shutdown_on_exit=False,
                                          resource=self.scrubber.resource(base))
        self.prometheus = endpoint

    def series_logged(self, run_id: str, points: Sequence[tuple[str, float | int]]) -> None:
        """A run's ``run.log`` points (series name without its prefix, value), for the MeterProviders runtel
        feeds (nothing to do without one)."""
        if self._bridge is not None:
            self._bridge.log(run_id, [(semconv.RESULT_PREFIX + name, float(value)) for name, value in points])

    def flush_run(self, run: OpenRun) -> None:
        """Export everything the run produced: its spans, then a final metric collection.

        The run folder's own spans are flushed first. Then one deadline, ``export_timeout`` from then,
        bounds all the network work: each step gets what the steps before it left, so a collector that
        accepts and never answers delays the run's end by at most ``export_timeout``, not once per
        signal and step.
        """
        timeout_ms = int(self.settings.export_timeout * 1000)
        local: list[SpanProcessor] = [p for p in self.span_processors if p is self._json_processor]
        for processor in local:
            with guard("span-flush", "flush spans"):
                processor.force_flush(timeout_ms)
        deadline = time.monotonic() + self.settings.export_timeout
        self._export_deadline = deadline

        def left_ms() -> float:
            return max(0.0, deadline - time.monotonic()) * 1000

        for processor in self.span_processors:
            if processor not in local:
                with guard("span-flush", "flush spans"):
                    processor.force_flush(int(left_ms()))
        metrics = self.run_metrics.pop(run.id, None)
        if metrics is not None:
            with guard("metric-flush", "flush metrics"):
                # The final collection, before the run folder closes. Every collection reports the sampler's
                # latest sample; if that was taken before the run began (a short run reusing the previous
                # sample, see Monitor.edge_sample), the run measured nothing of its own: no line, rather
                # than a pre-run measurement stamped with the run's id and end time.
                if self.monitor is not None and self.monitor.measured_since(run.start_time_ns):
                    metrics.collect(left_ms(), complete=True)  # every series' last value, changed or not
                else:
                    metrics.collect(left_ms(), observe=False)  # only what the run logged itself (run.log)
                metrics.shutdown(timeout_millis=left_ms())

    @property
    def process_run(self) -> OpenRun | None:
        """The run of the process: the most recently opened *root* run still open (one opened with no
        run of this process around it), else the most recently opened run still open, else None.

        Spans that arrive with no run in their context are attributed to it, and child processes
        inherit its trace context through the environment.
        """
        if self._roots:
            return self._roots[-1]
        return next(reversed(self.open_runs.values()), None)

    def _set_process_run(self) -> None:
        """Point fallback attribution and the children's environment at the process run (under the lock)."""
        run = self.process_run
        if self.router is not None:
            self.router.default_run = run
        with guard("propagate", "carry the run into threads and child processes"):
            _propagation.active = self.settings.propagate
            _propagation.child_started[:] = [self._child_started]
            # installed with or without propagation: its patch also tells the monitor of child starts
            _propagation.install_processes(self._settings_env, lambda: self.process_run)
            if self.settings.propagate:
                _propagation.install_threads()
                _propagation.set_process_carrier(run)

    def _child_started(self, pid: int) -> None:
        monitor = self.monitor
        if monitor is not None and os.getpid() == self._pid:
            monitor.child_started(pid)

    def _settings_env(self) -> dict[str, str]:
        return settings_env(self.settings)

    def _collected_runs(self) -> list[RunMetrics]:
        return [m for m in list(self.run_metrics.values()) if m is not None]

    def close_run(self, run: OpenRun) -> dict[str, Any]:
        """Stop routing to the run; stop sampling with the last run. What telemetry of it was lost, by kind.

        Lines of its files lost to a full or failing disk (``spans_lines``, ``metrics_lines``) and, with OTLP
        on, what the process's export lost so far (``otlp``, per signal and endpoint; the run folder keeps it).
        """
        lost: dict[str, Any] = {}
        with self._lock:
            self.open_runs.pop(run.id, None)
            if run in self._roots:
                self._roots.remove(run)
            self._set_process_run()
            if self._json_processor is not None:
                with guard("span-close", "write the run's last spans"):
                    self._json_processor.close_run(run.id)
            lost.update(self.sinks.close(run.id))
            if self._bridge is not None:
                self._bridge.run_closed(run.id)
            if not self.open_runs:
                # Sampling lingers a couple of seconds (see _stop_if_idle): back-to-back runs reuse it.
                self._idle_since = time.monotonic()
                if self._ticker is None and self.monitor is not None:
                    with guard("monitor-stop", "stop the resource sampler"):
                        self.monitor.stop()
        if self.settings.otlp_enabled:
            from runtel.exporters.otlp import losses  # deferred: loaded already whenever OTLP is on (~55 ms)

            with guard("otlp-losses", "read what OTLP export lost"):
                exported = {where: counts for where, counts in losses().items() if any(counts.values())}
                if exported:
                    lost["otlp"] = exported
        return lost

    def _stop_if_idle(self) -> bool:
        """Called by the metric ticker: stop the sampler once no run was open for ``_LINGER`` seconds."""
        with self._lock:
            if self.open_runs or self._idle_since is None or time.monotonic() - self._idle_since < _LINGER:
                return False
            if self.monitor is not None:
                with guard("monitor-stop", "stop the resource sampler"):
                    self.monitor.stop()
            self._idle_since = None
            return True  # the ticker thread ends; the next run starts it again

    # --- shutdown ------------------------------------------------------------------------------
    def shutdown(self, timeout: float | None = None) -> None:
        """Flush and stop everything runtel built, waiting at most ``timeout`` seconds.

        Without a ``timeout`` (the exit hook), what the last run's end left of its export deadline is the
        bound, and at least :data:`_EXIT_GRACE_S`: a job whose last run just waited ``export_timeout`` for
        a silent collector exits ``export_timeout`` (+ the grace) after its code ended, not twice that.
        """
        cut = False  # the wait is shortened because the last run's export already used the budget
        if timeout is None:
            timeout = self.settings.export_timeout
            if self._export_deadline is not None and not self.open_runs:
                left = max(_EXIT_GRACE_S, self._export_deadline - time.monotonic())
                cut = left < timeout
                timeout = min(timeout, left)
        jobs: list[Callable[[], object]] = []
        if self.monitor is not None:
            jobs.append(self.monitor.stop)
        if self._ticker is not None:
            jobs.append(self._ticker.stop)
        # Local files first: a stalled collector must not eat the bound before the run folder is complete.
        local = [p for p in self.span_processors if p is self._json_processor]
        jobs.extend(p.shutdown for p in local)
        for metrics in self._collected_runs():
            jobs.append(functools.partial(metrics.shutdown, timeout_millis=timeout * 1000))
        jobs.extend(p.shutdown for p in self.span_processors if p not in local)
        if self.owns_provider and self.provider is not None and self.router is not None:
            self.router.delegates = ()
        if self.prometheus is not None:
            jobs.append(self.prometheus.shutdown)
        _run_bounded(jobs, timeout, quiet=cut)
        if self._bridge is not None and self._bridge.runtime is self:
            self._bridge.runtime = None
        self.prometheus = None
        with guard("propagate-reset", "restore the environment"):
            _propagation.set_process_carrier(None)
        self.span_processors = []
        self.run_metrics = {}
        self.monitor = None

    def flush_spans(self, timeout: float) -> bool:
        """Write out every finished span now; False if an exporter reported a failure."""
        ok = True
        for processor in list(self.span_processors):
            try:
                ok = bool(processor.force_flush(int(timeout * 1000))) and ok
            except Exception:
                ok = False
        return ok

    def finish_open_runs(self) -> None:
        """The interpreter is exiting with runs still open (for example ``sys.exit`` in a thread)."""
        for run in list(self.open_runs.values()):
            with guard("atexit-run", "finalise an open run at exit"):
                run.finish_at_exit()

    def after_fork(self) -> None:
        """In a forked child: fresh locks, no sampler, none of the parent's runs, synchronous span writes.

        The parent's runs are finalised by the parent, never by a forked child. Forked workers
        (DataLoader, multiprocessing) often leave through ``os._exit`` or are terminated, so their
        spans are written synchronously: every span a worker ends is on disk at once.
        """
        self._lock = threading.RLock()
        parent_pid, self._pid = self._pid, os.getpid()
        with guard("fork-resource", "give a forked child's spans its own process id"):
            self._child_resource(parent_pid)
        edges = getattr(self.monitor, "edges", None)
        if edges is not None:
            with guard("fork-edges", "close the parent's edge files in a forked child"):
                edges.after_fork_in_child()
        self.monitor = None
        self.open_runs = {}
        self._roots = []  # the router keeps the parent's process run: the child's stray spans land there
        self.sinks.after_fork()
        if self.router is not None:
            self.router.after_fork()

        _propagation.after_fork_in_child()
        if self._json_processor is not None:
            self._json_processor.after_fork()  # the parent's batches and journals stay the parent's

    def _child_resource(self, parent_pid: int) -> None:
        """A forked child's spans name its own process: ``process.pid`` (and ``process.parent_pid``) renewed.

        The child inherits the parent's Resource, so without this its spans (written into the parent's run
        folder) would claim the parent's pid, and Perfetto or Jaeger would draw them on the parent's process.
        Only a provider runtel built (an application's Resource is the application's): its new tracers and
        runtel's own tracer get the new Resource, and the tracers it made before the fork get it from the SDK's
        own fork hook (SDK 1.45: it merges a new ``service.instance.id`` into the provider's Resource and hands
        it to every tracer it cached; registered with the provider, so it runs after runtel's).
        """
        provider = self.provider
        if provider is None or not self.owns_provider:
            return
        from opentelemetry.sdk.resources import Resource  # loaded already: the provider holds one

        old = provider.resource
        if old.attributes.get(semconv.PROCESS_PID) == self._pid:
            return
        attributes = dict(old.attributes)
        attributes[semconv.PROCESS_PID] = self._pid
        attributes[semconv.PROCESS_PARENT_PID] = parent_pid
        new = self.scrubber.resource(Resource(attributes, old.schema_url))
        set_provider_resource(provider, new)  # what the SDK's get_tracer hands new tracers
        for tracer in (self.tracer, getattr(self.tracer, "sdk_tracer", None)):
            if tracer is not None and hasattr(tracer, "resource"):
                tracer.resource = new  # the lean start reads it at each span

    def write_spans_synchronously(self, *, retire: bool = False) -> None:
        """Write every span to the run folder as its own line when it ends (no batch): for worker processes.

        Workers leave through ``os._exit`` (multiprocessing, DataLoader) or are terminated, so a span
        is in spans.jsonl the moment it ends, with no journal left to recover. ``retire``: write the
        batches first (not after a fork: the writer dropped the parent's batches already).
        """
        writer = self._json_processor
        if writer is None:
            return
        if retire:
            with guard("span-flush", "flush spans"):
                writer.write_synchronously()
        else:
            writer.synchronous = True


#: the one-time warning for a TracerProvider set up after runtel's first run (it says what to do)
LATE_PROVIDER = ("runtel: a TracerProvider was set up after runtel's first run, so its spans do not reach the run "
                 "folder and runtel's spans do not reach its exporters. Set up your TracerProvider (or call "
                 "logfire.configure()) before runtel's first run_span: runtel then adds its "
                 "processor to it and both record one trace (docs/jaeger-grafana.md, \"logfire\").")


def _sdk_provider(current: object) -> TracerProvider | None:
    """The SDK ``TracerProvider`` behind the global one: itself, or the one a wrapper delegates to.

    logfire installs its own ``ProxyTracerProvider`` (an API provider, re-assignable) over an SDK
    provider it keeps in the public ``provider`` attribute; runtel's processor goes on that one, so
    logfire's and runtel's spans share processors: one trace, in the run folder and in logfire's exporters.
    """
    from opentelemetry.sdk.trace import TracerProvider  # deferred: the OTel SDK, loaded with the first run (~23 ms)

    if isinstance(current, TracerProvider):
        return current
    inner = getattr(current, "provider", None)
    return inner if isinstance(inner, TracerProvider) else None


class _LateProviderFilter(logging.Filter):
    """Sees the OTel API refuse a second global TracerProvider (runtel's is set): runtel says what to do, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Overriding of current TracerProvider"):
            log_once("late-tracer-provider", LATE_PROVIDER)
        return True


_late_filter: _LateProviderFilter | None = None


def _watch_late_providers() -> None:
    """Install :class:`_LateProviderFilter` on the OTel API's trace logger (once per process)."""
    global _late_filter
    if _late_filter is None:
        _late_filter = _LateProviderFilter()
        logging.getLogger("opentelemetry.trace").addFilter(_late_filter)


class _OnceFilter(logging.Filter):
    """Lets the SDK's "Attributes dict is full" warning through once per process: the SDK logs it for every
    attribute dropped (712 lines for one run with a large config on a provider limited to 128), and one
    line says all there is to say."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Attributes dict is full"):
            return True
        if self.seen:
            return False
        self.seen = True
        record.msg = str(record.msg) + " (runtel: further drops are not reported; raise OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT)"
        return True


_attribute_filter: _OnceFilter | None = None


def _quiet_attribute_drops() -> None:
    """Install :class:`_OnceFilter` on the SDK's attributes logger (once per process)."""
    global _attribute_filter
    if _attribute_filter is None:
        _attribute_filter = _OnceFilter()
        logging.getLogger("opentelemetry.attributes").addFilter(_attribute_filter)


def _run_bounded(jobs: Sequence[Callable[[], object]], timeout: float, *, quiet: bool = False) -> None:
    """Run shutdown jobs in a daemon thread and wait at most ``timeout`` seconds for them.

    ``quiet``: giving up is logged at INFO, not WARNING (the export's failure was reported already).
    """

    def work() -> None:
        for job in jobs:
            with guard("shutdown", "shut down cleanly"):
                job()

    worker = threading.Thread(target=work, name="runtel-shutdown", daemon=True)
    try:
        worker.start()
    except RuntimeError:  # Python >= 3.12 refuses new threads at interpreter shutdown (atexit): run inline
        work()             # (each exporter's own shutdown is bounded; the local files need no network)
        return
    worker.join(timeout)
    if worker.is_alive():
        log_once("shutdown-timeout", "runtel gave up waiting for export after %.1f s at exit (local files are complete"
                 " up to the last flush)", timeout, level=logging.INFO if quiet else logging.WARNING)


#: the SDK's span limit variables; it raises ValueError (at import, for the first) unless each is an int >= 0
_LIMIT_VARIABLES = (
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT", "OTEL_SPAN_LINK_COUNT_LIMIT",
)


def _drop_bad_limit_variables() -> None:
    """Remove span limit variables the SDK would raise on (``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=abc``), with a warning.

    Left in place, the SDK's import fails and the user's program would get the SDK's ValueError at
    run start; removed, the SDK's defaults apply here and in child processes.
    """
    for name in _LIMIT_VARIABLES:
        raw = os.environ.get(name)
        if raw is None:
            continue
        text = raw.strip().lower()
        try:
            if text == "unset" or int(text) >= 0:
                continue
        except ValueError:
            pass
        os.environ.pop(name, None)
        log_once(f"limit-variable:{name}", "runtel ignores %s=%r (not a non-negative integer; the OpenTelemetry "
                 "SDK would fail on it) and removes it from the environment", name, raw)
