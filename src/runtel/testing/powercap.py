"""``make_powercap_tree``: a fake ``/sys/class/powercap`` folder with RAPL zones whose counters tests advance.

The files have the kernel's names and formats (decimal microjoules and a trailing newline), so
:func:`runtel.energy.rapl.open_rapl` reads them exactly like the real sysfs tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ("PowercapTree", "make_powercap_tree")


class PowercapTree:
    """Handle on a fake powercap folder: set, advance (with wrap-around) and lock RAPL counters."""

    def __init__(self, root: Path, zones: dict[str, Path], ranges: dict[str, int]) -> None:
        self.root = root
        self.zones = zones
        self.ranges = ranges

    def energy_file(self, domain: str) -> Path:
        """``energy_uj`` of ``domain`` (e.g. ``"package-0"`` or ``"package-0:dram"``)."""
        return self.zones[domain] / "energy_uj"

    def read(self, domain: str) -> int:
        """Current raw counter (microjoules)."""
        return int(self.energy_file(domain).read_text())

    def set(self, domain: str, energy_uj: int) -> None:
        """Write the raw counter."""
        self.energy_file(domain).write_text(f"{int(energy_uj)}\n")

    def advance(self, domain: str, delta_uj: int) -> None:
        """Add ``delta_uj``, wrapping at ``max_energy_range_uj`` like the hardware counter."""
        self.set(domain, (self.read(domain) + int(delta_uj)) % (self.ranges[domain] + 1))

    def make_unreadable(self, domain: str) -> None:
        """``chmod 000`` the counter (as on kernels >= 5.10 for non-root; root still reads it)."""
        os.chmod(self.energy_file(domain), 0)


def make_powercap_tree(
    root: Path,
    domains: Mapping[str, tuple[int, int]],
    *,
    dram: Mapping[str, tuple[int, int]] | None = None,
    mirrors: Iterable[str] = (),
) -> PowercapTree:
    """Create RAPL zones under ``root`` (``root`` plays ``/sys/class/powercap``).

    Args:
        root: Folder to populate (created if needed).
        domains: Package zone name -> ``(energy_uj, max_energy_range_uj)``, e.g. ``{"package-0": (0, 2**32)}``.
        dram: Package name -> DRAM sub-zone counter, e.g. ``{"package-0": (5, 2**32)}``.
        mirrors: Package names to expose a second time under another zone number (AMD's mirrored counters).

    Example:
        >>> import tempfile
        >>> tree = make_powercap_tree(Path(tempfile.mkdtemp()), {"package-0": (0, 1000)})
        >>> tree.advance("package-0", 1500); tree.read("package-0")
        499
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "intel-rapl").mkdir(exist_ok=True)  # the control-type folder the kernel also creates
    zones: dict[str, Path] = {}
    ranges: dict[str, int] = {}

    def zone(path: Path, name: str, energy: int, max_range: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "name").write_text(f"{name}\n")
        (path / "energy_uj").write_text(f"{energy}\n")
        (path / "max_energy_range_uj").write_text(f"{max_range}\n")
        (path / "enabled").write_text("1\n")

    index = 0
    for name, (energy, max_range) in domains.items():
        path = root / f"intel-rapl:{index}"
        zone(path, name, energy, max_range)
        zones[name] = path
        ranges[name] = max_range
        zone(path / f"intel-rapl:{index}:0", "core", 0, max_range)
        if dram and name in dram:
            sub = path / f"intel-rapl:{index}:1"
            zone(sub, "dram", dram[name][0], dram[name][1])
            zones[f"{name}:dram"] = sub
            ranges[f"{name}:dram"] = dram[name][1]
        index += 1
    for name in mirrors:
        energy, max_range = domains[name]
        zone(root / f"intel-rapl:{index}", name, energy, max_range)
        index += 1
    return PowercapTree(root, zones, ranges)
