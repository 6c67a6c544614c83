"""Opening a run: ``run_span()`` and its context manager, and the named steps of a run's start.

Start, in order: a run id and folder (``_new_run``), the environment (``_capture_environment``,
cached per process), the parent (``_find_parent``: the enclosing run or span, else a parent
process's TRACEPARENT), the record (``_initial_record`` and ``_record_inputs``), the span
(``_start_span``, which also makes the run current), seed, sampling, side files. The end is the
run's own (:meth:`Run.finish`). Internal failures degrade to a run without a record; the user's
code always runs.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from runtel import _context, _sdk, semconv
from runtel._guard import guard, is_strict, log_once
from runtel._version import __version__
from runtel.backends.base import FOLDER_NAMES, writers_for
from runtel.recording.run import Run
from runtel.recording.safety import (
    coerce_name,
    coerce_output_dir,
    coerce_seed,
    coerce_tags,
    coerce_telemetry,
    safe_str,
)
from runtel.rundir.schema import (
    GIT_DIFF_FILE,
    RECORD_SCHEMA,
    REPRODUCE_FILE,
    STATUS_RUNNING,
    ParentRef,
    ProcessInfo,
    RunRecord,
    iso_from_ns,
)
from runtel.rundir.writer import dir_mode, file_mode, new_run_id, report_write_error, write_new_file

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from runtel.config import Settings
    from runtel.environment import Environment

__all__ = ("NAME_MAX_LENGTH", "RunSpan", "notebook_path", "run_span")

#: run names longer than this are cut (the folder name takes the first 40 characters of the name)
NAME_MAX_LENGTH = 256


_KERNEL_LAUNCHERS = ("ipykernel_launcher", "ipykernel", "colab_kernel_launcher")



_create_time: tuple[int, float] | None = None


def _process_create_time() -> float:
    """This process's start time (cached per pid; lets readers tell a dead run's pid from a reused one)."""
    global _create_time
    pid = os.getpid()
    if _create_time is None or _create_time[0] != pid:
        import psutil  # deferred: psutil (~13 ms)

        _create_time = (pid, psutil.Process(pid).create_time())
    return _create_time[1]


def _script_path(argv: list[str]) -> str | None:
    if argv and argv[0] and os.path.isfile(argv[0]):
        return os.path.abspath(argv[0])
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return os.path.abspath(path) if isinstance(path, str) else None

def notebook_path(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The notebook a kernel process runs, when the kernel knows it; None outside a notebook kernel.

    Jupyter Server (2 and later) hands the kernel its notebook's path in ``JPY_SESSION_NAME``; VS Code
    puts it in the user namespace as ``__vsc_ipynb_file__``. A kernel that was told neither leaves it
    unknown (recorded as such: reproduce.sh and ``runtel reproduce`` say a kernel session cannot be
    re-run either way).
    """
    launcher = Path(str(argv[0])).stem if argv else ""
    if launcher not in _KERNEL_LAUNCHERS and "ipykernel" not in sys.modules:
        return None
    path = env.get("JPY_SESSION_NAME") or getattr(sys.modules.get("__main__"), "__vsc_ipynb_file__", None)
    return str(path) if isinstance(path, str) and path else None


