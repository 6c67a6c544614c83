"""Trace context across processes through environment variables (``TRACEPARENT``/``TRACESTATE``).

Implements the OpenTelemetry environment-variable carrier: W3C keys upper-cased and normalised to
``[A-Z0-9_]``. A parent injects into a *copy* of its environment for each child; the child's first
run extracts it and joins the trace. ``RUNTEL_PARENT_RUN_ID`` travels with it so the child's run
record names its parent run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter

__all__ = (
    "PARENT_RUN_ENV",
    "WORKER_NAME_ENV",
    "extract_parent_context",
    "flush",
    "init_worker",
    "inject_env",
    "settings_env",
    "worker_context",
)

PARENT_RUN_ENV = "RUNTEL_PARENT_RUN_ID"
_INVALID = re.compile(r"[^A-Z0-9_]")


def _normalize(key: str) -> str:
    name = _INVALID.sub("_", key.upper()) or "_"
    return "_" + name if name[0].isdigit() else name


class _EnvGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(_normalize(key))
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return [k for k in carrier if _normalize(k) == k]


class _EnvSetter(Setter[MutableMapping[str, str]]):
    def set(self, carrier: MutableMapping[str, str], key: str, value: str) -> None:
        carrier[_normalize(key)] = value


def _w3c() -> Any:
    """W3C trace context + baggage, the formats TRACEPARENT/TRACESTATE/BAGGAGE carry.

    Used directly rather than through ``opentelemetry.propagate`` (whose import scans entry points,
    ~8 ms at a run's start); the environment carrier is defined for exactly these W3C fields.
    """
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


def extract_parent_context(env: Mapping[str, str]) -> Context:
    """The context found in ``TRACEPARENT``/``TRACESTATE``/``BAGGAGE`` of ``env`` (empty if none)."""
    if "TRACEPARENT" not in env and "BAGGAGE" not in env:
        return Context()  # nothing to extract (TRACESTATE means nothing alone): skip importing the propagators
    return _w3c().extract(env, getter=_EnvGetter())  # type: ignore[no-any-return]


def inject_env(env: Mapping[str, str] | None = None, *, context: Context | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) carrying the current trace context to a child process.

    Example:
        >>> import subprocess, runtel
        >>> with runtel.run_span("parent"):
        ...     subprocess.run(["python", "child.py"], env=runtel.inject_env())  # doctest: +SKIP

    A child that uses runtel then records its run inside this trace, and its run record names this
    run as its parent. Old ``TRACEPARENT``/``TRACESTATE`` values in ``env`` are replaced.
    """
    out: dict[str, Any] = dict(os.environ if env is None else env)
    for key in ("TRACEPARENT", "TRACESTATE", "BAGGAGE"):
        out.pop(key, None)
    span_context = trace.get_current_span(context).get_span_context()
    if span_context.is_valid:
        _w3c().inject(out, context=context, setter=_EnvSetter())
    from runtel.runs import current_run

    run = current_run()
    if run is not None and run.id:
        out[PARENT_RUN_ENV] = run.id
        if run.dir is not None:
            # Children record next to the parent's run even if they change directory.
            if env is None:
                out["RUNTEL_DIR"] = str(run.dir.parent.resolve())
            else:
                out.setdefault("RUNTEL_DIR", str(run.dir.parent.resolve()))
    return out


# --- worker processes (multiprocessing, spawn and fork) -------------------------------------------

#: a spawned worker's run is named after this (set by :func:`worker_context`)
WORKER_NAME_ENV = "RUNTEL_WORKER_NAME"
_CONTEXT_KEYS = ("TRACEPARENT", "TRACESTATE", "BAGGAGE", PARENT_RUN_ENV, WORKER_NAME_ENV)
_worker_state: dict[str, Any] = {}


def settings_env(settings: Any = None) -> dict[str, str]:
    """Environment variables that reproduce the resolved settings (default: this process's) in a child.

    Only settings that differ from their defaults are included. Used by :func:`worker_context` so a
    spawned worker writes where, and how, its parent does even when the parent used ``configure()``.

    Example:
        >>> from runtel.propagation import settings_env
        >>> runtel.configure(sampling=False)  # doctest: +SKIP
        >>> settings_env()["RUNTEL_SAMPLING"]  # doctest: +SKIP
        'false'
    """
    from pathlib import PurePath

    from runtel import _sdk
    from runtel.config import PARAMS, Settings

    current = _sdk.settings() if settings is None else settings
    defaults = Settings()
    out: dict[str, str] = {}
    for name, param in PARAMS.items():
        value = getattr(current, name, None)
        if value is None or value == getattr(defaults, name, None) or not param.env:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (tuple, list)):
            text = ",".join(str(v) for v in value) or ("none" if name == "exporters" else "")
        elif isinstance(value, PurePath):
            text = str(value)
        else:
            text = str(value)
        if text:
            out[param.env[0]] = text
    return out


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
    from runtel.runs import current_run

    out = settings_env()
    env = inject_env({})
    out.update({k: v for k, v in env.items() if k in _CONTEXT_KEYS or k == "RUNTEL_DIR"})
    run = current_run()
    worker_name = name or (f"{run.name}.worker" if run is not None and run.name else "worker")
    out[WORKER_NAME_ENV] = worker_name
    return out


