"""Thermal design power (W per CPU package) by CPU model substring, for the utilisation-based energy estimate.

Values are the vendors' published TDP/default TDP of common server and workstation parts (Intel ARK, AMD
product pages). ``(R)``/``(TM)`` marks are dropped, then matching is case-insensitive on a substring of ``/proc/cpuinfo``'s ``model name``; the longest
matching key wins, so ``"EPYC 7763"`` beats a generic family entry. Unknown models use :data:`DEFAULT_TDP_W`
(85 W, the generic fallback codecarbon also uses). Override with the ``cpu_tdp`` setting (``RUNTEL_CPU_TDP``).
TDP is a thermal budget, not a measured draw: treat estimates as +-30%.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

__all__ = ("DEFAULT_TDP_W", "TDP_TABLE", "cpu_model_name", "lookup_tdp", "resolve_tdp")

DEFAULT_TDP_W: Final = 85.0

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


def lookup_tdp(model_name: str | None) -> float | None:
    """TDP of the longest table key contained in ``model_name``, or ``None``."""
    if not model_name:
        return None
    # "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz" -> "intel xeon gold 6248 cpu @ 2.50ghz"
    cleaned = re.sub(r"\((?:R|TM|tm|r)\)", "", model_name)
    lowered = " ".join(cleaned.lower().split())
    best: tuple[int, float] | None = None
    for key, watts in TDP_TABLE.items():
        if key.lower() in lowered and (best is None or len(key) > best[0]):
            best = (len(key), watts)
    return None if best is None else best[1]


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
