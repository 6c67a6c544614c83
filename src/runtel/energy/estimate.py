"""CPU energy estimated from CPU seconds when no RAPL counter is readable, and energy -> emissions.

Model (documented in docs/metrics.md, "Estimates"): a busy hardware thread draws its share of the package's
TDP, ``TDP / threads of the package``; idle threads are not charged. The tree's estimated CPU energy is
therefore ``CPU seconds x TDP / package threads``: a function of a cumulative counter, so the energy of any
window (a block of 5 ms included) is exact given the model, and the process's power can never exceed
``TDP x usable CPUs / package threads`` (a 2-vCPU VM slice of a 64-core package is charged 2/128 of it, not
the whole package). Where the package's thread count and the usable CPUs come from is recorded with the
estimate (:func:`runtel.energy.tdp.estimate_basis`). Readings are ``estimated=True`` and ``source="estimate"``.

:func:`estimate_cpu_power_w` is the older utilisation curve, kept as the documented curve of the earlier model.
"""

from __future__ import annotations

from typing import Final

from runtel.energy.base import EnergyReading

__all__ = ("CpuEnergyEstimator", "emissions_g", "estimate_cpu_power_w")

ESTIMATE_DOMAIN: Final = "cpu:estimate"
IDLE_FRACTION: Final = 0.1
JOULES_PER_KWH: Final = 3.6e6


def estimate_cpu_power_w(tdp_w: float, tree_share: float, system_utilization: float | None) -> float:
    """Watts attributed to the tree.

    Args:
        tdp_w: CPU TDP in watts (all packages).
        tree_share: The tree's CPU use as a fraction of all logical CPUs (0-1).
        system_utilization: Whole-machine CPU utilisation (0-1); ``None`` = assume the tree is the only load.

    Example:
        >>> round(estimate_cpu_power_w(100.0, 0.5, 0.5), 6)  # TDP x (0.1 + 0.9 x 0.5) x (0.5 / 0.5)
        55.0
    """
    u_tree = min(1.0, max(0.0, tree_share))
    u_sys = u_tree if system_utilization is None else min(1.0, max(u_tree, system_utilization))
    if u_sys <= 0.0:
        return 0.0
    machine = tdp_w * (IDLE_FRACTION + (1.0 - IDLE_FRACTION) * u_sys)
    return machine * (u_tree / u_sys)


class CpuEnergyEstimator:
    """Turns the tree's cumulative CPU seconds into cumulative estimated joules.

    Args:
        tdp_w: CPU TDP per package in watts.
        logical_cores: Logical CPUs the machine shows (used when ``package_threads`` is not given).
        packages: CPU sockets (the visible threads are split evenly among them).
        tdp_source: Provenance of ``tdp_w`` (``"setting"``, ``"table"``, ``"default"``) for the record.
        package_threads: Hardware threads of one package (the real package's, when known from the table).
    """

    domain = ESTIMATE_DOMAIN
    estimated = True

    def __init__(self, tdp_w: float, logical_cores: int, *, packages: int = 1, tdp_source: str = "setting",
                 package_threads: float | None = None) -> None:
        self.tdp_w = float(tdp_w)
        self.logical_cores = max(1, logical_cores)
        self.tdp_source = tdp_source
        threads = package_threads if package_threads else self.logical_cores / max(1, packages)
        self.package_threads = max(1.0, float(threads))
        #: joules per CPU-second: one busy thread's share of the package TDP
        self.joules_per_cpu_s = self.tdp_w / self.package_threads
        self._joules = 0.0
        self._cpu0: float | None = None
        self._last: tuple[float, float] | None = None
        self.last_power_w: float | None = None

    def update(self, monotonic_s: float, cpu_time_s: float) -> EnergyReading:
        """The joules up to now from the tree's cumulative CPU seconds (user + system)."""
        if self._cpu0 is None:
            self._cpu0 = cpu_time_s
        joules = max(0.0, cpu_time_s - self._cpu0) * self.joules_per_cpu_s
        if self._last is not None and monotonic_s > self._last[0]:
            self.last_power_w = max(0.0, joules - self._last[1]) / (monotonic_s - self._last[0])
        self._last = (monotonic_s, joules)
        self._joules = max(self._joules, joules)
        return self.read()

    def read(self) -> EnergyReading:
        """Joules accumulated so far."""
        return EnergyReading(
            domain=self.domain, joules=self._joules, estimated=True, source="estimate", power_w=self.last_power_w
        )


def emissions_g(joules: float, carbon_intensity_g_per_kwh: float) -> float:
    """Grams of CO2-equivalent for ``joules`` at a grid intensity in gCO2eq/kWh.

    Example:
        >>> emissions_g(3.6e6, 475.0)
        475.0
    """
    return joules / JOULES_PER_KWH * carbon_intensity_g_per_kwh