class RunSpan:
    """The context manager returned by :func:`run_span`; usable with ``with`` and ``async with``."""

    def __init__(
        self,
        name: str | None,
        *,
        config: Any = None,
        tags: Mapping[str, Any] | Iterable[str] | str | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        seed: int | bool | None = None,
        telemetry: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        _argv: list[str] | None = None,
        _script: str | None = None,
    ) -> None:
        # Wrong types are coerced or dropped here, with one warning (ConfigError in strict mode), so
        # nothing about them can fail later inside the user's ``with`` statement.
        self._name = coerce_name(name)
        self._config = config
        self._tags = coerce_tags(tags)
        self._output_dir = coerce_output_dir(output_dir)
        self._seed = coerce_seed(seed)
        self._telemetry = coerce_telemetry(telemetry)
        self._attributes = dict(attributes or {})
        self._argv = _argv
        # the file whose repository is the project ("" none: the cwd's); None: found from argv (runtel run says)
        self._script = _script
        # One (run, context token) per entry still open: the object may be entered from several threads or
        # tasks at once (or nested), and each exit must end the run its own entry opened.
        self._entries: list[tuple[Run, object]] = []
        self._entries_lock = threading.Lock()

    def _script_of(self, argv: list[str]) -> str | None:
        """The file whose repository is the project, or None for the working directory's."""
        if self._script is not None:
            return self._script or None
        return _script_path(argv)

    # --- sync -----------------------------------------------------------------------------------
    def __enter__(self) -> Run:
        return self._start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        run, token = self._leave()
        if run is None or not run.enabled:
            _detach(token)
            return
        run.finish(exc, context_token=token)

    # --- async ----------------------------------------------------------------------------------
    async def __aenter__(self) -> Run:
        return self._start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        run, token = self._leave()
        if run is None or not run.enabled:
            _detach(token)
            return
        # End the span and leave the context here (it belongs to this task); flush and write files off
        # the event loop so a slow disk or collector never stalls other tasks.
        run.end(exc, context_token=token)
        try:
            import anyio  # deferred: anyio (~2 ms), only when an `async with` run ends

            await anyio.to_thread.run_sync(run.close)
        except Exception:
            run.close()

    def _leave(self) -> tuple[Run | None, object]:
        """Take this exit's entry: the one whose run is current in this context (threads and tasks each
        have their own), else the latest."""
        current = _context.current_run()
        with self._entries_lock:
            entries = self._entries
            if not entries:
                return None, None
            for i in range(len(entries) - 1, -1, -1):
                if entries[i][0] is current:
                    return entries.pop(i)
            return entries.pop()

    # --- start ----------------------------------------------------------------------------------
    def _start(self) -> Run:
        settings = _sdk.settings()
        argv = list(sys.argv if self._argv is None else self._argv)
        notebook = notebook_path(argv, settings.env)
        name = (self._name or (Path(notebook).stem if notebook else "")
                or (_program_name(argv[0]) if argv and argv[0] not in ("", "-c") else "") or "run")
        if _sdk.current_runtime() is None and not settings.disabled:
            _prefetch_git(self._script_of(argv), settings, self._telemetry)
        runtime = _sdk.get_runtime()
        run: Run | None = None
        token: object = None
        if runtime is not None:
            try:
                run, token = _open(runtime, settings, name, self, argv)
            except Exception as exc:  # a bug of runtel's: the user's code runs anyway, without a record
                if is_strict():
                    raise
                log_once("run-start", "runtel could not start the run %r: %s: %s (the program goes on without a "
                         "record)", name, type(exc).__name__, safe_str(exc), exc_info=True)
        if run is None:  # OTEL_SDK_DISABLED=true, or the start failed: a placeholder run, nothing recorded
            run = Run(name)
            token = otel_context.attach(_context.with_run(run))
        with self._entries_lock:
            self._entries.append((run, token))
        return run


def _detach(token: object) -> None:
    if token is not None:
        with guard("context-detach", "restore the previous context"):
            otel_context.detach(token)  # type: ignore[arg-type]


def _prefetch_git(script: str | None, settings: Settings, telemetry: str | None) -> None:
    """First run of the process: start the git queries before building the runtime (see ``git.prefetch``)."""
    if (settings.telemetry if telemetry is None else telemetry) == "off":
        return
    with guard("git-prefetch", "start the git queries"):
        from runtel.environment.git import prefetch  # deferred: runtel.environment.git (~7 ms)

        cwd = os.getcwd()
        prefetch([p for p in (script, cwd) if p], env=settings.env)


