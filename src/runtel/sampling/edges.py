"""Cumulative counters read at the edges of a block, run or measurement window, so its totals are exact.

A sampled counter misses the part of a window between its edge and the nearest tick, and a window shorter
than the interval gets nothing. The counters that are cheap to read are therefore read at both edges and
the window's figure is their difference:

* ``cpu.time``: CPU seconds of **this process** (every thread, user + system, ``time.process_time``:
  ``CLOCK_PROCESS_CPUTIME_ID``, nanoseconds; ``getrusage``'s figure of a threaded process drifts by
  ~25 us per 5 ms from it, measured) plus those of its children **reaped** in the window (``RUSAGE_CHILDREN``, the
  kernel's ``wait4`` accounting). Live descendants are not read at block edges (a ``/proc`` read per
  process); the sampler supplies their share for runs.
* ``thread.cpu.time``: CPU seconds of the thread that entered the window (``time.thread_time``), reported
  only when the window also ended in that thread.
* peak RSS: the kernel's high-water mark (``ru_maxrss``, the same figure as ``VmHWM`` for a process that
  was not forked from a bigger one); when it rose inside the window the window's peak is exact, read from
  ``VmHWM``, and USS/PSS are read at once (``/proc/self/smaps_rollup``) so an allocation held at the edge is
  never missed.
* energy: the NVML total-energy counter of each GPU that has one, RAPL package counters where readable,
  and the CPU estimate, which is a function of CPU seconds (so it is exact at the edges too).

Cost per edge on the project's VM: ~2-4 us without GPU or RAPL (three C calls), see benchmarks/edge_bench.py.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from runtel.energy.base import EnergyReading, EnergySource

__all__ = ("Edge", "EdgeDelta", "EdgeReader", "MemoryDetail", "edge_delta", "read_memory_detail", "read_vm_hwm")

_RUSAGE_SELF = resource.RUSAGE_SELF
_RUSAGE_CHILDREN = resource.RUSAGE_CHILDREN
_getrusage = resource.getrusage
_thread_time = time.thread_time
_process_time = time.process_time
_get_ident = threading.get_ident
_time_ns = time.time_ns
#: ru_maxrss is in bytes on macOS, KiB on Linux and the BSDs
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024
_LINUX = sys.platform.startswith("linux")


class Edge(NamedTuple):
    """The cumulative counters at one edge of a window."""

    time_ns: int
    cpu_s: float  #: this process, every thread, user + system
    thread_cpu_s: float  #: the calling thread
    thread_id: int
    children_cpu_s: float  #: children reaped so far (RUSAGE_CHILDREN)
    hwm_bytes: int  #: ru_maxrss of this process
    children_hwm_bytes: int  #: largest ru_maxrss of a reaped child
    energy: tuple[EnergyReading, ...] = ()


class MemoryDetail(NamedTuple):
    """This process's memory from ``/proc/self/smaps_rollup`` and ``VmHWM`` (bytes; ``None`` = unreadable)."""

    rss: int | None
    uss: int | None
    pss: int | None
    hwm: int | None


class EdgeDelta(NamedTuple):
    """What a window measured from its edge counters."""

    cpu_s: float
    thread_cpu_s: float | None
    children_cpu_s: float
    energy: Mapping[str, tuple[float, bool, str]]  #: domain -> (joules, estimated, source)
    peak_rss_bytes: int | None  #: exact peak when the high-water mark rose in the window, else None
    children_peak_rss_bytes: int | None  #: a reaped child's peak when that rose in the window
    memory: MemoryDetail | None  #: read at the end edge because the process grew in the window


