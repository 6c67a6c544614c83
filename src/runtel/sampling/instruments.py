"""Observable OTel instruments over the sampler's latest snapshot (names, units and attributes: docs/metrics.md).

Callbacks run on the metric reader's thread, once per reader per collection. They only read
``sampler.latest`` (one reference) and never call psutil or a GPU driver, so a collection costs microseconds
and cannot hang on hardware. Every observation carries ``runtel.run.id`` (one per active run), so dashboards
filter by run; with no active run nothing is observed.

Scope attributes: process metrics carry ``runtel.process.scope`` = ``main`` | ``descendants`` | ``combined``,
where ``combined = main + descendants``: filter on one value, never sum across them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from runtel import semconv
from runtel.energy.estimate import emissions_g

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.util.types import AttributeValue

    from runtel.sampling.sampler import Sampler
    from runtel.sampling.samples import GpuReading, ProcessStats, Snapshot

__all__ = ("ObservableMeter", "register_instruments")

Attrs = dict[str, "AttributeValue"]
Callback = Callable[["CallbackOptions"], Iterable["Observation"]]


class ObservableMeter(Protocol):
    """What registration needs of a meter: an OTel ``Meter``, or runtel's ``RecordingMeter``."""

    def create_observable_counter(
        self, name: str, callbacks: Sequence[Callback] | None = None, unit: str = "", description: str = ""
    ) -> object: ...

    def create_observable_up_down_counter(
        self, name: str, callbacks: Sequence[Callback] | None = None, unit: str = "", description: str = ""
    ) -> object: ...

    def create_observable_gauge(
        self, name: str, callbacks: Sequence[Callback] | None = None, unit: str = "", description: str = ""
    ) -> object: ...


