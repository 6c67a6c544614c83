"""Runs: ``run_span()`` opens a run span and its run folder; ``current_run()`` finds it again.

A run is an OpenTelemetry span (a root span, a child of ``TRACEPARENT`` from a parent process, or a
child of the span already current) plus a folder holding its readable record and its telemetry.
Nested ``run_span`` calls make child runs with folders of their own that name their parent.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from runtel import _sdk, semconv
from runtel._guard import guard, log_once
from runtel._version import __version__
from runtel.lineage import LineageMixin
from runtel.store import RECORD_FILE, RECORD_SCHEMA, RecordFile, atomic_write_json, new_run_id, write_new_file

if TYPE_CHECKING:
    from runtel.config import Settings
    from runtel.redaction import Redactor

__all__ = ("Run", "RunSpan", "current_run", "run_span")

_logger = logging.getLogger("runtel.runs")

_OK, _ERROR, _INTERRUPTED, _RUNNING = "ok", "error", "interrupted", "running"


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _status_for(exc: BaseException | None) -> str:
    if exc is None:
        return _OK
    if isinstance(exc, SystemExit):
        return _OK if exc.code in (None, 0) else _ERROR
    if isinstance(exc, (KeyboardInterrupt, GeneratorExit)) or type(exc).__name__ == "CancelledError":
        return _INTERRUPTED
    return _ERROR


def _normalize_tags(tags: Mapping[str, Any] | Iterable[str] | None) -> dict[str, str]:
    if not tags:
        return {}
    if isinstance(tags, Mapping):
        return {str(k): str(v) for k, v in tags.items()}
    out: dict[str, str] = {}
    for tag in tags:
        key, sep, value = str(tag).partition("=")
        out[key] = value if sep else "true"
    return out


_create_time: tuple[int, float] | None = None


def _process_create_time() -> float:
    """This process's start time (cached per pid; lets readers tell a dead run's pid from a reused one)."""
    global _create_time
    pid = os.getpid()
    if _create_time is None or _create_time[0] != pid:
        import psutil

        _create_time = (pid, psutil.Process(pid).create_time())
    return _create_time[1]


def _script_path(argv: list[str]) -> str | None:
    if argv and argv[0] and os.path.isfile(argv[0]):
        return os.path.abspath(argv[0])
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return os.path.abspath(path) if isinstance(path, str) else None


class Run(LineageMixin):
    """A recorded run: its ids, its folder, and ways to add to its record while it is open."""

    def __init__(self, name: str, *, run_id: str = "", run_dir: Path | None = None) -> None:
        self.name = name
        self.id = run_id
        self.dir = run_dir
        self.trace_id = "0" * 32
        self.span_id = "0" * 16
        self.parent_id: str | None = None
        self.status = _RUNNING
        self.start_time_ns = 0
        self.end_time_ns: int | None = None
        self.seed: int | None = None
        self.record: dict[str, Any] = {}
        self._span: trace.Span = trace.INVALID_SPAN
        self._settings: Settings | None = None
        self._redactor: Redactor | None = None
        self._record_file: RecordFile | None = None
        self._output_dirs: list[Path] = []
        self._finished = False
        self._outcome: tuple[str, str, str] | None = None
        self._start_sample: Any = None
        self._rss_floor = 0  # a combined peak RSS the kernel measured (runtel run's command), bytes; 0 = none
        self._last_write = 0.0
        self._write_pending = False

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
            from runtel._safe import to_attributes, to_jsonable

            redacted = self._redact(attributes)
            self._span.set_attributes(to_attributes(redacted, prefix="", max_length=self._settings.attribute_max_length))
            self.record.setdefault("attributes", {}).update(
                to_jsonable(redacted, max_str=self._settings.record_max_bytes)
            )

    def set_outcome(self, status: str, *, error_type: str = "", message: str = "") -> None:
        """Decide the run's final status without raising (e.g. a wrapped command's exit code).

        ``status`` is ``ok``, ``error`` or ``interrupted``; an exception leaving the run still wins.
        """
        if status not in (_OK, _ERROR, _INTERRUPTED):
            raise ValueError(f"status must be ok, error or interrupted, got {status!r}")
        self._outcome = (status, error_type, message)

    def add_disk_info(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Record mount point, file-system type and free space of the disk holding ``path``."""
        from runtel.environment.host import disk_info

        return self._add_inventory("disks", lambda: disk_info(path))

    def add_device_info(self, device: object) -> dict[str, Any]:
        """Record a torch device's properties (only if the application already imported torch)."""
        from runtel.environment.host import device_info

        return self._add_inventory("devices", lambda: device_info(device))

    def _add_inventory(self, section: str, read: Any) -> dict[str, Any]:
        info: dict[str, Any] = {}
        with guard(f"{section}-info", f"read {section} information"):
            info = dict(read())
            self.record.setdefault(section, []).append(info)
            self._write_record()
        return info

    # --- internals -------------------------------------------------------------------------------
    def _redact(self, mapping: Mapping[str, Any]) -> dict[str, Any]:
        from runtel._safe import normalize_config

        if self._redactor is None:
            return dict(mapping)
        return self._redactor.redact_mapping({str(k): normalize_config(v) for k, v in mapping.items()})

    def _write_record(self, *, force: bool = False) -> None:
        """Replace run.json (and its copies in output dirs).

        Updates while the run is open (artifacts, sources, metadata) are written at most once a second,
        so a run that records thousands of artifacts does not rewrite its record thousands of times;
        the start and the end always write. Everything is also in spans.jsonl as events.
        """
        if self.dir is None:
            return
        now = time.monotonic()
        if not force and not self._finished and now - self._last_write < 1.0:
            self._write_pending = True
            return
        self._last_write, self._write_pending = now, False
        with guard(f"record:{self.dir}", f"write the run record in {self.dir}"):
            if self._record_file is None:
                self._record_file = RecordFile(self.dir / RECORD_FILE)
            self._record_file.write(self.record)
        for out in self._output_dirs:
            with guard(f"record:{out}", f"write the run record into {out}"):
                out.mkdir(parents=True, exist_ok=True)
                atomic_write_json(out / f"runtel-{self.id}.json", self.record)

    def _finish_at_exit(self) -> None:
        """The interpreter is exiting with this run still open (for example ``sys.exit`` in a thread)."""
        if not self._finished:
            _finish(self, None, status=_INTERRUPTED, context_token=None, run_token=None)


