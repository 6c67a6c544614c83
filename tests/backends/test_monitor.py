"""The Monitor façade: backend choice from settings, RAPL vs estimate, usage windows, never raising."""

from __future__ import annotations

import time
from pathlib import Path

from runtel.config import resolve_settings
from runtel.gpu.nvml import open_nvml
from runtel.sampling import Monitor
from runtel.testing.nvml import FakeGpu, FakeNvml
from runtel.testing.powercap import make_powercap_tree


def test_monitor_with_fake_gpu_and_rapl(tmp_path: Path) -> None:
    """A monitor over FakeNvml and a fake powercap tree reports GPU inventory and RAPL + GPU energy domains."""
    tree = make_powercap_tree(tmp_path, {"package-0": (0, 2**32)})
    settings = resolve_settings(env={}, sample_interval=0.05)
    gpu = open_nvml(FakeNvml(gpus=[FakeGpu(uuid="GPU-m")]), env={})
    monitor = Monitor.open(settings, gpu_backend=gpu, powercap_root=tmp_path)
    assert monitor.enabled and monitor.energy_method["cpu"] == "rapl"
    assert [d["uuid"] for d in monitor.gpu_devices()] == ["GPU-m"]
    start = time.time_ns()
    first = monitor.sample_now()
    tree.advance("package-0", 3_000_000)
    last = monitor.sample_now()
    usage = monitor.usage(start, time.time_ns(), edges=(first, last))
    assert usage.samples == 2
    assert usage.energy["cpu:package-0"].joules == 3.0
    assert "gpu:GPU-m" in usage.energy
    monitor.close()


def test_monitor_estimates_without_rapl_and_runs(tmp_path: Path) -> None:
    """Without RAPL the CPU energy is estimated with the configured TDP; start/stop works."""
    settings = resolve_settings(env={}, sample_interval=0.05, cpu_tdp=50.0, gpu_backend="none")
    monitor = Monitor.open(settings, powercap_root=tmp_path / "none")
    assert monitor.energy_method["cpu"] == "estimate" and monitor.energy_method["tdp_w"] == 50.0
    start = time.time_ns()
    monitor.start()
    time.sleep(0.3)
    monitor.stop()
    usage = monitor.usage(start, time.time_ns())
    assert usage.samples >= 3 and usage.energy_estimated


def test_disabled_monitor_is_inert() -> None:
    """sampling=false gives a monitor that records nothing and whose methods are harmless."""
    monitor = Monitor.open(resolve_settings(env={}, sampling=False))
    monitor.start()
    assert not monitor.enabled and monitor.sample_now() is None
    assert monitor.usage(0, 1).samples == 0 and monitor.gpu_devices() == []
    monitor.set_roots([1])
    monitor.stop()
