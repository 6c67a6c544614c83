"""CPU energy estimate (TDP x utilisation), TDP table, GPU energy from readings, emissions."""

from __future__ import annotations

import pytest

from runtel.energy.estimate import CpuEnergyEstimator, emissions_g, estimate_cpu_power_w
from runtel.energy.gpu import GpuEnergy
from runtel.energy.tdp import DEFAULT_TDP_W, lookup_tdp, resolve_tdp
from runtel.gpu.base import GpuReading
from runtel.gpu.null import NullBackend


def test_power_curve_endpoints() -> None:
    """The tree alone at full load draws TDP; at idle it draws nothing; half the busy time gets half."""
    assert estimate_cpu_power_w(100.0, 1.0, 1.0) == pytest.approx(100.0)
    assert estimate_cpu_power_w(100.0, 0.0, 0.3) == 0.0
    assert estimate_cpu_power_w(100.0, 0.25, 0.5) == pytest.approx(100.0 * (0.1 + 0.45) / 2)


def test_estimator_integrates_over_intervals() -> None:
    """Two busy cores of four for 10 s at TDP 80 W, no other load: 80 x (0.1 + 0.9 x 0.5) x 10 J."""
    est = CpuEnergyEstimator(80.0, 4)
    est.update(0.0, 2.0, 0.5)
    reading = est.update(10.0, 2.0, 0.5)
    assert reading.joules == pytest.approx(80.0 * 0.55 * 10.0)
    assert reading.estimated and reading.source == "estimate" and reading.domain == "cpu:estimate"
    assert reading.power_w == pytest.approx(44.0)


def test_tdp_resolution_order() -> None:
    """The setting wins, then the longest table match, then 85 W."""
    assert resolve_tdp(120.0, "AMD EPYC 7763 64-Core Processor") == (120.0, "setting")
    assert resolve_tdp(None, "AMD EPYC 7763 64-Core Processor") == (280.0, "table")
    assert resolve_tdp(None, "AMD EPYC") == (DEFAULT_TDP_W, "default")
    assert lookup_tdp("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz") == 150.0


def test_emissions_from_joules() -> None:
    """One kWh at 475 g/kWh emits 475 g."""
    assert emissions_g(3.6e6, 475.0) == pytest.approx(475.0)


def test_gpu_energy_counts_from_first_reading_and_ignores_resets() -> None:
    """GPU joules start at the first reading; a counter reset (driver reload) adds nothing negative."""
    energy = GpuEnergy(NullBackend())
    energy.readings([GpuReading(uuid="GPU-1", energy_j=1000.0)])
    energy.readings([GpuReading(uuid="GPU-1", energy_j=1100.0)])
    energy.readings([GpuReading(uuid="GPU-1", energy_j=5.0)])
    (reading,) = energy.readings([GpuReading(uuid="GPU-1", energy_j=15.0, energy_integrated=True, power_w=9.0)])
    assert reading.domain == "gpu:GPU-1"
    assert reading.joules == pytest.approx(110.0)
    assert reading.estimated and reading.power_w == 9.0
