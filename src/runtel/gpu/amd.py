"""AMD GPUs through ``amdsmi`` (optional extra ``runtel[amd]``), taken as a module so tests pass a fake.

Calls and units (AMD SMI library reference, "GPU Monitoring"): ``amdsmi_get_gpu_activity`` -> ``gfx_activity``
percent -> fraction; ``amdsmi_get_gpu_vram_usage`` -> ``vram_used``/``vram_total`` in MB -> bytes;
``amdsmi_get_power_info`` -> ``current_socket_power`` (or ``average_socket_power``) in W;
``amdsmi_get_energy_count`` -> accumulator x ``counter_resolution`` microjoules -> J;
``amdsmi_get_temp_metric(EDGE, CURRENT)`` -> degrees Celsius; ``amdsmi_get_gpu_process_list`` -> per-process
``memory_usage.vram_mem`` bytes. Values reported as ``"N/A"`` become ``None``. Visible devices follow
``HIP_VISIBLE_DEVICES``, else ``ROCR_VISIBLE_DEVICES``, else ``CUDA_VISIBLE_DEVICES`` (indices or UUID prefixes).
Failures are isolated per (device, call) exactly like the NVML backend.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from types import ModuleType
from typing import Any

from runtel.errors import BackendUnavailable
from runtel.gpu.base import GpuDevice, GpuReading, parse_visible_devices

__all__ = ("AmdBackend", "open_amd")

_log = logging.getLogger("runtel.gpu")
_MB = 1024 * 1024


def _num(value: object) -> float | None:
    """amdsmi reports unsupported values as the string ``"N/A"``."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


class _AmdDevice:
    """Mutable per-device state (a plain slotted class: a dataclass cost ~0.6 ms to define at import)."""

    __slots__ = ("device", "handle", "integrated_j", "last_power_w", "last_t")

    def __init__(self, *, device: GpuDevice, handle: Any) -> None:
        self.device = device
        self.handle = handle
        self.integrated_j = 0.0
        self.last_power_w: float | None = None
        self.last_t: float | None = None


class AmdBackend:
    """A :class:`~runtel.gpu.base.GpuBackend` over an initialised ``amdsmi`` module (use :func:`open_amd`)."""

    name = "amd"

    def __init__(self, amdsmi: Any, devices: list[_AmdDevice], clock: Callable[[], float] = time.monotonic) -> None:
        self._amdsmi = amdsmi
        self._devices = devices
        self._clock = clock
        self._logged: set[tuple[str, str]] = set()
        self._closed = False

    def devices(self) -> tuple[GpuDevice, ...]:
        """The visible devices."""
        return tuple(d.device for d in self._devices)

    def read(self, pids: Collection[int]) -> tuple[GpuReading, ...]:
        """One reading per device; never raises."""
        wanted = set(pids)
        return tuple(self._read(d, wanted) for d in self._devices)

    def close(self) -> None:
        """``amdsmi_shut_down`` once."""
        if not self._closed:
            self._closed = True
            try:
                self._amdsmi.amdsmi_shut_down()
            except Exception as exc:  # never raise from cleanup
                _log.debug("amdsmi_shut_down failed: %s", exc)

    def _call(self, dev: _AmdDevice, call: str, *args: Any) -> Any:
        try:
            return getattr(self._amdsmi, call)(dev.handle, *args)
        except Exception as exc:  # amdsmi raises AmdSmiException subclasses, ctypes errors on old libraries
            key = (dev.device.uuid, call)
            if key not in self._logged:
                self._logged.add(key)
                _log.info("amdsmi %s failed on GPU %s: %s (field left empty)", call, dev.device.uuid, exc)
            return None

    def _read(self, dev: _AmdDevice, pids: set[int]) -> GpuReading:
        amdsmi = self._amdsmi
        now = self._clock()
        activity = self._call(dev, "amdsmi_get_gpu_activity") or {}
        vram = self._call(dev, "amdsmi_get_gpu_vram_usage") or {}
        power = self._call(dev, "amdsmi_get_power_info") or {}
        power_w = _num(power.get("current_socket_power"))
        if power_w is None:
            power_w = _num(power.get("average_socket_power"))
        temp = None
        temp_type = getattr(amdsmi, "AmdSmiTemperatureType", None)
        temp_metric = getattr(amdsmi, "AmdSmiTemperatureMetric", None)
        if temp_type is not None and temp_metric is not None:
            temp = _num(self._call(dev, "amdsmi_get_temp_metric", temp_type.EDGE, temp_metric.CURRENT))
        energy_j, integrated = self._energy(dev, power_w, now)
        procs: dict[int, int | None] = {}
        if pids:
            for item in self._call(dev, "amdsmi_get_gpu_process_list") or ():
                info = item if isinstance(item, Mapping) else self._call(dev, "amdsmi_get_gpu_process_info", item)
                if not isinstance(info, Mapping) or int(info.get("pid", -1)) not in pids:
                    continue
                usage = info.get("memory_usage")
                vram_mem = _num(usage.get("vram_mem")) if isinstance(usage, Mapping) else _num(info.get("mem"))
                procs[int(info["pid"])] = None if vram_mem is None else int(vram_mem)
        used = _num(vram.get("vram_used"))
        total = _num(vram.get("vram_total"))
        util = _num(activity.get("gfx_activity"))
        return GpuReading(
            uuid=dev.device.uuid,
            utilization=None if util is None else util / 100.0,
            memory_used_bytes=None if used is None else int(used * _MB),
            memory_total_bytes=dev.device.memory_total_bytes if total is None else int(total * _MB),
            power_w=power_w,
            energy_j=energy_j,
            temperature_c=temp,
            process_memory_bytes=procs,
            energy_integrated=integrated,
        )

    def _energy(self, dev: _AmdDevice, power_w: float | None, now: float) -> tuple[float | None, bool]:
        counter = self._call(dev, "amdsmi_get_energy_count")
        if isinstance(counter, Mapping):
            raw = _num(counter.get("energy_accumulator", counter.get("power")))
            resolution = _num(counter.get("counter_resolution"))
            if raw is not None and resolution is not None:
                return raw * resolution / 1e6, False
        if power_w is not None:
            if dev.last_power_w is not None and dev.last_t is not None and now > dev.last_t:
                dev.integrated_j += (dev.last_power_w + power_w) / 2.0 * (now - dev.last_t)
            dev.last_power_w, dev.last_t = power_w, now
        return dev.integrated_j, True


