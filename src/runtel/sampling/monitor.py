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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runtel.energy.estimate import CpuEnergyEstimator
from runtel.energy.rapl import DEFAULT_POWERCAP, open_rapl
from runtel.energy.tdp import cpu_model_name, resolve_tdp
from runtel.errors import BackendUnavailable
from runtel.gpu import open_backend
from runtel.sampling.instruments import register_instruments
from runtel.sampling.proctree import ProcessTree
from runtel.sampling.sampler import Sampler
from runtel.sampling.samples import ProcessStats, Snapshot, SystemStats
from runtel.sampling.summary import UsageSummary, resource_usage_record, summarize, usage_attributes

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

    def __init__(self, sampler: Sampler | None, *, carbon_intensity: float = 475.0, reason: str = "") -> None:
        self.sampler = sampler
        self.carbon_intensity = carbon_intensity
        self.reason = reason
        self.energy_method: dict[str, object] = {}

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
            model = cpu_model_name()
            tdp, tdp_source = resolve_tdp(settings.cpu_tdp, model)
            estimate = CpuEnergyEstimator(tdp, logical, tdp_source=tdp_source)
            method = {"cpu": "estimate", "tdp_w": tdp, "tdp_source": tdp_source, "cpu_model": model}
            _log.info("CPU energy is estimated (TDP %.0f W from %s): %s", tdp, tdp_source, exc)
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
        monitor = cls(sampler, carbon_intensity=settings.carbon_intensity)
        monitor.energy_method = method
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
        """Stop background sampling promptly (history and ``latest`` stay readable)."""
        if self.sampler is not None:
            sampler = self.sampler
            self._guard("stop", lambda: sampler.stop(timeout))

    def close(self) -> None:
        """Stop and release the GPU driver."""
        if self.sampler is not None:
            self._guard("close", self.sampler.close)

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

    def usage(self, start_ns: int, end_ns: int, *, edges: Sequence[Snapshot | None] = ()) -> UsageSummary:
        """Summary of ``[start_ns, end_ns]`` from the history plus explicit edge samples."""
        if self.sampler is None:
            return _empty_usage(start_ns, end_ns)
        sampler = self.sampler

        def compute() -> UsageSummary:
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
