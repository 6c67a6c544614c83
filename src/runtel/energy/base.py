"""What an energy source is: a cumulative joule counter for one domain, and whether it is measured or estimated."""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

__all__ = ("EnergyReading", "EnergySource")


class EnergyReading(NamedTuple):
    """Energy used by one domain since its source was opened.

    Attributes:
        domain: ``"cpu:package-0"``, ``"cpu:package-0:dram"``, ``"gpu:<uuid>"`` or ``"cpu:estimate"``.
        joules: Cumulative joules since the source was opened (monotonic; counter wrap already handled).
        estimated: ``True`` when derived from a model (TDP x utilisation, power integration), not a counter.
        source: ``"rapl"``, ``"nvml"``, ``"amdsmi"`` or ``"estimate"``.
        power_w: Mean power since the previous reading of this source (``None`` on the first reading).
    """

    domain: str
    joules: float
    estimated: bool
    source: str
    power_w: float | None = None


@runtime_checkable
class EnergySource(Protocol):
    """A cumulative energy counter (RAPL package, GPU counter, estimate)."""

    domain: str
    estimated: bool

    def read(self) -> EnergyReading:
        """Cumulative joules since the source was opened; blocking (a file or driver read)."""
        ...
