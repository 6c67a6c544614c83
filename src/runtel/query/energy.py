"""The estimated CPU energy of spans that record only their CPU time, for readers (show, compare, report).

Where no counter measures CPU energy (no RAPL), runtel estimates it as CPU seconds x a factor from the
CPU's TDP (``runtel.energy.tdp``). A block no sample fell into, in a process without energy counters,
therefore records only ``runtel.usage.cpu.time``: its energy would be that number times a constant, and
each attribute costs a block ~1-2 us to set, scrub and encode (``benchmarks/edge_bench.py``). The run
records the factor once (run.json ``energy_method.joules_per_cpu_second``, and the run span's
``runtel.energy.cpu.joules_per_cpu_second``), and readers apply it here, so every reader shows the
same figure the span would have carried, marked estimated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runtel import semconv
from runtel.errors import RunFolderError
from runtel.rundir.reader import read_record

__all__ = ("cpu_energy_factor", "estimated_joules", "with_estimated_energy")


def _positive(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def cpu_energy_factor(record: Mapping[str, Any]) -> float | None:
    """Joules per CPU-second of the run's CPU estimate, or None when its CPU energy is not estimated.

    From run.json's start section ``energy_method``; a record written before it existed has none, and its
    spans carry their estimate themselves. A summary record (the run index's, which lists child runs) has
    no ``energy_method`` either: then the run's own run.json, in its ``dir``, is read for it.
    """
    method = record.get("energy_method")
    if method is None and "schema" not in record and record.get("dir"):  # an index summary: no schema key
        try:
            method = read_record(Path(str(record["dir"]))).get("energy_method")
        except (RunFolderError, OSError):
            return None  # an unreadable child run: its blocks show their CPU time without joules
    if not isinstance(method, Mapping) or method.get("cpu") != "estimate":
        return None
    return _positive(method.get("joules_per_cpu_second"))


def with_estimated_energy(attributes: Mapping[str, Any], factor: float | None) -> Mapping[str, Any]:
    """``attributes`` with ``energy.total`` (estimated) from ``cpu.time`` when it has CPU time and no energy.

    Returned as is when there is nothing to add (no factor, no CPU time, or an energy figure already), else a
    new dict: the caller's mapping is never modified (a dict given is a dict returned).
    """
    if factor is None or semconv.USAGE_ENERGY_TOTAL in attributes:
        return attributes
    joules = estimated_joules(attributes.get(semconv.USAGE_CPU_TIME), factor)
    if joules is None:
        return attributes
    return {**attributes, semconv.USAGE_ENERGY_TOTAL: joules, semconv.USAGE_ENERGY_ESTIMATED: True}


def estimated_joules(cpu_s: object, factor: float) -> float | None:
    """The estimate for ``cpu_s`` CPU-seconds (whole nanojoules, as the span would have carried), or None
    when ``cpu_s`` is not a positive finite number."""
    cpu = _positive(cpu_s)
    return None if cpu is None else round(cpu * factor, 9)