def open_amd(
    amdsmi: ModuleType | Any | None = None,
    *,
    env: Mapping[str, str],
    uuids: Collection[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AmdBackend:
    """Initialise amdsmi and return a backend for the visible AMD GPUs.

    Args:
        amdsmi: The ``amdsmi`` module (imported lazily when ``None``) or a fake.
        env: Environment holding ``HIP_VISIBLE_DEVICES``/``ROCR_VISIBLE_DEVICES``/``CUDA_VISIBLE_DEVICES``.
        uuids: Only these devices (UUIDs or prefixes); ``None`` = all visible.
        clock: Monotonic clock for power integration.

    Raises:
        BackendUnavailable: amdsmi is not installed (``pip install 'runtel[amd]'``), init failed, or no GPU.
    """
    if amdsmi is None:
        try:
            import amdsmi as module  # optional: amdsmi may be missing
        except ImportError as exc:
            raise BackendUnavailable(f"amdsmi is not importable ({exc}); install runtel[amd]") from exc
        amdsmi = module
    mod: Any = amdsmi
    try:
        mod.amdsmi_init()
        handles = list(mod.amdsmi_get_processor_handles())
    except Exception as exc:
        raise BackendUnavailable(f"amdsmi init failed: {exc}") from exc
    if not handles:
        _shut(mod)
        raise BackendUnavailable("amdsmi found no GPU")
    all_uuids = [str(_safe(mod.amdsmi_get_gpu_device_uuid, h) or f"amd-{i}") for i, h in enumerate(handles)]
    raw = next(
        (env[v] for v in ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES") if v in env), None
    )
    order = parse_visible_devices(raw, all_uuids)
    indices = list(range(len(handles))) if order is None else order
    if uuids is not None:
        wanted = tuple(uuids)
        indices = [i for i in indices if any(all_uuids[i].startswith(u) for u in wanted)]
    devices: list[_AmdDevice] = []
    for i in indices:
        h = handles[i]
        asic = _safe(mod.amdsmi_get_gpu_asic_info, h) or {}
        vram = _safe(mod.amdsmi_get_gpu_vram_usage, h) or {}
        driver = _safe(mod.amdsmi_get_gpu_driver_info, h) or {}
        total = _num(vram.get("vram_total"))
        devices.append(
            _AmdDevice(
                device=GpuDevice(
                    index=i,
                    uuid=all_uuids[i],
                    name=str(asic.get("market_name") or "AMD GPU"),
                    memory_total_bytes=None if total is None else int(total * _MB),
                    driver_version=None if not driver.get("driver_version") else str(driver["driver_version"]),
                    cuda_version=None,
                    vendor="amd",
                ),
                handle=h,
            )
        )
    if not devices:
        _shut(mod)
        raise BackendUnavailable("amdsmi: no visible GPU")
    return AmdBackend(mod, devices, clock)


def _safe(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:  # inventory is best effort
        _log.debug("amdsmi inventory call failed: %s", exc)
        return None


def _shut(mod: Any) -> None:
    try:
        mod.amdsmi_shut_down()
    except Exception as exc:  # never raise from cleanup
        _log.debug("amdsmi_shut_down failed: %s", exc)
