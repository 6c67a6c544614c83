"""The Monitor façade: backend choice from settings, RAPL vs estimate, usage windows, never raising."""

from __future__ import annotations

import os
import time
from pathlib import Path

from runtel.config import resolve_settings
from runtel.gpu.null import NullBackend
from runtel.gpu.nvml import open_nvml
from runtel.sampling.monitor import EDGE_REUSE_S, Monitor
from runtel.sampling.proctree import ProcessTree
from runtel.sampling.sampler import Sampler
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


def _monitor() -> tuple[Monitor, Sampler]:
    sampler = Sampler(interval=0.1, detail_interval=1.0, tree=ProcessTree([os.getpid()]), gpu=NullBackend(),
                      n_expected_cores=1)
    return Monitor(sampler), sampler


def test_edge_samples_back_to_back_share_one_snapshot() -> None:
    """A run's end edge and the next run's start edge taken at once reuse one sample; 10 ms later a new one is taken."""
    monitor, sampler = _monitor()
    sampler.sample_now()  # warm: the first read also reads USS/PSS, which is slower
    reused = False
    for _ in range(50):  # a loaded machine may stretch one read past EDGE_REUSE_S; some pair must be quick enough
        first = monitor.edge_sample()
        second = monitor.edge_sample()
        checked = time.monotonic()
        assert first is not None and second is not None
        if second is first:
            reused = True
            break
        assert checked - first.monotonic_s >= EDGE_REUSE_S  # a new sample only once the latest was too old
    assert reused
    time.sleep(0.01)
    third = monitor.edge_sample()
    assert third is not None and third is not first
    assert third.time_ns > first.time_ns and third.monotonic_s - first.monotonic_s >= 0.01
    assert sampler.latest is third


def test_edge_sample_reuse_window_is_edge_reuse_s() -> None:
    """The latest sample is reused only while it is younger than EDGE_REUSE_S (measured on time.monotonic)."""
    monitor, sampler = _monitor()
    fresh = sampler.sample_now()
    assert fresh is not None
    young = fresh._replace(monotonic_s=time.monotonic())
    sampler.latest = young
    assert monitor.edge_sample() is young
    old = fresh._replace(monotonic_s=time.monotonic() - 2 * EDGE_REUSE_S)
    sampler.latest = old
    taken = monitor.edge_sample()
    assert taken is not None and taken is not old and taken.monotonic_s > old.monotonic_s
    assert Monitor(None).edge_sample() is None