def init_worker(context: Mapping[str, str] | None = None, *, name: str | None = None) -> None:
    """Make a worker process record into its parent's trace; use as a ``multiprocessing`` initializer.

    * **fork**: the worker inherited the open run (its blocks are already children of the parent's
      spans and go to the parent's run folder); this only makes sure its batched spans are written
      before the worker exits (``multiprocessing`` workers leave through ``os._exit``, skipping atexit).
    * **spawn / forkserver**: the worker starts afresh; the ``context`` from :func:`worker_context`
      (taken in the parent) is applied and a *worker run* is opened — its own run folder, a child of
      the parent's run, in the same trace — and closed when the worker exits.

    In both cases a SIGTERM (``Pool.terminate()``, which ``with Pool(...)`` calls) still flushes and
    closes, if the worker had no SIGTERM handler of its own. Calling it twice is harmless. Never
    raises. For a plain ``multiprocessing.Process`` call it first thing in the target function.

    Example:
        >>> pool = multiprocessing.get_context("spawn").Pool(  # doctest: +SKIP
        ...     2, initializer=runtel.init_worker, initargs=(runtel.worker_context(),))
    """
    if _worker_state.get("pid") == os.getpid():
        return
    from runtel._guard import guard

    with guard("init-worker", "set up a worker process"):
        from runtel import _sdk
        from runtel.runs import current_run

        _worker_state.clear()
        _worker_state["pid"] = os.getpid()
        if current_run() is None and context:
            for key, value in context.items():
                os.environ[key] = value
            runtime = _sdk._runtime
            if runtime is None or not runtime.open_runs:
                _sdk.configure()  # settings from the (now updated) environment
            from runtel.runs import run_span

            spec = run_span(name or context.get(WORKER_NAME_ENV) or "worker", telemetry="minimal")
            spec.__enter__()
            _worker_state["run"] = spec
        _register_exit()


def _register_exit() -> None:
    """Flush (and close the worker run) when the worker exits normally or on SIGTERM."""
    import multiprocessing.util
    import signal
    import threading

    multiprocessing.util.Finalize(None, _worker_exit, exitpriority=100)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:

        def on_term(signum: int, frame: object) -> None:
            if _worker_state.get("exiting"):
                return  # already flushing on the way out (Pool.terminate races a normal exit): finish that
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills as usual
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_term)


def _worker_exit() -> None:
    _worker_state["exiting"] = True
    spec = _worker_state.pop("run", None)
    if spec is not None and _worker_state.get("pid") == os.getpid():
        from runtel._guard import guard

        with guard("worker-run-close", "close the worker run"):
            spec.__exit__(None, None, None)
    flush()


def flush(timeout: float = 10.0) -> bool:
    """Write out every finished span now (batched spans would otherwise wait up to 0.2 s).

    Needed where a process ends without running ``atexit`` (``os._exit``, multiprocessing workers
    without :func:`init_worker`). Returns False if an exporter reported a failure. Never raises.

    Example:
        >>> def work(item):  # doctest: +SKIP
        ...     with runtel.block("work", item=item):
        ...         ...
        ...     runtel.flush()
    """
    from runtel import _sdk

    runtime = _sdk._runtime
    if runtime is None:
        return True
    ok = True
    for processor in list(runtime.span_processors):
        try:
            ok = bool(processor.force_flush(int(timeout * 1000))) and ok
        except Exception:
            ok = False
    return ok
