"""What a GPU backend is: inventory (:class:`GpuDevice`), one sample per device (:class:`GpuReading`), the Protocol.

All values are SI: bytes, watts, joules, 0-1 fractions, degrees Celsius. ``None`` means "this device or driver
could not tell us" (unsupported call, lost GPU, permission), never zero.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = ("GpuBackend", "GpuDevice", "GpuReading", "parse_visible_devices")

#: the shared, read-only default of mapping fields (a NamedTuple cannot have per-instance factories)
_EMPTY: Mapping[Any, Any] = MappingProxyType({})


class GpuDevice:
    """Static facts about one GPU, recorded once per run (run.json ``gpus``).

    Immutable by convention. Not a NamedTuple (its ``index`` field would shadow ``tuple.index``) and not a
    dataclass (defining one cost ~1 ms on a process's first run, which imports this module).
    """

    __slots__ = ("cuda_version", "driver_version", "index", "memory_total_bytes", "name", "uuid", "vendor")

    def __init__(self, index: int, uuid: str, name: str, memory_total_bytes: int | None, driver_version: str | None,
                 cuda_version: str | None, vendor: str) -> None:
        self.index = index
        self.uuid = uuid
        self.name = name
        self.memory_total_bytes = memory_total_bytes
        self.driver_version = driver_version
        self.cuda_version = cuda_version
        self.vendor = vendor  # "nvidia" | "amd"

    def _key(self) -> tuple[object, ...]:
        return (self.index, self.uuid, self.name, self.memory_total_bytes, self.driver_version, self.cuda_version,
                self.vendor)

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if isinstance(other, GpuDevice) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"GpuDevice(index={self.index!r}, uuid={self.uuid!r}, name={self.name!r}, "
                f"memory_total_bytes={self.memory_total_bytes!r}, driver_version={self.driver_version!r}, "
                f"cuda_version={self.cuda_version!r}, vendor={self.vendor!r})")

    def to_dict(self) -> dict[str, object]:
        """JSON-safe form for the run record."""
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "memory_total_bytes": self.memory_total_bytes,
            "driver_version": self.driver_version,
            "cuda_version": self.cuda_version,
            "vendor": self.vendor,
        }


class GpuReading(NamedTuple):
    """One device at one instant.

    Attributes:
        uuid: Device UUID (the ``hw.id`` of every GPU metric).
        utilization: Fraction of time a kernel ran during the driver's last sample period (0-1).
        memory_used_bytes: Device memory in use by everyone on the device.
        memory_total_bytes: Device memory size.
        power_w: Board power draw in watts.
        energy_j: Cumulative energy in joules: the driver counter (since driver load) when the device has one,
            else runtel's integral of ``power_w`` since the backend was opened (then ``energy_integrated``).
        temperature_c: GPU core temperature.
        process_memory_bytes: Device memory per tracked pid; ``None`` values where the driver does not expose
            it (containers, WDDM); only pids passed to :meth:`GpuBackend.read` appear.
        energy_integrated: ``energy_j`` is runtel's power integral, not a hardware counter.
    """

    uuid: str
    utilization: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_w: float | None = None
    energy_j: float | None = None
    temperature_c: float | None = None
    process_memory_bytes: Mapping[int, int | None] = _EMPTY
    energy_integrated: bool = False


@runtime_checkable
class GpuBackend(Protocol):
    """A source of GPU inventory and readings (NVML, amdsmi, or nothing).

    ``read`` is blocking and always called off the event loop. Implementations isolate failures: a failing
    call leaves that field ``None`` (logged once per device and call); ``read`` itself does not raise.
    """

    name: str

    def devices(self) -> Sequence[GpuDevice]:
        """The devices this backend reports, after ``CUDA_VISIBLE_DEVICES``/UUID filtering."""
        ...

    def read(self, pids: Collection[int]) -> Sequence[GpuReading]:
        """One reading per device; per-process memory only for ``pids``."""
        ...

    def close(self) -> None:
        """Release the driver handle (idempotent)."""
        ...


def parse_visible_devices(raw: str | None, uuids: Sequence[str]) -> list[int] | None:
    """Indices selected by a ``CUDA_VISIBLE_DEVICES`` value, in its order.

    Args:
        raw: The variable's value; ``None`` when unset (all devices visible).
        uuids: UUIDs of all devices in NVML index order.

    Returns:
        ``None`` when every device is visible, else the selected indices (possibly empty).
    """
    if raw is None:
        return None
    selected: list[int] = []
    for entry in (part.strip() for part in raw.split(",")):
        index: int | None = None
        if entry.lstrip("+-").isdigit():
            number = int(entry)
            index = number if 0 <= number < len(uuids) else None
        elif entry:  # a UUID or a unique prefix of one ("GPU-8f3c...")
            matches = [i for i, u in enumerate(uuids) if u.startswith(entry)]
            index = matches[0] if len(matches) == 1 else None
        if index is None:  # CUDA stops at the first invalid entry ("-1", unknown UUID, MIG-..., empty)
            break
        if index not in selected:
            selected.append(index)
    return selected
