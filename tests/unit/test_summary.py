"""Window statistics: peaks, means, energy differences, attributes and the run.json record."""

from __future__ import annotations

import json

import pytest

from runtel import semconv
from runtel.energy.base import EnergyReading
from runtel.sampling.samples import GpuReading, ProcessStats, Snapshot, SystemStats
from runtel.sampling.summary import resource_usage_record, summarize, usage_attributes, with_rss_floor

S = 1_000_000_000


def snap(
    t: int, util: float, rss: int, joules: float, gpu_util: float | None = None, uss: int | None = None,
    cpu: float | None = None,
) -> Snapshot:
    """A sample at ``t`` s; ``cpu``: the main process's cumulative CPU seconds (default ``t``), the child's the
    same, so the combined tree's is twice it (as its ``cpu_utilization`` is twice ``util``)."""
    cpu = float(t) if cpu is None else cpu
    main = ProcessStats(cpu_time_s=cpu, cpu_utilization=util, rss_bytes=rss, uss_bytes=uss, threads=2, processes=1)
    child = ProcessStats(cpu_time_s=cpu, cpu_utilization=util, rss_bytes=rss // 2, threads=3, processes=1)
    combined = ProcessStats(
        cpu_time_s=2 * cpu, cpu_utilization=2 * util, rss_bytes=rss + rss // 2, uss_bytes=uss, threads=5, processes=2
    )
    gpus = (
        ()
        if gpu_util is None
        else (GpuReading(uuid="GPU-1", utilization=gpu_util, memory_used_bytes=100, power_w=50.0),)
    )
    return Snapshot(
        time_ns=t * S,
        monotonic_s=float(t),
        main=main,
        descendants=child,
        combined=combined,
        system=SystemStats(0.5, 1000 + t, 0, 10_000, 0, 0),
        gpus=gpus,
        energy=(EnergyReading("cpu:estimate", joules, True, "estimate"),),
        tree_gpu_memory_bytes=None if gpu_util is None else 40,
        n_expected_cores=4,
        logical_cores=8,
    )


def test_peaks_means_and_energy_over_window() -> None:
    """Max/mean use only in-window samples (rates of in-window intervals); energy is last minus first reading."""
    snaps = [
        snap(0, 9.0, 10**9, 0.0, cpu=0.0),
        snap(1, 1.0, 100, 10.0, uss=50, cpu=1.0),
        snap(2, 3.0, 300, 30.0, cpu=4.0),  # 3 CPU-s of the main process in the window's second: 6 for the tree
        snap(3, 9.0, 999, 90.0, cpu=13.0),
    ]
    s = summarize(snaps, start_ns=1 * S, end_ns=2 * S, n_expected_cores=4, carbon_intensity=360.0)
    assert s.samples == 2
    assert s.duration_s == 1.0
    # rates from the CPU time between the window's own samples (the sample at its start holds the rate of the
    # second before it: not a rate of the window)
    assert s.cpu_utilization_max["combined"] == 6.0 and s.cpu_utilization_mean["combined"] == 6.0
    assert s.cpu_hardware_utilization_max == 1.5
    assert s.rss_max == {"main": 300, "descendants": 150, "combined": 450}
    assert s.uss_max == {"main": 50, "combined": 50}
    assert s.threads_max["combined"] == 5
    assert s.energy["cpu:estimate"].joules == 20.0 and s.energy_estimated
    assert s.emissions_g == pytest.approx(20.0 / 3.6e6 * 360.0)
    assert s.cpu_time_s == 6.0
    assert s.system_memory_used_max == 1002


def test_gpu_statistics() -> None:
    """GPU utilisation max/mean, memory and mean power come from samples that have GPU readings."""
    snaps = [snap(1, 1.0, 1, 0.0, gpu_util=0.2), snap(2, 1.0, 1, 0.0, gpu_util=0.6), snap(3, 1.0, 1, 0.0)]
    s = summarize(snaps, start_ns=0, end_ns=5 * S, n_expected_cores=1, carbon_intensity=0.0)
    assert s.gpu_count == 1
    assert s.gpu_utilization_max == 0.6 and s.gpu_utilization_mean == pytest.approx(0.4)
    assert s.gpu_memory_used_max == 100 and s.tree_gpu_memory_max == 40 and s.gpu_power_mean_w == 50.0
    attrs = usage_attributes(s)
    assert attrs[semconv.USAGE_GPU_UTILIZATION_MAX] == 0.6


def test_empty_window_only_reports_zero_samples() -> None:
    """A window without samples yields exactly {'runtel.usage.samples': 0}."""
    s = summarize([snap(9, 1.0, 1, 0.0)], start_ns=0, end_ns=S, n_expected_cores=1, carbon_intensity=1.0)
    assert usage_attributes(s) == {"runtel.usage.samples": 0}


def test_attributes_are_namespaced_and_otel_legal() -> None:
    """Every attribute key is under runtel.usage. and every value is an OTel attribute type (no None)."""
    snaps = [snap(1, 1.0, 100, 0.0), snap(2, 2.0, 200, 5.0)]
    attrs = usage_attributes(summarize(snaps, start_ns=0, end_ns=3 * S, n_expected_cores=2, carbon_intensity=475.0))
    assert all(k.startswith(semconv.USAGE_PREFIX) for k in attrs)
    assert all(isinstance(v, (str, bool, int, float, list)) for v in attrs.values())
    assert attrs["runtel.usage.memory.rss.max.combined"] == 300
    assert attrs[semconv.USAGE_ENERGY_CPU] == 5.0 and attrs[semconv.USAGE_ENERGY_SOURCES] == ["estimate"]


def test_resource_usage_record_has_units_in_keys_and_is_json() -> None:
    """run.json's resource_usage mirrors gpu_tracker's sections with explicit units and serialises to JSON."""
    snaps = [snap(1, 1.0, 100, 0.0, cpu=1.0), snap(2, 2.0, 200, 5.0, cpu=3.0)]  # the tree: 4 CPU-s in 1 s
    record = resource_usage_record(summarize(snaps, start_ns=0, end_ns=3 * S, n_expected_cores=2, carbon_intensity=1.0))
    json.dumps(record)
    assert record["max_ram"]["combined"]["max_rss_bytes"] == 300  # type: ignore[index]
    assert record["cpu_utilization"]["max_hardware_fraction"] == 2.0  # type: ignore[index]
    assert record["energy"]["domains"]["cpu:estimate"]["joules"] == 5.0  # type: ignore[index]
    assert record["compute_time"] == {"wall_seconds": 3.0, "cpu_seconds": 4.0, "children_cpu_seconds": None,
                                     "cpu_seconds_source": "samples", "floors": []}  # children: edge counters only


def test_counters_use_the_baseline_before_the_window() -> None:
    """CPU time and energy are measured from the last sample before the window; peaks use in-window samples only."""
    before, inside = snap(1, 9.0, 10**9, 10.0), snap(2, 1.0, 100, 30.0)
    s = summarize([inside], start_ns=int(1.5 * S), end_ns=int(2.5 * S), n_expected_cores=4, carbon_intensity=360.0,
                  baseline=before)
    assert s.samples == 1
    assert s.energy["cpu:estimate"].joules == 20.0
    assert s.cpu_time_s == 2.0  # the tree's (main and child: 1 CPU-s each since the baseline)
    assert s.rss_max["main"] == 100  # the baseline's 1 GB is outside the window


def test_single_sample_without_baseline_leaves_counters_unknown() -> None:
    """One in-window sample and no baseline: CPU time and energy are unknown, not 0."""
    s = summarize([snap(2, 1.0, 100, 30.0)], start_ns=int(1.5 * S), end_ns=int(2.5 * S), n_expected_cores=4,
                  carbon_intensity=360.0)
    assert s.samples == 1 and s.cpu_time_s is None and s.energy_total_j is None
    attrs = usage_attributes(s)
    assert semconv.USAGE_ENERGY_TOTAL not in attrs and semconv.USAGE_CPU_TIME not in attrs


def test_edge_sample_before_the_start_is_counted() -> None:
    """A run's own edge sample (reused from a few ms before its start) counts, though outside the window."""
    edge = snap(1, 1.0, 700, 0.0)
    start, end = 1 * S + 3_000_000, 2 * S
    assert summarize([edge], start_ns=start, end_ns=end, n_expected_cores=1, carbon_intensity=0.0).samples == 0
    s = summarize([edge], start_ns=start, end_ns=end, n_expected_cores=1, carbon_intensity=0.0, edges=(edge, None))
    assert s.samples == 1
    assert s.rss_max == {"main": 700, "descendants": 350, "combined": 1050}


def test_edges_already_in_the_window_are_not_counted_twice() -> None:
    """An edge sample that is also in the history is one sample, not two; a missing edge (None) is ignored."""
    first, last = snap(1, 1.0, 100, 10.0, cpu=1.0), snap(2, 3.0, 300, 30.0, cpu=4.0)
    s = summarize([first, last], start_ns=1 * S, end_ns=2 * S, n_expected_cores=1, carbon_intensity=0.0,
                  edges=(first, None, last))
    assert s.samples == 2
    assert s.cpu_utilization_mean["main"] == 3.0  # 3 CPU-s between the two edges (not the start edge's own rate)
    assert s.energy["cpu:estimate"].joules == 20.0


def test_rss_floor_raises_a_missed_peak_and_never_lowers_one() -> None:
    """A peak the kernel measured raises the scope's sampled peak (and what is written from it), not others."""
    s = summarize([snap(1, 1.0, 100, 10.0), snap(2, 3.0, 300, 30.0)], start_ns=1 * S, end_ns=2 * S,
                  n_expected_cores=4, carbon_intensity=360.0)
    raised = with_rss_floor(s, "combined", 10_000)
    assert raised.rss_max == {"main": 300, "descendants": 150, "combined": 10_000}
    assert resource_usage_record(raised)["max_ram"]["combined"]["max_rss_bytes"] == 10_000  # type: ignore[index]
    assert usage_attributes(raised)[semconv.USAGE_PREFIX + "memory.rss.max.combined"] == 10_000
    assert with_rss_floor(s, "combined", 1) is s and s.rss_max["combined"] == 450