def _open(runtime: _sdk.Runtime, settings: Settings, name: str, spec: RunSpan, argv: list[str]) -> tuple[Run, object]:
    """Everything run start does, as named steps; returns the run and the token that makes it current."""
    start_ns = time.time_ns()
    start_mono_ns = time.perf_counter_ns()
    level = settings.telemetry if spec._telemetry is None else spec._telemetry
    parent_run = _context.current_run()
    # The name becomes the folder name, runtel.run.name and the span name: capped and scanned here, once,
    # so a credential in a name never reaches a path, an id or an attribute.
    name = runtime.redactor.redact_text(name[:NAME_MAX_LENGTH])
    run = _new_run(settings, name, start_ns)
    run.start_mono_ns = start_mono_ns
    run._redactor = runtime.redactor  # process-wide: its cache of key verdicts carries over between runs
    env_info = _capture_environment(runtime, settings, level, argv, spec._script_of(argv))
    runtime.ensure_built(name)
    parent_ctx, parent = _find_parent(run, parent_run, settings)
    attributes: dict[str, Any] = {
        semconv.RUN_ID: run.id,
        semconv.RUN_NAME: name,
        semconv.SPAN_KIND: semconv.KIND_RUN,
        semconv.TELEMETRY_LEVEL: level,
    }
    if run.parent_id:
        attributes[semconv.RUN_PARENT_ID] = run.parent_id
    run.record = _initial_record(run, level, parent)
    _record_energy_method(run, runtime.monitor, attributes)
    if level != "off":
        _record_inputs(run, spec, level, argv, env_info, attributes, own_resource=runtime.owns_provider)
    token = _start_span(run, runtime, parent_ctx, attributes)
    if spec._seed is not None and spec._seed is not False:
        with guard("seed", "seed the random number generators"):
            from runtel.recording.seeding import (  # deferred: runtel.recording.seeding (~2 ms)
                record_seed,
                seed_generators,
            )

            record_seed(run, seed_generators(None if spec._seed is True else int(spec._seed)))
    runtime.open_run(run)
    if runtime.monitor is not None:
        with guard("sample-edge", "take the run-start sample"):
            run._start_sample = runtime.monitor.edge_sample()
            run._start_edge = runtime.monitor.edge()  # the counters after the sample: the run's own work
    if spec._output_dir is not None:
        run.add_output_dir(spec._output_dir)
        run.record["output_dir"] = spec._output_dir
    if run.dir is not None and level != "off" and env_info is not None:
        _write_side_files(run, env_info)
    if any(name not in FOLDER_NAMES for name in settings.trackers):
        with guard("trackers", "set up the tracker backends"):
            trackers = writers_for(settings.trackers, settings.dir, settings.env)
            if trackers is not None:
                run.start_trackers(trackers)
    run._write_record(force=True)
    return run, token


def _record_energy_method(run: Run, monitor: Any, attributes: dict[str, Any]) -> None:
    """How energy is obtained, at the start: block spans that carry only ``cpu.time`` rely on its factor.

    A block no sample fell into, in a process without energy counters, records its CPU time only (each
    attribute costs ~1-2 us a span); its estimated energy is that times ``joules_per_cpu_second``, applied by
    readers (:mod:`runtel.query.energy`). The run span carries the factor for OTLP backends too.
    """
    if monitor is None or not monitor.energy_method:
        return
    method = dict(monitor.energy_method)
    jps = monitor.edges.cpu_joules_per_s if monitor.edges is not None else None
    if jps is not None:
        method["joules_per_cpu_second"] = jps
        attributes[semconv.ENERGY_CPU_JOULES_PER_CPU_S] = jps
    run.record["energy_method"] = method


def _new_run(settings: Settings, name: str, start_ns: int) -> Run:
    """A run with a fresh id and, when the run folder is on, its folder (none if it cannot be made).

    A folder that exists already (another run of the same name in the same second drew the same
    suffix, in this process or another) means a new suffix, not a run without a record.
    """
    when = datetime.fromtimestamp(start_ns / 1e9, timezone.utc)
    run_id = new_run_id(name, when)
    run_dir: Path | None = None
    if settings.json_enabled:
        for _attempt in range(_ID_ATTEMPTS):
            run_dir = settings.dir / run_id
            try:
                run_dir.mkdir(parents=True, exist_ok=False, mode=dir_mode())
                os.chmod(run_dir, dir_mode())  # exact, whatever the umask
                break
            except FileExistsError:
                run_id = new_run_id(name, when)
            except OSError as exc:
                log_once(f"mkdir:{settings.dir}", "runtel cannot create the run folder %s (%s); the run goes on "
                         "without a local record", run_dir, exc.strerror or exc)
                run_dir = None
                break
        else:
            log_once(f"mkdir:{settings.dir}", "runtel found %d run folders taken in a row in %s; the run goes on "
                     "without a local record", _ID_ATTEMPTS, settings.dir)
            run_dir = None
    run = Run(name, run_id=run_id, run_dir=run_dir)
    run.start_time_ns = start_ns
    run._settings = settings
    return run


#: fresh suffixes tried before giving up on a run folder (each collides with odds below 1 in 10,000)
_ID_ATTEMPTS = 64


