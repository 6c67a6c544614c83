"""The process's runtel state: its settings, its one runtime, and the hooks that end or reset it.

Nothing runs at import. The runtime is built on the first run (or an explicit ``configure()``); an
``atexit`` hook finishes runs still open and flushes within ``export_timeout``, and an after-fork hook
hands the child fresh locks and synchronous span writes (see ``Runtime.after_fork``).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runtel._guard import set_strict
from runtel._sdk.runtime import Runtime
from runtel.config import Settings, resolve_settings

if TYPE_CHECKING:

    pass


__all__ = ("before_configure", "configure", "current_runtime", "finish_runs_on_sigterm", "flush", "get_runtime",
           "reset", "settings")

_runtime: Runtime | None = None


_settings: Settings | None = None


_lock = threading.Lock()


_atexit_registered = False


#: called by :func:`configure` before it checks for open runs (see :func:`before_configure`)
_before_configure: list[Callable[[], None]] = []


def before_configure(hook: Callable[[], None]) -> None:
    """Have ``configure()`` call ``hook`` first: a run the process opened by itself (a child's automatic
    worker run) is closed there, so configuring after a first block never raises."""
    if hook not in _before_configure:
        _before_configure.append(hook)


def settings() -> Settings:
    """The resolved settings (resolved from the environment on first use)."""
    global _settings
    if _settings is None:
        with _lock:
            if _settings is None:
                _settings = resolve_settings()
                set_strict(_settings.strict)
    return _settings


def configure(**kwargs: Any) -> Settings:
    """Set process-wide settings; each resolves as argument > environment variable > default.

    Accepted names (see docs/configuration.md for every one, its variable and default): ``dir``,
    ``exporters``, ``traces_exporter``, ``metrics_exporter``, ``service_name``, ``disabled``, ``telemetry``, ``attribute_max_length``,
    ``record_max_bytes``, ``sample_interval``, ``memory_detail_interval``, ``metric_interval``,
    ``sampling``, ``n_expected_cores``, ``gpu_backend``, ``gpu_uuids``, ``carbon_intensity``,
    ``cpu_tdp``, ``propagate``, ``redact_patterns``, ``redact_allow``, ``git_diff_max_bytes``, ``export_timeout``,
    ``shared_run_dir``, ``trackers``, ``strict``.

    Example:
        >>> import runtel
        >>> runtel.configure(dir="/tmp/runtel-doc-runs", sample_interval=0.5).sample_interval
        0.5

    Raises:
        runtel.errors.ConfigError: an unknown name or an unusable value.
        RuntimeError: a run is open (settings cannot change under it).
    """
    global _settings, _runtime
    for hook in list(_before_configure):  # a worker run that opened by itself gives way to the user's settings
        hook()  # (first: closing it puts the parent's carrier back into the environment the settings read)
    new = resolve_settings(**kwargs)
    with _lock:
        old_runtime = _runtime
        if old_runtime is not None and old_runtime.open_runs:
            raise RuntimeError("runtel.configure() cannot change settings while a run is open")
        _settings = new
        set_strict(new.strict)
        _runtime = None
    if old_runtime is not None:
        old_runtime.shutdown()
    return new


def current_runtime() -> Runtime | None:
    """The runtime if one was built already (never builds one)."""
    return _runtime


def get_runtime() -> Runtime | None:
    """The process runtime, or None when the SDK is disabled (``OTEL_SDK_DISABLED=true``)."""
    global _runtime, _atexit_registered
    rt = _runtime
    if rt is not None:
        return rt
    s = settings()
    if s.disabled:
        return None
    with _lock:
        if _runtime is None:
            _runtime = Runtime(s)
            if not _atexit_registered:
                atexit.register(_at_exit)
                os.register_at_fork(after_in_child=_after_fork_in_child)
                _atexit_registered = True
        return _runtime


def reset() -> None:
    """Shut down and forget the runtime and settings (tests; a later run builds afresh)."""
    global _runtime, _settings
    with _lock:
        rt, _runtime, _settings = _runtime, None, None
    if rt is not None:
        rt.shutdown()


def _at_exit() -> None:
    rt = _runtime
    if rt is not None:
        rt.finish_open_runs()
        rt.shutdown()
        otlp = sys.modules.get("runtel.exporters.otlp")  # loaded only when OTLP export was opted in
        if otlp is not None:
            otlp.report_losses()
        router = rt.router
        if router is not None and router.unattributed and router.warn_unattributed:
            logging.getLogger("runtel.sdk").warning(
                "runtel did not record %d span(s) that started while no run was open in this process",
                router.unattributed)
        from runtel.exporters.jsonl import late_spans  # loaded already whenever spans were written

        if late_spans():
            logging.getLogger("runtel.sdk").warning(
                "runtel did not record %d span(s) that ended after their run had closed", late_spans())


def finish_runs_on_sigterm() -> bool:
    """Make a SIGTERM finish this process's open runs (``interrupted``, with their end and usage) and then end
    the process by SIGTERM as before; True if the handler is in place.

    For a server started inside a run (``with run_span(): uvicorn.run(RequestSpans(app))``): uvicorn stops
    gracefully on SIGTERM, restores the handler it found and raises the signal again, which with the default
    handler ends the process inside the ``with`` block, leaving the run "running". Installed only from the
    main thread over the default handler, so an application's own handler is never replaced.
    """
    import signal  # deferred: only a served app needs it (~0.1 ms)

    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is _on_sigterm:
            return True
        if current != signal.SIG_DFL:
            return False
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # no SIGTERM here, or not allowed
        return False
    return True


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


#: the packages runtel's own code calls into while it may hold one of its locks
_DEPENDENCIES = frozenset({"opentelemetry", "google", "psutil", "anyio", "msgspec", "rich", "pynvml", "grpc"})


def _in_stdlib(filename: str) -> bool:
    """Whether ``filename`` is the standard library's (not a package installed beside it)."""
    stdlib = os.path.join(os.path.dirname(os.__file__), "")
    return filename.startswith(stdlib) and not filename.startswith(("site-packages", "dist-packages"),
                                                                    len(stdlib))


