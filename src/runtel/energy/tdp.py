"""Thermal design power (W per CPU package) by CPU model substring, for the utilisation-based energy estimate.

Values are the vendors' published TDP/default TDP of common server and workstation parts (Intel ARK, AMD
product pages). ``(R)``/``(TM)`` marks are dropped, then matching is case-insensitive on a substring of ``/proc/cpuinfo``'s ``model name``; the longest
matching key wins, so ``"EPYC 7763"`` beats a generic family entry. Unknown models use :data:`DEFAULT_TDP_W`
(85 W, the generic fallback codecarbon also uses). Override with the ``cpu_tdp`` setting (``RUNTEL_CPU_TDP``).
TDP is a thermal budget, not a measured draw: treat estimates as +-30%.

The estimate charges a busy hardware thread ``TDP / threads of the package`` (see runtel.energy.estimate), so
it needs the package's thread count too: :data:`THREADS_TABLE` (vendors' core x SMT counts) for known
models, else ``siblings`` of ``/proc/cpuinfo`` on bare metal; in a VM whose model is unknown the host
package is unknown and :data:`DEFAULT_PACKAGE_THREADS` is assumed (recorded with the estimate).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

__all__ = (
    "DEFAULT_PACKAGE_THREADS",
    "DEFAULT_TDP_W",
    "TDP_TABLE",
    "THREADS_TABLE",
    "cpu_model_name",
    "estimate_basis",
    "lookup_threads",
    "lookup_tdp",
    "resolve_tdp",
    "usable_cpus",
)

DEFAULT_TDP_W: Final = 85.0
#: threads assumed for an unknown host package seen from a VM (85 W / 16 = 5.3 W per busy vCPU)
DEFAULT_PACKAGE_THREADS: Final = 16

TDP_TABLE: Final[dict[str, float]] = {
    # AMD EPYC (per socket)
    "EPYC 7742": 225.0,
    "EPYC 7763": 280.0,
    "EPYC 7713": 225.0,
    "EPYC 7543": 225.0,
    "EPYC 7R13": 280.0,
    "EPYC 9654": 360.0,
    "EPYC 9554": 360.0,
    "EPYC 9R14": 400.0,
    "EPYC 7B12": 240.0,
    "EPYC 7B13": 240.0,
    # AMD desktop / workstation
    "Ryzen 9 7950X": 170.0,
    "Ryzen 9 5950X": 105.0,
    "Ryzen 7 5800X": 105.0,
    "Threadripper PRO 5995WX": 280.0,
    # Intel Xeon
    "Xeon Platinum 8480": 350.0,
    "Xeon Platinum 8380": 270.0,
    "Xeon Platinum 8375C": 300.0,
    "Xeon Platinum 8358": 250.0,
    "Xeon Platinum 8259CL": 210.0,
    "Xeon Platinum 8175M": 240.0,
    "Xeon Gold 6248": 150.0,
    "Xeon Gold 6230": 125.0,
    "Xeon Gold 6148": 150.0,
    "Xeon Silver 4214": 85.0,
    "Xeon E5-2686 v4": 145.0,
    "Xeon E5-2690 v4": 135.0,
    # Intel desktop
    "i9-13900K": 125.0,
    "i9-12900K": 125.0,
    "i7-12700K": 125.0,
    "i7-8700": 65.0,
    "i5-10400": 65.0,
    # Arm servers
    "Neoverse-N1": 80.0,
}


#: hardware threads per package (cores x SMT) of the models above, from the same vendor pages
THREADS_TABLE: Final[dict[str, int]] = {
    "EPYC 7742": 128, "EPYC 7763": 128, "EPYC 7713": 128, "EPYC 7543": 64, "EPYC 9654": 192, "EPYC 9554": 128,
    "EPYC 7B12": 128, "EPYC 7B13": 128,
    "Ryzen 9 7950X": 32, "Ryzen 9 5950X": 32, "Ryzen 7 5800X": 16, "Threadripper PRO 5995WX": 128,
    "Xeon Platinum 8480": 112, "Xeon Platinum 8380": 80, "Xeon Platinum 8375C": 64, "Xeon Platinum 8358": 64,
    "Xeon Platinum 8259CL": 48, "Xeon Platinum 8175M": 48, "Xeon Gold 6248": 40, "Xeon Gold 6230": 40,
    "Xeon Gold 6148": 40, "Xeon Silver 4214": 24, "Xeon E5-2686 v4": 36, "Xeon E5-2690 v4": 28,
    "i9-13900K": 32, "i9-12900K": 24, "i7-12700K": 20, "i7-8700": 12, "i5-10400": 12,
}


def _lookup(table: dict[str, float] | dict[str, int], model_name: str | None) -> float | None:
    if not model_name:
        return None
    # "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz" -> "intel xeon gold 6248 cpu @ 2.50ghz"
    cleaned = re.sub(r"\((?:R|TM|tm|r)\)", "", model_name)
    lowered = " ".join(cleaned.lower().split())
    best: tuple[int, float] | None = None
    for key, value in table.items():
        if key.lower() in lowered and (best is None or len(key) > best[0]):
            best = (len(key), float(value))
    return None if best is None else best[1]


def lookup_threads(model_name: str | None) -> int | None:
    """Hardware threads per package of the longest :data:`THREADS_TABLE` key in ``model_name``, or ``None``."""
    found = _lookup(THREADS_TABLE, model_name)
    return None if found is None else int(found)


def lookup_tdp(model_name: str | None) -> float | None:
    """TDP of the longest table key contained in ``model_name``, or ``None``."""
    return _lookup(TDP_TABLE, model_name)


def resolve_tdp(cpu_tdp: float | None, model_name: str | None) -> tuple[float, str]:
    """The TDP to use and where it came from: ``"setting"``, ``"table"`` or ``"default"``."""
    if cpu_tdp is not None and cpu_tdp > 0:
        return float(cpu_tdp), "setting"
    found = lookup_tdp(model_name)
    if found is not None:
        return found, "table"
    return DEFAULT_TDP_W, "default"


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The first ``model name`` line of ``/proc/cpuinfo`` (``None`` elsewhere or when unreadable)."""
    try:
        with cpuinfo.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip() or None
    except OSError:
        return None
    return None