def _capture_environment(runtime: _sdk.Runtime, settings: Settings, level: str, argv: list[str],
                         script: str | None) -> Environment | None:
    """The environment at ``level`` (the first capture of the process is kept on the runtime)."""
    env_info = None
    with guard("environment", "capture the environment"):
        from runtel.environment import collect_environment  # deferred: runtel.environment (~7 ms)

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
            script_path=script,
            redactor=runtime.redactor,
            git_diff_max_bytes=settings.git_diff_max_bytes,
            gpus=gpus,
        )
        if runtime.environment is None:
            runtime.environment = env_info
    return env_info


def _find_parent(run: Run, parent_run: Run | None, settings: Settings) -> tuple[Context | None, ParentRef | None]:
    """The parent: the enclosing run or user span, else a parent process's TRACEPARENT, else a new trace."""
    parent_ctx: Context | None = None
    parent: ParentRef | None = None
    current_span = trace.get_current_span()
    if parent_run is None and not current_span.get_span_context().is_valid:
        with guard("traceparent", "read TRACEPARENT"):
            from runtel.recording.carrier import (  # deferred: runtel.recording.carrier (~0.7 ms)
                PARENT_RUN_ENV,
                extract_parent_context,
            )

            parent_ctx = extract_parent_context(settings.env)
            remote = trace.get_current_span(parent_ctx).get_span_context()
            if remote.is_valid:
                parent = {"trace_id": format(remote.trace_id, "032x"), "span_id": format(remote.span_id, "016x"),
                          "run_id": settings.env.get(PARENT_RUN_ENV) or None}
            else:
                parent_ctx = None
    if parent_run is not None:
        run.parent_id = parent_run.id or None
        parent = {"run_id": parent_run.id, "trace_id": parent_run.trace_id, "span_id": parent_run.span_id}
    elif parent is not None:
        run.parent_id = parent.get("run_id")
    return parent_ctx, parent


def _initial_record(run: Run, level: str, parent: ParentRef | None) -> RunRecord:
    """The record every run has, whatever its telemetry level."""
    record: RunRecord = {
        "schema": RECORD_SCHEMA,
        "id": run.id,
        "name": run.name,
        "status": STATUS_RUNNING,
        "start_time": iso_from_ns(run.start_time_ns),
        "start_time_unix_nano": str(run.start_time_ns),
        "end_time": None,
        "duration_s": None,
        "parent": parent,
        "telemetry": level,
        "runtel_version": __version__,
        "tags": {},
        "config": None,
        "attributes": {},
        "seed": None,
    }
    proc: ProcessInfo = {"pid": os.getpid()}
    with guard("process-identity", "identify the process"):
        proc["create_time"] = _process_create_time()
    if level == "full":
        proc["host"] = socket.gethostname()
    record["process"] = proc
    return record


def _record_inputs(run: Run, spec: RunSpan, level: str, argv: list[str], env_info: Environment | None,
                   attributes: dict[str, Any], *, own_resource: bool) -> None:
    """Tags, config, attributes, argv and environment into the record and the span's start attributes."""
    record = run.record
    tags = dict(spec._tags)
    record["tags"] = tags
    attributes.update({semconv.TAG_PREFIX + k: v for k, v in tags.items()})
    with guard("config", "record the config"):
        if spec._config is not None:
            config_attributes, record["config"] = run.convert(spec._config, prefix="config")
            attributes.update(config_attributes)
    with guard("attributes", "record run attributes"):
        if spec._attributes:
            user_attributes, record["attributes"] = run.convert(spec._attributes, prefix="")
            attributes.update(user_attributes)
    redactor = run._redactor
    record["argv"] = (redactor.redact_argv(argv) if redactor is not None else argv) if level == "full" else None
    notebook = notebook_path(argv, run._settings.env if run._settings is not None else os.environ)
    if notebook and level == "full":
        record["notebook"] = redactor.redact_text(notebook) if redactor is not None else notebook
    if env_info is not None:
        _record_reproduction(run, record, run._settings.env if run._settings is not None else os.environ)
        attributes.update(env_info.span)
        record["environment"] = env_info.record
        if not own_resource:  # the application's Resource is kept; carry ours on the span
            attributes.update(env_info.resource)
        if level == "minimal":
            record["argv"] = env_info.record.get("argv", record["argv"])


