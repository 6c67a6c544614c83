"""Pure statistics over a window of snapshots: peaks, means, energy and emissions of a run or block.

Inputs are the snapshots whose ``time_ns`` lies in ``[start_ns, end_ns]`` (the run code adds one explicit
sample at each edge). Energy per domain is the difference of the cumulative readings at the first and last
snapshot of the window; utilisation means are plain means over samples (each sample already averages the
interval before it). Output keys and units are documented in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from runtel import semconv
from runtel.energy.estimate import emissions_g
from runtel.sampling.edges import EdgeDelta
from runtel.sampling.samples import ProcessStats, Snapshot

__all__ = (
    "THREAD_CPU_FLOOR_NS",
    "UsageSummary",
    "edge_attributes",
    "resource_usage_record",
    "summarize",
    "usage_attributes",
    "with_edges",
    "with_floors",
    "with_rss_floor",
)

#: the shared, read-only default of mapping fields (a NamedTuple cannot have per-instance factories)
_EMPTY: Mapping[Any, Any] = MappingProxyType({})

AttributeValue = str | bool | int | float | Sequence[str]
_SCOPES = (semconv.SCOPE_MAIN, semconv.SCOPE_DESCENDANTS, semconv.SCOPE_COMBINED)


class EnergyDomain(NamedTuple):
    """Energy of one domain over the window."""

    joules: float
    estimated: bool
    source: str


class UsageSummary(NamedTuple):
    """Resource use over one window (run or block). SI units; ``None`` = not measured.

    Attributes:
        samples: Snapshots in the window (0 = unsampled: every other field is empty).
        duration_s: ``(end_ns - start_ns) / 1e9``.
        cpu_time_s: CPU seconds (user + system) the tree used in the window.
        cpu_utilization_max / cpu_utilization_mean: Per scope (main/descendants/combined), fraction of one core
            summed over processes (2.0 = two busy cores).
        cpu_hardware_utilization_max / _mean: Combined utilisation / ``n_expected_cores`` (0-1 when the job
            stays within its allocation).
        system_cpu_utilization_max / _mean: Whole machine, 0-1.
        rss_max / uss_max / pss_max: Peak bytes per scope (USS/PSS only where read).
        threads_max: Peak thread count per scope.
        processes_max: Peak number of live processes in the tree.
        system_memory_used_max / system_memory_total: Machine memory (bytes).
        gpu_count: GPUs that reported in the window.
        gpu_memory_used_max / gpu_memory_total: Device memory in use summed over GPUs (all users), and size.
        tree_gpu_memory_max: Peak GPU memory held by the tree's processes (all devices).
        gpu_utilization_max / _mean: Mean over GPUs of each device's utilisation (0-1), then max / mean over time.
        gpu_power_mean_w: Mean total GPU power draw.
        energy: Joules per domain over the window.
        energy_total_j / energy_estimated / emissions_g / carbon_intensity: Totals; ``emissions_g`` in gCO2eq.
        counters: ``"edges"`` when CPU time and energy are differences of counters read at the window's
            edges (exact), ``""`` when they come from samples.
        thread_cpu_time_s: CPU seconds of the thread that opened and closed the window (blocks, measure).
        cpu_time_children_s: The part of ``cpu_time_s`` that is child processes: with edge counters, those
            reaped inside the window (``RUSAGE_CHILDREN``) plus the live descendants' change; a run's, the
            sampled descendants instead when larger.
        rss_peak_exact: The main peak RSS is the kernel's high-water mark (it rose inside the window);
            ``False`` = the largest RSS seen at samples and edges (a lower bound); ``None`` = not known.
        floors: What raised CPU time or energy to a floor (``"wait4"``, ``"child runs"``).
        descendants_cpu_time_s: The sampled share of ``cpu_time_s`` of the roots' descendants.
    """

    samples: int
    duration_s: float
    start_ns: int
    end_ns: int
    n_expected_cores: int
    logical_cores: int = 1
    cpu_time_s: float | None = None
    cpu_utilization_max: Mapping[str, float] = _EMPTY
    cpu_utilization_mean: Mapping[str, float] = _EMPTY
    cpu_hardware_utilization_max: float | None = None
    cpu_hardware_utilization_mean: float | None = None
    system_cpu_utilization_max: float | None = None
    system_cpu_utilization_mean: float | None = None
    rss_max: Mapping[str, int] = _EMPTY
    uss_max: Mapping[str, int] = _EMPTY
    pss_max: Mapping[str, int] = _EMPTY
    threads_max: Mapping[str, int] = _EMPTY
    processes_max: int | None = None
    system_memory_used_max: int | None = None
    system_memory_total: int | None = None
    gpu_count: int = 0
    gpu_memory_used_max: int | None = None
    gpu_memory_total: int | None = None
    tree_gpu_memory_max: int | None = None
    gpu_utilization_max: float | None = None
    gpu_utilization_mean: float | None = None
    gpu_power_mean_w: float | None = None
    energy: Mapping[str, EnergyDomain] = _EMPTY
    energy_total_j: float | None = None
    energy_estimated: bool = False
    emissions_g: float | None = None
    carbon_intensity: float = 0.0
    counters: str = ""
    thread_cpu_time_s: float | None = None
    cpu_time_children_s: float | None = None
    rss_peak_exact: bool | None = None
    floors: tuple[str, ...] = ()
    descendants_cpu_time_s: float | None = None
    children_partial: bool = False


def _max(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _imax(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _scopes(snap: Snapshot) -> dict[str, ProcessStats]:
    return {
        semconv.SCOPE_MAIN: snap.main,
        semconv.SCOPE_DESCENDANTS: snap.descendants,
        semconv.SCOPE_COMBINED: snap.combined,
    }


#: the shortest interval between two samples whose CPU-time difference gives a rate (the kernel counts CPU
#: time in 10 ms ticks: within 4 % over 0.25 s)
_RATE_MIN_S = 0.25


def _rate_pairs(snaps: Sequence[Snapshot]) -> list[tuple[Snapshot, Snapshot]]:
    """For each sample, the latest earlier one at least :data:`_RATE_MIN_S` before it (rolling rate windows)."""
    pairs = []
    j = 0
    for b in snaps[1:]:
        while j + 1 < len(snaps) and b.monotonic_s - snaps[j + 1].monotonic_s >= _RATE_MIN_S:
            j += 1
        a = snaps[j]
        if a is not b and b.monotonic_s - a.monotonic_s >= _RATE_MIN_S:
            pairs.append((a, b))
    return pairs


def summarize(
    snapshots: Sequence[Snapshot],
    *,
    start_ns: int,
    end_ns: int,
    n_expected_cores: int,
    carbon_intensity: float,
    baseline: Snapshot | None = None,
    edges: Sequence[Snapshot | None] = (),
) -> UsageSummary:
    """Summarise the snapshots of ``[start_ns, end_ns]`` (others are ignored; order does not matter).

    Args:
        snapshots: Candidate snapshots (e.g. the sampler's window plus edge samples).
        start_ns / end_ns: The window, wall-clock ns.
        n_expected_cores: Denominator of the hardware CPU share.
        carbon_intensity: gCO2eq per kWh for emissions.
        baseline: The last snapshot before the window. Cumulative counters (CPU time, energy) are
            differences, so they are measured from it when given; with a single in-window sample and
            no baseline they are unknown (left out) rather than reported as 0.
        edges: The span's own start/end samples, counted even when outside the window: an edge may
            be a sample reused from up to a few milliseconds before the start (see ``Monitor.edge_sample``).

    Example:
        >>> summarize([], start_ns=0, end_ns=10**9, n_expected_cores=1, carbon_intensity=475.0).samples
        0
    """
    chosen = {id(s): s for s in snapshots if start_ns <= s.time_ns <= end_ns}
    for edge in edges:
        if edge is not None:
            chosen.setdefault(id(edge), edge)
    snaps = sorted(chosen.values(), key=lambda s: s.time_ns)
    base = {
        "start_ns": start_ns,
        "end_ns": end_ns,
        "duration_s": max(0, end_ns - start_ns) / 1e9,
        "n_expected_cores": max(1, n_expected_cores),
        "carbon_intensity": carbon_intensity,
    }
    if not snaps:
        return UsageSummary(samples=0, **base)  # type: ignore[arg-type]
    first, last = snaps[0], snaps[-1]
    expected = max(1, n_expected_cores)

    util_max: dict[str, float] = {}
    util_mean: dict[str, float] = {}
    rss: dict[str, int] = {}
    uss: dict[str, int] = {}
    pss: dict[str, int] = {}
    threads: dict[str, int] = {}
    # A sample's own utilisation is the rate since the sampler's previous tick (a process's first: since it
    # started), which can lie before the window (an idle run right after a busy one showed the busy one's
    # cores). So the window's rates come from the cumulative CPU time between its own samples, over intervals
    # of at least _RATE_MIN_S; a sample's own rate is used only for a window of one sample.
    pairs = _rate_pairs(snaps)
    elapsed = snaps[-1].monotonic_s - snaps[0].monotonic_s
    for scope in _SCOPES:
        stats = [_scopes(s)[scope] for s in snaps]
        if elapsed > 0:
            mean = max(0.0, stats[-1].cpu_time_s - stats[0].cpu_time_s) / elapsed
            rates = [max(0.0, _scopes(b)[scope].cpu_time_s - _scopes(a)[scope].cpu_time_s)
                     / (b.monotonic_s - a.monotonic_s) for a, b in pairs]
            util_mean[scope] = mean
            util_max[scope] = max([mean, *rates])  # a window shorter than _RATE_MIN_S: its mean is its peak
        else:  # one sample (or several at one instant): only their own rates are known
            own = [p.cpu_utilization for p in stats]
            util_max[scope], util_mean[scope] = max(own), sum(own) / len(own)
        rss[scope] = max(p.rss_bytes for p in stats)
        threads[scope] = max(p.threads for p in stats)
        for target, attr in ((uss, "uss_bytes"), (pss, "pss_bytes")):
            peak = _imax(getattr(p, attr) for p in stats)
            if peak is not None:
                target[scope] = peak

    systems = [s.system for s in snaps if s.system is not None]
    gpu_snaps = [s for s in snaps if s.gpus]
    gpu_util_per_sample = [_mean(g.utilization for g in s.gpus) for s in gpu_snaps]
    gpu_mem_per_sample = [
        sum(g.memory_used_bytes for g in s.gpus if g.memory_used_bytes is not None)
        if any(g.memory_used_bytes is not None for g in s.gpus)
        else None
        for s in gpu_snaps
    ]
    gpu_power_per_sample = [
        sum(g.power_w for g in s.gpus if g.power_w is not None) if any(g.power_w is not None for g in s.gpus) else None
        for s in gpu_snaps
    ]
    gpu_totals: dict[str, int] = {}
    for s in gpu_snaps:
        for g in s.gpus:
            if g.memory_total_bytes is not None:
                gpu_totals[g.uuid] = g.memory_total_bytes

    counters_from = baseline if baseline is not None and baseline.time_ns < first.time_ns else first
    counted = [counters_from, *snaps] if counters_from is not first else snaps
    known = len(counted) >= 2
    energy = _energy_over(counted) if known else {}
    total_j = sum(d.joules for d in energy.values()) if energy else None
    return UsageSummary(
        samples=len(snaps),
        logical_cores=last.logical_cores,
        cpu_time_s=max(0.0, last.combined.cpu_time_s - counters_from.combined.cpu_time_s) if known else None,
        descendants_cpu_time_s=max(0.0, last.descendants.cpu_time_s - counters_from.descendants.cpu_time_s)
        if known else None,
        cpu_utilization_max=util_max,
        cpu_utilization_mean=util_mean,
        cpu_hardware_utilization_max=util_max[semconv.SCOPE_COMBINED] / expected,
        cpu_hardware_utilization_mean=util_mean[semconv.SCOPE_COMBINED] / expected,
        system_cpu_utilization_max=_max(s.cpu_utilization for s in systems),
        system_cpu_utilization_mean=_mean(s.cpu_utilization for s in systems),
        rss_max=rss,
        uss_max=uss,
        pss_max=pss,
        threads_max=threads,
        processes_max=max(s.combined.processes for s in snaps),
        system_memory_used_max=_imax(s.memory_used_bytes for s in systems),
        system_memory_total=systems[-1].memory_total_bytes if systems else None,
        gpu_count=len({g.uuid for s in gpu_snaps for g in s.gpus}),
        gpu_memory_used_max=_imax(gpu_mem_per_sample),
        gpu_memory_total=sum(gpu_totals.values()) if gpu_totals else None,
        tree_gpu_memory_max=_imax(s.tree_gpu_memory_bytes for s in snaps),
        gpu_utilization_max=_max(gpu_util_per_sample),
        gpu_utilization_mean=_mean(gpu_util_per_sample),
        gpu_power_mean_w=_mean(gpu_power_per_sample),
        energy=energy,
        energy_total_j=total_j,
        energy_estimated=any(d.estimated for d in energy.values()),
        emissions_g=None if total_j is None else emissions_g(total_j, carbon_intensity),
        **base,  # type: ignore[arg-type]
    )


def with_rss_floor(summary: UsageSummary, scope: str, rss_bytes: int) -> UsageSummary:
    """``summary`` with the peak RSS of ``scope`` raised to at least ``rss_bytes``.

    For a peak known exactly from elsewhere: the kernel's high-water mark of a process that lived inside the
    window (``runtel run`` reads its command's with ``wait4``). Samples catch a spike only when one lands in
    it; the high-water mark never misses one, and the tree's sum at that moment was at least that large.
    """
    if rss_bytes <= summary.rss_max.get(scope, 0):
        return summary
    return summary._replace(rss_max={**summary.rss_max, scope: int(rss_bytes)})


def _raise(values: Mapping[str, int], scope: str, value: int | None) -> Mapping[str, int]:
    if value is None or value <= values.get(scope, 0):
        return values
    return {**values, scope: int(value)}


def _energy_totals(energy: Mapping[str, EnergyDomain], carbon_intensity: float) -> dict[str, Any]:
    total = sum(d.joules for d in energy.values()) if energy else None
    return {
        "energy": energy,
        "energy_total_j": total,
        "energy_estimated": any(d.estimated for d in energy.values()),
        "emissions_g": None if total is None else emissions_g(total, carbon_intensity),
    }


def with_edges(
    summary: UsageSummary,
    delta: EdgeDelta,
    *,
    includes_self: bool,
    cpu_joules_per_s: float | None,
    block: bool,
) -> UsageSummary:
    """``summary`` with CPU time, energy and peaks taken from the window's edge counters.

    Args:
        summary: The sampled summary of the window (0 samples allowed).
        delta: The edge counters' differences.
        includes_self: The monitored tree contains this process (not so for ``runtel run``'s wrapper).
        cpu_joules_per_s: The CPU estimate's joules per CPU-second (``None`` = RAPL or no estimate).
        block: A block or measurement window: its ``cpu_time_s`` is this process plus children reaped in
            it; a run's adds the sampled live descendants (whichever of those and the reaped is larger).
    """
    fields: dict[str, Any] = {"counters": "edges"}
    cpu = summary.cpu_time_s
    if includes_self:
        descendants = 0.0 if block else summary.descendants_cpu_time_s or 0.0
        children = max(delta.children_cpu_s, descendants)
        cpu = round(delta.cpu_s + children, 9) if children else delta.cpu_s  # ns: a short decimal
        fields["thread_cpu_time_s"] = delta.thread_cpu_s
        fields["cpu_time_children_s"] = round(cpu - delta.cpu_s, 9)
        fields["children_partial"] = block and delta.children_partial  # a run's samples cover its whole tree
        if summary.duration_s > 0:  # the exact mean, from the counters at the edges (samples only estimate it)
            mean = cpu / summary.duration_s
            means = {**summary.cpu_utilization_mean, semconv.SCOPE_MAIN: delta.cpu_s / summary.duration_s,
                     semconv.SCOPE_COMBINED: mean}
            if not block and semconv.SCOPE_DESCENDANTS in means:
                means[semconv.SCOPE_DESCENDANTS] = max(0.0, cpu - delta.cpu_s) / summary.duration_s
            fields["cpu_utilization_mean"] = means
            fields["cpu_hardware_utilization_mean"] = mean / summary.n_expected_cores
            if summary.samples:  # a peak is never below the mean (a sampled max can miss a busy stretch)
                peaks = {scope: max(value, means.get(scope, 0.0)) for scope, value in summary.cpu_utilization_max.items()}
                fields["cpu_utilization_max"] = peaks
                fields["cpu_hardware_utilization_max"] = peaks.get(semconv.SCOPE_COMBINED, mean) / summary.n_expected_cores
        rss, uss, pss = summary.rss_max, summary.uss_max, summary.pss_max
        if delta.peak_rss_bytes is not None:
            rss = _raise(_raise(rss, semconv.SCOPE_MAIN, delta.peak_rss_bytes), semconv.SCOPE_COMBINED,
                         delta.peak_rss_bytes)
            fields["rss_peak_exact"] = True
        elif summary.samples:
            fields["rss_peak_exact"] = False
        if delta.memory is not None:
            for scope in (semconv.SCOPE_MAIN, semconv.SCOPE_COMBINED):
                uss = _raise(uss, scope, delta.memory.uss)
                pss = _raise(pss, scope, delta.memory.pss)
        if delta.children_peak_rss_bytes is not None:
            rss = _raise(_raise(rss, semconv.SCOPE_DESCENDANTS, delta.children_peak_rss_bytes),
                         semconv.SCOPE_COMBINED, delta.children_peak_rss_bytes)
        fields.update(rss_max=rss, uss_max=uss, pss_max=pss)
    fields["cpu_time_s"] = cpu
    energy = dict(summary.energy)
    for domain, (joules, estimated, source) in delta.energy.items():
        energy[domain] = EnergyDomain(joules, estimated, source)
    if cpu_joules_per_s is not None and cpu is not None:
        energy["cpu:estimate"] = EnergyDomain(cpu * cpu_joules_per_s, True, "estimate")
    fields.update(_energy_totals(energy, summary.carbon_intensity))
    return summary._replace(**fields)


def with_floors(summary: UsageSummary, *, cpu_s: float | None, energy_j: float | None, source: str,
                cpu_joules_per_s: float | None = None) -> UsageSummary:
    """``summary`` with CPU time and energy raised to at least what a more complete account says.

    ``runtel run``'s wrapper: the kernel's ``wait4`` rusage of its command covers every descendant the
    command waited for, however short-lived; the runs its children recorded are each a part of it.
    """
    fields: dict[str, Any] = {}
    cpu = summary.cpu_time_s
    if cpu_s is not None and (cpu is None or cpu_s > cpu):
        cpu = cpu_s
        fields["cpu_time_s"] = cpu
    energy = dict(summary.energy)
    if cpu_joules_per_s is not None and cpu is not None and "cpu:estimate" in energy:
        energy["cpu:estimate"] = EnergyDomain(cpu * cpu_joules_per_s, True, "estimate")
    total = sum(d.joules for d in energy.values())
    if energy_j is not None and energy_j > total:
        # the children's figures are partly measured, partly estimated: the floor's part is marked estimated
        energy["floor"] = EnergyDomain(energy_j - total, True, source)
    if fields or energy != dict(summary.energy):
        fields.update(_energy_totals(energy, summary.carbon_intensity))
        fields["floors"] = (*summary.floors, source)
    return summary._replace(**fields) if fields else summary


#: below this the process and thread clocks of one window differ by reading noise (~1 us each), not by work
THREAD_CPU_FLOOR_NS = 20_000
_THREAD_CPU_FLOOR_S = THREAD_CPU_FLOOR_NS / 1e9


def edge_attributes(delta: EdgeDelta, cpu_joules_per_s: float | None) -> dict[str, AttributeValue]:
    """``runtel.usage.*`` of a window no sample fell into, from its edge counters only (the hot path).

    Only what the counters know, in as few attributes as possible (each costs ~1 us on the span):
    ``cpu.time``, ``thread.cpu.time`` (only when it differs from ``cpu.time`` by more than 1 % and 20 us:
    other threads ran meanwhile; below that the two clocks differ by their own reading noise), ``energy.total`` with
    ``energy.gpu``/``energy.estimated`` where an energy counter measured part of it (a CPU estimate alone is
    left to readers: ``cpu.time`` x the run's ``runtel.energy.cpu.joules_per_cpu_second``), and the peaks when
    the process reached a new high-water mark inside the window. The run-folder exporter adds ``runtel.usage.samples = 0`` off the hot path; readers derive utilisation (cpu.time /
    duration) and emissions (energy x the run's carbon intensity).
    """
    cpu = round(delta.cpu_s + delta.children_cpu_s, 9) if delta.children_cpu_s else delta.cpu_s  # ns: a short decimal
    attrs: dict[str, AttributeValue] = {semconv.USAGE_CPU_TIME: cpu}
    if delta.thread_cpu_s is not None and abs(delta.cpu_s - delta.thread_cpu_s) > max(0.01 * delta.cpu_s, _THREAD_CPU_FLOOR_S):
        attrs[semconv.USAGE_THREAD_CPU_TIME] = delta.thread_cpu_s
    if delta.children_cpu_s:
        attrs[semconv.USAGE_CPU_TIME_CHILDREN] = delta.children_cpu_s
    if delta.children_partial:
        attrs[semconv.USAGE_CPU_TIME_CHILDREN_PARTIAL] = True
    if delta.peak_rss_bytes is not None:
        attrs[semconv.USAGE_RSS_MAX_MAIN] = attrs[semconv.USAGE_RSS_MAX_COMBINED] = delta.peak_rss_bytes
        attrs[semconv.USAGE_RSS_PEAK_EXACT] = True
        memory = delta.memory
        if memory is not None and memory.uss is not None:
            attrs[semconv.USAGE_USS_MAX_MAIN] = attrs[semconv.USAGE_USS_MAX_COMBINED] = memory.uss
        if memory is not None and memory.pss is not None:
            attrs[semconv.USAGE_PSS_MAX_MAIN] = attrs[semconv.USAGE_PSS_MAX_COMBINED] = memory.pss
    if delta.children_peak_rss_bytes is not None:
        attrs[semconv.USAGE_MEMORY_PREFIX + "rss.max.descendants"] = delta.children_peak_rss_bytes
        attrs[semconv.USAGE_RSS_MAX_COMBINED] = max(delta.children_peak_rss_bytes, delta.peak_rss_bytes or 0)
    # Energy only where a counter (RAPL, NVML) measured some: an estimate alone is cpu.time x the run's
    # factor (``runtel.energy.cpu.joules_per_cpu_second``), which readers apply (runtel.query.energy).
    total = cpu * cpu_joules_per_s if cpu_joules_per_s is not None and delta.energy else None
    estimated = cpu_joules_per_s is not None
    gpu: float | None = None
    for domain, (joules, est, _source) in delta.energy.items():
        if domain.startswith("gpu:"):
            gpu = joules if gpu is None else gpu + joules
        total = joules if total is None else total + joules
        estimated = estimated or est
    if total is not None:
        attrs[semconv.USAGE_ENERGY_TOTAL] = total
        if gpu is not None:
            attrs[semconv.USAGE_ENERGY_GPU] = gpu
        if estimated:
            attrs[semconv.USAGE_ENERGY_ESTIMATED] = True
    return attrs


def _energy_over(snaps: Sequence[Snapshot]) -> dict[str, EnergyDomain]:
    """Per domain: last cumulative reading minus the first one inside the window."""
    firsts: dict[str, float] = {}
    lasts: dict[str, tuple[float, bool, str]] = {}
    for snap in snaps:
        for reading in snap.energy:
            firsts.setdefault(reading.domain, reading.joules)
            prev = lasts.get(reading.domain)
            lasts[reading.domain] = (reading.joules, (prev[1] if prev else False) or reading.estimated, reading.source)
    return {
        domain: EnergyDomain(joules=max(0.0, joules - firsts[domain]), estimated=estimated, source=source)
        for domain, (joules, estimated, source) in lasts.items()
    }


def usage_attributes(summary: UsageSummary) -> dict[str, AttributeValue]:
    """``runtel.usage.*`` span attributes (absent values are left out; 0 samples -> only ``samples: 0``).

    Example:
        >>> usage_attributes(summarize([], start_ns=0, end_ns=1, n_expected_cores=1, carbon_intensity=1.0))
        {'runtel.usage.samples': 0}
    """
    if summary.samples == 0 and not summary.counters:
        return {semconv.USAGE_SAMPLES: 0}
    attrs: dict[str, AttributeValue | None] = {
        semconv.USAGE_SAMPLES: summary.samples,
        semconv.USAGE_DURATION: summary.duration_s if summary.samples else None,
        semconv.USAGE_COUNTERS: summary.counters or None,
        semconv.USAGE_CPU_TIME: summary.cpu_time_s,
        semconv.USAGE_THREAD_CPU_TIME: summary.thread_cpu_time_s,
        semconv.USAGE_CPU_TIME_CHILDREN: summary.cpu_time_children_s or None,
        semconv.USAGE_CPU_TIME_CHILDREN_PARTIAL: True if summary.children_partial else None,
        semconv.USAGE_RSS_PEAK_EXACT: summary.rss_peak_exact,
        semconv.USAGE_FLOORS: list(summary.floors) if summary.floors else None,
        semconv.USAGE_CPU_UTILIZATION_MAX: summary.cpu_utilization_max.get(semconv.SCOPE_COMBINED),
        semconv.USAGE_CPU_UTILIZATION_MEAN: summary.cpu_utilization_mean.get(semconv.SCOPE_COMBINED),
        semconv.USAGE_CPU_HARDWARE_UTILIZATION_MAX: summary.cpu_hardware_utilization_max,
        semconv.USAGE_CPU_HARDWARE_UTILIZATION_MEAN: summary.cpu_hardware_utilization_mean,
        semconv.USAGE_SYSTEM_CPU_UTILIZATION_MAX: summary.system_cpu_utilization_max,
        semconv.USAGE_SYSTEM_CPU_UTILIZATION_MEAN: summary.system_cpu_utilization_mean,
        semconv.USAGE_PROCESSES_MAX: summary.processes_max,
        semconv.USAGE_SYSTEM_MEMORY_USED_MAX: summary.system_memory_used_max,
    }
    for kind, values in (
        (semconv.MEMORY_KIND_RSS, summary.rss_max),
        (semconv.MEMORY_KIND_USS, summary.uss_max),
        (semconv.MEMORY_KIND_PSS, summary.pss_max),
    ):
        for scope, value in values.items():
            attrs[f"{semconv.USAGE_MEMORY_PREFIX}{kind}.max.{scope}"] = value
    for scope, value in summary.threads_max.items():
        attrs[f"{semconv.USAGE_THREADS_PREFIX}{scope}"] = value
    if summary.gpu_count:
        attrs[semconv.USAGE_GPU_COUNT] = summary.gpu_count
        attrs[semconv.USAGE_GPU_MEMORY_USED_MAX] = summary.gpu_memory_used_max
        attrs[semconv.USAGE_GPU_MEMORY_TREE_MAX] = summary.tree_gpu_memory_max
        attrs[semconv.USAGE_GPU_UTILIZATION_MAX] = summary.gpu_utilization_max
        attrs[semconv.USAGE_GPU_UTILIZATION_MEAN] = summary.gpu_utilization_mean
        attrs[semconv.USAGE_GPU_POWER_MEAN] = summary.gpu_power_mean_w
    if summary.energy:
        cpu = [d.joules for k, d in summary.energy.items() if k.startswith("cpu:")]
        gpu = [d.joules for k, d in summary.energy.items() if k.startswith("gpu:")]
        attrs[semconv.USAGE_ENERGY_CPU] = sum(cpu) if cpu else None
        attrs[semconv.USAGE_ENERGY_GPU] = sum(gpu) if gpu else None
        attrs[semconv.USAGE_ENERGY_TOTAL] = summary.energy_total_j
        attrs[semconv.USAGE_ENERGY_ESTIMATED] = summary.energy_estimated
        attrs[semconv.USAGE_ENERGY_SOURCES] = sorted({d.source for d in summary.energy.values()})
        attrs[semconv.USAGE_EMISSIONS] = summary.emissions_g
        attrs[semconv.USAGE_CARBON_INTENSITY] = summary.carbon_intensity
    return {k: v for k, v in attrs.items() if v is not None}


def resource_usage_record(summary: UsageSummary) -> dict[str, object]:
    """run.json ``resource_usage``: gpu_tracker's ``ResourceUsage`` content with units in every key name."""

    def scope_mem(scope: str) -> dict[str, int | None]:
        return {
            "max_rss_bytes": summary.rss_max.get(scope),
            "max_uss_bytes": summary.uss_max.get(scope),
            "max_pss_bytes": summary.pss_max.get(scope),
        }

    def scope_cpu(scope: str) -> dict[str, float | None]:
        return {
            "max_sum_fraction": summary.cpu_utilization_max.get(scope),
            "mean_sum_fraction": summary.cpu_utilization_mean.get(scope),
        }

    return {
        "samples": summary.samples,
        "start_time_unix_nano": summary.start_ns,
        "end_time_unix_nano": summary.end_ns,
        "max_ram": {
            "system_used_bytes": summary.system_memory_used_max,
            "system_capacity_bytes": summary.system_memory_total,
            **{scope: scope_mem(scope) for scope in _SCOPES},
        },
        "max_gpu_ram": {
            "system_used_bytes": summary.gpu_memory_used_max,
            "system_capacity_bytes": summary.gpu_memory_total,
            "tree_bytes": summary.tree_gpu_memory_max,
        },
        "cpu_utilization": {
            "system_core_count": summary.logical_cores,
            "n_expected_cores": summary.n_expected_cores,
            "system": {
                "max_fraction": summary.system_cpu_utilization_max,
                "mean_fraction": summary.system_cpu_utilization_mean,
            },
            **{scope: scope_cpu(scope) for scope in _SCOPES},
            "max_hardware_fraction": summary.cpu_hardware_utilization_max,
            "mean_hardware_fraction": summary.cpu_hardware_utilization_mean,
            "max_threads": dict(summary.threads_max),
            "max_processes": summary.processes_max,
        },
        "gpu_utilization": {
            "gpu_count": summary.gpu_count,
            "max_fraction": summary.gpu_utilization_max,
            "mean_fraction": summary.gpu_utilization_mean,
            "mean_power_watts": summary.gpu_power_mean_w,
        },
        "compute_time": {
            "wall_seconds": summary.duration_s,
            "cpu_seconds": summary.cpu_time_s,
            "children_cpu_seconds": summary.cpu_time_children_s,
            "cpu_seconds_source": "edge counters" if summary.counters else "samples",
            "floors": list(summary.floors),
        },
        "peak_rss_exact": summary.rss_peak_exact,
        "energy": {
            "total_joules": summary.energy_total_j,
            "estimated": summary.energy_estimated,
            "domains": {
                domain: {"joules": d.joules, "estimated": d.estimated, "source": d.source}
                for domain, d in summary.energy.items()
            },
        },
        "emissions": {
            "grams_co2eq": summary.emissions_g,
            "carbon_intensity_g_per_kwh": summary.carbon_intensity,
        },
    }
