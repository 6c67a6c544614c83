"""Reads CPU, memory and thread use of a process tree (roots + all descendants) cheaply and without blocking.

Costs on a 2-vCPU VM with psutil 7.2: ``Process.children(recursive=True)`` reads ``/proc/*/stat`` for every
process on the machine each call (~1.7 ms with 70 processes). On Linux we instead list ``/proc`` (~30 us) and
read ``/proc/<pid>/stat`` only for pids not seen before, caching each pid's parent: a parent never changes
except by re-parenting to a reaper, and processes once found in the tree stay tracked until they exit
(so a grandchild whose parent died is not lost). Elsewhere ``psutil`` discovery is used.

Per-process counters come from one read of ``/proc/<pid>/stat`` on Linux (utime, stime, threads, state, vsize,
rss: ~0.02 ms per process against ~0.09 ms for psutil's ``oneshot()`` trio of stat/statm/status); elsewhere
from ``psutil.Process.oneshot()``. Processes are cached by pid and start time (pid reuse is detected).
CPU utilisation is computed from CPU-time deltas between two reads of the same cached process (over at least
50 ms, because the counters tick in 10 ms steps), so no ``cpu_percent(interval)`` sleep is needed. The
first read of a process reports its lifetime average (CPU seconds / seconds since it started), which is the
best estimate available without waiting. Processes that start and end between two reads are not seen.
Children this process starts through ``multiprocessing`` or ``subprocess`` are told at once
(:meth:`ProcessTree.child_started`), so the block edges read them before the next read finds them.

USS/PSS (``memory_full_info``, ~1 ms per process) are read on a process's first sighting, whenever its RSS
grew by more than 1 MiB / 1% since its last detail read, and when ``want_detail`` is true and its RSS moved;
other reads reuse each process's last detail values. When processes join or leave the tree every member
is re-read (PSS shares change with the number of sharers): at once for a burst of three changes, then at
most once a second; a read in between reports no PSS (its members' shares would be of different sharer
counts, and a peak taken from them too high). ``memory_maps`` and network connections
are never read.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from runtel.sampling.samples import ProcessStats

if TYPE_CHECKING:
    import psutil

__all__ = ("ProcessTree", "TreeRead", "stat_fields")

_log = logging.getLogger("runtel.sampling")
_PROC = "/proc"
_MIN_UTIL_WINDOW_S = 0.05
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_BOOT_TIME: list[float] = []
#: children told by :meth:`ProcessTree.child_started` and not yet found by a read, at most
_STARTED_MAX = 64


def _boot_time() -> float:
    """Seconds since the epoch at boot (psutil reads ``btime`` from ``/proc/stat``); cached."""
    if not _BOOT_TIME:
        import psutil  # deferred: psutil (~15 ms)

        _BOOT_TIME.append(psutil.boot_time())
    return _BOOT_TIME[0]


class TreeRead(NamedTuple):
    """One read of the tree: the three groups and the pids currently in it (for GPU per-process filters)."""

    main: ProcessStats
    descendants: ProcessStats
    combined: ProcessStats
    pids: set[int]


class _Tracked:
    """Per-process state between reads (a plain slotted class: a dataclass costs ~1 ms to create at import)."""

    __slots__ = ("pid", "proc", "create_time", "start_ticks", "user", "system", "base_user", "base_system", "base_t",
                 "util", "util_user", "uss", "pss", "detail_read", "detail_rss", "detail_t")

    def __init__(self, pid: int, proc: psutil.Process | None, create_time: float) -> None:
        self.pid = pid
        self.proc = proc  # created lazily on the /proc fast path (needed for USS/PSS only)
        self.create_time = create_time
        self.start_ticks: int | None = None  # /proc/<pid>/stat starttime: detects pid reuse on the fast path
        self.user = 0.0
        self.system = 0.0
        self.base_user = 0.0
        self.base_system = 0.0
        self.base_t: float | None = None
        self.util = 0.0
        self.util_user = 0.0
        self.uss: int | None = None
        self.pss: int | None = None
        self.detail_read = False
        self.detail_rss = -1  # RSS when USS/PSS were last read
        self.detail_t = 0.0  # monotonic time of that read


_DETAIL_RSS_DELTA = 1 << 20
_REFRESH_S = 1.0  # whole-tree USS/PSS refreshes when membership changes: one per second after a burst of 3
_REFRESH_BURST = 3.0


class _Acc:
    """Sums over one group of processes while a read is assembled."""

    __slots__ = ("user", "system", "util", "util_user", "rss", "vms", "uss", "pss", "threads", "processes")

    def __init__(self) -> None:
        self.user = 0.0
        self.system = 0.0
        self.util = 0.0
        self.util_user = 0.0
        self.rss = 0
        self.vms = 0
        self.uss: int | None = None
        self.pss: int | None = None
        self.threads = 0
        self.processes = 0

    def stats(self, dead_user: float, dead_system: float) -> ProcessStats:
        user = self.user + dead_user
        system = self.system + dead_system
        return ProcessStats(
            cpu_time_s=user + system,
            cpu_user_s=user,
            cpu_system_s=system,
            cpu_utilization=self.util,
            cpu_user_utilization=self.util_user,
            rss_bytes=self.rss,
            vms_bytes=self.vms,
            uss_bytes=self.uss,
            pss_bytes=self.pss,
            threads=self.threads,
            processes=self.processes,
        )


def _add_opt(total: int | None, value: int | None) -> int | None:
    if value is None:
        return total
    return value if total is None else total + value


def stat_fields(data: bytes) -> list[bytes]:
    """The fields of a ``/proc/<pid>/stat`` line after the command name (which may hold spaces and
    parentheses): index 0 is stat(5)'s field 3 (state), 11/12 utime/stime, 13/14 cutime/cstime, 19 starttime."""
    return data[data.rindex(b")") + 2 :].split()


