"""GPU backends behind one Protocol, chosen by name: ``"auto"`` (NVML, then AMD), ``"nvml"``, ``"amd"``, ``"none"``.

Telemetry never breaks the program: :func:`open_backend` always returns a backend, falling back to
:class:`~runtel.gpu.null.NullBackend` and logging why (one ``info`` line under ``"auto"``, one ``warning`` when
a backend was explicitly requested but is unavailable).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from types import ModuleType
from typing import Any

from runtel.errors import BackendUnavailable
from runtel.gpu.base import GpuBackend, GpuDevice, GpuReading
from runtel.gpu.null import NullBackend

__all__ = ("GpuBackend", "GpuDevice", "GpuReading", "NullBackend", "open_backend")

_log = logging.getLogger("runtel.gpu")


def open_backend(
    name: str = "auto",
    *,
    env: Mapping[str, str],
    uuids: Collection[str] | None = None,
    nvml_module: ModuleType | Any | None = None,
    amdsmi_module: ModuleType | Any | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> GpuBackend:
    """Open the GPU backend named by the ``gpu_backend`` setting; never raises for missing hardware.

    Args:
        name: ``"auto"``, ``"nvml"``, ``"amd"`` or ``"none"``.
        env: Environment with ``CUDA_VISIBLE_DEVICES`` and friends.
        uuids: Restrict to these GPU UUIDs (or prefixes).
        nvml_module: A ``pynvml`` stand-in (tests pass ``FakeNvml``); the real one is imported lazily.
        amdsmi_module: An ``amdsmi`` stand-in.
        clock: Monotonic clock for power integration.

    Example:
        >>> from runtel.testing.nvml import FakeNvml, FakeGpu
        >>> open_backend("auto", env={}, nvml_module=FakeNvml([FakeGpu(uuid="GPU-1")])).name
        'nvml'
    """
    from runtel.gpu.amd import open_amd
    from runtel.gpu.nvml import open_nvml

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
