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
    from runtel._sdk.process import configure, flush
    from runtel.config import Settings
    from runtel.query.compare import compare
    from runtel.query.notebook import load
    from runtel.query.tracker import Tracker
    from runtel.recording.blocks import Block, block, trace
    from runtel.recording.carrier import inject_env
    from runtel.recording.lifecycle import RunSpan, run_span
    from runtel.recording.lineage import use_artifact
    from runtel.recording.measure import Measurement, measure
    from runtel.recording.run import Run, current_run
    from runtel.recording.seeding import seed_everything
    from runtel.recording.workers import init_worker, worker_context

# public name -> the module that defines it and lists it in its own __all__ (tests/architecture checks that)
_LAZY = {
    "configure": "runtel._sdk.process",
    "flush": "runtel._sdk.process",
    "Settings": "runtel.config",
    "load": "runtel.query.notebook",
    "compare": "runtel.query.compare",
    "Tracker": "runtel.query.tracker",
    "Block": "runtel.recording.blocks",
    "block": "runtel.recording.blocks",
    "trace": "runtel.recording.blocks",
    "inject_env": "runtel.recording.carrier",
    "RunSpan": "runtel.recording.lifecycle",
    "run_span": "runtel.recording.lifecycle",
    "use_artifact": "runtel.recording.lineage",
    "Measurement": "runtel.recording.measure",
    "measure": "runtel.recording.measure",
    "Run": "runtel.recording.run",
    "current_run": "runtel.recording.run",
    "seed_everything": "runtel.recording.seeding",
    "init_worker": "runtel.recording.workers",
    "worker_context": "runtel.recording.workers",
}


__all__ = (
    "Block",
    "Measurement",
    "Run",
    "RunSpan",
    "Settings",
    "Tracker",
    "__version__",
    "block",
    "compare",
    "configure",
    "current_run",
    "flush",
    "init_worker",
    "inject_env",
    "load",
    "measure",
    "run_span",
    "seed_everything",
    "trace",
    "use_artifact",
    "worker_context",
)


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
