"""GPU energy as :class:`EnergyReading` values, from the cumulative ``energy_j`` of GPU readings.

The GPU backend is passed in (this module never imports a driver); the sampler reads the GPUs once per tick
and hands the readings here, so energy needs no extra driver call. Joules count from the first reading that
had an energy value. A counter that goes backwards (driver reload) restarts the delta from the new value.
Power-integrated values (devices without an energy counter) are marked ``estimated``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from runtel.energy.base import EnergyReading

if TYPE_CHECKING:
    from runtel.gpu.base import GpuBackend, GpuReading

__all__ = ("GpuEnergy",)

_SOURCES = {"nvml": "nvml", "amd": "amdsmi"}


class GpuEnergy:
    """Per-device cumulative joules since tracking started, one domain ``gpu:<uuid>`` per device.

    Args:
        backend: The GPU backend whose readings will be passed to :meth:`readings` (its ``name`` gives the
            ``source``: ``"nvml"`` or ``"amdsmi"``).
    """

    def __init__(self, backend: GpuBackend) -> None:
        self.source = _SOURCES.get(backend.name, backend.name)
        self._last: dict[str, float] = {}
        self._total: dict[str, float] = {}
        self._estimated: dict[str, bool] = {}
        self._power: dict[str, float | None] = {}

    def readings(self, gpus: Sequence[GpuReading]) -> tuple[EnergyReading, ...]:
        """Update from one tick's GPU readings and return one energy reading per device seen so far."""
        for reading in gpus:
            if reading.energy_j is None:
                continue
            uuid = reading.uuid
            last = self._last.get(uuid)
            if last is not None:
                delta = reading.energy_j - last
                self._total[uuid] = self._total.get(uuid, 0.0) + (delta if delta >= 0 else 0.0)
            else:
                self._total.setdefault(uuid, 0.0)
            self._last[uuid] = reading.energy_j
            self._estimated[uuid] = self._estimated.get(uuid, False) or reading.energy_integrated
            self._power[uuid] = reading.power_w
        return tuple(
            EnergyReading(
                domain=f"gpu:{uuid}",
                joules=total,
                estimated=self._estimated[uuid],
                source=self.source,
                power_w=self._power.get(uuid),
            )
            for uuid, total in self._total.items()
        )