def _cpuinfo_topology(cpuinfo: Path) -> tuple[int | None, int, bool]:
    """``(siblings per package, packages, hypervisor flag)`` from ``/proc/cpuinfo``."""
    siblings: int | None = None
    packages: set[str] = set()
    hypervisor = False
    try:
        with cpuinfo.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "siblings" and siblings is None and value.strip().isdigit():
                    siblings = int(value)
                elif key == "physical id":
                    packages.add(value.strip())
                elif key == "flags" and not hypervisor:
                    hypervisor = "hypervisor" in value.split()
    except OSError:
        pass
    return siblings, max(1, len(packages)), hypervisor


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> tuple[float, str]:
    """CPUs this process may use and why: the affinity mask, lowered by a cgroup v2 ``cpu.max`` quota.

    Returns ``(cpus, source)``; ``source`` is ``"affinity"``, ``"cgroup cpu.max"`` or ``"cpu_count"``.
    """
    try:
        cpus: float = float(len(os.sched_getaffinity(0)))
        source = "affinity"
    except (AttributeError, OSError):
        cpus, source = float(os.cpu_count() or 1), "cpu_count"
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota != "max" and float(period) > 0 and float(quota) / float(period) < cpus:
            cpus, source = float(quota) / float(period), "cgroup cpu.max"
    except (OSError, ValueError):
        pass
    return max(cpus, 0.01), source


def estimate_basis(cpu_tdp: float | None, *, cpuinfo: Path = Path("/proc/cpuinfo"),
                   cgroup_root: Path = Path("/sys/fs/cgroup")) -> dict[str, object]:
    """What the CPU energy estimate assumes, for the run record and the estimator.

    Keys: ``tdp_w`` and ``tdp_source`` (per package), ``cpu_model``, ``package_threads`` and its
    ``package_threads_source`` (``"table"``, ``"cpuinfo"``, ``"assumed"``), ``usable_cpus`` and its source,
    ``watts_per_busy_cpu`` (the estimate's joules per CPU-second), ``max_power_w`` (all usable CPUs busy)
    and ``assumption`` (one sentence).
    """
    model = cpu_model_name(cpuinfo)
    tdp, tdp_source = resolve_tdp(cpu_tdp, model)
    siblings, packages, hypervisor = _cpuinfo_topology(cpuinfo)
    known = lookup_threads(model)
    threads: float
    if known is not None:
        threads, threads_source = float(known), "table"
    elif hypervisor:
        threads, threads_source = float(DEFAULT_PACKAGE_THREADS), "assumed"
    else:
        threads = float(siblings or max(1, (os.cpu_count() or 1) // packages))
        threads_source = "cpuinfo"
    cpus, cpus_source = usable_cpus(cgroup_root)
    per_cpu = tdp / threads
    capped = min(cpus, threads * packages)
    assumption = (f"a busy hardware thread draws TDP/threads = {tdp:.0f} W / {threads:.0f} = {per_cpu:.2f} W; "
                  f"idle threads are not charged; at most {capped:g} usable CPUs ({cpus_source})")
    if threads_source == "assumed":
        assumption += (f"; in a VM with a CPU model not in the table the host package is unknown: "
                       f"{DEFAULT_PACKAGE_THREADS} threads assumed (RUNTEL_CPU_TDP sets the TDP of such a package)")
    return {
        "tdp_w": tdp,
        "tdp_source": tdp_source,
        "cpu_model": model,
        "package_threads": threads,
        "package_threads_source": threads_source,
        "usable_cpus": round(cpus, 3),
        "usable_cpus_source": cpus_source,
        "watts_per_busy_cpu": round(per_cpu, 6),
        "max_power_w": round(per_cpu * capped, 6),
        "assumption": assumption,
    }
