"""Reads whole-machine CPU utilisation and memory/swap (:class:`SystemStats`) without blocking.

CPU utilisation is the busy share of the difference of the machine's cumulative CPU times
(``psutil.cpu_times``) between two reads. A read too soon after the previous one (an edge sample next
to a tick: the counters move in 10 ms steps per CPU) keeps the last value instead of reporting 0; the
first read uses the average since boot until a window is long enough. On Linux memory
and swap come from one read of ``/proc/meminfo`` (``psutil.swap_memory`` also parses ``/proc/vmstat``, which we
do not need); elsewhere from psutil.
"""

from __future__ import annotations

import logging
import os
import sys

from runtel.sampling.samples import SystemStats

__all__ = ("SystemReader", "parse_meminfo")

_log = logging.getLogger("runtel.sampling")
_MIN_WINDOW_S = 0.05


def _cpu_times() -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of the machine since boot (guest time is already in user time)."""
    import psutil  # deferred: psutil (~14 ms)

    t = psutil.cpu_times()
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return total - idle, total


def parse_meminfo(text: str) -> SystemStats | None:
    """Memory and swap from the text of ``/proc/meminfo`` (kB values); ``None`` if a needed field is missing."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable", "MemFree", "SwapTotal", "SwapFree"):
            parts = rest.split()
            if parts:
                values[key] = int(parts[0]) * 1024
    if "MemTotal" not in values:
        return None
    total = values["MemTotal"]
    available = values.get("MemAvailable", values.get("MemFree", 0))
    swap_total = values.get("SwapTotal", 0)
    return SystemStats(
        cpu_utilization=0.0,
        memory_used_bytes=max(0, total - available),
        memory_available_bytes=available,
        memory_total_bytes=total,
        swap_used_bytes=max(0, swap_total - values.get("SwapFree", 0)),
        swap_total_bytes=swap_total,
    )


class SystemReader:
    """Stateful reader of :class:`SystemStats` (CPU utilisation needs the previous read)."""

    def __init__(self, meminfo_path: str = "/proc/meminfo") -> None:
        self._meminfo = meminfo_path if sys.platform.startswith("linux") else None
        busy, total = _cpu_times()
        self._base = (busy, total)
        self._util = busy / total if total > 0 else 0.0  # since boot, until a real window exists
        self._min_window = _MIN_WINDOW_S * (os.cpu_count() or 1)

    def cpu_utilization(self) -> float:
        """Busy fraction of all CPUs since the last window of at least 50 ms (the last value if shorter)."""
        busy, total = _cpu_times()
        base_busy, base_total = self._base
        if total - base_total >= self._min_window:
            self._util = min(1.0, max(0.0, (busy - base_busy) / (total - base_total)))
            self._base = (busy, total)
        return self._util

    def read(self) -> SystemStats:
        """CPU use since the previous read, and current memory/swap."""
        import psutil  # deferred: psutil (~14 ms)

        cpu = self.cpu_utilization()
        stats: SystemStats | None = None
        if self._meminfo is not None:
            try:
                with open(self._meminfo, encoding="utf-8", errors="replace") as fh:  # ASCII text; UTF-8 is loaded
                    stats = parse_meminfo(fh.read())
            except OSError:
                self._meminfo = None
        if stats is None:
            vm = psutil.virtual_memory()
            sw = psutil.swap_memory()
            return SystemStats(
                cpu_utilization=cpu,
                memory_used_bytes=int(vm.total - vm.available),
                memory_available_bytes=int(vm.available),
                memory_total_bytes=int(vm.total),
                swap_used_bytes=int(sw.used),
                swap_total_bytes=int(sw.total),
            )
        return SystemStats(
            cpu_utilization=cpu,
            memory_used_bytes=stats.memory_used_bytes,
            memory_available_bytes=stats.memory_available_bytes,
            memory_total_bytes=stats.memory_total_bytes,
            swap_used_bytes=stats.swap_used_bytes,
            swap_total_bytes=stats.swap_total_bytes,
        )
