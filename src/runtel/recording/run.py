"""The :class:`Run`: a run span plus its record, and the methods that add to the record and end the run.

A run is an OpenTelemetry span (a root span, a child of ``TRACEPARENT`` from a parent process, or a
child of the span already current) plus a folder holding its readable record and its telemetry.
Opening one is ``lifecycle``'s job; ``current_run()`` finds the one open in this context.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from runtel import _context, _sdk, semconv
from runtel._guard import guard, log_once
from runtel._version import __version__
from runtel.recording.lineage import LineageMixin
from runtel.recording.safety import record_exception, redacted_attributes, safe_str
from runtel.rundir.index import note_record
from runtel.rundir.otlp_json import metrics_line
from runtel.rundir.schema import (
    RECORD_FILE,
    STATUS_ERROR,
    STATUS_INTERRUPTED,
    STATUS_OK,
    STATUS_RUNNING,
    RunRecord,
    iso_from_ns,
)
from runtel.rundir.writer import RecordWriter, atomic_write_json, report_write_error
from runtel.values.scalars import INT64_MAX, INT64_MIN

if TYPE_CHECKING:
    from runtel.backends.base import TrackerFanout
    from runtel.config import Settings
    from runtel.redaction import Redactor

__all__ = (
    "Run",
    "current_run",
)


_logger = logging.getLogger("runtel.runs")

#: distinct series one run may log (run.log); further names are counted in the record and reported once
MAX_SERIES = 1000
#: longest series name (an OTel instrument name is at most 255 characters, with the runtel.result. prefix)
MAX_SERIES_NAME = 255 - len(semconv.RESULT_PREFIX)


def _number(value: object) -> float | int | None:
    """``value`` as a plain number (numpy / torch scalars via ``item()``), or None for anything else.

    An int outside int64 (OTLP's integer) becomes a float, and one past the float range an infinity.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return int(value)
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, numbers.Real):
        return float(value)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            got = item()
        except Exception:  # a tensor with several elements, a failing device: not a number
            return None
        return _number(got) if not hasattr(got, "item") else None
    return None


def _status_for(exc: BaseException | None) -> str:
    if exc is None:
        return STATUS_OK
    if isinstance(exc, SystemExit):
        return STATUS_OK if exc.code in (None, 0) else STATUS_ERROR
    if isinstance(exc, (KeyboardInterrupt, GeneratorExit)) or type(exc).__name__ == "CancelledError":
        return STATUS_INTERRUPTED
    return STATUS_ERROR




