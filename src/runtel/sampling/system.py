"""Reads whole-machine CPU utilisation and memory/swap (:class:`SystemStats`) without blocking.

``psutil.cpu_percent(None)`` compares with its previous call, so :class:`SystemReader` primes it at
construction (the first real read then covers the time since construction, not since boot). On Linux memory
and swap come from one read of ``/proc/meminfo`` (``psutil.swap_memory`` also parses ``/proc/vmstat``, which we
do not need); elsewhere from psutil.
"""

from __future__ import annotations

import logging
import sys

from runtel.sampling.samples import SystemStats

__all__ = ("SystemReader", "parse_meminfo")

_log = logging.getLogger("runtel.sampling")


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
        import psutil  # deferred: psutil (~14 ms)

        self._meminfo = meminfo_path if sys.platform.startswith("linux") else None
        psutil.cpu_percent(None)  # prime: the next call reports use since now

    def read(self) -> SystemStats:
        """CPU use since the previous read, and current memory/swap."""
        import psutil  # deferred: psutil (~14 ms)

        cpu = psutil.cpu_percent(None) / 100.0
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
