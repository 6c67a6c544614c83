"""Cumulative counters read at the edges of a block, run or measurement window, so its totals are exact.

A sampled counter misses the part of a window between its edge and the nearest tick, and a window shorter
than the interval gets nothing. The counters that are cheap to read are therefore read at both edges and
the window's figure is their difference:

* ``cpu.time``: CPU seconds of **this process** (every thread, user + system, ``time.process_time_ns``:
  ``CLOCK_PROCESS_CPUTIME_ID``, integer nanoseconds, so a difference is a short decimal; ``getrusage``'s
  figure of a threaded process drifts by ~25 us per 5 ms from it, measured) plus those of its children
  **reaped** in the window (``RUSAGE_CHILDREN``, the kernel's ``wait4`` accounting) plus the change of the
  **live descendants** the sampler knows of, when there are at most :data:`TREE_EDGE_LIMIT` of them (Linux:
  one ``pread`` of a kept-open ``/proc/<pid>/stat`` each, utime + stime + the CPU of the children it reaped,
  in the kernel's 10 ms clock ticks; a read is reused for :data:`TREE_REUSE_NS`, while no child was reaped
  since, so a tight loop of tiny blocks in a process with workers does not pay it at every edge). Beyond the
  limit, or when the reads fail, the window says so (``EdgeDelta.children_partial``). A descendant that ended inside the window had its
  lifetime counted by whoever reaped it, so its CPU from before the window is taken off, when that reaper is
  this process or another descendant (its parent at the start edge); one re-parented to a reaper outside the
  tree (a daemonised grandchild) is not counted by anyone of the tree, so nothing is taken off and its CPU
  between the start and its end is missing. One not known at the window's start (neither found by the
  sampler nor told at its start, see ``ProcessTree.child_started``) counts only if it was born inside the
  window.
  runtel's own sampling thread is left out of a block's or measurement window's figure (its CPU is
  runtel's cost, not the window's work: its first tick, ~20-30 ms of imports and first reads, fell into a
  run's first block): the thread publishes its CPU clock after its start-up and after every tick, and each
  edge reads that number (an attribute, no system call). A tick in progress at an edge is counted whole
  on the side it ends, so what is taken off is bounded by the other threads' CPU in the window: a window
  never reads less than its own thread used. The tick's reads run in the sampler's anyio worker thread and
  still count (~0.1-1 ms a tick). A run's own figure keeps it all (what the process used).
* ``thread.cpu.time``: CPU seconds of the thread that entered the window (Linux: ``getrusage(RUSAGE_THREAD)``,
  whole microseconds; elsewhere ``time.thread_time_ns``), reported only when the window also ended in that
  thread.
* peak RSS: the kernel's high-water mark (``ru_maxrss`` of the calling thread's record on Linux, which is the
  process's; the same figure as ``VmHWM`` for a process that
  was not forked from a bigger one); when it rose inside the window the window's peak is exact, read from
  ``VmHWM``, and USS/PSS are read at once (``/proc/self/smaps_rollup``) so an allocation held at the edge is
  never missed.
* energy: the NVML total-energy counter of each GPU that has one, RAPL package counters where readable,
  and the CPU estimate, which is a function of CPU seconds (so it is exact at the edges too).

Cost per edge on the project's VM: ~2-2.5 us without GPU, RAPL or live children (Linux: three system calls, the
process's CPU clock and two ``getrusage``), ~5 us more per live descendant, see benchmarks/edge_bench.py.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from runtel.energy.base import EnergyReading, EnergySource
from runtel.sampling.proctree import stat_fields

__all__ = (
    "TREE_EDGE_LIMIT",
    "TREE_REUSE_NS",
    "TREE_UNREAD",
    "Edge",
    "EdgeDelta",
    "EdgeReader",
    "MemoryDetail",
    "TreeCounters",
    "edge_delta",
    "without_own",
    "read_memory_detail",
    "read_tree_counters",
    "read_vm_hwm",
)

_RUSAGE_CHILDREN = resource.RUSAGE_CHILDREN
_LINUX = sys.platform.startswith("linux")
#: whose ``getrusage`` gives the high-water mark: on Linux the calling thread's record carries the process's
#: ``ru_maxrss`` too (the mm's ``hiwater_rss``, shared by every thread), and reading it does not walk the
#: process's threads as RUSAGE_SELF does (~0.3 us against ~0.42 us with 9 threads, more with more). That
#: record also carries the thread's CPU (user + system, whole microseconds that add up to the scheduler's exact
#: runtime, within 2 us of ``thread_time_ns``: tests/sdk/test_exact_usage.py), so on Linux an edge reads both
#: in one call: three system calls an edge instead of four
_RUSAGE_HWM = resource.RUSAGE_THREAD if _LINUX else resource.RUSAGE_SELF
_getrusage = resource.getrusage
_thread_time_ns = time.thread_time_ns
_process_time_ns = time.process_time_ns
_get_ident = threading.get_ident
_time_ns = time.time_ns
_tuple_new = tuple.__new__  # builds an Edge without the NamedTuple's Python-level __new__ (~0.15 us)
#: ru_maxrss is in bytes on macOS, KiB on Linux and the BSDs
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024
#: live descendants read at an edge at most: beyond this the tree is not "small" and the sampler's share is used
TREE_EDGE_LIMIT = 16
#: a tree read is reused by the edges of the next this-many nanoseconds (the counters tick in 10 ms steps anyway)
TREE_REUSE_NS = 5_000_000
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)
_monotonic_ns = time.monotonic_ns

#: ``(boot_ticks, ((pid, start_ticks, cpu_ticks, ppid), ...))``: when the tree was read (clock ticks since boot,
#: the unit of a process's start time) and each live descendant's cumulative CPU (its own + its reaped
#: children's) and parent
TreeCounters = tuple[int, tuple[tuple[int, int, int, int], ...]]
#: an edge whose live descendants were too many (or unreadable): its window gets no tree figure
TREE_UNREAD: TreeCounters = (-1, ())


def read_tree_counters(pids: Sequence[int], fds: dict[int, int] | None = None) -> TreeCounters | None:
    """Each pid's cumulative CPU in clock ticks from ``/proc/<pid>/stat`` (Linux); ``None`` elsewhere.

    A pid that is gone or unreadable is left out (a zombie is still readable: its figures stand until reaped).
    ``fds``: kept-open descriptors by pid, filled and pruned here (without it, each file is closed after its
    read); ``pread`` on one re-reads the file fresh (~3.4 us a process against ~7.2 us to open, read and
    close it; a descriptor of a process that died answers ESRCH even if its pid is reused, so a reused pid
    is never read as the old process).
    """
    if not _LINUX or _BOOTTIME is None:
        return None
    kept = fds is not None
    open_fds: dict[int, int] = fds if fds is not None else {}
    now = int(time.clock_gettime(_BOOTTIME) * _CLK_TCK)
    out = []
    try:
        for pid in pids:
            try:
                fd = open_fds.get(pid)
                if fd is None:
                    fd = open_fds[pid] = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
                fields = stat_fields(os.pread(fd, 2048, 0))
                out.append((pid, int(fields[19]), int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14]),
                            int(fields[1])))
            except (OSError, ValueError, IndexError):
                _close_fd(open_fds.pop(pid, None))
    finally:
        if not kept:
            for fd in open_fds.values():
                _close_fd(fd)
    return now, tuple(out)


def _close_fd(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _tree_change_s(start: TreeCounters, end: TreeCounters) -> float:
    """CPU seconds the live descendants used between two tree reads (see the module docstring)."""
    before = {(pid, born): (cpu, ppid) for pid, born, cpu, ppid in start[1]}
    ticks = 0
    for pid, born, cpu, _ in end[1]:
        first = before.pop((pid, born), None)
        if first is not None:
            ticks += cpu - first[0]
        elif born >= start[0]:  # born inside the window: all of its CPU is
            ticks += cpu
        # else: alive before the window but not yet known at its start: its part in the window is unknown
    reapers = {entry[0] for entry in start[1]}
    reapers.add(os.getpid())
    for cpu, ppid in before.values():
        if ppid in reapers:  # ended in the window: its whole lifetime is in its reaper's figure
            ticks -= cpu
    return ticks / _CLK_TCK


class Edge(NamedTuple):
    """The cumulative counters at one edge of a window (CPU clocks as integer nanoseconds)."""

    time_ns: int
    cpu_ns: int  #: this process, every thread, user + system (``process_time_ns``)
    thread_cpu_ns: int  #: the calling thread (Linux: ``RUSAGE_THREAD``, whole microseconds; ``thread_time_ns``)
    thread_id: int
    hwm_bytes: int  #: ru_maxrss of this process (its high-water mark)
    #: ``getrusage(RUSAGE_CHILDREN)`` as read: every field of it changes only when a child is reaped, so two
    #: edges with equal ``children`` had none reaped between them (one C-level tuple comparison)
    children: resource.struct_rusage
    energy: tuple[EnergyReading, ...] = ()
    #: the live descendants' counters: ``None`` when none are known, :data:`TREE_UNREAD` when there were more
    #: than TREE_EDGE_LIMIT or they could not be read
    tree: TreeCounters | None = None
    #: CPU of runtel's sampling thread as it last published it (cumulative over its restarts; 0 before)
    own_cpu_ns: int = 0

    @property
    def cpu_s(self) -> float:
        return self.cpu_ns / 1e9

    @property
    def thread_cpu_s(self) -> float:
        return self.thread_cpu_ns / 1e9

    @property
    def children_cpu_s(self) -> float:
        """CPU seconds of the children reaped so far (RUSAGE_CHILDREN user + system)."""
        return self.children.ru_utime + self.children.ru_stime

    @property
    def children_hwm_bytes(self) -> int:
        """The largest ru_maxrss of a reaped child."""
        return self.children.ru_maxrss * _MAXRSS_UNIT


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
    #: child processes' CPU inside the window: reaped ones (RUSAGE_CHILDREN) + the live descendants' change
    children_cpu_s: float
    energy: Mapping[str, tuple[float, bool, str]]  #: domain -> (joules, estimated, source)
    peak_rss_bytes: int | None  #: exact peak when the high-water mark rose in the window, else None
    children_peak_rss_bytes: int | None  #: a reaped child's peak when that rose in the window
    memory: MemoryDetail | None  #: read at the end edge because the process grew in the window
    #: the live descendants were not read at an edge (more than TREE_EDGE_LIMIT, or unreadable): only the
    #: children reaped in the window are in ``children_cpu_s``
    children_partial: bool = False


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
        descendants: Returns the live descendants known now (the sampler's last tree read, an immutable
            tuple); their CPU is read at each edge while there are 1 to TREE_EDGE_LIMIT of them.

    ``own_cpu_ns`` is the CPU of runtel's sampling thread so far, published by that thread after its start-up
    and every tick; each edge copies it, so blocks can leave that thread's CPU out.
    """

    def __init__(
        self,
        energy: Sequence[EnergySource] = (),
        gpu_energy: Callable[[], Sequence[EnergyReading]] | None = None,
        cpu_joules_per_s: float | None = None,
        descendants: Callable[[], tuple[int, ...]] | None = None,
    ) -> None:
        self._sources = tuple(energy)
        self._gpu_energy = gpu_energy
        self.cpu_joules_per_s = cpu_joules_per_s
        self._has_energy = bool(self._sources) or gpu_energy is not None
        self._descendants = descendants if _LINUX else None
        #: the last tree read: (when, the pids it read, RUSAGE_CHILDREN then, the counters)
        self._tree_last: tuple[int, tuple[int, ...], object, TreeCounters | None] = (0, (), None, None)
        self._tree_fds: dict[int, int] = {}  #: kept-open /proc/<pid>/stat of the descendants, under _tree_lock
        self._tree_lock = threading.Lock()
        self.failures = 0
        self.own_cpu_ns = 0

    def read(self, end: bool = False) -> Edge:
        """The counters now (~2-2.5 us without energy sources or live children: one clock, two ``getrusage``).

        The CPU clocks are read last at a start edge and first at an end edge (``end=True``), the thread's
        innermost, so the edge's own cost (energy and descendants' reads included) stays out of the window's
        ``cpu_ns`` and ``thread_cpu_ns`` as far as it can.
        """
        if end:
            if _LINUX:
                mine = _getrusage(_RUSAGE_HWM)
                cpu = _process_time_ns()
                thread_cpu = int((mine.ru_utime + mine.ru_stime) * 1e6 + 0.5) * 1000
                hwm = mine.ru_maxrss
            else:
                thread_cpu = _thread_time_ns()
                cpu = _process_time_ns()
                hwm = _getrusage(_RUSAGE_HWM).ru_maxrss
            own = self.own_cpu_ns
            children = _getrusage(_RUSAGE_CHILDREN)
            now = _time_ns()
            energy = self._read_energy() if self._has_energy else ()
            pids = self._descendants() if self._descendants is not None else ()
            tree = self._tree(pids, children) if pids else None
        else:
            energy = self._read_energy() if self._has_energy else ()
            pids = self._descendants() if self._descendants is not None else ()
            children = _getrusage(_RUSAGE_CHILDREN)  # before the tree: a reuse of its last read must match it
            tree = self._tree(pids, children) if pids else None
            now = _time_ns()
            own = self.own_cpu_ns
            if _LINUX:
                cpu = _process_time_ns()
                mine = _getrusage(_RUSAGE_HWM)
                thread_cpu = int((mine.ru_utime + mine.ru_stime) * 1e6 + 0.5) * 1000
                hwm = mine.ru_maxrss
            else:
                hwm = _getrusage(_RUSAGE_HWM).ru_maxrss
                cpu = _process_time_ns()
                thread_cpu = _thread_time_ns()
        edge: Edge = _tuple_new(Edge, (now, cpu, thread_cpu, _get_ident(), hwm * _MAXRSS_UNIT, children, energy, tree,
                                       own))
        return edge

    def _tree(self, pids: tuple[int, ...], children: object) -> TreeCounters:
        return self._read_tree(pids, children) if len(pids) <= TREE_EDGE_LIMIT else TREE_UNREAD

    def _read_tree(self, pids: tuple[int, ...], children: object) -> TreeCounters:
        at, known, reaped, counters = self._tree_last
        now = _monotonic_ns()
        # Reused only while no child was reaped since: a reaped child's lifetime moves into RUSAGE_CHILDREN at
        # once, and an old read still listing it would have the next edge take its CPU off a second time.
        if known is pids and counters is not None and now - at < TREE_REUSE_NS and reaped == children:
            return counters
        try:
            with self._tree_lock:  # the descriptors are shared: none is closed while another thread reads it
                fds = self._tree_fds
                if known is not pids:
                    for pid in fds.keys() - set(pids):
                        _close_fd(fds.pop(pid))
                counters = read_tree_counters(pids, fds) or TREE_UNREAD
        except Exception:
            self.failures += 1
            return TREE_UNREAD
        self._tree_last = (now, pids, children, counters)  # one tuple: threads see the old or the new read
        return counters

    def after_fork_in_child(self) -> None:
        """In a forked child: close the inherited copies of the parent's open files, without the lock (a
        parent thread may have held it at the fork)."""
        self._tree_lock = threading.Lock()
        fds, self._tree_fds = self._tree_fds, {}
        for fd in fds.values():
            _close_fd(fd)
        self._tree_last = (0, (), None, None)

    def close(self) -> None:
        """Close the descendants' kept-open ``/proc`` files (the reader still works; it reopens them)."""
        with self._tree_lock:
            for fd in self._tree_fds.values():
                _close_fd(fd)
            self._tree_fds.clear()

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


