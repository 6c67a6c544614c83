"""NVIDIA GPUs through NVML (``nvidia-ml-py``, import name ``pynvml``), taken as a module so tests pass a fake.

Calls and units (NVML API reference, "Device Queries"):

* ``nvmlDeviceGetUtilizationRates`` -> ``.gpu`` percent of the last sample period (1/6 s to 1 s depending on the
  product) during which a kernel ran; converted to a 0-1 fraction.
* ``nvmlDeviceGetMemoryInfo`` -> ``.used``/``.total`` in bytes.
* ``nvmlDeviceGetPowerUsage`` -> milliwatts (Fermi or newer) -> watts.
* ``nvmlDeviceGetTotalEnergyConsumption`` -> millijoules since the driver was last loaded (Volta or newer; older
  devices return ``NVML_ERROR_NOT_SUPPORTED``, and runtel then integrates power over time, marking the reading
  ``energy_integrated``) -> joules.
* ``nvmlDeviceGetTemperature(handle, NVML_TEMPERATURE_GPU)`` -> degrees Celsius.
* ``nvmlDeviceGet{Compute,Graphics}RunningProcesses`` -> ``pid``/``usedGpuMemory`` (bytes, ``None`` when the driver
  reports ``NVML_VALUE_NOT_AVAILABLE``). PIDs are host PIDs: inside a container with its own PID namespace they
  do not match the tracked processes, so tree GPU memory reads as unknown there.

Every call is isolated: an ``NVMLError`` leaves that field ``None`` and is logged once per (device, call).
``NVML_ERROR_GPU_IS_LOST`` or ``NVML_ERROR_UNKNOWN`` marks the device lost: one warning, all its fields ``None``,
other devices unaffected; a lost device is retried every 60 s.

``CUDA_VISIBLE_DEVICES`` is honoured the way the CUDA runtime parses it: a comma list of indices or
``GPU-`` UUIDs (unique prefixes allowed); an empty value or ``-1`` hides every device; the first invalid entry
ends the list. Indices are NVML (PCI bus) order, which is CUDA's order when ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from types import ModuleType
from typing import Any

from runtel.errors import BackendUnavailable
from runtel.gpu.base import GpuDevice, GpuReading, parse_visible_devices

__all__ = ("NvmlBackend", "format_cuda_version", "open_nvml")

_log = logging.getLogger("runtel.gpu")
_LOST_RETRY_S = 60.0


def _text(value: object) -> str:
    """Old pynvml returned ``bytes`` for strings; new returns ``str``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def format_cuda_version(value: int) -> str:
    """``nvmlSystemGetCudaDriverVersion``'s ``1000*major + 10*minor`` as ``"major.minor"`` (12040 -> "12.4")."""
    return f"{value // 1000}.{(value % 1000) // 10}"


class _DeviceState:
    """Mutable per-device state (a plain slotted class: a dataclass cost ~0.6 ms to define at import)."""

    __slots__ = ("device", "energy_counter", "handle", "integrated_j", "last_power_w", "last_t", "lost_at")

    def __init__(self, *, device: GpuDevice, handle: Any) -> None:
        self.device = device
        self.handle = handle
        self.lost_at: float | None = None
        self.energy_counter: bool | None = None  # None = not yet known
        self.integrated_j = 0.0
        self.last_power_w: float | None = None
        self.last_t: float | None = None