def register_instruments(
    meter: ObservableMeter,
    sampler: Sampler,
    run_ids: Callable[[], Sequence[str]],
    *,
    carbon_intensity: float = 475.0,
    gpu_names: dict[str, tuple[str, str]] | None = None,
) -> None:
    """Create runtel's observable instruments on ``meter``.

    Args:
        meter: An OTel ``Meter`` (``runtel`` scope), or the ``RecordingMeter`` of a run's metrics.
        sampler: Whose ``latest`` snapshot every callback reads.
        run_ids: Active run ids at collection time (one observation set per id).
        carbon_intensity: gCO2eq/kWh for ``runtel.emissions``.
        gpu_names: ``uuid -> (name, vendor)`` for ``hw.name``/``hw.vendor`` (from the backend's inventory when
            omitted).
    """
    from opentelemetry.metrics import Observation  # deferred: the OTel metrics API, only when sampling (~12 ms)

    if gpu_names is None:
        gpu_names = {d.uuid: (d.name, d.vendor) for d in sampler.gpu.devices()}
    names = gpu_names

    def each(fn: Callable[[Snapshot], Iterator[tuple[float, Attrs]]]) -> Callback:
        """Turn ``snapshot -> (value, attrs)`` pairs into a callback that stamps each active run id."""

        def callback(_: CallbackOptions) -> Iterable[Observation]:
            snap = sampler.latest
            if snap is None:
                return []
            ids = list(run_ids())
            if not ids:
                return []
            points = list(fn(snap))
            return [Observation(v, {**a, semconv.RUN_ID: rid}) for rid in ids for v, a in points]

        return callback

    def scopes(snap: Snapshot) -> Iterator[tuple[str, ProcessStats]]:
        yield semconv.SCOPE_MAIN, snap.main
        yield semconv.SCOPE_DESCENDANTS, snap.descendants
        yield semconv.SCOPE_COMBINED, snap.combined

    def gpu_attrs(g: GpuReading) -> Attrs:
        name, vendor = names.get(g.uuid, ("GPU", ""))
        attrs: Attrs = {semconv.HW_ID: g.uuid, semconv.HW_NAME: name, semconv.HW_TYPE: semconv.HW_TYPE_GPU}
        if vendor:
            attrs[semconv.HW_VENDOR] = vendor
        return attrs

    # --- process (semconv process.*) -------------------------------------------------------------------
    def cpu_time(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
        for scope, p in scopes(snap):
            yield p.cpu_user_s, {semconv.CPU_MODE: semconv.CPU_MODE_USER, semconv.SCOPE_ATTR: scope}
            yield p.cpu_system_s, {semconv.CPU_MODE: semconv.CPU_MODE_SYSTEM, semconv.SCOPE_ATTR: scope}

    def cpu_util(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
        cores = max(1, snap.logical_cores)
        for scope, p in scopes(snap):
            user = p.cpu_user_utilization
            system = max(0.0, p.cpu_utilization - user)
            for mode, value in ((semconv.CPU_MODE_USER, user), (semconv.CPU_MODE_SYSTEM, system)):
                base: Attrs = {semconv.CPU_MODE: mode, semconv.SCOPE_ATTR: scope}
                yield value / cores, base
                yield value, {**base, semconv.CPU_UTILIZATION_BASIS: semconv.CPU_UTILIZATION_BASIS_CORES}

    def memory(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
        for scope, p in scopes(snap):
            for kind, value in (
                (semconv.MEMORY_KIND_RSS, p.rss_bytes),
                (semconv.MEMORY_KIND_USS, p.uss_bytes),
                (semconv.MEMORY_KIND_PSS, p.pss_bytes),
            ):
                if value is not None:
                    yield value, {semconv.SCOPE_ATTR: scope, semconv.MEMORY_KIND: kind}

    def per_scope(field: str) -> Callable[[Snapshot], Iterator[tuple[float, Attrs]]]:
        def fn(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
            for scope, p in scopes(snap):
                yield getattr(p, field), {semconv.SCOPE_ATTR: scope}

        return fn

    # --- system ----------------------------------------------------------------------------------------
    def sys_cpu(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
        if snap.system is not None:
            yield snap.system.cpu_utilization, {}

    def sys_memory(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
        if snap.system is not None:
            yield snap.system.memory_used_bytes, {semconv.SYSTEM_MEMORY_STATE: semconv.MEMORY_STATE_USED}
            yield snap.system.memory_available_bytes, {semconv.SYSTEM_MEMORY_STATE: semconv.MEMORY_STATE_FREE}

    def sys_limit(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
        if snap.system is not None:
            yield snap.system.memory_total_bytes, {}

    def sys_paging(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
        if snap.system is not None:
            s = snap.system
            yield s.swap_used_bytes, {semconv.SYSTEM_PAGING_STATE: semconv.MEMORY_STATE_USED}
            yield s.swap_total_bytes - s.swap_used_bytes, {semconv.SYSTEM_PAGING_STATE: semconv.MEMORY_STATE_FREE}

    # --- GPU (semconv hw.*) ----------------------------------------------------------------------------
    def gpu_field(field: str, extra: Attrs | None = None) -> Callable[[Snapshot], Iterator[tuple[float, Attrs]]]:
        def fn(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
            for g in snap.gpus:
                value = getattr(g, field)
                if value is not None:
                    yield value, {**gpu_attrs(g), **(extra or {})}

        return fn

    def gpu_mem_util(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
        for g in snap.gpus:
            if g.memory_used_bytes is not None and g.memory_total_bytes:
                yield g.memory_used_bytes / g.memory_total_bytes, gpu_attrs(g)

    def temperature(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
        for g in snap.gpus:
            if g.temperature_c is not None:
                name, _ = names.get(g.uuid, ("GPU", ""))
                yield (
                    g.temperature_c,
                    {
                        semconv.HW_ID: f"{g.uuid}:temperature",
                        semconv.HW_NAME: f"{name} temperature",
                        semconv.HW_TYPE: "temperature",
                        semconv.HW_PARENT: g.uuid,
                        semconv.HW_SENSOR_LOCATION: semconv.HW_TYPE_GPU,
                    },
                )

    def tree_gpu(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
        if snap.tree_gpu_memory_bytes is not None:
            yield snap.tree_gpu_memory_bytes, {semconv.SCOPE_ATTR: semconv.SCOPE_COMBINED}

    # --- energy --------------------------------------------------------------------------------------------
    def energy_attrs(domain: str, estimated: bool, source: str) -> Attrs:
        is_gpu = domain.startswith("gpu:")
        hw_id = domain.removeprefix("gpu:") if is_gpu else domain
        attrs: Attrs = {
            semconv.HW_ID: hw_id,
            semconv.HW_TYPE: semconv.HW_TYPE_GPU if is_gpu else semconv.HW_TYPE_CPU,
            semconv.ENERGY_ESTIMATED: estimated,
            semconv.ENERGY_SOURCE: source,
        }
        if is_gpu:
            attrs[semconv.HW_NAME] = names.get(hw_id, ("GPU", ""))[0]
        return attrs

    def energy(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
        for e in snap.energy:
            yield e.joules, energy_attrs(e.domain, e.estimated, e.source)

    def power(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
        for g in snap.gpus:
            if g.power_w is not None:
                yield g.power_w, gpu_attrs(g)
        for e in snap.energy:
            if e.power_w is not None and not e.domain.startswith("gpu:"):
                yield e.power_w, energy_attrs(e.domain, e.estimated, e.source)

    def emissions(snap: Snapshot) -> Iterator[tuple[float, Attrs]]:
        if snap.energy:
            total = sum(e.joules for e in snap.energy)
            yield (
                emissions_g(total, carbon_intensity),
                {semconv.ENERGY_ESTIMATED: any(e.estimated for e in snap.energy)},
            )

    m = meter
    m.create_observable_counter(
        semconv.PROCESS_CPU_TIME,
        [each(cpu_time)],
        unit=semconv.UNIT_SECONDS,
        description="CPU seconds of the tracked process tree, by cpu.mode and scope.",
    )
    m.create_observable_gauge(
        semconv.PROCESS_CPU_UTILIZATION,
        [each(cpu_util)],
        unit=semconv.UNIT_RATIO,
        description="CPU use as a fraction of all logical CPUs (runtel.cpu.utilization.basis="
        "cores: fraction of one core, summed).",
    )
    m.create_observable_up_down_counter(
        semconv.PROCESS_MEMORY_USAGE,
        [each(memory)],
        unit=semconv.UNIT_BYTES,
        description="Resident (rss), unique (uss) or proportional (pss) memory.",
    )
    m.create_observable_up_down_counter(
        semconv.PROCESS_MEMORY_VIRTUAL,
        [each(per_scope("vms_bytes"))],
        unit=semconv.UNIT_BYTES,
        description="Virtual memory size.",
    )
    m.create_observable_up_down_counter(
        semconv.PROCESS_THREAD_COUNT,
        [each(per_scope("threads"))],
        unit=semconv.UNIT_THREADS,
        description="Threads of the tracked processes.",
    )
    m.create_observable_up_down_counter(
        semconv.RUNTEL_PROCESS_COUNT,
        [each(per_scope("processes"))],
        unit=semconv.UNIT_PROCESSES,
        description="Live processes in the tree.",
    )
    m.create_observable_gauge(
        semconv.SYSTEM_CPU_UTILIZATION,
        [each(sys_cpu)],
        unit=semconv.UNIT_RATIO,
        description="Busy fraction of all logical CPUs of the machine.",
    )
    m.create_observable_up_down_counter(
        semconv.SYSTEM_MEMORY_USAGE,
        [each(sys_memory)],
        unit=semconv.UNIT_BYTES,
        description="Machine memory: used = MemTotal - MemAvailable, free = MemAvailable.",
    )
    m.create_observable_up_down_counter(
        semconv.SYSTEM_MEMORY_LIMIT, [each(sys_limit)], unit=semconv.UNIT_BYTES, description="Machine memory size."
    )
    m.create_observable_up_down_counter(
        semconv.SYSTEM_PAGING_USAGE, [each(sys_paging)], unit=semconv.UNIT_BYTES, description="Swap in use / free."
    )
    m.create_observable_gauge(
        semconv.HW_GPU_UTILIZATION,
        [each(gpu_field("utilization", {semconv.HW_GPU_TASK: semconv.HW_GPU_TASK_GENERAL}))],
        unit=semconv.UNIT_RATIO,
        description="Fraction of time a kernel ran.",
    )
    m.create_observable_up_down_counter(
        semconv.HW_GPU_MEMORY_USAGE,
        [each(gpu_field("memory_used_bytes"))],
        unit=semconv.UNIT_BYTES,
        description="Device memory in use (all users).",
    )
    m.create_observable_up_down_counter(
        semconv.HW_GPU_MEMORY_LIMIT,
        [each(gpu_field("memory_total_bytes"))],
        unit=semconv.UNIT_BYTES,
        description="Device memory size.",
    )
    m.create_observable_gauge(
        semconv.HW_GPU_MEMORY_UTILIZATION,
        [each(gpu_mem_util)],
        unit=semconv.UNIT_RATIO,
        description="Device memory in use / size.",
    )
    m.create_observable_gauge(
        semconv.HW_POWER,
        [each(power)],
        unit=semconv.UNIT_WATTS,
        description="GPU board power, CPU package power (RAPL mean or estimate).",
    )
    m.create_observable_counter(
        semconv.HW_ENERGY,
        [each(energy)],
        unit=semconv.UNIT_JOULES,
        description="Energy since sampling started, per CPU/GPU domain.",
    )
    m.create_observable_gauge(
        semconv.HW_TEMPERATURE, [each(temperature)], unit=semconv.UNIT_CELSIUS, description="GPU core temperature."
    )
    m.create_observable_up_down_counter(
        semconv.RUNTEL_PROCESS_GPU_MEMORY,
        [each(tree_gpu)],
        unit=semconv.UNIT_BYTES,
        description="GPU memory held by the tracked process tree (all devices).",
    )
    m.create_observable_counter(
        semconv.RUNTEL_EMISSIONS,
        [each(emissions)],
        unit=semconv.UNIT_GRAMS_CO2,
        description="gCO2eq of the energy since sampling started.",
    )
