"""runtel: how a result was produced and what it cost — OpenTelemetry-native, offline first.

``import runtel`` is cheap and free of side effects: the public names are loaded on first use
(PEP 562), and nothing is configured, sampled, scanned or opened until the first run starts or
``configure()`` is called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runtel._version import __version__

if TYPE_CHECKING:
    from runtel.blocks import Block, block, trace
    from runtel.config import Settings
    from runtel.lineage import use_artifact
    from runtel.propagation import flush, init_worker, inject_env, worker_context
    from runtel.record import load
    from runtel.runs import Run, RunSpan, current_run, run_span
    from runtel.tracker import Tracker

__all__ = (
    "Block",
    "Run",
    "RunSpan",
    "Settings",
    "Tracker",
    "__version__",
    "block",
    "configure",
    "current_run",
    "flush",
    "init_worker",
    "inject_env",
    "load",
    "run_span",
    "seed_everything",
    "trace",
    "use_artifact",
    "worker_context",
)

# public name -> module that defines it
_LAZY = {
    "Block": "runtel.blocks",
    "block": "runtel.blocks",
    "trace": "runtel.blocks",
    "Settings": "runtel.config",
    "inject_env": "runtel.propagation",
    "Run": "runtel.runs",
    "RunSpan": "runtel.runs",
    "current_run": "runtel.runs",
    "run_span": "runtel.runs",
    "Tracker": "runtel.tracker",
    "use_artifact": "runtel.lineage",
    "load": "runtel.record",
    "flush": "runtel.propagation",
    "init_worker": "runtel.propagation",
    "worker_context": "runtel.propagation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runtel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    try:
        value.__module__ = "runtel"
    except (AttributeError, TypeError):
        pass
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def configure(**settings: Any) -> Settings:
    """Set process-wide settings; each resolves as argument > environment variable > default.

    Accepted names (see docs/configuration.md for every one, its variable and default): ``dir``,
    ``exporters``, ``service_name``, ``disabled``, ``telemetry``, ``attribute_max_length``,
    ``record_max_bytes``, ``sample_interval``, ``memory_detail_interval``, ``metric_interval``,
    ``sampling``, ``n_expected_cores``, ``gpu_backend``, ``gpu_uuids``, ``carbon_intensity``,
    ``cpu_tdp``, ``redact_patterns``, ``git_diff_max_bytes``, ``export_timeout``, ``strict``.

    Example:
        >>> import runtel
        >>> runtel.configure(dir="/tmp/runtel-doc-runs", sample_interval=0.5).sample_interval
        0.5

    Raises:
        runtel.errors.ConfigError: an unknown name or an unusable value.
        RuntimeError: a run is open (settings cannot change under it).
    """
    from runtel import _sdk

    return _sdk.configure(**settings)


def seed_everything(seed: int | None = None) -> int:
    """Seed ``random`` — and numpy, torch, TensorFlow if already imported — and return the seed.

    A seed is generated when none is given, and recorded on the current run.
    """
    from runtel import semconv
    from runtel.runs import current_run
    from runtel.seeding import seed_everything as _seed

    value = _seed(seed)
    run = current_run()
    if run is not None and run.enabled:
        run.seed = value
        run.record["seed"] = value
        run.span.set_attribute(semconv.SEED, value)
    return value
