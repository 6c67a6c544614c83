"""Energy sources behind one Protocol: RAPL counters, GPU counters, and a utilisation-based CPU estimate.

Order of preference (the run record says which one was used): hardware counters (RAPL, NVML/amdsmi energy),
then power integration (GPUs without a counter), then the TDP x utilisation model.
"""

from __future__ import annotations

from runtel.energy.base import EnergyReading, EnergySource
from runtel.energy.estimate import CpuEnergyEstimator, emissions_g, estimate_cpu_power_w
from runtel.energy.gpu import GpuEnergy
from runtel.energy.rapl import RaplSource, open_rapl
from runtel.energy.tdp import DEFAULT_TDP_W, cpu_model_name, lookup_tdp, resolve_tdp

__all__ = (
    "DEFAULT_TDP_W",
    "CpuEnergyEstimator",
    "EnergyReading",
    "EnergySource",
    "GpuEnergy",
    "RaplSource",
    "cpu_model_name",
    "emissions_g",
    "estimate_cpu_power_w",
    "lookup_tdp",
    "open_rapl",
    "resolve_tdp",
)