def current_run() -> Run | None:
    """The innermost run open in this context (task, thread or copied context), or None."""
    return _sdk.CURRENT_RUN.get()


class RunSpan:
    """The context manager returned by :func:`run_span`; usable with ``with`` and ``async with``."""

    def __init__(
        self,
        name: str | None,
        *,
        config: Any = None,
        tags: Mapping[str, Any] | Iterable[str] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        seed: int | bool | None = None,
        telemetry: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        _argv: list[str] | None = None,
    ) -> None:
        self._name = name
        self._config = config
        self._tags = tags
        self._output_dir = output_dir
        self._seed = seed
        self._telemetry = telemetry
        self._attributes = dict(attributes or {})
        self._argv = _argv
        self._run: Run | None = None
        self._context_token: object = None
        self._run_token: Any = None

    # --- sync -----------------------------------------------------------------------------------
    def __enter__(self) -> Run:
        return self._start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        run = self._run
        if self._left_disabled(run):
            return
        assert run is not None
        _finish(run, exc, status=None, context_token=self._context_token, run_token=self._run_token)

    # --- async ----------------------------------------------------------------------------------
    async def __aenter__(self) -> Run:
        return self._start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        run = self._run
        if self._left_disabled(run):
            return
        assert run is not None
        # End the span and leave the context here (it belongs to this task); flush and write files off
        # the event loop so a slow disk or collector never stalls other tasks.
        _end_span(run, exc, status=None, context_token=self._context_token, run_token=self._run_token)
        try:
            import anyio

            await anyio.to_thread.run_sync(_flush_and_record, run)
        except Exception:
            _flush_and_record(run)

    def _left_disabled(self, run: Run | None) -> bool:
        """Leave a placeholder run (runtel disabled, or start failed); True if there is nothing more to do."""
        if run is not None and run.enabled:
            return False
        if run is not None and self._run_token is not None:
            _sdk.CURRENT_RUN.reset(self._run_token)
        return True

    # --- start ----------------------------------------------------------------------------------
    def _start(self) -> Run:
        settings = _sdk.settings()
        argv = list(sys.argv if self._argv is None else self._argv)
        name = self._name or (Path(argv[0]).stem if argv and argv[0] not in ("", "-c") else "") or "run"
        if _sdk.current_runtime() is None and not settings.disabled:
            _prefetch_git(argv, settings, self._telemetry)
        runtime = _sdk.get_runtime()
        if runtime is None:  # OTEL_SDK_DISABLED=true: a placeholder run, nothing recorded
            run = Run(name)
            self._run = run
            self._run_token = _sdk.CURRENT_RUN.set(run)
            return run
        run = _open(runtime, settings, name, self, argv)
        self._run = run
        return run


