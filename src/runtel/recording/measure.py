"""``runtel.measure()``: a measurement window for code that is not a span (like Zeus's ``begin_window``).

The window reads the same edge counters a :func:`runtel.block` reads (runtel.sampling.edges) and is
summarised by the same code, so ``m.cpu_s`` / ``m.energy_j`` are the numbers a block around the same
code would carry. Windows may overlap and nest freely (each keeps its own start counters); they work
with or without an open run (without one, no sampler runs: CPU time, energy and the kernel's peak are
still exact, sampled figures stay empty), in threads and in ``async`` code. Like a block, a window
measures the **process**: other threads and tasks running meanwhile are in its ``cpu_s``; ``thread_cpu_s``
is the entering thread's own CPU time when the window also ended in that thread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from runtel import _sdk
from runtel._guard import guard
from runtel.sampling.edges import Edge, EdgeReader, edge_delta
from runtel.sampling.summary import AttributeValue, UsageSummary, summarize, usage_attributes, with_edges

__all__ = ("Measurement", "measure")

_BARE = EdgeReader()  # no energy sources: used when sampling is off or the SDK is disabled
_STATM = "/proc/self/statm"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_now() -> int | None:
    """This process's RSS from ``/proc/self/statm`` (Linux), a lower bound of a window's peak."""
    try:
        with open(_STATM, "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _monitor() -> Any:
    rt = _sdk.get_runtime()
    if rt is None:
        return None
    if rt.monitor is None:
        rt.prepare_monitor()  # builds the probes once (GPU backend, RAPL, estimate basis); no sampler thread
    return rt.monitor


class Measurement:
    """What one window measured; the fields are ``None`` until the window ends (or when not measured).

    Attributes:
        name: The window's name.
        wall_s: Wall-clock seconds.
        cpu_s: CPU seconds of this process (every thread) plus children reaped inside the window.
        thread_cpu_s: CPU seconds of the thread that entered the window (``None`` if it ended elsewhere).
        energy_j: Total joules (CPU + GPU) over the window; ``estimated`` says whether any part is modelled.
        cpu_energy_j / gpu_energy_j: The CPU and GPU parts (``None`` where there is no such source).
        peak_rss_bytes: Peak RSS of this process in the window; exact when ``peak_rss_exact`` (the kernel's
            high-water mark rose inside it), else the largest RSS seen at its edges and samples.
        uss_bytes / pss_bytes: Read at the end when the process grew inside the window.
        attributes: The ``runtel.usage.*`` attributes a block would carry.
    """

    __slots__ = ("_monitor", "_rss0", "_start", "_start_ns", "attributes", "cpu_energy_j", "cpu_s", "energy_j",
                 "estimated", "gpu_energy_j", "name", "peak_rss_bytes", "peak_rss_exact", "pss_bytes",
                 "thread_cpu_s", "uss_bytes", "wall_s")

    def __init__(self, name: str) -> None:
        self.name = name
        self._monitor: Any = None
        self._start: Edge | None = None
        self._start_ns = 0
        self._rss0: int | None = None
        self.wall_s: float | None = None
        self.cpu_s: float | None = None
        self.thread_cpu_s: float | None = None
        self.energy_j: float | None = None
        self.cpu_energy_j: float | None = None
        self.gpu_energy_j: float | None = None
        self.estimated = False
        self.peak_rss_bytes: int | None = None
        self.peak_rss_exact = False
        self.uss_bytes: int | None = None
        self.pss_bytes: int | None = None
        self.attributes: Mapping[str, AttributeValue] = {}

    def __repr__(self) -> str:
        return (f"Measurement({self.name!r}, wall_s={self.wall_s!r}, cpu_s={self.cpu_s!r}, "
                f"energy_j={self.energy_j!r}, peak_rss_bytes={self.peak_rss_bytes!r})")

    def __enter__(self) -> Measurement:
        with guard("measure-start", "start a measurement window"):
            monitor = _monitor()
            self._monitor = monitor
            self._rss0 = _rss_now()
            reader = monitor.edges if monitor is not None and monitor.edges is not None else _BARE
            self._start = reader.read()
            self._start_ns = self._start.time_ns
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        start = self._start
        if start is None:
            return
        with guard("measure-end", "end a measurement window"):
            monitor = self._monitor
            reader = monitor.edges if monitor is not None and monitor.edges is not None else _BARE
            end = reader.read(end=True)
            end_ns = end.time_ns
            if monitor is not None:
                summary: UsageSummary = monitor.usage(self._start_ns, end_ns, counters=(start, end), block=True)
            else:
                summary = with_edges(
                    summarize([], start_ns=self._start_ns, end_ns=end_ns, n_expected_cores=1, carbon_intensity=0.0),
                    edge_delta(start, end), includes_self=True, cpu_joules_per_s=None, block=True)
            self._fill(summary, end_ns)

    async def __aenter__(self) -> Measurement:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)

    def _fill(self, summary: UsageSummary, end_ns: int) -> None:
        self.wall_s = max(0, end_ns - self._start_ns) / 1e9
        self.cpu_s = summary.cpu_time_s
        self.thread_cpu_s = summary.thread_cpu_time_s
        energy = summary.energy
        cpu = [d.joules for k, d in energy.items() if not k.startswith("gpu:")]
        gpu = [d.joules for k, d in energy.items() if k.startswith("gpu:")]
        self.cpu_energy_j = sum(cpu) if cpu else None
        self.gpu_energy_j = sum(gpu) if gpu else None
        self.energy_j = summary.energy_total_j
        self.estimated = summary.energy_estimated
        self.peak_rss_exact = bool(summary.rss_peak_exact)
        seen = [v for v in (summary.rss_max.get("main"), self._rss0, None if self.peak_rss_exact else _rss_now())
                if v]
        self.peak_rss_bytes = max(seen) if seen else None
        self.uss_bytes = summary.uss_max.get("main")
        self.pss_bytes = summary.pss_max.get("main")
        self.attributes = usage_attributes(summary)


def measure(name: str = "measure") -> Measurement:
    """A measurement window: ``with runtel.measure("eval") as m: ...`` then ``m.energy_j``, ``m.cpu_s``.

    Example:
        >>> import runtel
        >>> with runtel.measure("eval") as m:
        ...     total = sum(range(100_000))
        >>> m.cpu_s is not None and m.wall_s is not None
        True

    Overlapping and nested windows are independent; ``async with`` works too. Never raises: a window
    that could not read its counters leaves its fields ``None``.
    """
    return Measurement(name if isinstance(name, str) else str(name))

