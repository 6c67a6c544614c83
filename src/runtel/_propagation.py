"""The run follows the work: OpenTelemetry context into threads, trace context into child processes.

Installed once, when the process's first run opens (``Runtime.open_run``); turned off with
``RUNTEL_PROPAGATE=false``. Base level: imports only OpenTelemetry and ``runtel._context``.

**Threads.** ``threading.Thread.start`` captures the starting thread's OTel context (which holds the
run, see ``_context``) and the new thread runs its ``run()`` inside it; ``ThreadPoolExecutor.submit``
runs each task in the submitter's context (so ``loop.run_in_executor`` does too; ``asyncio.to_thread``
already copies it). This is what ``opentelemetry-instrumentation-threading`` patches, written here in
~40 lines instead of depending on it: that package pins ``opentelemetry-instrumentation==<its
version>``, which pins ``opentelemetry-semantic-conventions`` one beta behind the SDK (installing
0.66b1 next to SDK 1.45.2 made pip *downgrade* ``opentelemetry-api``), pulls in ``wrapt``, and its
import took ~230 ms cold here, against a run start budgeted in milliseconds. Unlike its
``Thread.run`` wrapper, the instance-level wrap below also covers subclasses that override ``run``.
Threads runtel or the OTel SDK start for themselves (names ``runtel-*``, ``Otel*``) are left alone.

**Child processes.** While a run is open, ``os.environ`` carries the environment carrier of the
*process run* (:func:`process_run`): ``TRACEPARENT`` (its run span), ``TRACESTATE``, ``BAGGAGE``,
``RUNTEL_PARENT_RUN_ID`` and ``RUNTEL_DIR``. Every way of starting a child inherits it (``subprocess``,
``os.exec*``, ``os.posix_spawn``, multiprocessing spawn, loky); the values that were there before (a
run of this process that itself is a child) are put back when the last run closes. Setting
``os.environ`` races a ``fork`` in another thread only in the instant a run opens or closes.
``multiprocessing`` processes started with spawn, forkserver or loky also get their target wrapped
(:func:`install_processes`): the child opens a *worker run* in the parent's trace before the target
runs, under the span current at ``start()`` (a forkserver child inherits the server's stale
environment, so the environment alone would not do).

``subprocess`` children (``Popen``, ``run``, asyncio's subprocesses) started inside a block get the
*current* span instead: the ``Popen`` patch below hands the child a copy of the environment with its
``TRACEPARENT`` (:func:`_env_for_child`), so a child's run hangs under the block that started it; ``os.exec*``,
``os.system`` and ``os.posix_spawn`` children inherit ``os.environ`` as it is (the process run's span).

**Child starts.** The same ``BaseProcess.start`` patch, one of ``multiprocessing.util.spawnv_passfds`` (the
fork server and the resource tracker: a forkserver pool's workers are the server's children, so its CPU
holds theirs once it reaps them) and one of ``subprocess.Popen.__init__`` tell the runtime each child's pid
as it starts (:data:`child_started`), with or without propagation, so the block edges count a worker from the
first block after its start rather than from the sampler's next tick.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from runtel._context import CPU_METER_KEY, current_run
from runtel._internals import (
    environ_bytes,
    process_start_method,
    process_target,
    set_process_target,
    signal_friendly_get,
)

__all__ = ("CARRIER_KEYS", "PARENT_RUN_ENV", "WORKER_NAME_ENV", "WorkerTarget", "child_context", "child_started",
           "install_processes", "install_threads", "set_process_carrier", "w3c_propagator")

PARENT_RUN_ENV = "RUNTEL_PARENT_RUN_ID"


#: the variables a run puts into the process environment for its children
CARRIER_KEYS = ("TRACEPARENT", "TRACESTATE", "BAGGAGE", PARENT_RUN_ENV, "RUNTEL_DIR")


_threads_installed = False


#: False while the runtime's settings say ``propagate=false`` (the patches, once made, stay in place)
active = True


_OWN_THREADS = ("runtel", "Otel")


def install_threads() -> None:
    """Patch ``Thread.start`` and ``ThreadPoolExecutor.submit`` to carry the OTel context (idempotent)."""
    global _threads_installed
    if _threads_installed:
        return
    _threads_installed = True
    original_start = threading.Thread.start
    original_submit: Any = concurrent.futures.ThreadPoolExecutor.submit

    @functools.wraps(original_start)
    def start(self: threading.Thread) -> None:
        ctx = otel_context.get_current()
        if active and ctx and not self.name.startswith(_OWN_THREADS):
            self.run = functools.partial(_run_thread, self, ctx, self.run)  # type: ignore[method-assign]
        original_start(self)

    @functools.wraps(original_submit)
    def submit(self: concurrent.futures.ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> Any:
        if not active:
            return original_submit(self, fn, *args, **kwargs)
        # Always wrapped, even in an empty context: a pool thread keeps the context it was started in,
        # and a task submitted after that run closed must not run inside it.
        return original_submit(self, functools.partial(_call_in, otel_context.get_current(), fn), *args, **kwargs)

    threading.Thread.start = start  # type: ignore[method-assign]
    concurrent.futures.ThreadPoolExecutor.submit = submit  # type: ignore[method-assign,assignment]


def _run_thread(thread: threading.Thread, ctx: otel_context.Context, run: Callable[[], None]) -> None:
    token = otel_context.attach(ctx)
    try:
        run()
    finally:
        otel_context.detach(token)
        thread.__dict__.pop("run", None)  # drop the reference cycle thread -> partial -> thread


def _call_in(ctx: otel_context.Context, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    token = otel_context.attach(ctx)
    meter: Any = ctx.get(CPU_METER_KEY)  # a request's work handed to a pool thread counts for the request
    start = time.thread_time_ns() if meter is not None else 0
    try:
        return fn(*args, **kwargs)
    finally:
        if meter is not None:
            meter.add(time.thread_time_ns() - start)
        otel_context.detach(token)


# --- the environment carrier --------------------------------------------------------------------
def w3c_propagator() -> Any:
    """W3C trace context + baggage, the formats TRACEPARENT/TRACESTATE/BAGGAGE carry.

    Used directly rather than through ``opentelemetry.propagate`` (whose import scans entry points,
    ~8 ms at a run's start); the environment carrier is defined for exactly these W3C fields.
    """
    # deferred: the W3C propagators, only when TRACEPARENT/BAGGAGE is set (~4 ms)
    from opentelemetry.baggage.propagation import W3CBaggagePropagator

    # deferred: the W3C propagators, only when TRACEPARENT/BAGGAGE is set (~0.7 ms)
    from opentelemetry.propagators.composite import CompositePropagator

    # deferred: the W3C propagators, only when TRACEPARENT/BAGGAGE is set (~0.9 ms)
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


def carrier_for(run: Any) -> dict[str, str]:
    """The environment variables that make a child process a child of ``run`` (its run span)."""
    out: dict[str, str] = {}
    span = getattr(run, "span", None)
    sc = span.get_span_context() if span is not None else None
    if sc is not None and sc.is_valid:
        # The W3C traceparent of the run span itself, written out rather than through the propagator
        # (whose import is ~5 ms at a first run); a context holding only a span carries no baggage.
        out["TRACEPARENT"] = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
        state = sc.trace_state.to_header() if sc.trace_state else ""
        if state:
            out["TRACESTATE"] = state
    if run.id:
        out[PARENT_RUN_ENV] = run.id
    if run.dir is not None:
        out["RUNTEL_DIR"] = _resolved(run.dir.parent)
    return out


_resolved_roots: dict[Any, str] = {}


def _resolved(root: Any) -> str:
    """``str(root.resolve())``, remembered: back-to-back runs share their root, and resolving it is a
    system call per path component (~15 us of a ~0.3 ms warm run)."""
    text = _resolved_roots.get(root)
    if text is None:
        if len(_resolved_roots) > 64:
            _resolved_roots.clear()
        text = _resolved_roots[root] = str(root.resolve())
    return text


#: the values of CARRIER_KEYS before runtel first set them (restored when no run is open)
_saved_env: dict[str, str | None] | None = None


_env_lock = threading.Lock()


def set_process_carrier(run: Any) -> None:
    """Make ``os.environ`` carry ``run`` to child processes; ``None``: put back what was there before."""
    global _saved_env
    with _env_lock:
        if run is None:
            if _saved_env is not None:
                _apply(_saved_env)
                _saved_env = None
            return
        values = carrier_for(run)
        if _saved_env is None:
            _saved_env = {k: os.environ.get(k) for k in CARRIER_KEYS}
        _apply({k: values.get(k) for k in CARRIER_KEYS})


def _apply(values: Mapping[str, str | None]) -> None:
    environ = os.environ
    for key, value in values.items():
        if value is None:
            if key in environ:
                del environ[key]
        elif environ.get(key) != value:
            environ[key] = value


def after_fork_in_child() -> None:
    """A forked child keeps the inherited carrier (its work belongs to the parent's run)."""
    global _env_lock
    _env_lock = threading.Lock()


# --- multiprocessing children ---------------------------------------------------------------------
#: the worker-run name a spawned worker's run is given (read by ``recording.workers.init_worker``)
WORKER_NAME_ENV = "RUNTEL_WORKER_NAME"


_processes_installed = False
_popen_installed = False


_sources: list[Any] = [dict, lambda: None]


#: told the pid of every child process started through ``multiprocessing`` or ``subprocess`` (set by the runtime)
child_started: list[Callable[[int], None]] = []


def _tell_started(pid: object) -> None:
    if type(pid) is int and child_started:
        try:
            child_started[0](pid)
        except Exception:  # a child's start is never made to fail by telemetry
            pass


def install_processes(settings_env: Callable[[], Mapping[str, str]], process_run: Callable[[], Any]) -> None:
    """Patch ``multiprocessing``'s ``BaseProcess.start`` so spawned workers open a worker run (idempotent).

    A process started with *spawn*, *forkserver* or *loky* (``Pool``, ``ProcessPoolExecutor``,
    ``joblib``, a DataLoader with a spawn context) gets its target wrapped in :class:`WorkerTarget`,
    which carries the context of the span current at ``start()`` (else the process run) and calls
    ``runtel.init_worker`` in the child before the target. *fork* children are left alone: they
    inherit the run and the runtime, and write their spans synchronously (``Runtime.after_fork``).
    ``settings_env`` gives the non-default settings to pass on; ``process_run`` the process run (the
    latest call's pair is used: a new runtime replaces the old one's).

    Only once the application has imported ``multiprocessing`` (every run start and end checks again):
    importing it for a job that starts no process would cost ~5 ms of its first run.
    """
    global _processes_installed
    _sources[:] = [settings_env, process_run]
    _install_popen()
    if _processes_installed or "multiprocessing.process" not in sys.modules:
        return
    _processes_installed = True
    from multiprocessing import get_start_method  # loaded already (checked above)
    from multiprocessing.process import BaseProcess  # loaded already (checked above)

    original_start = BaseProcess.start

    @functools.wraps(original_start)
    def start(self: BaseProcess) -> None:
        target = process_target(self)
        if active and target is not None and not isinstance(target, WorkerTarget):
            try:
                method = process_start_method(self) or get_start_method()
                if method != "fork":
                    carrier = child_context(_sources[0](), _sources[1]())
                    if carrier is not None:
                        set_process_target(self, WorkerTarget(carrier, target))
            except Exception:  # never stop the user's process from starting
                pass
        original_start(self)
        _tell_started(self.pid)

    BaseProcess.start = start  # type: ignore[method-assign]

    from multiprocessing import util  # loaded already (by multiprocessing.process)

    original_spawn = util.spawnv_passfds

    @functools.wraps(original_spawn)
    def spawnv_passfds(path: Any, args: Any, passfds: Any) -> int:
        pid: int = original_spawn(path, args, passfds)
        _tell_started(pid)  # the fork server and the resource tracker, which Process.start never sees
        return pid

    util.spawnv_passfds = spawnv_passfds


def _install_popen() -> None:
    """Patch ``subprocess.Popen.__init__`` to tell :data:`child_started` (idempotent)."""
    global _popen_installed
    if _popen_installed:
        return
    _popen_installed = True
    import subprocess  # loaded already by runtel's environment capture (git)

    original_init = subprocess.Popen.__init__

    @functools.wraps(original_init)
    def init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        if active and len(args) <= _POPEN_ENV_INDEX:
            try:
                env = _env_for_child(kwargs.get("env"))
                if env is not None:
                    kwargs["env"] = env
            except Exception:  # never stop the user's process from starting
                pass
        original_init(self, *args, **kwargs)
        _tell_started(self.pid)

    subprocess.Popen.__init__ = init  # type: ignore[method-assign]


#: ``env``'s position in ``Popen(args, bufsize, executable, stdin, stdout, stderr, preexec_fn, close_fds,
#: shell, cwd, env, ...)``: a call passing it positionally is left as it is
_POPEN_ENV_INDEX = 10


def _env_for_child(env: Mapping[str, str] | None) -> dict[Any, Any] | None:
    """The environment a ``subprocess`` child gets so that its run hangs under the span current now.

    ``os.environ`` carries the process run's span (:func:`set_process_carrier`), set when runs open and
    close; a child started inside a block belongs under that block, as a multiprocessing worker does. So
    when the current span is another one, the child gets a copy of its environment with the current span's
    ``TRACEPARENT`` (and the current run's id and root). An ``env`` the caller built is changed only where it
    still holds the process carrier's own values (a copy of ``os.environ``), never where the caller set its own;
    the caller's mapping is not modified. None: nothing to change.
    """
    run = current_run()
    span = trace.get_current_span()
    sc = span.get_span_context()
    if run is None or not sc.is_valid or getattr(run, "span", None) is span:
        return None
    carrier = carrier_for(run)
    carrier["TRACEPARENT"] = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
    state = sc.trace_state.to_header() if sc.trace_state else ""
    if state:
        carrier["TRACESTATE"] = state
    else:
        carrier.pop("TRACESTATE", None)
    environ = os.environ
    base = environ if env is None else env
    inherited = environ.get("TRACEPARENT")
    if inherited is None or base.get("TRACEPARENT") != inherited:
        return None  # no carrier to follow (propagation off, no run's carrier) or the caller's own context
    if all(base.get(k) == v for k, v in carrier.items()):
        return None
    drop_state = "TRACESTATE" not in carrier and base.get("TRACESTATE") == environ.get("TRACESTATE")
    raw: dict[Any, Any] | None = environ_bytes() if env is None else None
    if raw is not None:
        # the environment as bytes, copied in C (~0.3 us against ~22 us for dict(os.environ) hot and ~80 us
        # beside a program's other work); Popen takes bytes keys and values on POSIX as they are
        for key, value in carrier.items():
            raw[os.fsencode(key)] = os.fsencode(value)
        if drop_state:
            raw.pop(b"TRACESTATE", None)
        return raw
    out = dict(base)
    out.update(carrier)
    if drop_state:
        out.pop("TRACESTATE", None)  # the run span's state does not belong to the current span
    return out


def child_context(settings: Mapping[str, str], process_run: Any) -> dict[str, str] | None:
    """The environment a worker needs to record into the current run (None: no run to record into)."""
    run = current_run()
    ctx: otel_context.Context | None = None
    if run is None:
        run = process_run
        if run is None or getattr(run, "span", None) is None:
            return None
        ctx = trace.set_span_in_context(run.span)
    out = dict(settings)
    carrier: dict[str, str] = {}
    w3c_propagator().inject(carrier, context=ctx)
    out.update({k.upper(): v for k, v in carrier.items()})
    if run.id:
        out[PARENT_RUN_ENV] = run.id
    if run.dir is not None:
        out["RUNTEL_DIR"] = str(run.dir.parent.resolve())
    out[WORKER_NAME_ENV] = f"{run.name}.worker" if run.name else "worker"
    return out


class WorkerTarget:
    """A process target that first makes the worker record into its parent's run (picklable)."""

    def __init__(self, context: dict[str, str], target: Callable[..., Any]) -> None:
        self.context = context
        self.target = target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # The recording side opens the worker run; this base module cannot import it (it is above),
        # so it is looked up by name here, in the child, where it is needed.
        import importlib

        try:
            importlib.import_module("runtel.recording.workers").init_worker(self.context)
        except Exception:  # the worker's own work goes on without telemetry
            pass
        pool = sys.modules.get("multiprocessing.pool")
        if args and pool is not None and self.target is getattr(pool, "worker", None):
            # A pool worker now has runtel's SIGTERM handler: its waits for the next task must let it run
            # (see _internals.signal_friendly_get: Pool.terminate() could hang on a lost SIGTERM).
            get = signal_friendly_get(args[0])
            if get is not None:
                args[0].get = get
        return self.target(*args, **kwargs)