def _prefetch_git(argv: list[str], settings: Settings, telemetry: str | None) -> None:
    """First run of the process: start the git queries before building the runtime (see ``git.prefetch``)."""
    if (settings.telemetry if telemetry is None else telemetry) == "off":
        return
    with guard("git-prefetch", "start the git queries"):
        from runtel.environment.git import prefetch

        cwd = os.getcwd()
        script = _script_path(argv)
        prefetch([p for p in (script, cwd) if p], env=settings.env)


def _open(runtime: _sdk.Runtime, settings: Settings, name: str, spec: RunSpan, argv: list[str]) -> Run:
    """Everything run start does; internal failures degrade to a run without a record."""
    from runtel._safe import normalize_config, to_attributes, to_jsonable
    from runtel.propagation import extract_parent_context

    start_ns = time.time_ns()
    level = settings.telemetry if spec._telemetry is None else spec._telemetry
    parent_run = _sdk.CURRENT_RUN.get()
    run_id = new_run_id(name, datetime.fromtimestamp(start_ns / 1e9, timezone.utc))
    run_dir: Path | None = None
    if settings.json_enabled:
        run_dir = settings.dir / run_id
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            log_once(f"mkdir:{settings.dir}", "runtel cannot create the run folder %s (%s); the run goes on without "
                     "a local record", run_dir, exc.strerror or exc)
            run_dir = None
    run = Run(name, run_id=run_id, run_dir=run_dir)
    run.start_time_ns = start_ns
    run._settings = settings
    redactor = runtime.redactor  # process-wide: its cache of key verdicts carries over between runs
    run._redactor = redactor

    env_info = None
    with guard("environment", "capture the environment"):
        from runtel.environment import collect_environment

        gpus: list[dict[str, Any]] = []
        runtime.prepare_monitor()
        if runtime.monitor is not None:
            with guard("gpu-inventory", "read the GPU inventory"):
                gpus = list(runtime.monitor.gpu_devices())
        env_info = collect_environment(
            level=level,
            env=settings.env,
            argv=argv,
            cwd=os.getcwd(),
            script_path=_script_path(argv),
            redactor=redactor,
            git_diff_max_bytes=settings.git_diff_max_bytes,
            gpus=gpus,
        )
        if runtime.environment is None:
            runtime.environment = env_info
    runtime.ensure_built(name)

    # Parent: the enclosing run or user span, else a parent process's TRACEPARENT, else a new trace.
    parent_ctx = None
    parent_info: dict[str, Any] | None = None
    current_span = trace.get_current_span()
    if parent_run is None and not current_span.get_span_context().is_valid:
        with guard("traceparent", "read TRACEPARENT"):
            parent_ctx = extract_parent_context(settings.env)
            remote = trace.get_current_span(parent_ctx).get_span_context()
            if remote.is_valid:
                parent_info = {"trace_id": format(remote.trace_id, "032x"), "span_id": format(remote.span_id, "016x"),
                               "run_id": settings.env.get("RUNTEL_PARENT_RUN_ID") or None}
            else:
                parent_ctx = None
    if parent_run is not None:
        run.parent_id = parent_run.id or None
        parent_info = {"run_id": parent_run.id, "trace_id": parent_run.trace_id, "span_id": parent_run.span_id}
    elif parent_info is not None:
        run.parent_id = parent_info.get("run_id")

    attributes: dict[str, Any] = {
        semconv.RUN_ID: run_id,
        semconv.RUN_NAME: name,
        semconv.SPAN_KIND: semconv.KIND_RUN,
        semconv.TELEMETRY_LEVEL: level,
    }
    if run.parent_id:
        attributes[semconv.RUN_PARENT_ID] = run.parent_id
    record: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "id": run_id,
        "name": name,
        "status": _RUNNING,
        "start_time": _iso(start_ns),
        "start_time_unix_nano": str(start_ns),
        "end_time": None,
        "duration_s": None,
        "parent": parent_info,
        "telemetry": level,
        "runtel_version": __version__,
        "tags": {},
        "config": None,
        "attributes": {},
        "seed": None,
    }
    proc: dict[str, Any] = {"pid": os.getpid()}
    with guard("process-identity", "identify the process"):
        proc["create_time"] = _process_create_time()
    if level == "full":
        proc["host"] = socket.gethostname()
    record["process"] = proc

    if level != "off":
        tags = _normalize_tags(spec._tags)
        record["tags"] = tags
        attributes.update({semconv.TAG_PREFIX + k: v for k, v in tags.items()})
        with guard("config", "record the config"):
            if spec._config is not None:
                config = normalize_config(spec._config)
                if isinstance(config, Mapping):
                    config = redactor.redact_mapping({str(k): v for k, v in config.items()})
                else:
                    config = redactor.redact_value("config", config)
                record["config"] = to_jsonable(config, max_str=settings.record_max_bytes)
                attributes.update(to_attributes(config, prefix="config", max_length=settings.attribute_max_length))
        with guard("attributes", "record run attributes"):
            if spec._attributes:
                redacted = run._redact(spec._attributes)
                record["attributes"] = to_jsonable(redacted, max_str=settings.record_max_bytes)
                attributes.update(to_attributes(redacted, prefix="", max_length=settings.attribute_max_length))
        record["argv"] = redactor.redact_argv(argv) if level == "full" else None
        if env_info is not None:
            attributes.update(env_info.span)
            record["environment"] = env_info.record
            if not runtime.owns_provider:  # the application's Resource is kept; carry ours on the span
                attributes.update(env_info.resource)
            if level == "minimal":
                record["argv"] = env_info.record.get("argv", record["argv"])

    seed = spec._seed
    if seed is not None and seed is not False:
        with guard("seed", "seed the random number generators"):
            from runtel.seeding import seed_everything

            run.seed = seed_everything(None if seed is True else int(seed))
            record["seed"] = run.seed
            attributes[semconv.SEED] = run.seed

    span = runtime.tracer.start_span(
        name, context=parent_ctx, kind=trace.SpanKind.INTERNAL, attributes=attributes, start_time=start_ns
    )
    sc = span.get_span_context()
    run._span = span
    run.trace_id = format(sc.trace_id, "032x")
    run.span_id = format(sc.span_id, "016x")
    record["trace_id"] = run.trace_id
    record["span_id"] = run.span_id
    run.record = record
    spec._context_token = otel_context.attach(trace.set_span_in_context(span))
    spec._run_token = _sdk.CURRENT_RUN.set(run)
    runtime.open_run(run)
    if runtime.monitor is not None:
        with guard("sample-edge", "take the run-start sample"):
            run._start_sample = runtime.monitor.edge_sample()

    if spec._output_dir is not None:
        run._output_dirs.append(Path(spec._output_dir))
        record["output_dir"] = str(spec._output_dir)
    if run_dir is not None and level != "off" and env_info is not None:
        _write_side_files(run, env_info)
    run._write_record(force=True)
    return run


