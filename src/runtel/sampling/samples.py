"""Immutable samples the sampler produces: one :class:`Snapshot` per tick, SI units throughout.

A snapshot is never mutated after it is built; the sampler publishes a new one by swapping a reference, so
metric callbacks and summaries can read it from any thread without locks. ``GpuDevice``/``GpuReading`` are
defined next to their Protocol in :mod:`runtel.gpu.base` and ``EnergyReading`` in :mod:`runtel.energy.base`
(so the probe packages never import the sampling engine); they are re-exported here.
"""

from __future__ import annotations

from typing import NamedTuple

from runtel.energy.base import EnergyReading
from runtel.gpu.base import GpuDevice, GpuReading

__all__ = ("EMPTY_PROCESS_STATS", "EnergyReading", "GpuDevice", "GpuReading", "ProcessStats", "Snapshot", "SystemStats")


class ProcessStats(NamedTuple):
    """A group of processes (main, descendants or both) at one instant.

    Attributes:
        cpu_time_s: Cumulative user + system CPU seconds (includes processes of the group that already exited
            while tracked, so it never decreases).
        cpu_user_s: The user part of ``cpu_time_s``.
        cpu_system_s: The system part of ``cpu_time_s``.
        cpu_utilization: CPU use since the previous sample as a fraction of ONE core, summed over the group
            (2.0 = two busy cores).
        cpu_user_utilization: The user-mode part of ``cpu_utilization`` (system part = the difference).
        rss_bytes: Sum of resident set sizes (shared pages counted once per process).
        vms_bytes: Sum of virtual sizes.
        uss_bytes: Sum of unique set sizes (memory freed if the processes exited); ``None`` until the first
            detail read or where unavailable.
        pss_bytes: Sum of proportional set sizes (shared pages split among sharers); ``None`` like ``uss_bytes``.
        threads: Sum of thread counts.
        processes: Number of live processes in the group.
    """

    cpu_time_s: float = 0.0
    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    cpu_utilization: float = 0.0
    cpu_user_utilization: float = 0.0
    rss_bytes: int = 0
    vms_bytes: int = 0
    uss_bytes: int | None = None
    pss_bytes: int | None = None
    threads: int = 0
    processes: int = 0


EMPTY_PROCESS_STATS = ProcessStats()


class SystemStats(NamedTuple):
    """Whole-machine CPU and memory at one instant.

    Attributes:
        cpu_utilization: Busy fraction of all logical CPUs since the previous read (0-1).
        memory_used_bytes: ``MemTotal - MemAvailable`` (the semantic-convention definition on Linux).
        memory_available_bytes: ``MemAvailable``.
        memory_total_bytes: ``MemTotal``.
        swap_used_bytes: ``SwapTotal - SwapFree``.
        swap_total_bytes: ``SwapTotal``.
    """

    cpu_utilization: float
    memory_used_bytes: int
    memory_available_bytes: int
    memory_total_bytes: int
    swap_used_bytes: int
    swap_total_bytes: int


class Snapshot(NamedTuple):
    """Everything the sampler read in one tick.

    Attributes:
        time_ns: Wall-clock time (``time.time_ns``) when the tick started; windows are selected on it.
        monotonic_s: Monotonic time of the same instant; rates and integrals use it.
        main: The root process(es).
        descendants: All descendants of the roots.
        combined: ``main`` + ``descendants``.
        system: Whole-machine stats, ``None`` if they could not be read.
        gpus: One reading per tracked GPU (empty without GPUs, or when the GPU read timed out this tick).
        energy: One cumulative reading per energy domain.
        tree_gpu_memory_bytes: GPU memory held by processes of the tree (all devices); ``None`` when unknown.
        n_expected_cores: Denominator of :attr:`cpu_hardware_utilization`.
        logical_cores: Logical CPUs of the machine (denominator of the semantic-convention process utilisation).
    """

    time_ns: int
    monotonic_s: float
    main: ProcessStats
    descendants: ProcessStats
    combined: ProcessStats
    system: SystemStats | None
    gpus: tuple[GpuReading, ...] = ()
    energy: tuple[EnergyReading, ...] = ()
    tree_gpu_memory_bytes: int | None = None
    n_expected_cores: int = 1
    logical_cores: int = 1

    @property
    def cpu_hardware_utilization(self) -> float:
        """Tree CPU use as a share of the cores the job expected to use (``combined / n_expected_cores``)."""
        return self.combined.cpu_utilization / max(1, self.n_expected_cores)
