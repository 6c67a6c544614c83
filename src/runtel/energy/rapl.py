"""CPU package (and DRAM) energy from Linux powercap RAPL counters under ``/sys/class/powercap``.

Layout read: ``intel-rapl:N/{name,energy_uj,max_energy_range_uj}`` for packages (``name`` = ``package-N``) and
``intel-rapl:N:M`` sub-zones, of which only ``dram`` is used (``core``/``uncore`` are parts of the package and
``psys`` contains it, so summing them would double count). ``intel-rapl-mmio:*`` zones mirror the MSR ones and
are skipped. AMD's ``amd_energy``/RAPL drivers can expose the same package counter under several zones with
the same name; zones are de-duplicated by name.

``energy_uj`` is a microjoule counter that wraps at ``max_energy_range_uj``: a smaller reading than the
previous one means the counter wrapped, and the delta is ``max_range - old + new``. Since Linux 5.10
(CVE-2020-8694, "Platypus") ``energy_uj`` is readable only by root on most distributions; :func:`open_rapl`
then raises :class:`~runtel.errors.BackendUnavailable` and runtel falls back to the estimate.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from runtel.energy.base import EnergyReading
from runtel.errors import BackendUnavailable

__all__ = ("RaplSource", "open_rapl")

_log = logging.getLogger("runtel.energy")
DEFAULT_POWERCAP = Path("/sys/class/powercap")


class RaplSource:
    """One RAPL zone as a cumulative joule counter since the source was opened.

    Args:
        path: The zone folder (``.../intel-rapl:0``).
        domain: runtel's domain name (``"cpu:package-0"``, ``"cpu:package-0:dram"``).
        clock: Monotonic seconds, for the mean power between reads.

    Raises:
        BackendUnavailable: The counter is unreadable (permission) or malformed.
    """

    estimated = False

    def __init__(self, path: Path, domain: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self.domain = domain
        self._file = path / "energy_uj"
        try:
            self.max_range_uj = int((path / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            self.max_range_uj = 0  # unknown range: a decrease is then treated as a reset
        self._lock = threading.Lock()  # the sampler and block edges read the same counter
        self._fd: int | None = None
        self._last = self._read_raw()
        self._last_t = clock()
        self._total_uj = 0

    def _read_raw(self) -> int:
        # One pread on a descriptor kept open: ~2 us, against ~30 us for open + read + close (Path.read_text),
        # which matters because block edges read the counter too. sysfs regenerates the value on each read.
        try:
            fd = self._fd
            if fd is None:
                fd = self._fd = os.open(self._file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            return int(os.pread(fd, 32, 0).strip())
        except PermissionError as exc:
            raise BackendUnavailable(
                f"{self._file} is not readable ({exc.strerror}); since Linux 5.10 (CVE-2020-8694) RAPL energy "
                "counters are root-only. Grant read access (e.g. a udev rule or `chmod o+r`) to measure CPU "
                "energy; runtel estimates it from CPU utilisation meanwhile"
            ) from exc
        except (OSError, ValueError) as exc:
            self._close()
            raise BackendUnavailable(f"cannot read {self._file}: {exc}") from exc

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self) -> None:
        self._close()

    def read(self) -> EnergyReading:
        """Joules since opening; handles one wrap-around per read (the counter wraps after minutes, not ms)."""
        with self._lock:
            return self._read_locked()

    def _read_locked(self) -> EnergyReading:
        new = self._read_raw()
        old = self._last
        if new >= old:
            delta = new - old
        elif self.max_range_uj > old:
            delta = self.max_range_uj - old + new
        else:
            delta = new
        now = self._clock()
        dt = now - self._last_t
        self._last, self._last_t = new, now
        self._total_uj += delta
        power = delta / 1e6 / dt if dt > 0 else None
        return EnergyReading(
            domain=self.domain, joules=self._total_uj / 1e6, estimated=False, source="rapl", power_w=power
        )


def _zone_name(path: Path) -> str | None:
    try:
        return (path / "name").read_text().strip()
    except OSError:
        return None


def open_rapl(
    root: Path = DEFAULT_POWERCAP, *, include_dram: bool = True, clock: Callable[[], float] = time.monotonic
) -> list[RaplSource]:
    """Open every CPU package (and DRAM) RAPL zone under ``root``.

    Args:
        root: The powercap class folder; tests pass a tree made by ``runtel.testing.make_powercap_tree``.
        include_dram: Also open ``dram`` sub-zones (domain ``cpu:package-N:dram``).

    Returns:
        One source per zone, packages first; never empty.

    Raises:
        BackendUnavailable: No powercap folder, no package zone, or a counter is unreadable.

    Example:
        >>> open_rapl(Path("/nonexistent"))
        Traceback (most recent call last):
        runtel.errors.BackendUnavailable: no powercap RAPL zones under /nonexistent
    """
    try:
        zones = sorted(p for p in root.iterdir() if p.name.startswith("intel-rapl:"))
    except OSError:
        zones = []
    sources: list[RaplSource] = []
    seen: set[str] = set()
    for zone in zones:
        parts = zone.name.split(":")
        name = _zone_name(zone)
        if name is None:
            continue
        if len(parts) == 2 and name.startswith("package"):
            domain = f"cpu:{name}"
            children = sorted(zone.glob(f"{zone.name}:*")) or sorted(root.glob(f"{zone.name}:*"))
            dram = [c for c in children if _zone_name(c) == "dram"] if include_dram else []
            if domain in seen:  # mirrored counter (AMD): same package twice
                _log.debug("skipping mirrored RAPL zone %s (%s)", zone, name)
                continue
            seen.add(domain)
            sources.append(RaplSource(zone, domain, clock))
            for sub in dram[:1]:
                sub_domain = f"{domain}:dram"
                if sub_domain not in seen:
                    seen.add(sub_domain)
                    sources.append(RaplSource(sub, sub_domain, clock))
    if not sources:
        raise BackendUnavailable(f"no powercap RAPL zones under {root}")
    return sources
