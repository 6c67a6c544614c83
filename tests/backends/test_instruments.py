"""Observable instruments: names, units and attributes via a real MeterProvider; callbacks read only `latest`."""

from __future__ import annotations

import os
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from runtel import semconv
from runtel.energy.base import EnergyReading
from runtel.gpu.nvml import open_nvml
from runtel.sampling.instruments import register_instruments
from runtel.sampling.proctree import ProcessTree
from runtel.sampling.sampler import Sampler
from runtel.sampling.samples import GpuReading, ProcessStats, Snapshot, SystemStats
from runtel.testing.nvml import FakeGpu, FakeNvml

UUID = "GPU-1234"


def snapshot(scale: int) -> Snapshot:
    main = ProcessStats(
        cpu_time_s=3.0 * scale,
        cpu_user_s=2.0 * scale,
        cpu_system_s=1.0 * scale,
        cpu_utilization=1.5,
        cpu_user_utilization=1.0,
        rss_bytes=100 * scale,
        vms_bytes=1000 * scale,
        uss_bytes=80 * scale,
        pss_bytes=90 * scale,
        threads=4,
        processes=1,
    )
    empty = ProcessStats()
    return Snapshot(
        time_ns=scale,
        monotonic_s=float(scale),
        main=main,
        descendants=empty,
        combined=main,
        system=SystemStats(0.25, 600 * scale, 400, 1000 * scale, 10, 50),
        gpus=(
            GpuReading(
                uuid=UUID,
                utilization=0.5,
                memory_used_bytes=2 * 2**30,
                memory_total_bytes=8 * 2**30,
                power_w=150.0,
                energy_j=10.0,
                temperature_c=70.0,
            ),
        ),
        energy=(
            EnergyReading("cpu:estimate", 36.0 * scale, True, "estimate", power_w=12.0),
            EnergyReading(f"gpu:{UUID}", 3600.0 * scale, False, "nvml", power_w=150.0),
        ),
        tree_gpu_memory_bytes=2**30,
        n_expected_cores=2,
        logical_cores=4,
    )


@pytest.fixture
def collected() -> Any:
    nvml = FakeNvml(gpus=[FakeGpu(uuid=UUID, name="NVIDIA T4")])
    sampler = Sampler(
        interval=1.0,
        detail_interval=10.0,
        tree=ProcessTree([os.getpid()]),
        gpu=open_nvml(nvml, env={}),
        n_expected_cores=2,
    )
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    register_instruments(provider.get_meter("runtel"), sampler, lambda: ["run-a", "run-b"], carbon_intensity=360.0)

    def collect(snap: Snapshot | None) -> dict[str, tuple[str, list[tuple[dict[str, Any], float]]]]:
        sampler.latest = snap
        data = reader.get_metrics_data()
        out: dict[str, tuple[str, list[tuple[dict[str, Any], float]]]] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    points = [(dict(p.attributes or {}), p.value) for p in metric.data.data_points]  # type: ignore[union-attr]
                    out[metric.name] = (metric.unit or "", points)
        return out

    yield collect
    provider.shutdown()


def pick(points: list[tuple[dict[str, Any], float]], run: str = "run-a", /, **attrs: Any) -> list[float]:
    return [v for a, v in points if a.get(semconv.RUN_ID) == run and all(a.get(k) == x for k, x in attrs.items())]


def test_names_and_units(collected: Any) -> None:
    """Every instrument has its semantic-convention name and exact UCUM unit."""
    metrics = collected(snapshot(1))
    units = {name: unit for name, (unit, _) in metrics.items()}
    assert units == {
        semconv.PROCESS_CPU_TIME: "s",
        semconv.PROCESS_CPU_UTILIZATION: "1",
        semconv.PROCESS_MEMORY_USAGE: "By",
        semconv.PROCESS_MEMORY_VIRTUAL: "By",
        semconv.PROCESS_THREAD_COUNT: "{thread}",
        semconv.RUNTEL_PROCESS_COUNT: "{process}",
        semconv.SYSTEM_CPU_UTILIZATION: "1",
        semconv.SYSTEM_MEMORY_USAGE: "By",
        semconv.SYSTEM_MEMORY_LIMIT: "By",
        semconv.SYSTEM_PAGING_USAGE: "By",
        semconv.HW_GPU_UTILIZATION: "1",
        semconv.HW_GPU_MEMORY_USAGE: "By",
        semconv.HW_GPU_MEMORY_LIMIT: "By",
        semconv.HW_GPU_MEMORY_UTILIZATION: "1",
        semconv.HW_POWER: "W",
        semconv.HW_ENERGY: "J",
        semconv.HW_TEMPERATURE: "Cel",
        semconv.RUNTEL_PROCESS_GPU_MEMORY: "By",
        semconv.RUNTEL_EMISSIONS: "g",
    }