class Run(LineageMixin):
    """A recorded run: its ids, its folder, and the only way to add to its record while it is open.

    Other modules never write ``record`` or private fields: every section has a method here
    (attributes, seed, outcome, output dirs, the wrapped command's figures, inventories), and every
    user value goes through :meth:`convert` (normalise, redact, span attributes, JSON).
    """

    def __init__(self, name: str, *, run_id: str = "", run_dir: Path | None = None) -> None:
        self.name = name
        self.id = run_id
        self.dir = run_dir
        self.trace_id = "0" * 32
        self.span_id = "0" * 16
        self.parent_id: str | None = None
        self.status: str = STATUS_RUNNING
        self.start_time_ns = 0
        self.end_time_ns: int | None = None
        # Durations come from the monotonic clock (a wall clock stepped back mid-run gave -3599 s);
        # the wall-clock times above are recorded as they were read.
        self.start_mono_ns = 0
        self.end_mono_ns: int | None = None
        self.seed: int | None = None
        self.record: RunRecord = {}
        self._span: trace.Span = trace.INVALID_SPAN
        self._settings: Settings | None = None
        self._redactor: Redactor | None = None
        self._record_writer: RecordWriter | None = None
        self._output_dirs: list[Path] = []
        self._finished = False
        self._outcome: tuple[str, str, str] | None = None
        self._start_sample: Any = None
        self._start_edge: Any = None  # cumulative counters at the start (runtel.sampling.edges.Edge)
        self._floors: dict[str, Any] = {}  # runtel run: CPU/energy floors (wait4, child runs)
        self._rss_floor = 0  # a combined peak RSS the kernel measured (runtel run's command), bytes; 0 = none
        self._last_write = 0.0
        self._write_pending = False
        self._next_step = 0  # run.log's step when none is given
        self._series_allowed: dict[str, bool] = {}  # series name -> recorded (False: redacted or over the limit)
        self._series_head: tuple[Any, Any] | None = None  # (resource, scope) of the series lines
        self._trackers: TrackerFanout | None = None  # RUNTEL_TRACKER backends besides the run folder

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, name={self.name!r}, status={self.status!r}, dir={str(self.dir) if self.dir else None!r})"

    @property
    def enabled(self) -> bool:
        """False for the placeholder run handed out when runtel is disabled."""
        return bool(self.id)

    @property
    def span(self) -> trace.Span:
        """The run's OpenTelemetry span."""
        return self._span

    # --- adding to the record --------------------------------------------------------------------
    def set_attributes(self, **attributes: Any) -> None:
        """Add attributes to the run span and run.json (values of any type; secrets redacted).

        Example:
            >>> with runtel.run_span("train") as run:
            ...     run.set_attributes(dataset="cifar10", epochs=3)
        """
        if not self.enabled or self._settings is None:
            return
        with guard("set-attributes", "record run attributes"):
            span_attributes, values = self.convert(attributes, prefix="")
            self._span.set_attributes(span_attributes)
            self.record.setdefault("attributes", {}).update(values)

    def set_result(self, **values: Any) -> None:
        """Record final results (run.json ``results.final`` and span attributes ``runtel.result.<name>``).

        Values of any type (numbers are what ``show``/``ls``/``compare`` line up); secrets redacted,
        sizes capped like every other value. A later call for the same name replaces it.

        Example:
            >>> with runtel.run_span("train") as run:
            ...     run.set_result(accuracy=0.913, f1=0.88)
        """
        if not self.enabled or self._settings is None:
            return
        with guard("set-result", "record run results"):
            span_attributes, record = self.convert(values, prefix=semconv.RESULT_PREFIX)
            self._span.set_attributes(span_attributes)
            if isinstance(record, dict):
                self.record.setdefault("results", {}).setdefault("final", {}).update(record)
                if self._trackers is not None:
                    self._trackers.call("set_result", self.id, **record)
            self._write_record()

    def log(self, step: int | None = None, **values: Any) -> None:
        """Log one point of each named series (loss per epoch ...): numbers only, never raises.

        Each point is a gauge ``runtel.result.<name>`` in the run's metrics.jsonl (OTLP/JSON) with
        attributes ``runtel.run.id`` and ``runtel.step``; run.json ``results.series.<name>`` keeps last,
        min, max, count and last step. Without ``step``, the step is one more than the previous
        call's. A value that is not a number is skipped with one warning per name; an int past int64
        is recorded as a float (an infinity past the float range).

        Example:
            >>> for epoch in range(3):
            ...     run.log(step=epoch, loss=1.0 / (epoch + 1))
        """
        if not self.enabled or self._settings is None:
            return
        with guard("log-series", "log result series"):
            self._log(step, values)

    def _log(self, step: int | None, values: Mapping[str, Any]) -> None:
        if step is None or isinstance(step, bool) or not isinstance(step, int):
            if step is not None:
                log_once(f"log-step:{type(step).__name__}", "runtel: run.log step must be an int, got %s "
                         "(the next step was used)", type(step).__name__)
            step = self._next_step
        self._next_step = step + 1
        numbers_in: dict[str, float | int] = {}
        for name, value in values.items():
            number = _number(value)
            if number is None or len(name) > MAX_SERIES_NAME:
                what = type(value).__name__ if number is None else f"a name of {len(name)} characters"
                log_once(f"log-value:{self.id}:{name[:200]}", "runtel: run.log(%s=...) needs a number and a name of "
                         "at most %d characters, got %s (skipped)", safe_str(name)[:200], MAX_SERIES_NAME, what)
                continue
            numbers_in[name] = number
        if not numbers_in:
            return
        results: dict[str, Any] = self.record.setdefault("results", {})  # type: ignore[assignment]
        series: dict[str, dict[str, Any]] = results.setdefault("series", {})
        new = [name for name in numbers_in if name not in self._series_allowed]
        if new:
            self._admit_series(new, series, results)
        points: list[tuple[str, float | int]] = []
        for name, value in numbers_in.items():
            if not self._series_allowed.get(name):
                continue  # redacted (the name looked like a secret), or over the series limit
            summary = series[name]
            points.append((name, value))
            finite = math.isfinite(value)
            summary["last"], summary["last_step"] = value if finite else None, step  # JSON has no NaN
            if finite:
                summary.pop("last_text", None)
            else:  # said as text, so readers show "nan", not an absent value
                summary["last_text"] = "nan" if value != value else ("inf" if value > 0 else "-inf")
            summary["count"] = int(summary.get("count", 0)) + 1
            if finite:  # a NaN loss is a point in metrics.jsonl and counted, but neither min nor max
                summary["min"] = value if "min" not in summary else min(summary["min"], value)
                summary["max"] = value if "max" not in summary else max(summary["max"], value)
        if points:
            now = time.time_ns()
            self._write_series(step, points, now)
            if self._trackers is not None:
                self._trackers.call("log", self.id, step, dict(points), now)
        self._write_record()

    def _admit_series(self, names: list[str], series: dict[str, dict[str, Any]], results: dict[str, Any]) -> None:
        """Decide once per new series name: redacted (its name looks like a secret), over the limit, or recorded.

        Values are numbers, so the name is all the redactor can object to: checking it once keeps
        ``log()`` in a per-batch loop cheap (``Run.convert`` was half of a call's cost).
        """
        from runtel.redaction import REDACTED  # deferred: runtel.redaction (~0.3 ms)

        _, converted = self.convert(dict.fromkeys(names, 0), prefix="")  # the one pipeline: redaction, limits
        kept = converted if isinstance(converted, dict) else {}
        for name in names:
            if name not in kept or kept[name] == REDACTED:
                self._series_allowed[name] = False
            elif len(series) >= MAX_SERIES:
                results["series_dropped"] = int(results.get("series_dropped", 0)) + 1
                log_once(f"log-series-cap:{self.id}", "runtel: run %s logged more than %d series; further "
                         "names are counted in results.series_dropped, not recorded", self.id, MAX_SERIES)
                if len(self._series_allowed) < 10 * MAX_SERIES:  # names past that are counted at every call
                    self._series_allowed[name] = False
            else:
                self._series_allowed[name] = True
                series[name] = {"count": 0}

    def _write_series(self, step: int, points: list[tuple[str, float | int]], now: int) -> None:
        """One OTLP/JSON line of gauges in the run's metrics.jsonl (same resource and scope as its other metrics)."""
        runtime = _sdk.get_runtime()
        target = runtime.sinks.metrics(self.id) if runtime is not None else None
        if target is None or runtime is None:
            return
        if self._series_head is None:
            # deferred: the OTel SDK, loaded with the first run (~0.5 ms)
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope

            scope = InstrumentationScope(semconv.INSTRUMENTATION_SCOPE, __version__, semconv.SCHEMA_URL)
            self._series_head = (runtime.run_resource(self.id), scope)  # the run id is on the Resource there
        resource, scope = self._series_head
        attributes = {semconv.STEP: step}
        target.write(metrics_line(resource, scope, (
            (semconv.RESULT_PREFIX + name, "", "", "gauge", False, [(attributes, 0, now, value)])
            for name, value in points
        )))
        runtime.series_logged(self.id, points)
        metrics = runtime.run_metrics.get(self.id)
        if metrics is not None:  # with OTLP opted in, the series reach the collector with the next collection
            exported = {semconv.RUN_ID: self.id, **attributes}  # a collector gets the run id on each point
            metrics.add_gauges((semconv.RESULT_PREFIX + name, exported, now, float(value)) for name, value in points)

    def set_outcome(self, status: str, *, error_type: str = "", message: str = "") -> None:
        """Decide the run's final status without raising (e.g. a wrapped command's exit code).

        ``status`` is ``ok``, ``error`` or ``interrupted``; an exception leaving the run still wins.
        """
        if status not in (STATUS_OK, STATUS_ERROR, STATUS_INTERRUPTED):
            raise ValueError(f"status must be ok, error or interrupted, got {status!r}")
        self._outcome = (status, error_type, message)

    def set_seed(self, seed: int, *, overwrite: bool = True) -> None:
        """Record the seed the run's random generators got (run.json ``seed`` and the span's ``runtel.seed``).

        ``overwrite=False`` keeps a seed recorded earlier (a traced call's seed does not replace the run's).
        """
        if not self.enabled or (not overwrite and self.record.get("seed") is not None):
            return
        self.seed = seed
        self.record["seed"] = seed
        self._span.set_attribute(semconv.SEED, seed)

    def add_output_dir(self, path: str | os.PathLike[str]) -> None:
        """Also write the run record into ``path`` (next to the job's outputs) as ``runtel-<id>.json``."""
        if self.enabled:
            self._output_dirs.append(Path(os.fspath(path)))

    def set_command_result(self, *, exit_code: int, signal: str | None = None,
                           rusage: Mapping[str, Any] | None = None,
                           child_runs: Mapping[str, float] | None = None) -> None:
        """What the wrapped command of ``runtel run`` did: exit code, killing signal, kernel resource usage.

        ``rusage["max_rss_bytes"]`` (the kernel's peak for the command's tree) becomes a floor for the
        run's combined peak RSS: samples can miss a short spike, the kernel cannot. Its CPU seconds
        (user + system of every descendant the command waited for) floor the run's CPU time, and
        ``child_runs`` (``cpu_s``/``energy_j`` summed over the runs the command's processes recorded as
        this run's children) floors CPU time and energy: a run contains its children.
        """
        self.record["exit_code"] = exit_code
        if signal:
            self.record["signal"] = signal
        if rusage:
            self.record["command_rusage"] = dict(rusage)
            self._rss_floor = int(rusage.get("max_rss_bytes") or 0)
            cpu = float(rusage.get("user_cpu_s") or 0.0) + float(rusage.get("system_cpu_s") or 0.0)
            self._floors["wait4_cpu_s"] = cpu
        if child_runs:
            self._floors["child_runs"] = dict(child_runs)  # recorded in resource_usage.compute_time

    def add_disk_info(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Record mount point, file-system type and free space of the disk holding ``path``."""
        from runtel.environment.host import disk_info  # deferred: runtel.environment.host (~9 ms)

        return self._add_inventory("disks", lambda: disk_info(path))

    def add_device_info(self, device: object) -> dict[str, Any]:
        """Record a torch device's properties (only if the application already imported torch)."""
        from runtel.environment.host import device_info  # deferred: runtel.environment.host (~9 ms)

        return self._add_inventory("devices", lambda: device_info(device))

    def _add_inventory(self, section: Literal["disks", "devices"], read: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        info: dict[str, Any] = {}
        with guard(f"{section}-info", f"read {section} information"):
            info = dict(read())
            self.record.setdefault(section, []).append(info)
            self._write_record()
        return info

    # --- tracker backends -------------------------------------------------------------------------
    def start_trackers(self, trackers: TrackerFanout) -> None:
        """Write to these backends from now on (``RUNTEL_TRACKER``), starting with the record so far."""
        if not self.enabled:
            return
        self._trackers = trackers
        trackers.call("start_run", self.id, self._redacted_record())
        self.record["trackers"] = trackers.report()

    def _end_trackers(self) -> None:
        """Hand the final record (and the run folder with its spans) to each backend; keep their report."""
        trackers = self._trackers
        if trackers is None:
            return
        self._trackers = None  # a second close must not send the run twice
        with guard("trackers-end", "hand the run to its tracker backends"):
            trackers.call("end_run", self.id, self._redacted_record(), self.dir)
        self.record["trackers"] = trackers.report()

    # --- the one pipeline for user values --------------------------------------------------------
    def convert(self, values: Any, *, prefix: str) -> tuple[dict[str, Any], Any]:
        """User values as (span attributes under ``prefix``, JSON-safe value for run.json), redacted.

        Config containers are normalised first (dataclasses, pydantic, OmegaConf ...), so redaction
        sees every key; attributes are capped at ``attribute_max_length``, record strings at
        ``record_max_bytes``.
        """
        from runtel.values.attributes import to_attributes  # deferred: runtel.values.attributes (~2 ms)
        from runtel.values.containers import normalize_config  # deferred: runtel.values.containers (~0.4 ms)
        from runtel.values.jsonable import to_jsonable  # deferred: runtel.values.jsonable (~2 ms)

        settings = self._settings
        max_str = settings.record_max_bytes if settings is not None else 1_048_576
        max_len = settings.attribute_max_length if settings is not None else 4096
        from runtel.redaction import SCAN_MARGIN, bound_containers  # deferred: runtel.redaction (~0.3 ms)

        value = normalize_config(bound_containers(values))
        if isinstance(value, Mapping):
            value = {safe_str(k): v for k, v in value.items()}  # one unprintable key must not cost the rest
        # Cap, then scan: converting first cuts strings and containers to their limits and takes reprs,
        # so redaction sees what is recorded (a repr holding a password) and costs what the limits allow;
        # strings are converted with the scan margin and cut after redaction (no half credential kept).
        redactor = self._redactor
        margin = SCAN_MARGIN if redactor is not None else 0
        attributes = to_attributes(value, prefix=prefix, max_length=max_len + margin)
        record = to_jsonable(value, max_str=max_str + margin)
        if redactor is not None:
            attributes = redacted_attributes(redactor, attributes, max_len)
            record = redactor.redact_mapping(record, max_str=max_str) if isinstance(record, dict) else \
                redactor.redact_value(prefix or "value", record, max_str=max_str)
        return attributes, record

    def _redacted_record(self) -> dict[str, Any]:
        """The record as written: every write passes the redactor, so no section can bypass it."""
        if self._redactor is None:
            return dict(self.record)
        max_str = self._settings.record_max_bytes if self._settings is not None else 1_048_576
        return self._redactor.redact_record(self.record, max_str=max_str)

    def _write_record(self, *, force: bool = False) -> None:
        """Rewrite run.json (and its copies in output dirs).

        Updates while the run is open (artifacts, sources, metadata) are written at most once a second,
        so a run that records thousands of artifacts does not rewrite its record thousands of times;
        the start and the end always write. Everything is also in spans.jsonl as events.
        """
        if self.dir is None or self._forked_copy():
            return
        now = time.monotonic()
        if not force and not self._finished and now - self._last_write < 1.0:
            self._write_pending = True
            return
        self._last_write, self._write_pending = now, False
        clean: dict[str, Any] = {}
        with guard(f"record:{self.dir}", f"write the run record in {self.dir}"):
            clean = self._redacted_record()  # once per write, for run.json and every copy
            if self._record_writer is None:
                self._record_writer = RecordWriter(self.dir / RECORD_FILE)
            if not self._record_writer.write(clean):  # reported; the file keeps its last record
                self._write_pending = True  # the next update tries again
            else:
                note_record(self.dir, clean)  # the run index (never raises: a reader repairs a missed row)
        for out in self._output_dirs if clean else ():
            with guard(f"record:{out}", f"write the run record into {out}"):
                target = out / f"runtel-{self.id}.json"
                try:
                    out.mkdir(parents=True, exist_ok=True)
                    atomic_write_json(target, clean)
                except OSError as exc:  # a full or failing disk: one line, the copy keeps its last record
                    report_write_error(target, exc, "a copy of the run record")

    # --- the end of a run ------------------------------------------------------------------------
    def end(self, exc: BaseException | None, *, status: str | None = None, context_token: object = None) -> None:
        """Set status and usage, end the span, and leave the context (must run in the entering context)."""
        if self._forked_copy():  # a forked child leaving the parent's run: only leave its context
            if context_token is not None:
                otel_context.detach(context_token)  # type: ignore[arg-type]
            return
        outcome = self._outcome if exc is None else None
        self.status = status or (outcome[0] if outcome else _status_for(exc))
        runtime = _sdk.get_runtime()
        monitor = runtime.monitor if runtime is not None else None
        last_sample = None
        end_edge = None
        if monitor is not None:
            with guard("sample-edge", "take the run-end sample"):
                end_edge = monitor.edge(end=True)  # before the sample: the counters end with the run's own work
                last_sample = monitor.edge_sample()
        self.end_time_ns = time.time_ns()  # after the edge sample, so the window includes it
        self.end_mono_ns = time.perf_counter_ns()
        span = self._span
        with guard("run-status", "record the run status"):
            if outcome is not None and outcome[0] != STATUS_OK:
                span.set_attribute(semconv.ERROR_TYPE, outcome[1] or outcome[0])
                span.set_status(Status(StatusCode.ERROR, outcome[2] or outcome[0]))
                self.record["error"] = {"type": outcome[1] or outcome[0], "message": outcome[2]}
            elif exc is not None and self.status != STATUS_OK:
                record_exception(span, exc)  # never raises, even for an exception whose __str__ does
                self.record["error"] = {
                    "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                    "message": safe_str(exc)[:4096] if not isinstance(exc, KeyboardInterrupt) else "KeyboardInterrupt",
                }
            elif self.status == STATUS_INTERRUPTED:
                span.set_status(Status(StatusCode.ERROR, "interrupted"))
            else:
                span.set_status(Status(StatusCode.OK))
        if monitor is not None:
            with guard("run-usage", "summarise resource usage"):
                summary = monitor.usage(self.start_time_ns, self.end_time_ns, edges=(self._start_sample, last_sample),
                                        counters=(self._start_edge, end_edge))
                from runtel.sampling.summary import (  # deferred: runtel.sampling.summary (~3 ms)
                    resource_usage_record,
                    usage_attributes,
                    with_floors,
                    with_rss_floor,
                )

                if self._rss_floor and summary.samples:
                    summary = with_rss_floor(summary, semconv.SCOPE_COMBINED, self._rss_floor)
                jps = monitor.edges.cpu_joules_per_s if monitor.edges is not None else None
                if "wait4_cpu_s" in self._floors:
                    summary = with_floors(summary, cpu_s=self._floors["wait4_cpu_s"], energy_j=None, source="wait4",
                                          cpu_joules_per_s=jps)
                children = self._floors.get("child_runs")
                if children:
                    summary = with_floors(summary, cpu_s=children.get("cpu_s"), energy_j=children.get("energy_j"),
                                          source="child runs", cpu_joules_per_s=jps)

                span.set_attributes(usage_attributes(summary))
                usage_record = resource_usage_record(summary)
                if children:
                    usage_record["compute_time"]["child_runs"] = dict(children)  # type: ignore[index]
                if monitor.energy_method:  # how CPU energy is obtained: RAPL, or the estimate and its assumptions
                    usage_record["energy"]["method"] = dict(monitor.energy_method)  # type: ignore[index]
                self.record["resource_usage"] = usage_record
        span.end(end_time=self.end_time_ns)
        if context_token is not None:
            with guard("context-detach", "restore the previous context"):
                otel_context.detach(context_token)  # type: ignore[arg-type]

    def close(self) -> None:
        """Flush telemetry to the run folder, stop routing to it, and write the final record."""
        if self._forked_copy():
            return  # the parent finalises its run; the child's spans are already on disk (synchronous)
        runtime = _sdk.get_runtime()
        if runtime is not None:
            runtime.flush_run(self)
            lost = runtime.close_run(self)
            if lost:  # counted and kept with the run, not only logged (show prints it)
                self.record["telemetry_losses"] = lost
        end = self.end_time_ns or time.time_ns()
        end_mono = self.end_mono_ns or time.perf_counter_ns()
        record = self.record
        record["status"] = self.status
        record["end_time"] = iso_from_ns(end)
        record["end_time_unix_nano"] = str(end)
        elapsed = end_mono - self.start_mono_ns if self.start_mono_ns else end - self.start_time_ns
        record["duration_s"] = round(max(0, elapsed) / 1e9, 6)
        self._end_trackers()  # after the spans are flushed to the folder, before the final record
        self._finished = True
        self._write_record(force=True)

    def _forked_copy(self) -> bool:
        """This is a forked child's copy of its parent's run (the record names the process that opened it)."""
        proc = self.record.get("process") if self.record else None
        return proc is not None and proc.get("pid") not in (None, os.getpid())

    def finish(self, exc: BaseException | None, *, status: str | None = None, context_token: object = None) -> None:
        """:meth:`end` then :meth:`close`."""
        self.end(exc, status=status, context_token=context_token)
        self.close()

    def finish_at_exit(self) -> None:
        """The interpreter is exiting with this run still open (for example ``sys.exit`` in a thread)."""
        if not self._finished:
            self.finish(None, status=STATUS_INTERRUPTED)


def current_run() -> Run | None:
    """The innermost run open in this context (task, thread or copied context), or None."""
    run: Run | None = _context.current_run()
    return run