def _record_reproduction(run: Run, record: RunRecord, env: Mapping[str, str]) -> None:
    """A `runtel reproduce` re-run: the run it reproduces, and its command line as run in the repository."""
    # deferred: runtel.environment, already imported by the capture that made env_info (~0 ms here)
    from runtel.environment.worktree import OF_ENV, relocation

    of = env.get(OF_ENV)
    if of:
        record["reproduces"] = run._redactor.redact_text(of) if run._redactor is not None else of
    moved = relocation(env)
    if moved is not None and record.get("argv"):
        record["argv"] = moved.argv(record.get("argv") or [])


def _start_span(run: Run, runtime: _sdk.Runtime, parent_ctx: Context | None, attributes: dict[str, Any]) -> object:
    """Start the run span and make the run current; returns the context token to detach at the end."""
    span = runtime.tracer.start_span(
        run.name, context=parent_ctx, kind=trace.SpanKind.INTERNAL, attributes=attributes, start_time=run.start_time_ns
    )
    sc = span.get_span_context()
    run._span = span
    run.trace_id = format(sc.trace_id, "032x")
    run.span_id = format(sc.span_id, "016x")
    run.record["trace_id"] = run.trace_id
    run.record["span_id"] = run.span_id
    return otel_context.attach(_context.with_run(run, trace.set_span_in_context(span)))



def _write_side_files(run: Run, env_info: Environment) -> None:
    """git.diff and reproduce.sh next to run.json (on a full disk: the one report, and the run goes on)."""
    assert run.dir is not None
    if env_info.git_diff:
        with guard("git-diff", "save git.diff"):
            try:
                write_new_file(run.dir / GIT_DIFF_FILE, env_info.git_diff)
                run.record["git_diff_file"] = GIT_DIFF_FILE
            except OSError as exc:
                report_write_error(run.dir / GIT_DIFF_FILE, exc, "git.diff")
    if run.record.get("telemetry") != "full":
        return
    with guard("reproduce", "write reproduce.sh"):
        try:
            write_new_file(run.dir / REPRODUCE_FILE, _reproduce_script(run, env_info), mode=file_mode(executable=True))
            run.record["reproduce"] = REPRODUCE_FILE
        except OSError as exc:
            report_write_error(run.dir / REPRODUCE_FILE, exc, "reproduce.sh")


# The last reproduce.sh text: (key, text, run id in it). Back-to-back runs of a process share everything in
# the script but the run id in its header, and rendering it (quoting each variable) is ~40 us.
_last_reproduce: list[Any] = [None, "", ""]


def _reproduce_script(run: Run, env_info: Environment) -> str:
    """reproduce.sh for ``run`` (``env_info`` is the process's environment capture, reused between runs)."""
    argv = run.record.get("argv") or []  # at telemetry "full": the command line as recorded, already redacted
    # as recorded: a `runtel reproduce` re-run's worktree stands for its repository (runtel.environment.worktree)
    cwd = str((env_info.record.get("process") or {}).get("cwd") or os.getcwd())
    seed = run.record.get("seed")
    runs_root = os.path.dirname(os.path.abspath(run.dir)) if run.dir is not None else None
    key = (env_info, tuple(argv), cwd, sys.executable, seed, runs_root)
    last_key, last_text, last_id = _last_reproduce
    if last_key is not None and last_key[0] is env_info and last_key[1:] == key[1:]:
        return str(last_text).replace(last_id, run.id, 1)  # the header's run id comes before any argv or path
    from runtel.rundir.reproduce import render_reproduce_script  # deferred: runtel.rundir.reproduce (~2 ms)

    git_record = env_info.record.get("git") or {}
    script = render_reproduce_script(
        argv=argv,
        cwd=cwd,
        python_executable=sys.executable,
        git=git_record.get("script") or git_record.get("cwd"),
        env={k: v for k, v in (env_info.record.get("env") or {}).items() if isinstance(v, str)},
        run_id=run.id,
        seed=seed if isinstance(seed, int) else None,
        diff_text=env_info.git_diff,
        runs_root=runs_root,
    )
    _last_reproduce[:] = [key, script, run.id]
    return script


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
        tags: ``{"key": "value"}``, ``["key=value", "flag"]`` or one ``"key=value"``; span attributes
            ``runtel.tag.*``.
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


def _program_name(argv0: str) -> str:
    """A run's default name from ``sys.argv[0]``: the script's stem, or the package of ``python -m package``
    (whose ``argv[0]`` is ``.../package/__main__.py``)."""
    path = Path(argv0)
    if path.stem == "__main__" and path.parent.name:
        return path.parent.name
    return path.stem