def _write_side_files(run: Run, env_info: Any) -> None:
    """git.diff and reproduce.sh next to run.json."""
    assert run.dir is not None
    if env_info.git_diff:
        with guard("git-diff", "save git.diff"):
            write_new_file(run.dir / "git.diff", env_info.git_diff)
            run.record["git_diff_file"] = "git.diff"
    if run.record.get("telemetry") != "full":
        return
    with guard("reproduce", "write reproduce.sh"):
        write_new_file(run.dir / "reproduce.sh", _reproduce_script(run, env_info), mode=0o755)
        run.record["reproduce"] = "reproduce.sh"


# The last reproduce.sh text: (key, text, run id in it). Back-to-back runs of a process share everything in
# the script but the run id in its header, and rendering it (quoting each variable) is ~40 us.
_last_reproduce: list[Any] = [None, "", ""]


def _reproduce_script(run: Run, env_info: Any) -> str:
    """reproduce.sh for ``run`` (``env_info`` is the process's environment capture, reused between runs)."""
    argv = run.record["argv"]  # at telemetry "full": the command line as recorded, already redacted
    cwd = os.getcwd()
    key = (env_info, tuple(argv) if argv is not None else None, cwd, sys.executable)
    last_key, last_text, last_id = _last_reproduce
    if last_key is not None and last_key[0] is env_info and last_key[1:] == key[1:]:
        return str(last_text).replace(last_id, run.id, 1)  # the header's run id comes before any argv or path
    from runtel.reproduce import render_reproduce_script

    git_record = env_info.record.get("git") or {}
    script = render_reproduce_script(
        argv=argv,
        cwd=cwd,
        python_executable=sys.executable,
        git=git_record.get("script") or git_record.get("cwd"),
        env={k: v for k, v in (env_info.record.get("env") or {}).items() if isinstance(v, str)},
        run_id=run.id,
    )
    _last_reproduce[:] = [key, script, run.id]
    return script


