"""Resource sampling for runs: the :class:`Monitor` façade over the sampler, its probes and its summaries.

The run code uses only :class:`Monitor`::

    monitor = Monitor.open(settings)          # never raises; an inert monitor if anything is missing
    monitor.start()
    first = monitor.edge_sample()             # edge sample at run start (a fresh one, or one < 5 ms old)
    ...
    last = monitor.edge_sample()              # and at run end
    summary = monitor.usage(start_ns, end_ns, edges=(first, last))
    monitor.stop()
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runtel import semconv
from runtel.energy.estimate import CpuEnergyEstimator
from runtel.energy.rapl import DEFAULT_POWERCAP, open_rapl
from runtel.energy.tdp import estimate_basis
from runtel.errors import BackendUnavailable
from runtel.gpu import open_backend
from runtel.sampling.edges import TREE_UNREAD, Edge, EdgeDelta, EdgeReader, edge_delta, without_own
from runtel.sampling.instruments import register_instruments
from runtel.sampling.proctree import ProcessTree
from runtel.sampling.sampler import Sampler
from runtel.sampling.samples import ProcessStats, Snapshot, SystemStats
from runtel.sampling.summary import (
    THREAD_CPU_FLOOR_NS,
    AttributeValue,
    UsageSummary,
    edge_attributes,
    resource_usage_record,
    summarize,
    usage_attributes,
    with_edges,
)
from runtel.semconv import USAGE_CPU_TIME, USAGE_THREAD_CPU_TIME

if TYPE_CHECKING:
    from runtel.config import Settings
    from runtel.energy.base import EnergySource
    from runtel.energy.estimate import CpuEnergyEstimator
    from runtel.gpu.base import GpuBackend
    from runtel.sampling.instruments import ObservableMeter

__all__ = (
    "Monitor",
    "ProcessStats",
    "ProcessTree",
    "Sampler",
    "Snapshot",
    "SystemStats",
    "UsageSummary",
    "resource_usage_record",
    "summarize",
    "usage_attributes",
)

_log = logging.getLogger("runtel.sampling")

#: a run edge reuses the sampler's latest sample when it is younger than this (seconds)
EDGE_REUSE_S = 0.005
#: above this many CPU nanoseconds 1 % of a block's CPU time exceeds the thread-clock floor
_THREAD_LIMIT_FROM_NS = 100 * THREAD_CPU_FLOOR_NS


def _reraise(exc: Exception) -> None:
    raise exc


def expected_cores(settings_value: int | None) -> int:
    """The ``n_expected_cores`` setting, else the CPUs this process may run on."""
    if settings_value:
        return settings_value
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _empty_usage(start_ns: int, end_ns: int) -> UsageSummary:
    """The summary of a window nothing was measured in (no sampler, or summarising failed)."""
    return summarize([], start_ns=start_ns, end_ns=end_ns, n_expected_cores=1, carbon_intensity=0.0)


class Monitor:
    """What a run needs from resource sampling; every method is safe to call and never raises.

    Build it with :meth:`open`. An inert monitor (sampling off, or setup failed) records nothing: ``sampler`` is
    ``None``, :meth:`sample_now` returns ``None`` and :meth:`usage` has 0 samples.
    """

    def __init__(self, sampler: Sampler | None, *, carbon_intensity: float = 475.0, reason: str = "",
                 edges: EdgeReader | None = None) -> None:
        self.sampler = sampler
        self.carbon_intensity = carbon_intensity
        self.reason = reason
        self.energy_method: dict[str, object] = {}
        #: reads the cumulative counters at block/run edges (``None`` when inert)
        self.edges = edges if edges is not None or sampler is None else EdgeReader()
        #: ``(time_ns, rss, uss, pss)`` read at block edges where the process grew: a run's peaks include them
        self._edge_peaks: deque[tuple[int, int | None, int | None, int | None]] = deque(maxlen=4096)
        self._detail_hwm = 0  # the high-water mark when a block edge last read USS/PSS
        #: blocks and @trace calls read the edge counters (setting ``block_counters``); runs always do
        self.block_edges = True

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        root_pids: Sequence[int] | None = None,
        gpu_backend: GpuBackend | None = None,
        powercap_root: Path | None = None,
    ) -> Monitor:
        """Build the sampler for this process (or ``root_pids``) from settings; never raises.

        Args:
            settings: Resolved settings (interval, detail interval, GPU backend and UUIDs, TDP, carbon intensity,
                expected cores, ``env`` with ``CUDA_VISIBLE_DEVICES``).
            root_pids: Processes to track (default: this process).
            gpu_backend: An already opened backend (tests pass one over ``FakeNvml``).
            powercap_root: Where to look for RAPL zones (default ``/sys/class/powercap``).
        """
        if not settings.sampling:
            return cls(None, carbon_intensity=settings.carbon_intensity, reason="sampling disabled")
        try:
            return cls._open(settings, root_pids, gpu_backend, powercap_root)
        except Exception as exc:
            _log.warning("resource sampling unavailable: %r", exc)
            return cls(None, carbon_intensity=settings.carbon_intensity, reason=repr(exc))

    @classmethod
    def _open(
        cls,
        settings: Settings,
        root_pids: Sequence[int] | None,
        gpu_backend: GpuBackend | None,
        powercap_root: Path | None,
    ) -> Monitor:
        logical = os.cpu_count() or 1
        tree = ProcessTree(list(root_pids) if root_pids is not None else [os.getpid()])
        gpu = gpu_backend or open_backend(settings.gpu_backend, env=settings.env, uuids=settings.gpu_uuids)
        energy: list[EnergySource] = []
        estimate: CpuEnergyEstimator | None = None
        method: dict[str, object]
        try:
            energy.extend(open_rapl(powercap_root or DEFAULT_POWERCAP))
            method = {"cpu": "rapl", "domains": [s.domain for s in energy]}
        except BackendUnavailable as exc:
            basis = estimate_basis(settings.cpu_tdp)
            tdp = float(basis["tdp_w"])  # type: ignore[arg-type]
            estimate = CpuEnergyEstimator(tdp, logical, tdp_source=str(basis["tdp_source"]),
                                          package_threads=float(basis["package_threads"]))  # type: ignore[arg-type]
            method = {"cpu": "estimate", **basis}
            _log.info("CPU energy is estimated (%s): %s", basis["assumption"], exc)
        method["gpu"] = gpu.name
        sampler = Sampler(
            interval=settings.sample_interval,
            detail_interval=settings.memory_detail_interval,
            tree=tree,
            gpu=gpu,
            energy=energy,
            estimate=estimate,
            n_expected_cores=expected_cores(settings.n_expected_cores),
            logical_cores=logical,
        )
        edges = EdgeReader(
            energy,
            gpu_energy=sampler.gpu_edge_energy if sampler._has_gpu else None,
            cpu_joules_per_s=None if estimate is None else estimate.joules_per_cpu_s,
            descendants=tree.edge_pids,
        )
        sampler.edges = edges  # the sampling thread tells the edges its own CPU
        monitor = cls(sampler, carbon_intensity=settings.carbon_intensity, edges=edges)
        monitor.energy_method = method
        monitor.block_edges = bool(getattr(settings, "block_counters", True))
        return monitor

    @property
    def enabled(self) -> bool:
        """Whether anything is recorded."""
        return self.sampler is not None

    def _guard(self, what: str, fn: Callable[[], object]) -> object:
        try:
            return fn()
        except Exception as exc:
            key = f"monitor:{what}:{type(exc).__name__}"
            if self.sampler is not None and key not in self.sampler._logged:
                self.sampler._logged.add(key)
                _log.warning("resource monitor %s failed: %r", what, exc)
            return None

    def start(self) -> None:
        """Start background sampling (idempotent)."""
        if self.sampler is not None:
            self._guard("start", self.sampler.start)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop background sampling promptly (history and ``latest`` stay readable); the edge reader's open
        ``/proc`` files are closed (edges read later reopen what they need)."""
        if self.sampler is not None:
            sampler = self.sampler
            self._guard("stop", lambda: sampler.stop(timeout))
        if self.edges is not None:
            self._guard("close-edges", self.edges.close)

    def close(self) -> None:
        """Stop and release the GPU driver and the edge reader's open files."""
        if self.sampler is not None:
            self._guard("close", self.sampler.close)
        if self.edges is not None:
            self._guard("close-edges", self.edges.close)

    def sample_now(self) -> Snapshot | None:
        """One synchronous sample; ``None`` when inert or failed."""
        if self.sampler is None:
            return None
        return self.sampler.sample_now()

    def edge_sample(self) -> Snapshot | None:
        """The sample for a run's start or end: the latest one if younger than :data:`EDGE_REUSE_S`, else a new one.

        Reading the process tree costs ~0.3-0.7 ms; back-to-back short runs (a sweep, a run per request)
        would pay it twice each although the previous run's end sample is a millisecond old.
        """
        sampler = self.sampler
        if sampler is None:
            return None
        latest = sampler.latest
        if latest is not None and 0 <= time.monotonic() - latest.monotonic_s < EDGE_REUSE_S:
            return latest
        return sampler.sample_now()

    def measured_since(self, time_ns: int) -> bool:
        """Whether the latest sample was taken at or after ``time_ns`` (wall clock)."""
        latest = self.sampler.latest if self.sampler is not None else None
        return latest is not None and latest.time_ns >= time_ns

    def set_roots(self, pids: Sequence[int], include_self: bool = False) -> None:
        """Track other processes (e.g. the CLI's child), with or without this process."""
        if self.sampler is not None:
            sampler = self.sampler
            self._guard("set_roots", lambda: sampler.set_roots(pids, include_self))

    def child_started(self, pid: int) -> None:
        """This process started child ``pid``: block edges read it from now on (see ProcessTree.child_started)."""
        sampler = self.sampler
        if sampler is not None:
            self._guard("child_started", lambda: sampler.tree.child_started(pid))

    def edge(self, end: bool = False) -> Edge | None:
        """The cumulative counters now (a block's or run's edge; ~2 us, see runtel.sampling.edges); ``None`` when inert or failed."""
        reader = self.edges
        if reader is None:
            return None
        try:
            return reader.read(end)
        except Exception as exc:  # never into user code; logged once
            self._edge_failed(exc)
            return None

    def _edge_failed(self, exc: Exception) -> None:
        self._guard("edge", lambda: _reraise(exc))

    def _memory_detail_due(self, end: Edge) -> bool:
        """Whether a block edge should read USS/PSS: the high-water mark grew > 1 MiB / 1 % since the last read.

        A growing process raises its high-water mark by a few KiB at many blocks; reading ``smaps_rollup``
        (50-300 us) at each would cost more than the blocks.
        """
        if end.hwm_bytes <= self._detail_hwm + max(1 << 20, self._detail_hwm // 100):
            return False
        self._detail_hwm = end.hwm_bytes
        return True

    def includes_self(self) -> bool:
        """Whether the monitored tree counts this process (``runtel run``'s wrapper excludes itself)."""
        sampler = self.sampler
        if sampler is None:
            return True
        tree = sampler.tree
        pid = os.getpid()
        return tree.include_roots and pid in tree.root_pids and pid not in tree.exclude_pids

    def block_attributes(self, start: Edge, start_ns: int = 0) -> dict[str, AttributeValue]:
        """``runtel.usage.*`` of a block that started at ``start`` and ends now (edge counters + samples).

        Args:
            start: The block's start edge.
            start_ns: Where the block's sampled window starts (default: the start edge's clock).
        """
        reader = self.edges
        if reader is None:
            return {}
        try:
            end = reader.read(True)
        except Exception as exc:  # never into user code; logged once
            self._edge_failed(exc)
            return {}
        sampler = self.sampler
        latest = sampler.latest if sampler is not None else None
        start_ns = start_ns or start.time_ns
        unsampled = latest is None or latest.time_ns < start_ns
        if (unsampled and end.hwm_bytes <= start.hwm_bytes and end.children == start.children
                and end.thread_id == start.thread_id and not end.energy and end.tree is start.tree
                and start.tree is not TREE_UNREAD):
            # The common block (no sample inside, no GPU/RAPL, no new peak, no child reaped): its figures straight
            # from the integer clocks, in as few attributes as possible (each costs ~1-2 us set, scrubbed and
            # encoded): thread.cpu.time only when other threads ran meanwhile (see edge_attributes). The CPU
            # energy estimate is cpu.time x the run's factor, so it is not repeated here (see edge_attributes).
            cpu = end.cpu_ns - start.cpu_ns
            if end.own_cpu_ns != start.own_cpu_ns:  # runtel's sampling thread is not the block's work (edges.py)
                cpu = without_own(cpu, start, end)
            if cpu < 0:
                cpu = 0
            attrs: dict[str, AttributeValue] = {USAGE_CPU_TIME: cpu / 1e9}
            other = cpu - end.thread_cpu_ns + start.thread_cpu_ns  # CPU of other threads meanwhile
            limit = cpu // 100 if cpu > _THREAD_LIMIT_FROM_NS else THREAD_CPU_FLOOR_NS
            if other > limit or other < -limit:
                attrs[USAGE_THREAD_CPU_TIME] = max(0, cpu - other) / 1e9
            return attrs
        delta = edge_delta(start, end, memory_detail=end.hwm_bytes > start.hwm_bytes and self._memory_detail_due(end))
        if delta.memory is not None:
            self._note_peak(end.time_ns, delta)
        jps = reader.cpu_joules_per_s
        if unsampled:  # no sample in the window: counters only
            return edge_attributes(delta, jps)
        summary = self.usage(start_ns, end.time_ns)
        summary = with_edges(summary, delta, includes_self=True, cpu_joules_per_s=jps, block=True)
        return usage_attributes(summary)

    def _note_peak(self, time_ns: int, delta: EdgeDelta) -> None:
        memory = delta.memory
        if memory is not None:
            self._edge_peaks.append((time_ns, delta.peak_rss_bytes, memory.uss, memory.pss))

    def _with_edge_peaks(self, summary: UsageSummary, start_ns: int, end_ns: int) -> UsageSummary:
        """``summary`` with the main/combined peaks raised by the block-edge memory reads inside the window."""
        inside = [p for p in list(self._edge_peaks) if start_ns <= p[0] <= end_ns]
        if not inside or not self.includes_self():
            return summary
        fields: dict[str, dict[str, int]] = {}
        for index, name in ((1, "rss_max"), (2, "uss_max"), (3, "pss_max")):
            peak = max((p[index] or 0) for p in inside)
            values = dict(getattr(summary, name))
            for scope in (semconv.SCOPE_MAIN, semconv.SCOPE_COMBINED):
                if peak > values.get(scope, 0):
                    values[scope] = peak
            fields[name] = values
        return summary._replace(**fields)  # type: ignore[arg-type]

    def usage(self, start_ns: int, end_ns: int, *, edges: Sequence[Snapshot | None] = (),
              counters: tuple[Edge | None, Edge | None] | None = None, block: bool = False) -> UsageSummary:
        """Summary of ``[start_ns, end_ns]`` from the history plus explicit edge samples.

        With ``counters`` (the edge counters of the window), CPU time, energy and the peaks they know of
        are taken from them (:func:`~runtel.sampling.summary.with_edges`).
        """
        if self.sampler is None:
            return _empty_usage(start_ns, end_ns)
        sampler = self.sampler

        def compute() -> UsageSummary:
            summary = sampled()
            if counters is not None and counters[0] is not None and counters[1] is not None:
                reader = self.edges
                delta = edge_delta(counters[0], counters[1], exclude_own=block)
                self._note_peak(counters[1].time_ns, delta)
                if not block:
                    summary = self._with_edge_peaks(summary, start_ns, end_ns)
                summary = with_edges(summary, delta, includes_self=self.includes_self(),
                                     cpu_joules_per_s=None if reader is None else reader.cpu_joules_per_s,
                                     block=block)
            return summary

        def sampled() -> UsageSummary:
            return summarize(
                sampler.window(start_ns, end_ns),
                edges=edges,
                start_ns=start_ns,
                end_ns=end_ns,
                n_expected_cores=sampler.n_expected_cores,
                carbon_intensity=self.carbon_intensity,
                baseline=sampler.before(start_ns),
            )

        result = self._guard("usage", compute)
        return result if isinstance(result, UsageSummary) else _empty_usage(start_ns, end_ns)

    def gpu_devices(self) -> list[dict[str, object]]:
        """GPU inventory for run.json (empty without GPUs)."""
        if self.sampler is None:
            return []
        sampler = self.sampler
        result = self._guard("gpu_devices", lambda: [d.to_dict() for d in sampler.gpu.devices()])
        return result if isinstance(result, list) else []

    def register_instruments(self, meter: ObservableMeter, run_ids: Callable[[], Sequence[str]]) -> None:
        """Create the observable instruments (no-op when inert)."""
        if self.sampler is None:
            return

        sampler = self.sampler
        self._guard(
            "register_instruments",
            lambda: register_instruments(meter, sampler, run_ids, carbon_intensity=self.carbon_intensity),
        )