def without_own(cpu_ns: int, start: Edge, end: Edge) -> int:
    """``cpu_ns`` (the process's CPU between two edges) less what runtel's sampling thread published meanwhile,
    at most the other threads' share: never below the window's own thread (a tick that began before the start
    edge is published whole after it)."""
    own = end.own_cpu_ns - start.own_cpu_ns
    if own <= 0:
        return cpu_ns
    other = cpu_ns - (end.thread_cpu_ns - start.thread_cpu_ns) if end.thread_id == start.thread_id else cpu_ns
    return cpu_ns - min(own, max(0, other))


def edge_delta(start: Edge, end: Edge, *, cpu_joules_per_s: float | None = None,
               memory_detail: bool = True, exclude_own: bool = True) -> EdgeDelta:
    """The window ``[start, end]`` from its edges.

    Args:
        start / end: The edges (``end`` read after ``start``).
        cpu_joules_per_s: Adds the CPU estimate (``cpu:estimate``) as ``cpu_s x`` this.
        memory_detail: Read USS/PSS (``smaps_rollup``) when the high-water mark rose in the window.
        exclude_own: Leave runtel's sampling thread out of ``cpu_s`` (blocks, measurements; not runs).
    """
    cpu_ns = end.cpu_ns - start.cpu_ns
    if exclude_own:
        cpu_ns = without_own(cpu_ns, start, end)
    cpu = max(0, cpu_ns) / 1e9  # from integers: a short decimal, exact to the nanosecond
    # rusage's figures are whole microseconds: rounded to them, a difference is a short decimal (not 0.51200000001)
    children = 0.0 if end.children == start.children else round(max(0.0, end.children_cpu_s - start.children_cpu_s), 6)
    partial = start.tree is TREE_UNREAD or end.tree is TREE_UNREAD
    if (start.tree or end.tree) and not partial:
        # No descendants known at one edge: none lived then (up to the sampler's lag); those at the other edge
        # were born since the start (its clock in ticks since boot, from the end's, rounded down: a child born
        # in the start's own tick counts as born inside) or ended before the end
        tree_end = end.tree or (0, ())
        tree_start = start.tree or (tree_end[0] + (start.time_ns - end.time_ns) * _CLK_TCK // 1_000_000_000, ())
        children = round(max(0.0, children + _tree_change_s(tree_start, tree_end)), 6)  # ticks + rusage's us
    thread = max(0, end.thread_cpu_ns - start.thread_cpu_ns) / 1e9 if end.thread_id == start.thread_id else None
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
    child_peak = None
    if end.children != start.children and end.children_hwm_bytes > start.children_hwm_bytes:
        child_peak = end.children_hwm_bytes
    return EdgeDelta(cpu, thread, children, energy, peak, child_peak, memory, partial)