def _end_span(
    run: Run, exc: BaseException | None, *, status: str | None, context_token: object, run_token: Any
) -> None:
    """Set status and usage, end the span, and leave the context (must run in the entering context)."""
    outcome = run._outcome if exc is None else None
    run.status = status or (outcome[0] if outcome else _status_for(exc))
    runtime = _sdk.get_runtime()
    monitor = runtime.monitor if runtime is not None else None
    last_sample = None
    if monitor is not None:
        with guard("sample-edge", "take the run-end sample"):
            last_sample = monitor.edge_sample()
    run.end_time_ns = time.time_ns()  # after the edge sample, so the window includes it
    span = run._span
    with guard("run-status", "record the run status"):
        if outcome is not None and outcome[0] != _OK:
            span.set_attribute(semconv.ERROR_TYPE, outcome[1] or outcome[0])
            span.set_status(Status(StatusCode.ERROR, outcome[2] or outcome[0]))
            run.record["error"] = {"type": outcome[1] or outcome[0], "message": outcome[2]}
        elif exc is not None and run.status != _OK:
            span.record_exception(exc, escaped=True)
            span.set_attribute(semconv.ERROR_TYPE, type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:1024]))
            run.record["error"] = {
                "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                "message": str(exc)[:4096] if not isinstance(exc, KeyboardInterrupt) else "KeyboardInterrupt",
            }
        elif run.status == _INTERRUPTED:
            span.set_status(Status(StatusCode.ERROR, "interrupted"))
        else:
            span.set_status(Status(StatusCode.OK))
    if monitor is not None:
        with guard("run-usage", "summarise resource usage"):
            summary = monitor.usage(run.start_time_ns, run.end_time_ns, edges=(run._start_sample, last_sample))
            from runtel.sampling.summary import resource_usage_record, usage_attributes, with_rss_floor

            if run._rss_floor and summary.samples:
                summary = with_rss_floor(summary, semconv.SCOPE_COMBINED, run._rss_floor)

            span.set_attributes(usage_attributes(summary))
            run.record["resource_usage"] = resource_usage_record(summary)
    span.end(end_time=run.end_time_ns)
    if context_token is not None:
        with guard("context-detach", "restore the previous context"):
            otel_context.detach(context_token)  # type: ignore[arg-type]
    if run_token is not None:
        try:
            _sdk.CURRENT_RUN.reset(run_token)
        except ValueError:  # a different context (e.g. finished from another thread at exit)
            pass


def _flush_and_record(run: Run) -> None:
    """Flush telemetry to the run folder, stop routing to it, and write the final record."""
    runtime = _sdk.get_runtime()
    if runtime is not None:
        runtime.flush_run(run)
        runtime.close_run(run)
    end = run.end_time_ns or time.time_ns()
    run.record.update(
        status=run.status,
        end_time=_iso(end),
        end_time_unix_nano=str(end),
        duration_s=round((end - run.start_time_ns) / 1e9, 6),
    )
    run._finished = True
    run._write_record(force=True)


def _finish(run: Run, exc: BaseException | None, *, status: str | None, context_token: object, run_token: Any) -> None:
    _end_span(run, exc, status=status, context_token=context_token, run_token=run_token)
    _flush_and_record(run)


def run_span(
    name: str | None = None,
    *,
    config: Any = None,
    tags: Mapping[str, Any] | Iterable[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    seed: int | bool | None = None,
    telemetry: str | None = None,
    **attributes: Any,
) -> RunSpan:
    """Record a run: a span plus a run folder, for ``with`` or ``async with``.

    Args:
        name: Run name (default: the script's name).
        config: The run's configuration: a mapping, dataclass, argparse Namespace, pydantic model,
            OmegaConf config, ... Recorded in full in run.json and flattened onto the span as
            ``config.*`` attributes; secrets are redacted.
        tags: ``{"key": "value"}`` or ``["key=value", "flag"]``; span attributes ``runtel.tag.*``.
        output_dir: Also write the run record into this folder (next to the job's outputs).
        seed: An int seeds ``random`` (and numpy/torch/TensorFlow if already imported) with it;
            ``True`` generates a seed; the seed is recorded. ``None`` (default) seeds nothing.
        telemetry: ``full``, ``minimal`` or ``off`` for this run (default: ``RUNTEL_TELEMETRY``).
        **attributes: More attributes for the run span and record.

    Example:
        >>> import runtel
        >>> with runtel.run_span("train", config={"lr": 0.1}) as run:
        ...     with runtel.block("epoch", index=0):
        ...         pass

    The span ends with status OK, or ERROR with the exception recorded (then re-raised, including
    ``KeyboardInterrupt`` and ``SystemExit``); run.json's status becomes ``ok``, ``error`` or
    ``interrupted``.
    """
    return RunSpan(name, config=config, tags=tags, output_dir=output_dir, seed=seed, telemetry=telemetry,
                   attributes=attributes)