def _exists(pid: int) -> bool:
    """Whether ``pid`` is still a process (a zombie is: its figures stand until it is reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: a process, not ours to signal
        return True
    return True


def _read_ppid(pid: int) -> int | None:
    """Parent pid from ``/proc/<pid>/stat`` (the command name may contain spaces and parentheses)."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    try:
        return int(data[data.rindex(b")") + 2 :].split(None, 2)[1])
    except (ValueError, IndexError):
        return None


class ProcessTree:
    """The processes a run is responsible for: root pid(s) and all their descendants.

    Args:
        root_pids: The processes whose trees are tracked (usually ``[os.getpid()]``).
        include_roots: Count the roots themselves (as ``main``); ``False`` tracks only their descendants.
        exclude_pids: Processes never counted (their descendants still are), e.g. a CLI wrapper itself.

    Not thread-safe: the sampler serialises calls to :meth:`read`.
    """

    def __init__(
        self, root_pids: Sequence[int], *, include_roots: bool = True, exclude_pids: Sequence[int] = ()
    ) -> None:
        self._use_proc = sys.platform.startswith("linux") and os.path.isdir(f"{_PROC}/self")
        self._ppid: dict[int, int] = {}
        self._procs: dict[int, _Tracked] = {}
        self._tracked_desc: set[int] = set()
        self._dead = {"main": [0.0, 0.0], "descendants": [0.0, 0.0]}
        self._warned: set[str] = set()
        self._logical_cores = os.cpu_count() or 1
        self._members: frozenset[int] = frozenset()
        #: the live descendants of this process at the last read, for the edge counters (see ``edge_pids``)
        self._edge_pids: tuple[int, ...] = ()
        #: children this process started that no read has found yet: pid -> when told (monotonic ns)
        self._started: dict[int, int] = {}
        self._started_lock = threading.Lock()
        self._refreshed = 0.0
        self._tokens = float(_REFRESH_BURST)
        self.set_roots(root_pids, include_roots=include_roots, exclude_pids=exclude_pids)

    def set_roots(
        self, root_pids: Sequence[int], *, include_roots: bool = True, exclude_pids: Sequence[int] = ()
    ) -> None:
        """Retarget the tree (cumulative CPU of processes already seen is kept)."""
        self.root_pids = tuple(dict.fromkeys(int(p) for p in root_pids))
        self.include_roots = include_roots
        self.exclude_pids = frozenset(int(p) for p in exclude_pids)
        self._tracked_desc.clear()

    # --- discovery --------------------------------------------------------------------------------------
    def _descendants(self) -> set[int]:
        if self._use_proc:
            try:
                return self._descendants_proc()
            except OSError as exc:  # /proc vanished or unreadable: fall back once and for all
                self._warn_once("proc", "listing /proc failed (%s); using psutil discovery", exc)
                self._use_proc = False
        return self._descendants_psutil()

    def _descendants_proc(self) -> set[int]:
        alive = {int(name) for name in os.listdir(_PROC) if name.isdigit()}
        ppid = self._ppid
        for gone in ppid.keys() - alive:
            del ppid[gone]
        for pid in alive - ppid.keys():
            parent = _read_ppid(pid)
            if parent is not None:
                ppid[pid] = parent
        children: dict[int, list[int]] = {}
        for pid, parent in ppid.items():
            children.setdefault(parent, []).append(pid)
        found: set[int] = set()
        stack = [p for r in self.root_pids for p in children.get(r, ())]
        while stack:
            pid = stack.pop()
            if pid in found:
                continue
            found.add(pid)
            stack.extend(children.get(pid, ()))
        # Keep descendants already tracked that were re-parented to a reaper after their parent exited.
        found |= self._tracked_desc & alive
        found.difference_update(self.root_pids)
        return found

    def _descendants_psutil(self) -> set[int]:
        import psutil  # deferred: psutil (~15 ms)

        found: set[int] = set()
        for root in self.root_pids:
            try:
                found.update(c.pid for c in psutil.Process(root).children(recursive=True))
            except psutil.Error:
                continue
        alive = {p for p in self._tracked_desc if psutil.pid_exists(p)}
        found |= alive
        found.difference_update(self.root_pids)
        return found

    # --- reading ----------------------------------------------------------------------------------------
    def _tracked(self, pid: int) -> _Tracked | None:
        import psutil  # deferred: psutil (~15 ms)

        entry = self._procs.get(pid)
        if entry is not None:
            return entry
        if self._use_proc:
            entry = _Tracked(pid=pid, proc=None, create_time=0.0)
        else:
            try:
                proc = psutil.Process(pid)
                entry = _Tracked(pid=pid, proc=proc, create_time=proc.create_time())
            except psutil.Error:
                return None
        self._procs[pid] = entry
        return entry

    def _raw_proc(self, entry: _Tracked) -> tuple[float, float, bool, int, int, int]:
        """``(user_s, system_s, zombie, threads, vms, rss)`` from one read of ``/proc/<pid>/stat``.

        psutil needs three files per process for the same numbers (stat, statm, status: ~0.09 ms); this reads one
        (~0.02 ms). ``rss`` (field 24, pages) is the counter ``statm`` reports too.
        """
        import psutil  # deferred: psutil (~15 ms)

        try:
            with open(f"{_PROC}/{entry.pid}/stat", "rb") as fh:
                data = fh.read()
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise psutil.NoSuchProcess(entry.pid) from exc
        fields = stat_fields(data)
        start = int(fields[19])
        if entry.start_ticks is None:
            entry.start_ticks = start
            entry.create_time = _boot_time() + start / _CLK_TCK
        elif start != entry.start_ticks:  # the pid was reused by another process
            raise psutil.NoSuchProcess(entry.pid)
        state = fields[0]
        return (
            int(fields[11]) / _CLK_TCK,
            int(fields[12]) / _CLK_TCK,
            state in (b"Z", b"X", b"x"),
            int(fields[17]),
            int(fields[20]),
            int(fields[21]) * _PAGE_SIZE,
        )

    def _raw_psutil(self, entry: _Tracked) -> tuple[float, float, bool, int, int, int]:
        import psutil  # deferred: psutil (~15 ms)

        proc = entry.proc
        assert proc is not None
        with proc.oneshot():
            times = proc.cpu_times()
            if proc.status() == psutil.STATUS_ZOMBIE:
                return float(times.user), float(times.system), True, 0, 0, 0
            mem = proc.memory_info()
            return float(times.user), float(times.system), False, int(proc.num_threads()), int(mem.vms), int(mem.rss)

    def read(self, now_monotonic: float, want_detail: bool) -> TreeRead:
        """Read every process of the tree once.

        Args:
            now_monotonic: ``time.monotonic()`` of this read; utilisation = CPU-seconds delta / time delta.
            want_detail: Also read USS/PSS (slower; the sampler asks every ``memory_detail_interval``).

        Returns:
            ``(main, descendants, combined, pids)``; never raises for vanished, zombie or inaccessible processes.
        """
        import psutil  # deferred: psutil (~15 ms)

        began = time.monotonic_ns()
        descendants = self._descendants()
        roots = [p for p in self.root_pids if p not in self.exclude_pids] if self.include_roots else []
        desc = [p for p in descendants if p not in self.exclude_pids]
        groups = {"main": _Acc(), "descendants": _Acc()}
        # PSS splits shared pages among the processes sharing them: when processes join or leave the tree
        # (a forked pool starts), every member's PSS changes although its RSS does not. Re-read all of them
        # then: at once for the first few changes, then at most once a second (a token bucket), so a tree
        # with constant churn does not pay it every tick.
        members = frozenset(roots) | frozenset(desc)
        self._tokens = min(_REFRESH_BURST, self._tokens + max(0.0, now_monotonic - self._refreshed) / _REFRESH_S)
        self._refreshed = now_monotonic
        refresh = members != self._members and self._tokens >= 1.0
        if refresh:
            self._members = members
            self._tokens -= 1.0
        seen: set[int] = set()
        counted: set[int] = set()
        wall = time.time()
        for group_name, pids in (("main", roots), ("descendants", desc)):
            acc = groups[group_name]
            for pid in pids:
                if pid in seen:
                    continue
                seen.add(pid)
                entry = self._tracked(pid)
                if entry is None:
                    continue
                try:
                    if refresh:
                        entry.detail_rss = -(1 << 62)  # counts as grown: USS/PSS re-read now
                    if self._read_one(entry, acc, now_monotonic, wall, want_detail):
                        counted.add(pid)
                except psutil.NoSuchProcess:
                    self._forget(pid, group_name)
                except psutil.AccessDenied as exc:
                    self._warn_once(f"denied:{pid}", "cannot read process %s: %s", pid, exc)
                except OSError as exc:
                    self._warn_once(f"os:{pid}", "cannot read process %s: %s", pid, exc)
        # Processes that left the tree (exited, or retargeted away): keep their CPU seconds in the totals.
        for pid in [p for p in self._procs if p not in seen]:
            self._forget(pid, "main" if pid in self.root_pids else "descendants")
        self._tracked_desc = set(desc) & seen
        own = self._own()
        with self._started_lock:
            started = self._started
            for pid in [p for p, told in started.items() if p in seen or told < began]:
                del started[pid]  # found by this read, or gone before a discovery that began after it was told
            live = tuple(sorted(self._tracked_desc | started.keys())) if own else ()
            if live != self._edge_pids:
                self._edge_pids = live  # a new tuple only on a change: the edge reader's cache keys on the object
        if members != self._members:
            # The tree changed and its members were not all re-read (the bucket is empty): their PSS shares are
            # of different sharer counts (three workers forked between two reads left the earlier members at
            # a third where a quarter is now: a sum 30 MB over the truth for 120 MB shared), so this read
            # reports no PSS rather than a wrong one; the next refresh, within a second, gives a whole one.
            for acc in groups.values():
                acc.pss = None
        main = groups["main"].stats(*self._dead["main"])
        des = groups["descendants"].stats(*self._dead["descendants"])
        return TreeRead(main, des, _combine(main, des), counted)

    def _read_one(self, entry: _Tracked, acc: _Acc, now: float, wall: float, want_detail: bool) -> bool:
        """Add one process to ``acc``; ``False`` if it is a zombie (CPU counted, nothing else)."""
        import psutil as ps  # deferred: psutil (~15 ms)

        if self._use_proc:
            user, system, zombie, threads, vms, rss = self._raw_proc(entry)
        else:
            user, system, zombie, threads, vms, rss = self._raw_psutil(entry)
        if entry.base_t is None:
            age = wall - entry.create_time
            entry.util_user = user / age if age > _MIN_UTIL_WINDOW_S else 0.0
            entry.util = (user + system) / age if age > _MIN_UTIL_WINDOW_S else 0.0
            entry.base_user, entry.base_system, entry.base_t = user, system, now
        elif now - entry.base_t >= _MIN_UTIL_WINDOW_S:
            # CPU times tick in 10 ms steps: over shorter windows the rate is mostly quantisation noise, so
            # a read soon after the previous one (sample_now next to a tick) reuses the last rate.
            dt = now - entry.base_t
            entry.util_user = (user - entry.base_user) / dt
            entry.util = entry.util_user + (system - entry.base_system) / dt
            entry.base_user, entry.base_system, entry.base_t = user, system, now
        entry.user, entry.system = user, system
        ceiling = float(self._logical_cores) if zombie else float(min(max(1, threads), self._logical_cores))
        util = min(max(0.0, entry.util), ceiling)
        acc.util += util
        acc.util_user += min(max(0.0, entry.util_user), util)
        acc.user += user
        acc.system += system
        if zombie:  # exited but not reaped: its CPU seconds count, it holds no memory or threads
            return False
        # USS/PSS cost ~0.5 ms per process; re-read them only when the process's RSS moved (> 1 MiB or 1%)
        # since the last read, which keeps large idle trees (dataloader workers) cheap.
        # (PSS also moves when sharers come and go, so an unchanged process is still re-read once a minute.)
        # A process whose RSS *grew* past that threshold is re-read at once, detail interval or not: a held
        # allocation shows in its USS/PSS at the next sample or edge instead of up to 10 s later (or never).
        threshold = max(_DETAIL_RSS_DELTA, rss // 100)
        moved = abs(rss - entry.detail_rss) > threshold or now - entry.detail_t > 60.0
        grew = rss - entry.detail_rss > threshold
        if not entry.detail_read or grew or (want_detail and moved):
            entry.detail_read, entry.detail_rss, entry.detail_t = True, rss, now
            try:
                if entry.proc is None:
                    entry.proc = ps.Process(entry.pid)
                full = entry.proc.memory_full_info()
                entry.uss = int(full.uss)
                pss = getattr(full, "pss", None)
                entry.pss = None if pss is None else int(pss)
            except ps.AccessDenied:
                entry.uss = entry.pss = None
            except ps.ZombieProcess:
                return False
        acc.rss += rss
        acc.vms += vms
        acc.uss = _add_opt(acc.uss, entry.uss)
        acc.pss = _add_opt(acc.pss, entry.pss)
        acc.threads += int(threads)
        acc.processes += 1
        return True

    def _forget(self, pid: int, group: str) -> None:
        entry = self._procs.pop(pid, None)
        if entry is not None:
            dead = self._dead[group]
            dead[0] += entry.user
            dead[1] += entry.system

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _log.info(msg, *args)

    def _own(self) -> bool:
        return self.include_roots and self.root_pids == (os.getpid(),)

    def edge_pids(self) -> tuple[int, ...]:
        """The live descendants of this process found by the last read, and the children it started since
        (:meth:`child_started`); empty when the tree is another's.

        Read by block and run edges in any thread: the tuple is replaced whole, never changed in place.
        """
        return self._edge_pids

    def child_started(self, pid: int) -> None:
        """This process just started child ``pid`` (any thread; told by the process-start hooks).

        The next block edge reads it, so a worker started just before a block counts from the block's start
        instead of being missing until the next sampler tick finds it. Pids of processes already gone (a
        loop of short ``subprocess.run`` calls) are dropped here, so they never crowd live workers out of the
        edges' limit. Bounded: beyond ``_STARTED_MAX`` children not yet found, later ones wait for the tick.
        """
        if not self._own():
            return
        with self._started_lock:
            live = [p for p in self._edge_pids if _exists(p)]
            for gone in self._started.keys() - live:
                del self._started[gone]
            if pid not in live and len(self._started) < _STARTED_MAX:
                self._started[pid] = time.monotonic_ns()
                live.append(pid)
            self._edge_pids = tuple(sorted(live))

    def known_pids(self) -> Iterable[int]:
        """Pids currently cached (for diagnostics)."""
        return tuple(self._procs)


def _combine(a: ProcessStats, b: ProcessStats) -> ProcessStats:
    def opt(x: int | None, y: int | None) -> int | None:
        return _add_opt(x, y)

    return ProcessStats(
        cpu_time_s=a.cpu_time_s + b.cpu_time_s,
        cpu_user_s=a.cpu_user_s + b.cpu_user_s,
        cpu_system_s=a.cpu_system_s + b.cpu_system_s,
        cpu_utilization=a.cpu_utilization + b.cpu_utilization,
        cpu_user_utilization=a.cpu_user_utilization + b.cpu_user_utilization,
        rss_bytes=a.rss_bytes + b.rss_bytes,
        vms_bytes=a.vms_bytes + b.vms_bytes,
        uss_bytes=opt(a.uss_bytes, b.uss_bytes),
        pss_bytes=opt(a.pss_bytes, b.pss_bytes),
        threads=a.threads + b.threads,
        processes=a.processes + b.processes,
    )