class NvmlBackend:
    """A :class:`~runtel.gpu.base.GpuBackend` over an initialised NVML module (use :func:`open_nvml`)."""

    name = "nvml"

    def __init__(self, nvml: Any, states: Sequence[_DeviceState], clock: Callable[[], float] = time.monotonic) -> None:
        self._nvml = nvml
        self._states = list(states)
        self._clock = clock
        self._logged: set[tuple[str, str]] = set()
        self._closed = False

    def devices(self) -> Sequence[GpuDevice]:
        """The visible devices, in ``CUDA_VISIBLE_DEVICES`` order."""
        return tuple(s.device for s in self._states)

    def read(self, pids: Collection[int]) -> Sequence[GpuReading]:
        """One reading per device; never raises."""
        wanted = set(pids)
        return tuple(self._read_device(state, wanted) for state in self._states)

    def close(self) -> None:
        """``nvmlShutdown`` once (NVML reference-counts init/shutdown pairs)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._nvml.nvmlShutdown()
        except Exception as exc:  # never raise from cleanup
            _log.debug("nvmlShutdown failed: %s", exc)

    def energy_counters(self) -> tuple[tuple[str, float, bool], ...]:
        """``(uuid, joules, estimated)`` per device now, for block edges; never raises.

        A device with the total-energy counter (Volta or newer) is read directly (one driver call); one
        without it (``NVML_ERROR_NOT_SUPPORTED``, found at the first sample) gives its power integral
        extended to now at the last power draw, marked estimated. A device whose counter state is not yet
        known, or lost, is left out (its window energy then comes from the samples).
        """
        out: list[tuple[str, float, bool]] = []
        now = self._clock()
        for state in self._states:
            if state.lost_at is not None:
                continue
            if state.energy_counter:
                try:
                    mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(state.handle)
                except Exception:
                    continue
                out.append((state.device.uuid, float(mj) / 1000.0, False))
            elif state.energy_counter is False and state.last_t is not None:
                extra = (state.last_power_w or 0.0) * max(0.0, now - state.last_t)
                out.append((state.device.uuid, state.integrated_j + extra, True))
        return tuple(out)

    # --- internals --------------------------------------------------------------------------------------
    class _Lost(Exception):
        pass

    def _call(self, state: _DeviceState, call: str, *args: Any) -> Any:
        nvml = self._nvml
        try:
            return getattr(nvml, call)(state.handle, *args)
        except nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in (nvml.NVML_ERROR_GPU_IS_LOST, nvml.NVML_ERROR_UNKNOWN):
                raise NvmlBackend._Lost(f"{call}: {exc}") from exc
            if code == nvml.NVML_ERROR_NOT_SUPPORTED and call == "nvmlDeviceGetTotalEnergyConsumption":
                raise
            key = (state.device.uuid, call)
            if key not in self._logged:
                self._logged.add(key)
                _log.info("NVML %s failed on GPU %s: %s (field left empty)", call, state.device.uuid, exc)
            return None

    def _read_device(self, state: _DeviceState, pids: set[int]) -> GpuReading:
        uuid = state.device.uuid
        now = self._clock()
        if state.lost_at is not None:
            if now - state.lost_at < _LOST_RETRY_S:
                return GpuReading(uuid=uuid, memory_total_bytes=state.device.memory_total_bytes)
        try:
            reading = self._read_fields(state, pids, now)
        except NvmlBackend._Lost as exc:
            if state.lost_at is None:
                _log.warning("GPU %s stopped answering (%s); its readings are empty from now on", uuid, exc)
            state.lost_at = now
            return GpuReading(uuid=uuid, memory_total_bytes=state.device.memory_total_bytes)
        if state.lost_at is not None:
            _log.warning("GPU %s answers again", uuid)
            state.lost_at = None
        return reading

    def _read_fields(self, state: _DeviceState, pids: set[int], now: float) -> GpuReading:
        nvml = self._nvml
        util = self._call(state, "nvmlDeviceGetUtilizationRates")
        mem = self._call(state, "nvmlDeviceGetMemoryInfo")
        power_mw = self._call(state, "nvmlDeviceGetPowerUsage")
        temp = self._call(state, "nvmlDeviceGetTemperature", nvml.NVML_TEMPERATURE_GPU)
        power_w = None if power_mw is None else float(power_mw) / 1000.0
        energy_j = self._energy(state, power_w, now)
        procs: dict[int, int | None] = {}
        if pids:
            for call in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                for proc in self._call(state, call) or ():
                    pid = int(proc.pid)
                    if pid not in pids:
                        continue
                    used = getattr(proc, "usedGpuMemory", None)
                    used = None if used is None else int(used)
                    prev = procs.get(pid)
                    procs[pid] = used if prev is None else (prev if used is None else max(prev, used))
        return GpuReading(
            uuid=state.device.uuid,
            utilization=None if util is None else float(util.gpu) / 100.0,
            memory_used_bytes=None if mem is None else int(mem.used),
            memory_total_bytes=state.device.memory_total_bytes if mem is None else int(mem.total),
            power_w=power_w,
            energy_j=energy_j,
            temperature_c=None if temp is None else float(temp),
            process_memory_bytes=procs,
            energy_integrated=state.energy_counter is False,
        )

    def _energy(self, state: _DeviceState, power_w: float | None, now: float) -> float | None:
        nvml = self._nvml
        if state.energy_counter is not False:
            try:
                mj = self._call(state, "nvmlDeviceGetTotalEnergyConsumption")
            except nvml.NVMLError:  # NOT_SUPPORTED (pre-Volta): integrate power from now on
                _log.info("GPU %s has no energy counter; integrating power draw instead", state.device.uuid)
                state.energy_counter = False
            else:
                if mj is not None:
                    state.energy_counter = True
                    return float(mj) / 1000.0
                return None
        # Trapezoid rule over sample intervals; a missing power sample contributes nothing.
        if power_w is not None:
            if state.last_power_w is not None and state.last_t is not None and now > state.last_t:
                state.integrated_j += (state.last_power_w + power_w) / 2.0 * (now - state.last_t)
            state.last_power_w, state.last_t = power_w, now
        return state.integrated_j


#: present when an NVIDIA kernel driver is reachable: native Linux and containers, or WSL 2's GPU bridge
_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg")


def _nvml_library_loadable() -> bool:
    """Linux: whether ``libnvidia-ml.so.1`` loads, which is the first thing ``nvmlInit`` does.

    Importing pynvml (~15 ms, a large module) only to learn that the machine has no NVIDIA driver was
    the biggest part of starting the sampler on a machine without GPUs; ctypes is what pynvml uses
    to load the library anyway. Elsewhere (Windows looks in several places) the answer is "try it".
    """
    if not sys.platform.startswith("linux"):
        return True
    # NVML talks to the NVIDIA kernel driver, so without one (no /proc/driver/nvidia, no /dev/nvidiactl, and
    # no /dev/dxg of WSL 2) nvmlInit fails whatever library is installed: answer without importing ctypes.
    if not any(os.path.exists(p) for p in _DRIVER_PATHS):
        return False
    import ctypes  # deferred: ctypes, only with a GPU driver present (~2 ms)

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def _import_pynvml() -> Any:
    # Already imported (by the application, torch, or a test's stand-in): free to use, nothing to save.
    if "pynvml" not in sys.modules and not _nvml_library_loadable():
        raise BackendUnavailable("NVML init failed: no NVIDIA driver (libnvidia-ml.so.1 cannot be used)")
    try:
        import pynvml  # deferred: pynvml, only with an NVIDIA driver (~16 ms)
    except ImportError as exc:
        raise BackendUnavailable(f"nvidia-ml-py (pynvml) is not importable: {exc}") from exc
    return pynvml


def open_nvml(
    nvml: ModuleType | Any | None = None,
    *,
    env: Mapping[str, str],
    uuids: Collection[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> NvmlBackend:
    """Initialise NVML and return a backend for the visible devices.

    Args:
        nvml: The ``pynvml`` module (imported lazily when ``None``) or a stand-in such as ``FakeNvml``.
        env: Environment holding ``CUDA_VISIBLE_DEVICES``.
        uuids: Only these devices (exact UUIDs or ``GPU-`` prefixes); ``None`` = all visible.
        clock: Monotonic clock for power integration.

    Raises:
        BackendUnavailable: pynvml is not importable, ``nvmlInit`` failed (library not found, driver not
            loaded, ...), or no device is visible.
    """
    module: Any = _import_pynvml() if nvml is None else nvml
    try:
        module.nvmlInit()
    except module.NVMLError as exc:
        raise BackendUnavailable(f"NVML init failed: {exc}") from exc
    try:
        states = _inventory(module, env, uuids)
    except module.NVMLError as exc:
        _shutdown(module)
        raise BackendUnavailable(f"NVML device query failed: {exc}") from exc
    if not states:
        _shutdown(module)
        raise BackendUnavailable("NVML found no visible GPU")
    return NvmlBackend(module, states, clock)


def _shutdown(module: Any) -> None:
    try:
        module.nvmlShutdown()
    except Exception as exc:
        _log.debug("nvmlShutdown failed: %s", exc)


def _inventory(module: Any, env: Mapping[str, str], uuids: Collection[str] | None) -> list[_DeviceState]:
    count = int(module.nvmlDeviceGetCount())
    handles = [module.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    all_uuids = [_text(module.nvmlDeviceGetUUID(h)) for h in handles]
    order = parse_visible_devices(env.get("CUDA_VISIBLE_DEVICES"), all_uuids)
    indices = list(range(count)) if order is None else order
    if uuids is not None:
        wanted = tuple(uuids)
        indices = [i for i in indices if any(all_uuids[i] == u or all_uuids[i].startswith(u) for u in wanted)]
    driver_raw = _optional(module, module.nvmlSystemGetDriverVersion)
    driver = None if driver_raw is None else _text(driver_raw)
    cuda_raw = _optional(module, module.nvmlSystemGetCudaDriverVersion)
    cuda = None if cuda_raw is None else format_cuda_version(int(cuda_raw))
    states: list[_DeviceState] = []
    for i in indices:
        handle = handles[i]
        name_raw = _optional(module, module.nvmlDeviceGetName, handle)
        name = "NVIDIA GPU" if name_raw is None else _text(name_raw)
        mem = _optional(module, module.nvmlDeviceGetMemoryInfo, handle)
        device = GpuDevice(
            index=i,
            uuid=all_uuids[i],
            name=name,
            memory_total_bytes=None if mem is None else int(mem.total),
            driver_version=driver,
            cuda_version=cuda,
            vendor="nvidia",
        )
        states.append(_DeviceState(device=device, handle=handle))
    return states


def _optional(module: Any, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except module.NVMLError as exc:
        _log.debug("NVML inventory call failed: %s", exc)
        return None
