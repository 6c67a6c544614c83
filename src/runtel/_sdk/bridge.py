"""runtel's instruments on real SDK ``MeterProvider``\\ s: the Prometheus endpoint's, and the application's own.

runtel records its own metrics without a ``MeterProvider`` (see ``metrics.py``). A provider that
*readers* collect — the private one behind the Prometheus endpoint, or an SDK ``MeterProvider`` the
application set as the global one (with its own ``PrometheusMetricReader``, OTLP reader,
``InMemoryMetricReader``...) — gets the same observable instruments, registered once per provider on a
``runtel`` meter: each collection of that reader observes the sampler's latest snapshot for every run
open in the process (``runtel.run.id`` on each point), and nothing once no run is open. ``run.log``
series are observable gauges too (``runtel.result.<name>``, the last value logged by each open run,
without ``runtel.step``: a label per step would make a new series every step).

The callbacks read whatever runtime is current (``_current``), so a provider attached once keeps
working across ``runtel.configure()``; a provider is never registered twice.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from runtel import semconv
from runtel._guard import guard
from runtel._version import __version__
from runtel.sampling.instruments import register_instruments

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation

    from runtel._sdk.runtime import Runtime
    from runtel.sampling.sampler import Sampler

__all__ = ("MeterBridge", "application_meter_provider")


def application_meter_provider(ours: Iterable[Any] = ()) -> Any | None:
    """The global ``MeterProvider`` if the application set an SDK one (and it is not runtel's), else None.

    Only an SDK provider has readers to feed; the metrics SDK is looked up in ``sys.modules``, so a
    process that never imported it pays nothing here.
    """
    sdk = sys.modules.get("opentelemetry.sdk.metrics")
    if sdk is None:
        return None
    from opentelemetry import metrics  # deferred: the OTel metrics API, loaded already with the SDK above (~0 ms)

    provider = metrics.get_meter_provider()
    if isinstance(provider, sdk.MeterProvider) and all(provider is not p for p in ours):
        return provider
    return None


class _LiveSampler:
    """What the instruments read (``latest``), taken from the current runtime's sampler at each collection."""

    def __init__(self, bridge: MeterBridge) -> None:
        self._bridge = bridge

    @property
    def latest(self) -> Any:
        runtime = self._bridge.runtime
        monitor = runtime.monitor if runtime is not None else None
        sampler = monitor.sampler if monitor is not None else None
        return sampler.latest if sampler is not None else None


class MeterBridge:
    """Registers runtel's instruments on SDK meter providers and holds the last ``run.log`` value per run and series."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self._lock = threading.Lock()
        #: provider -> names of the run.log series gauges created on it (a WeakKeyDictionary: a dropped provider goes)
        self._providers: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
        #: providers with the sampler's instruments registered already
        self._sampled: weakref.WeakSet[Any] = weakref.WeakSet()
        #: series name -> run id -> last value logged
        self._series: dict[str, dict[str, float]] = {}

    def run_ids(self) -> Sequence[str]:
        """The runs open in the current runtime (one observation per run)."""
        runtime = self.runtime
        return list(runtime.open_runs) if runtime is not None else []

    def attach(self, provider: Any, runtime: Runtime) -> None:
        """Register on ``provider`` (once; the sampler's instruments as soon as there is a sampler)."""
        self.runtime = runtime
        with self._lock:
            names = self._providers.get(provider)
            if names is None:
                names = self._providers[provider] = set()
            monitor = runtime.monitor
            if provider in self._sampled or monitor is None or monitor.sampler is None:
                new_series = [n for n in self._series if n not in names]
            else:
                self._sampled.add(provider)
                meter = provider.get_meter(semconv.INSTRUMENTATION_SCOPE, __version__, schema_url=semconv.SCHEMA_URL)
                sampler = monitor.sampler
                gpu_names = {d.uuid: (d.name, d.vendor) for d in sampler.gpu.devices()}
                register_instruments(meter, cast("Sampler", _LiveSampler(self)), self.run_ids,
                                     carbon_intensity=runtime.settings.carbon_intensity, gpu_names=gpu_names)
                new_series = [n for n in self._series if n not in names]
        for name in new_series:
            self._series_gauge(provider, name)

    def log(self, run_id: str, points: Iterable[tuple[str, float]]) -> None:
        """A run logged series values (``name`` with the ``runtel.result.`` prefix): the gauges report the last one."""
        created = []
        with self._lock:
            for name, value in points:
                runs = self._series.get(name)
                if runs is None:
                    runs = self._series[name] = {}
                    created.append(name)
                runs[run_id] = value
        for name in created:
            for provider in list(self._providers.keys()):
                self._series_gauge(provider, name)

    def run_closed(self, run_id: str) -> None:
        """Forget a closed run's series values (its series end on the providers)."""
        with self._lock:
            for runs in self._series.values():
                runs.pop(run_id, None)

    def _series_gauge(self, provider: Any, name: str) -> None:
        with self._lock:
            names = self._providers.get(provider)
            if names is None or name in names:
                return
            names.add(name)

        def observe(_: CallbackOptions, name: str = name) -> list[Observation]:
            from opentelemetry.metrics import Observation  # deferred: the OTel metrics API, loaded with the SDK (~0 ms)

            runs = self._series.get(name, {})
            return [Observation(value, {semconv.RUN_ID: run_id}) for run_id, value in list(runs.items())]

        with guard("series-gauge", "expose a run.log series to a MeterProvider"):
            meter = provider.get_meter(semconv.INSTRUMENTATION_SCOPE, __version__, schema_url=semconv.SCHEMA_URL)
            meter.create_observable_gauge(name, [observe], description="Last value run.log recorded (runtel.step "
                                          "is in the run folder).")


#: one per process: providers are attached once, whatever runtime is current
BRIDGE = MeterBridge()
