"""Composition root: the only package that builds OpenTelemetry SDK providers, processors and readers.

``process`` holds the process's settings and its one :class:`~runtel._sdk.runtime.Runtime`;
``runtime`` builds tracing (``tracing``), per-run metric collection (``metrics``) and the sampler;
``ids`` makes span ids that seeding ``random`` cannot repeat. The recording side reaches all of it
through the functions re-exported here.
"""

from __future__ import annotations

from runtel._sdk.process import (
    before_configure,
    configure,
    current_runtime,
    finish_runs_on_sigterm,
    flush,
    get_runtime,
    reset,
    settings,
)
from runtel._sdk.runtime import Runtime

__all__ = ("Runtime", "before_configure", "configure", "current_runtime", "finish_runs_on_sigterm", "flush",
           "get_runtime", "reset", "settings")