def _inside_runtel(frame: Any) -> bool:
    """Whether the interrupted thread is running runtel's own code (a record or series line being written),
    maybe through the standard library or a dependency it called: the frames from the innermost out are
    such library code until a runtel frame. An application's frame first (a ``@trace`` body, a server
    loop, an installed app's package) means no."""
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(_PACKAGE_DIR):
            return True
        top = str(frame.f_globals.get("__name__") or "").partition(".")[0]
        if not (_in_stdlib(filename) or filename.startswith("<frozen") or top in _DEPENDENCIES):
            return False  # the application's own code
        frame = frame.f_back
    return False


#: how long a SIGTERM waits for the open runs to be finished before the process ends anyway
SIGTERM_FINISH_TIMEOUT_S = 5.0


def _on_sigterm(signum: int, frame: Any) -> None:
    """Finish the open runs, then end the process by SIGTERM (the default handler, as without runtel).

    The handler runs in the main thread between two of its bytecodes. When those were the application's, the
    runs are finished here (in a helper thread, waited for with a deadline). When they were runtel's own code
    (a ``run.log`` line being written), the main thread may hold a lock the finishing needs: waiting here would
    never get it (it once hung in 14 of 16 tries), so the main thread goes on (and lets the lock go) while the
    helper finishes the runs and then ends the process; the application runs on for those few milliseconds.
    """
    import signal  # deferred: loaded already by finish_runs_on_sigterm

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    rt = _runtime
    if rt is None:
        _end_by_sigterm()
    elif _inside_runtel(frame):
        threading.Thread(target=_finish_and_end, args=(rt,), name="runtel-sigterm", daemon=True).start()
    else:
        _finish_runs(rt)
        _end_by_sigterm()


def _finish_runs(rt: Any) -> None:
    """Finish ``rt``'s open runs (``interrupted``) and write out their spans, within SIGTERM_FINISH_TIMEOUT_S."""

    def finish() -> None:
        try:
            rt.finish_open_runs()
            rt.flush_spans(2.0)
        except Exception as exc:  # the process ends by SIGTERM whatever happened here
            logging.getLogger("runtel.sdk").warning("runtel could not finish its runs on SIGTERM: %s: %s",
                                                    type(exc).__name__, exc)

    helper = threading.Thread(target=finish, name="runtel-sigterm-finish", daemon=True)
    helper.start()
    helper.join(SIGTERM_FINISH_TIMEOUT_S)
    if helper.is_alive():
        logging.getLogger("runtel.sdk").warning(
            "runtel could not finish its runs within %.0f s of SIGTERM; they are read as interrupted",
            SIGTERM_FINISH_TIMEOUT_S)


def _finish_and_end(rt: Any) -> None:
    _finish_runs(rt)
    _end_by_sigterm()


def _end_by_sigterm() -> None:
    """Raise SIGTERM in this thread with the default handler in place: the process ends by it."""
    import signal  # deferred: loaded already by finish_runs_on_sigterm

    try:  # a thread that blocks SIGTERM would otherwise go on: without the handler the process would end
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    except (AttributeError, OSError, ValueError):
        pass
    signal.raise_signal(signal.SIGTERM)


def _after_fork_in_child() -> None:
    """In a forked child the parent's threads are gone and inherited locks may be held: each object resets its own."""
    rt = _runtime
    if rt is not None:
        rt.after_fork()


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
    runtime = _runtime
    return True if runtime is None else runtime.flush_spans(timeout)