def test_values_come_from_latest_snapshot_per_run(collected: Any) -> None:
    """Values equal the swapped-in snapshot (not a fresh psutil read), once per active run id."""
    for scale in (1, 7):
        m = collected(snapshot(scale))
        mem = m[semconv.PROCESS_MEMORY_USAGE][1]
        assert pick(mem, **{semconv.SCOPE_ATTR: "main", semconv.MEMORY_KIND: "rss"}) == [100 * scale]
        assert pick(mem, "run-b", **{semconv.SCOPE_ATTR: "combined", semconv.MEMORY_KIND: "pss"}) == [90 * scale]
        cpu = m[semconv.PROCESS_CPU_TIME][1]
        assert pick(cpu, **{semconv.SCOPE_ATTR: "combined", semconv.CPU_MODE: "user"}) == [2.0 * scale]
        assert m[semconv.SYSTEM_MEMORY_LIMIT][1] and pick(m[semconv.SYSTEM_MEMORY_LIMIT][1]) == [1000 * scale]
        assert pick(m[semconv.HW_ENERGY][1], **{semconv.HW_TYPE: "cpu"}) == [36.0 * scale]


def test_cpu_utilization_semconv_and_cores_basis(collected: Any) -> None:
    """process.cpu.utilization is /logical cores by default and the sum of cores with basis=cores."""
    points = collected(snapshot(1))[semconv.PROCESS_CPU_UTILIZATION][1]
    user: dict[str, Any] = {semconv.SCOPE_ATTR: "combined", semconv.CPU_MODE: "user"}
    values = pick(points, **user)
    assert sorted(values) == [pytest.approx(0.25), pytest.approx(1.0)]
    assert pick(points, **user, **{semconv.CPU_UTILIZATION_BASIS: "cores"}) == [1.0]
    assert pick(points, **{semconv.SCOPE_ATTR: "combined", semconv.CPU_MODE: "system"}) == [0.125, 0.5]


def test_gpu_attributes(collected: Any) -> None:
    """GPU metrics carry hw.id=UUID, hw.name, hw.type=gpu, hw.vendor and hw.gpu.task=general."""
    m = collected(snapshot(1))
    ((attrs, value),) = [p for p in m[semconv.HW_GPU_UTILIZATION][1] if p[0][semconv.RUN_ID] == "run-a"]
    assert value == 0.5
    assert attrs[semconv.HW_ID] == UUID and attrs[semconv.HW_NAME] == "NVIDIA T4"
    assert (attrs[semconv.HW_TYPE], attrs[semconv.HW_VENDOR], attrs[semconv.HW_GPU_TASK]) == (
        "gpu",
        "nvidia",
        "general",
    )
    assert pick(m[semconv.HW_GPU_MEMORY_UTILIZATION][1]) == [0.25]
    energy = pick(m[semconv.HW_ENERGY][1], **{semconv.HW_TYPE: "gpu", semconv.ENERGY_SOURCE: "nvml"})
    assert energy == [3600.0]
    assert pick(m[semconv.HW_POWER][1], **{semconv.HW_TYPE: "cpu", semconv.ENERGY_ESTIMATED: True}) == [12.0]
    assert pick(m[semconv.HW_TEMPERATURE][1], **{semconv.HW_PARENT: UUID}) == [70.0]
    assert pick(m[semconv.RUNTEL_EMISSIONS][1]) == [pytest.approx((36.0 + 3600.0) / 3.6e6 * 360.0)]


def test_nothing_observed_without_snapshot(collected: Any) -> None:
    """Before the first sample no instrument reports a point."""
    metrics = collected(None)
    assert all(not points for _, points in metrics.values())
