"""CPU energy estimate (TDP share x CPU seconds), TDP table, GPU energy from readings, emissions."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtel.energy.estimate import CpuEnergyEstimator, emissions_g, estimate_cpu_power_w
from runtel.energy.gpu import GpuEnergy
from runtel.energy.tdp import DEFAULT_TDP_W, estimate_basis, lookup_tdp, resolve_tdp
from runtel.gpu.base import GpuReading
from runtel.gpu.null import NullBackend


def test_power_curve_endpoints() -> None:
    """The tree alone at full load draws TDP; at idle it draws nothing; half the busy time gets half."""
    assert estimate_cpu_power_w(100.0, 1.0, 1.0) == pytest.approx(100.0)
    assert estimate_cpu_power_w(100.0, 0.0, 0.3) == 0.0
    assert estimate_cpu_power_w(100.0, 0.25, 0.5) == pytest.approx(100.0 * (0.1 + 0.45) / 2)


def test_estimator_charges_cpu_seconds_at_a_threads_share_of_tdp() -> None:
    """TDP 80 W for a 4-thread package: 20 W per busy thread; 2 busy threads for 10 s = 20 CPU-s = 400 J."""
    est = CpuEnergyEstimator(80.0, 4)
    est.update(0.0, 100.0)
    reading = est.update(10.0, 120.0)
    assert reading.joules == pytest.approx(400.0)
    assert reading.estimated and reading.source == "estimate" and reading.domain == "cpu:estimate"
    assert reading.power_w == pytest.approx(40.0)


def test_estimate_scales_to_the_real_package(tmp_path: Path) -> None:
    """A 2-vCPU VM on an EPYC 7763 (280 W, 128 threads) is charged 2.19 W per busy vCPU, not 85 or 280 W."""
    cpuinfo = tmp_path / "cpuinfo"
    block = "processor\t: {i}\nmodel name\t: AMD EPYC 7763 64-Core Processor\nphysical id\t: 0\nsiblings\t: 2\n" \
            "flags\t\t: fpu hypervisor sse\n\n"
    cpuinfo.write_text(block.format(i=0) + block.format(i=1))
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cpu.max").write_text("50000 100000\n")  # half a CPU
    basis = estimate_basis(None, cpuinfo=cpuinfo, cgroup_root=cgroup)
    assert (basis["tdp_w"], basis["tdp_source"], basis["package_threads"], basis["package_threads_source"]) == (
        280.0, "table", 128.0, "table")
    assert basis["usable_cpus"] == 0.5 and basis["usable_cpus_source"] == "cgroup cpu.max"
    assert basis["watts_per_busy_cpu"] == pytest.approx(280.0 / 128)
    assert basis["max_power_w"] == pytest.approx(280.0 / 128 * 0.5)
    # an unknown model in a VM: the host package is unknown, 16 threads assumed and said so
    cpuinfo.write_text(block.replace("AMD EPYC 7763 64-Core Processor", "Intel Xeon Processor").format(i=0))
    unknown = estimate_basis(None, cpuinfo=cpuinfo, cgroup_root=tmp_path / "none")
    assert unknown["package_threads_source"] == "assumed" and unknown["package_threads"] == 16.0
    assert unknown["watts_per_busy_cpu"] == pytest.approx(85.0 / 16)
    assert "host package is unknown" in str(unknown["assumption"])
    # bare metal, unknown model: the package is what cpuinfo shows
    cpuinfo.write_text(block.replace("AMD EPYC 7763 64-Core Processor", "Some CPU").replace(" hypervisor", "")
                       .format(i=0))
    metal = estimate_basis(None, cpuinfo=cpuinfo, cgroup_root=tmp_path / "none")
    assert (metal["package_threads"], metal["package_threads_source"]) == (2.0, "cpuinfo")


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
