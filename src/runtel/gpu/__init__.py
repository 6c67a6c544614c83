"""GPU backends behind one Protocol, chosen by name: ``"auto"`` (NVML, then AMD), ``"nvml"``, ``"amd"``, ``"none"``.

Telemetry never breaks the program: :func:`open_backend` always returns a backend, falling back to
:class:`~runtel.gpu.null.NullBackend` and logging why (one ``info`` line under ``"auto"``, one ``warning`` when
a backend was explicitly requested but is unavailable). Opening a backend is bounded: a driver whose init
hangs (``nvmlInit`` on a wedged GPU) or fails with any error, not only the library's own, costs at most
:data:`OPEN_TIMEOUT_S` and switches off GPU metrics only — CPU, memory and energy sampling go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from types import ModuleType
from typing import Any

from runtel.errors import BackendUnavailable
from runtel.gpu.amd import open_amd as _open_amd
from runtel.gpu.base import GpuBackend, GpuDevice, GpuReading
from runtel.gpu.null import NullBackend
from runtel.gpu.nvml import open_nvml as _open_nvml

__all__ = ("OPEN_TIMEOUT_S", "GpuBackend", "GpuDevice", "GpuReading", "NullBackend", "open_backend")

_log = logging.getLogger("runtel.gpu")

#: seconds a backend may take to open (driver init, device enumeration) before GPU metrics are given up
OPEN_TIMEOUT_S = 5.0


def _bounded(open_fn: Callable[[], GpuBackend], label: str, timeout: float) -> GpuBackend:
    """``open_fn()`` in a daemon thread, waited for at most ``timeout`` s.

    Raises ``BackendUnavailable`` for a timeout or for any error of the driver's (an ``OSError`` from
    ``ctypes``, a malformed value), so one failing backend never reaches the sampler. A thread stuck in a
    driver call cannot be stopped; it is a daemon, so it does not hold the process at exit.
    """
    result: list[GpuBackend] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            result.append(open_fn())
        except BaseException as exc:  # reported below, in the caller's thread
            error.append(exc)

    worker = threading.Thread(target=work, name=f"runtel-{label}-open", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise BackendUnavailable(f"{label} did not finish opening within {timeout:g} s (driver init hung)")
    if error:
        exc = error[0]
        if isinstance(exc, BackendUnavailable):
            raise exc
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit: not ours to swallow
        raise BackendUnavailable(f"{label} failed to open: {type(exc).__name__}: {exc}") from exc
    return result[0]


def open_backend(
    name: str = "auto",
    *,
    env: Mapping[str, str],
    uuids: Collection[str] | None = None,
    nvml_module: ModuleType | Any | None = None,
    amdsmi_module: ModuleType | Any | None = None,
    clock: Callable[[], float] = time.monotonic,
    timeout: float = OPEN_TIMEOUT_S,
) -> GpuBackend:
    """Open the GPU backend named by the ``gpu_backend`` setting; never raises for missing hardware.

    Args:
        name: ``"auto"``, ``"nvml"``, ``"amd"`` or ``"none"``.
        env: Environment with ``CUDA_VISIBLE_DEVICES`` and friends.
        uuids: Restrict to these GPU UUIDs (or prefixes).
        nvml_module: A ``pynvml`` stand-in (tests pass ``FakeNvml``); the real one is imported lazily.
        amdsmi_module: An ``amdsmi`` stand-in.
        clock: Monotonic clock for power integration.
        timeout: Seconds each backend may take to open (see :func:`_bounded`).

    Example:
        >>> from runtel.testing.nvml import FakeNvml, FakeGpu
        >>> open_backend("auto", env={}, nvml_module=FakeNvml([FakeGpu(uuid="GPU-1")])).name
        'nvml'
    """
    def open_nvml(module: Any, **kwargs: Any) -> GpuBackend:
        return _bounded(lambda: _open_nvml(module, **kwargs), "nvml", timeout)

    def open_amd(module: Any, **kwargs: Any) -> GpuBackend:
        return _bounded(lambda: _open_amd(module, **kwargs), "amd", timeout)

    if name == "none":
        return NullBackend("disabled by setting")
    if name == "nvml":
        try:
            return open_nvml(nvml_module, env=env, uuids=uuids, clock=clock)
        except BackendUnavailable as exc:
            _log.warning("GPU backend 'nvml' requested but unavailable: %s", exc)
            return NullBackend(str(exc))
    if name == "amd":
        try:
            return open_amd(amdsmi_module, env=env, uuids=uuids, clock=clock)
        except BackendUnavailable as exc:
            _log.warning("GPU backend 'amd' requested but unavailable: %s", exc)
            return NullBackend(str(exc))
    if name != "auto":
        _log.warning("unknown GPU backend %r; recording no GPU metrics", name)
        return NullBackend(f"unknown backend {name!r}")
    reasons: list[str] = []
    try:
        return open_nvml(nvml_module, env=env, uuids=uuids, clock=clock)
    except BackendUnavailable as exc:
        reasons.append(f"nvml: {exc}")
    try:
        return open_amd(amdsmi_module, env=env, uuids=uuids, clock=clock)
    except BackendUnavailable as exc:
        reasons.append(f"amd: {exc}")
    reason = "; ".join(reasons)
    _log.info("no GPU backend: %s", reason)
    return NullBackend(reason)
