"""CPU energy estimated from utilisation when no RAPL counter is readable, and energy -> emissions.

Model (documented in docs/metrics.md): the machine's CPU power is ``TDP x (0.1 + 0.9 x u_sys)``, where ``u_sys``
is whole-machine CPU utilisation (0-1): 10% of TDP at idle, linear up to TDP at full load (a linear curve keeps
the interval average exact, because utilisation readings are averages over the interval). The tracked tree is
charged that power times its share of the busy CPU time, ``u_tree / u_sys`` with
``u_tree = tree CPU utilisation (sum of cores) / logical cores``. When the job is the only load the tree gets
the whole curve (including the idle floor); an idle tree gets 0 W. Energy integrates power over each sample
interval. Readings are ``estimated=True`` and ``source="estimate"``.
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
    """Integrates :func:`estimate_cpu_power_w` over sample intervals into cumulative joules.

    Args:
        tdp_w: CPU TDP (per package) in watts.
        logical_cores: Logical CPUs of the machine (denominator of the tree share).
        packages: CPU sockets; the modelled TDP is ``tdp_w x packages``.
        tdp_source: Provenance of ``tdp_w`` (``"setting"``, ``"table"``, ``"default"``) for the record.
    """

    domain = ESTIMATE_DOMAIN
    estimated = True

    def __init__(self, tdp_w: float, logical_cores: int, *, packages: int = 1, tdp_source: str = "setting") -> None:
        self.tdp_w = float(tdp_w) * max(1, packages)
        self.logical_cores = max(1, logical_cores)
        self.tdp_source = tdp_source
        self._joules = 0.0
        self._last_t: float | None = None
        self.last_power_w: float | None = None

    def update(self, monotonic_s: float, process_utilization: float, system_utilization: float | None) -> EnergyReading:
        """Add the energy of the interval ending now.

        Args:
            monotonic_s: Time of this sample.
            process_utilization: Tree CPU use over the interval as a sum of cores (2.0 = two busy cores).
            system_utilization: Machine CPU use over the interval (0-1), if known.
        """
        power = estimate_cpu_power_w(self.tdp_w, process_utilization / self.logical_cores, system_utilization)
        if self._last_t is not None and monotonic_s > self._last_t:
            self._joules += power * (monotonic_s - self._last_t)
        self._last_t = monotonic_s
        self.last_power_w = power
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
