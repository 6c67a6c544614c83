"""Worker processes: a picklable context for pools, and the initializer that records a worker's run.

The side effects of running a worker live here and only here: :func:`init_worker` writes the
parent's context into ``os.environ``, opens a worker run, registers an exit hook and (if the worker
had none) a SIGTERM handler that flushes before the worker dies. The context itself travels in the
environment carrier of ``carrier``.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from runtel import _context, _sdk
from runtel._guard import guard
from runtel._internals import in_multiprocessing_exit
from runtel._propagation import WORKER_NAME_ENV
from runtel.config import settings_env
from runtel.recording.carrier import PARENT_RUN_ENV, inject_env

__all__ = ("WORKER_NAME_ENV", "child_runtime", "close_worker_run", "init_worker", "worker_context")

_CONTEXT_KEYS = ("TRACEPARENT", "TRACESTATE", "BAGGAGE", PARENT_RUN_ENV, WORKER_NAME_ENV)


_worker_state: dict[str, Any] = {}


def worker_context(name: str | None = None) -> dict[str, str]:
    """A small, picklable snapshot of the trace context and settings for worker processes.

    Pass it to :func:`init_worker` (a ``multiprocessing`` pool initializer). It holds
    ``TRACEPARENT``/``TRACESTATE``, ``RUNTEL_PARENT_RUN_ID``, ``RUNTEL_DIR``, the name for spawned
    workers' runs (``name`` or ``<run name>.worker``) and the non-default settings.

    Example:
        >>> import multiprocessing, runtel
        >>> with runtel.run_span("prep") as run:  # doctest: +SKIP
        ...     ctx = multiprocessing.get_context("spawn")
        ...     with ctx.Pool(4, initializer=runtel.init_worker, initargs=(runtel.worker_context(),)) as pool:
        ...         pool.map(work, items)
    """
    out = settings_env(_sdk.settings())
    env = inject_env({})
    out.update({k: v for k, v in env.items() if k in _CONTEXT_KEYS or k == "RUNTEL_DIR"})
    run = _context.current_run()
    worker_name = name or (f"{run.name}.worker" if run is not None and run.name else "worker")
    out[WORKER_NAME_ENV] = worker_name
    return out


def init_worker(context: Mapping[str, str] | int | None = None, *, name: str | None = None) -> None:
    """Make a worker process record into its parent's trace; use as a ``multiprocessing`` initializer.

    Since runs follow the work (``RUNTEL_PROPAGATE``, see docs/threads-and-processes.md) pools need
    not call it: runtel does the same for every spawned process. It stays for explicit control, and
    as a torch DataLoader ``worker_init_fn`` (which passes the worker's int id: ignored).

    * **fork**: the worker inherited the open run (its blocks are already children of the parent's
      spans and go to the parent's run folder); this only makes sure its batched spans are written
      before the worker exits (``multiprocessing`` workers leave through ``os._exit``, skipping atexit).
    * **spawn / forkserver**: the worker starts afresh; the ``context`` from :func:`worker_context`
      (taken in the parent) is applied and a *worker run* is opened — its own run folder, a child of
      the parent's run, in the same trace — and closed when the worker exits.

    * **a plain child** (``subprocess``, ``os.exec*``; no ``context``, no runtel runtime yet, but
      ``RUNTEL_PARENT_RUN_ID`` in the environment): the environment already carries the parent's
      context, and the worker run is opened from it — what :func:`child_runtime` does by itself at
      the child's first span; call it first thing where plain OpenTelemetry spans come before any.

    In every case a SIGTERM (``Pool.terminate()``, which ``with Pool(...)`` calls) still flushes and
    closes, if the worker had no SIGTERM handler of its own. Calling it twice is harmless. Never
    raises. For a plain ``multiprocessing.Process`` call it first thing in the target function.

    Example:
        >>> pool = multiprocessing.get_context("spawn").Pool(  # doctest: +SKIP
        ...     2, initializer=runtel.init_worker, initargs=(runtel.worker_context(),))
    """
    if not isinstance(context, Mapping):
        context = None  # a DataLoader worker id, or nothing
    if _worker_state.get("pid") == os.getpid():
        return
    if context is None and _sdk.current_runtime() is None and os.environ.get(PARENT_RUN_ENV):
        context = {}  # a fresh process started from inside a run: its environment carries the run already
    # Pool.terminate() may send SIGTERM while the worker is still starting: held back until the worker
    # run is open and the handler that closes it is installed, so a terminated worker never leaves a
    # half-open run (status "running" forever) behind.
    blocked = _block_sigterm()
    try:
        with guard("init-worker", "set up a worker process"):
            batched = _worker_state.get("batched")
            _worker_state.clear()
            _worker_state["pid"] = os.getpid()
            _worker_state["batched"] = batched
            if _context.current_run() is None and context is not None:
                for key, value in context.items():
                    os.environ[key] = value
                runtime = _sdk.current_runtime()
                if context and (runtime is None or not runtime.open_runs):
                    _sdk.configure()  # settings from the (now updated) environment
                from runtel.recording.lifecycle import run_span  # deferred: runtel.recording.lifecycle (~4 ms)

                # Named after the parent run for pool workers (WORKER_NAME_ENV), else after the child's program.
                spec = run_span(name or context.get(WORKER_NAME_ENV) or os.environ.get(WORKER_NAME_ENV) or None,
                                telemetry="minimal")
                spec.__enter__()
                _worker_state["run"] = spec
                runtime = _sdk.current_runtime()
                if runtime is not None and not _worker_state.get("batched"):
                    # workers leave through os._exit or SIGKILL: each span on disk as it ends
                    runtime.write_spans_synchronously(retire=True)
            _register_exit()
    finally:
        if blocked:
            _unblock_sigterm()  # a SIGTERM that came meanwhile is delivered now, to the handler


_auto_lock = threading.Lock()


def child_runtime(*, batched: bool = False) -> Any:
    """The runtime of a process started from inside a run, its worker run opened now; None for any other.

    Called where a block, traced call or request span starts while this process has no runtime yet:
    a child started by ``subprocess``/``os.exec*`` from inside a run (``RUNTEL_PARENT_RUN_ID`` in its
    environment) that records without opening a run of its own gets a *worker run* — a child of the
    parent run, in its trace, named after the child's program, its spans written as they end — the
    same one :func:`init_worker` opens. Cheap when there is nothing to do: one environment lookup.

    ``batched``: keep the batched span writer (a server opening it for its requests: a line per span
    in the event loop would cost ~30% of a small request's CPU); its journal still puts every span on
    disk as it ends, as in any runtel process.
    """
    if not os.environ.get(PARENT_RUN_ENV) or _worker_state.get("pid") == os.getpid():
        return _sdk.current_runtime()
    with _auto_lock:
        if _sdk.current_runtime() is None:
            settings = _sdk.settings()
            if settings.disabled or not settings.propagate:
                return None
            # Opened in a context of its own, kept for its close: the caller may be a task or thread whose
            # context is gone by the time the worker run closes (at exit, or when a server shuts down).
            own = contextvars.Context()
            _worker_state["batched"] = batched
            own.run(init_worker)
            _worker_state["context"] = own
            spec = _worker_state.get("run")
            run = own.run(_context.current_run) if spec is not None else None
            if run is not None and getattr(run, "span", None) is not None:
                # The caller's context (and what it starts from now: threads, tasks) is inside the run, so
                # its spans are in the parent's trace; never detached, like the run itself until exit.
                otel_context.attach(_context.with_run(run, trace.set_span_in_context(run.span)))
    runtime = _sdk.current_runtime()
    return runtime if runtime is not None and runtime.open_runs else None


def close_worker_run() -> None:
    """Close this process's worker run now (a server that shut down); spans after it are counted, not kept."""
    _worker_exit()


def _before_configure() -> None:
    """``runtel.configure()`` after the automatic worker run opened: close it (the next span opens a new
    one with the new settings) rather than let configure raise because a run is open."""
    if _worker_state.get("context") is not None and _worker_state.get("pid") == os.getpid():
        _worker_exit()
        _worker_state.clear()


_sdk.before_configure(_before_configure)


def _block_sigterm() -> bool:
    """Hold SIGTERM back in this (main) thread; False where that is not possible."""
    import signal  # deferred: signal (~0.4 ms)

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        return False
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    except (OSError, ValueError):
        return False
    return signal.SIGTERM not in before  # already blocked by the application: leave it so


def _unblock_sigterm() -> None:
    import signal  # deferred: signal (~0.4 ms)

    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    except (OSError, ValueError):
        pass


def _register_exit() -> None:
    """Flush (and close the worker run) when the worker exits normally or on SIGTERM."""
    import multiprocessing.util  # deferred: multiprocessing, only in worker processes (~8 ms)
    import signal  # deferred: signal (~0.4 ms)

    multiprocessing.util.Finalize(None, _worker_exit, exitpriority=100)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:

        def on_term(signum: int, frame: object) -> None:
            if _worker_state.get("exiting") or in_multiprocessing_exit(frame):
                return  # already on the way out (Pool.terminate races a normal exit): let the finalizers finish
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills as usual
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_term)


def _worker_exit() -> None:
    _worker_state["exiting"] = True
    spec = _worker_state.pop("run", None)
    if spec is not None and _worker_state.get("pid") == os.getpid():
        with guard("worker-run-close", "close the worker run"):
            own = _worker_state.get("context")
            if own is not None:
                own.run(spec.__exit__, None, None, None)
            else:
                spec.__exit__(None, None, None)
    _sdk.flush()
