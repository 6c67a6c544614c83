"""``FakeNvml``: a stand-in for the ``pynvml`` module that fails exactly where NVML documents failures.

Pass it to :func:`runtel.gpu.nvml.open_nvml` (or ``Monitor``/``open_backend(nvml_module=...)``). It raises the
real ``pynvml.NVMLError`` subclasses (``pynvml.NVMLError(code)`` maps a code to its subclass), so code under
test handles the same exception types as on a GPU machine. Behaviour follows the NVML API reference:

* ``nvmlInit``: ``NVML_ERROR_DRIVER_NOT_LOADED`` if the NVIDIA driver is not running; pynvml raises
  ``NVML_ERROR_LIBRARY_NOT_FOUND`` when ``libnvidia-ml.so.1`` cannot be loaded (``init_error=``). Init and
  shutdown are reference counted ("nvmlShutdown ... should be called the same number of times as nvmlInit").
* Every other call before a successful ``nvmlInit``: ``NVML_ERROR_UNINITIALIZED``.
* ``nvmlDeviceGetHandleByIndex`` with an index ``>= nvmlDeviceGetCount()``: ``NVML_ERROR_INVALID_ARGUMENT``.
* ``nvmlDeviceGetTotalEnergyConsumption``: millijoules since the driver was loaded, "for Volta or newer fully
  supported devices"; ``NVML_ERROR_NOT_SUPPORTED`` otherwise (``energy_supported=False``).
* Any device call on a GPU that "has fallen off the bus or is otherwise inaccessible":
  ``NVML_ERROR_GPU_IS_LOST`` (:meth:`FakeNvml.lose`, or :meth:`FakeNvml.fail` with that code).
* ``usedGpuMemory`` of a running process is ``None`` where NVML reports ``NVML_VALUE_NOT_AVAILABLE``
  (pynvml's own conversion); put ``None`` in ``processes`` to model that.

The energy counter advances by ``power_w`` times the time elapsed on the injected ``clock``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pynvml

__all__ = ("FakeGpu", "FakeNvml")


@dataclass
class FakeGpu:
    """One simulated device; mutate through :class:`FakeNvml` setters so the energy counter stays right."""

    name: str = "NVIDIA A100-SXM4-40GB"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    memory_total: int = 40 * 2**30
    memory_used: int = 0
    utilization: float = 0.0
    memory_utilization: float = 0.0
    power_w: float = 50.0
    energy_supported: bool = True
    temperature_c: float = 40.0
    processes: dict[int, int | None] = field(default_factory=dict)
    graphics_processes: dict[int, int | None] = field(default_factory=dict)
    energy_mj: float = 1_000_000.0  # the driver was loaded a while ago


@dataclass
class _Proc:
    pid: int
    usedGpuMemory: int | None  # pynvml attribute name


@dataclass
class _Memory:
    total: int
    free: int
    used: int


@dataclass
class _Utilization:
    gpu: int
    memory: int


@dataclass
class _Handle:
    index: int


@dataclass
class _Failure:
    code: int
    after_calls: int
    seen: int = 0


class FakeNvml:
    """A module-like fake of ``pynvml`` with settable readings and injectable failures.

    Args:
        gpus: The simulated devices, in NVML index order.
        init_error: An ``NVML_ERROR_*`` code ``nvmlInit`` raises (e.g. ``NVML_ERROR_LIBRARY_NOT_FOUND``).
        driver: ``nvmlSystemGetDriverVersion`` result.
        cuda: ``nvmlSystemGetCudaDriverVersion`` result (``1000*major + 10*minor``).
        clock: Monotonic seconds used to advance the energy counters.
        bytes_strings: Return names/UUIDs/versions as ``bytes`` like pynvml < 11.

    Example:
        >>> nvml = FakeNvml(gpus=[FakeGpu(uuid="GPU-1", power_w=100.0)])
        >>> nvml.nvmlInit(); nvml.nvmlDeviceGetCount()
        1
    """

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_ERROR_UNINITIALIZED = pynvml.NVML_ERROR_UNINITIALIZED
    NVML_ERROR_INVALID_ARGUMENT = pynvml.NVML_ERROR_INVALID_ARGUMENT
    NVML_ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
    NVML_ERROR_NOT_FOUND = pynvml.NVML_ERROR_NOT_FOUND
    NVML_ERROR_DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    NVML_ERROR_TIMEOUT = pynvml.NVML_ERROR_TIMEOUT
    NVML_ERROR_LIBRARY_NOT_FOUND = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_ERROR_GPU_IS_LOST = pynvml.NVML_ERROR_GPU_IS_LOST
    NVML_ERROR_UNKNOWN = pynvml.NVML_ERROR_UNKNOWN

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        init_error: int | None = None,
        driver: str = "550.54.15",
        cuda: int = 12040,
        clock: Callable[[], float] = time.monotonic,
        bytes_strings: bool = False,
    ) -> None:
        self.gpus = list(gpus) if gpus is not None else [FakeGpu()]
        self.init_error = init_error
        self.driver = driver
        self.cuda = cuda
        self.clock = clock
        self.bytes_strings = bytes_strings
        self.init_count = 0
        self.calls: Counter[str] = Counter()
        self._failures: dict[tuple[str, str], _Failure] = {}
        self._last_t = {g.uuid: clock() for g in self.gpus}

    # --- test controls ----------------------------------------------------------------------------------
    def _gpu(self, uuid: str) -> FakeGpu:
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
        raise KeyError(uuid)

    def _advance(self, gpu: FakeGpu) -> None:
        now = self.clock()
        gpu.energy_mj += gpu.power_w * 1000.0 * max(0.0, now - self._last_t[gpu.uuid])
        self._last_t[gpu.uuid] = now

    def set_power(self, uuid: str, watts: float) -> None:
        """Change the power draw from now on (energy up to now accrues at the old draw)."""
        gpu = self._gpu(uuid)
        self._advance(gpu)
        gpu.power_w = watts

    def set_utilization(self, uuid: str, fraction: float) -> None:
        """Change the GPU utilisation (0-1)."""
        self._gpu(uuid).utilization = fraction

    def set_memory_used(self, uuid: str, used: int) -> None:
        """Change device memory in use (bytes)."""
        self._gpu(uuid).memory_used = used

    def set_processes(self, uuid: str, processes: Mapping[int, int | None]) -> None:
        """Replace the compute processes (pid -> bytes, or ``None`` = not available)."""
        self._gpu(uuid).processes = dict(processes)

    def set_temperature(self, uuid: str, celsius: float) -> None:
        """Change the core temperature."""
        self._gpu(uuid).temperature_c = celsius

    def fail(self, uuid: str, call_name: str, error_code: int, *, after_calls: int = 0) -> None:
        """Make ``call_name`` (or ``"*"`` for every device call) on ``uuid`` raise ``error_code``.

        The first ``after_calls`` calls still succeed; every later call raises.
        """
        self._failures[(uuid, call_name)] = _Failure(error_code, after_calls)

    def lose(self, uuid: str) -> None:
        """The GPU falls off the bus: every device call raises ``NVML_ERROR_GPU_IS_LOST``."""
        self.fail(uuid, "*", pynvml.NVML_ERROR_GPU_IS_LOST)

    def heal(self, uuid: str) -> None:
        """Remove every injected failure of ``uuid``."""
        for key in [k for k in self._failures if k[0] == uuid]:
            del self._failures[key]

    # --- helpers ----------------------------------------------------------------------------------------
    def _str(self, value: str) -> str | bytes:
        return value.encode() if self.bytes_strings else value

    def _enter(self, call: str) -> None:
        self.calls[call] += 1
        if self.init_count <= 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _device(self, call: str, handle: object) -> FakeGpu:
        self._enter(call)
        if not isinstance(handle, _Handle) or not 0 <= handle.index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[handle.index]
        for key in ((gpu.uuid, call), (gpu.uuid, "*")):
            failure = self._failures.get(key)
            if failure is not None:
                failure.seen += 1
                if failure.seen > failure.after_calls:
                    raise pynvml.NVMLError(failure.code)
        return gpu

    # --- the pynvml surface -----------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        """Load the library; raises ``init_error`` when set."""
        self.calls["nvmlInit"] += 1
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        """Release one ``nvmlInit``; ``NVML_ERROR_UNINITIALIZED`` if none is outstanding."""
        self._enter("nvmlShutdown")
        self.init_count -= 1

    def nvmlDeviceGetCount(self) -> int:
        """Number of devices."""
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        """Handle of device ``index``; ``NVML_ERROR_INVALID_ARGUMENT`` when out of range."""
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    def nvmlDeviceGetName(self, handle: _Handle) -> str | bytes:
        """Product name."""
        return self._str(self._device("nvmlDeviceGetName", handle).name)

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str | bytes:
        """Device UUID (``GPU-...``)."""
        return self._str(self._device("nvmlDeviceGetUUID", handle).uuid)

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> _Memory:
        """Total/free/used device memory in bytes."""
        gpu = self._device("nvmlDeviceGetMemoryInfo", handle)
        return _Memory(total=gpu.memory_total, free=gpu.memory_total - gpu.memory_used, used=gpu.memory_used)

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> _Utilization:
        """Percent of the last sample period a kernel ran (``gpu``) / memory was accessed (``memory``)."""
        gpu = self._device("nvmlDeviceGetUtilizationRates", handle)
        return _Utilization(gpu=round(gpu.utilization * 100), memory=round(gpu.memory_utilization * 100))

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        """Power draw in milliwatts."""
        return round(self._device("nvmlDeviceGetPowerUsage", handle).power_w * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        """Millijoules since driver load; ``NVML_ERROR_NOT_SUPPORTED`` before Volta."""
        gpu = self._device("nvmlDeviceGetTotalEnergyConsumption", handle)
        if not gpu.energy_supported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        self._advance(gpu)
        return int(gpu.energy_mj)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        """Core temperature in degrees Celsius; only ``NVML_TEMPERATURE_GPU`` exists."""
        gpu = self._device("nvmlDeviceGetTemperature", handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return round(gpu.temperature_c)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[_Proc]:
        """Compute processes with their device memory (``None`` = not available)."""
        gpu = self._device("nvmlDeviceGetComputeRunningProcesses", handle)
        return [_Proc(pid, used) for pid, used in gpu.processes.items()]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: _Handle) -> list[_Proc]:
        """Graphics processes with their device memory."""
        gpu = self._device("nvmlDeviceGetGraphicsRunningProcesses", handle)
        return [_Proc(pid, used) for pid, used in gpu.graphics_processes.items()]

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        """Driver version string."""
        self._enter("nvmlSystemGetDriverVersion")
        return self._str(self.driver)

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        """CUDA driver version as ``1000*major + 10*minor``."""
        self._enter("nvmlSystemGetCudaDriverVersion")
        return self.cuda

    def __getattr__(self, name: str) -> Any:
        # Constants a caller may look up that are not listed above come from the real module.
        if name.startswith("NVML_"):
            return getattr(pynvml, name)
        raise AttributeError(name)