def read_vm_hwm() -> int | None:
    """``VmHWM`` of this process in bytes (Linux), ``None`` elsewhere."""
    if not _LINUX:
        return None
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_memory_detail() -> MemoryDetail:
    """RSS, USS (private clean + dirty) and PSS of this process from ``smaps_rollup``, and ``VmHWM``.

    ~50-300 us (the kernel walks the page tables); called only when the high-water mark rose.
    """
    values: dict[bytes, int] = {}
    if _LINUX:
        try:
            with open("/proc/self/smaps_rollup", "rb") as fh:
                for line in fh:
                    key, _, rest = line.partition(b":")
                    if key in (b"Rss", b"Pss", b"Private_Clean", b"Private_Dirty", b"Private_Hugetlb"):
                        values[key] = int(rest.split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            values = {}
    uss = None
    if b"Private_Clean" in values and b"Private_Dirty" in values:
        uss = values[b"Private_Clean"] + values[b"Private_Dirty"] + values.get(b"Private_Hugetlb", 0)
    return MemoryDetail(rss=values.get(b"Rss"), uss=uss, pss=values.get(b"Pss"), hwm=read_vm_hwm())


class EdgeReader:
    """Reads :class:`Edge` values; thread-safe, never raises (a failing source is left out of ``energy``).

    Args:
        energy: RAPL-like sources (thread-safe: the sampler reads the same ones).
        gpu_energy: Returns the raw cumulative GPU readings (the NVML counter), or ``()`` when the GPU is not
            answering; ``None`` when no GPU is monitored.
        cpu_joules_per_s: The CPU estimate's joules per CPU-second (``None`` = no estimate).
    """

    def __init__(
        self,
        energy: Sequence[EnergySource] = (),
        gpu_energy: Callable[[], Sequence[EnergyReading]] | None = None,
        cpu_joules_per_s: float | None = None,
    ) -> None:
        self._sources = tuple(energy)
        self._gpu_energy = gpu_energy
        self.cpu_joules_per_s = cpu_joules_per_s
        self.failures = 0

    def read(self, end: bool = False) -> Edge:
        """The counters now (~2-4 us without energy sources).

        The thread's counter is read last at a start edge and first at an end edge (``end=True``), so the
        edge's own cost stays out of ``thread_cpu_s`` as far as it can.
        """
        if end:
            thread_cpu = _thread_time()
            cpu = _process_time()
            me = _getrusage(_RUSAGE_SELF)
            children = _getrusage(_RUSAGE_CHILDREN)
            now = _time_ns()
        else:
            now = _time_ns()
            children = _getrusage(_RUSAGE_CHILDREN)
            me = _getrusage(_RUSAGE_SELF)
            cpu = _process_time()
            thread_cpu = _thread_time()
        energy: tuple[EnergyReading, ...] = ()
        if self._sources or self._gpu_energy is not None:
            energy = self._read_energy()
        return Edge(
            now,
            cpu,
            thread_cpu,
            _get_ident(),
            children.ru_utime + children.ru_stime,
            me.ru_maxrss * _MAXRSS_UNIT,
            children.ru_maxrss * _MAXRSS_UNIT,
            energy,
        )

    def _read_energy(self) -> tuple[EnergyReading, ...]:
        out: list[EnergyReading] = []
        for source in self._sources:
            try:
                out.append(source.read())
            except Exception:
                self.failures += 1
        if self._gpu_energy is not None:
            try:
                out.extend(self._gpu_energy())
            except Exception:
                self.failures += 1
        return tuple(out)


def edge_delta(start: Edge, end: Edge, *, cpu_joules_per_s: float | None = None,
               memory_detail: bool = True) -> EdgeDelta:
    """The window ``[start, end]`` from its edges.

    Args:
        start / end: The edges (``end`` read after ``start``).
        cpu_joules_per_s: Adds the CPU estimate (``cpu:estimate``) as ``cpu_s x`` this.
        memory_detail: Read USS/PSS (``smaps_rollup``) when the high-water mark rose in the window.
    """
    cpu = max(0.0, end.cpu_s - start.cpu_s)
    children = max(0.0, end.children_cpu_s - start.children_cpu_s)
    thread = max(0.0, end.thread_cpu_s - start.thread_cpu_s) if end.thread_id == start.thread_id else None
    energy: dict[str, tuple[float, bool, str]] = {}
    if end.energy:
        first = {r.domain: r for r in start.energy}
        for reading in end.energy:
            before = first.get(reading.domain)
            if before is not None:
                energy[reading.domain] = (
                    max(0.0, reading.joules - before.joules),
                    reading.estimated or before.estimated,
                    reading.source,
                )
    if cpu_joules_per_s is not None:
        energy["cpu:estimate"] = ((cpu + children) * cpu_joules_per_s, True, "estimate")
    peak: int | None = None
    memory: MemoryDetail | None = None
    if end.hwm_bytes > start.hwm_bytes:
        # A new high-water mark inside the window: ru_maxrss is max(hiwater_rss, a pre-exec peak), so having
        # risen it *is* the kernel's hiwater_rss (VmHWM) now, the window's exact peak.
        if memory_detail:
            memory = read_memory_detail()
        peak = end.hwm_bytes
    child_peak = end.children_hwm_bytes if end.children_hwm_bytes > start.children_hwm_bytes else None
    return EdgeDelta(cpu, thread, children, energy, peak, child_peak, memory)
