"""Test kit shipped with runtel: an isolated runtime per test, run-folder readers, and hardware fakes.

``FakeNvml`` fakes the GPU at the NVML function boundary (the only part runtel's own tests fake);
``make_powercap_tree`` builds a RAPL sysfs tree in a temporary folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runtel import _sdk
from runtel._guard import reset_log_once
from runtel.config import Settings
from runtel.rundir.reader import SpanRecord, read_record, read_spans
from runtel.rundir.schema import RunRecord
from runtel.testing.nvml import FakeGpu, FakeNvml
from runtel.testing.powercap import make_powercap_tree

__all__ = ("FakeGpu", "FakeNvml", "isolated", "make_powercap_tree", "read_run", "span_names")


@contextmanager
def isolated(run_dir: str | Path, **settings: Any) -> Iterator[Settings]:
    """A fresh runtel runtime writing to ``run_dir`` (strict: internal errors raise), torn down after."""
    _sdk.reset()
    reset_log_once()
    settings.setdefault("strict", True)
    resolved = _sdk.configure(dir=run_dir, **settings)
    try:
        yield resolved
    finally:
        _sdk.reset()


def read_run(run_dir: str | Path) -> tuple[RunRecord, list[SpanRecord]]:
    """The record and spans of a run folder."""
    path = Path(run_dir)
    return read_record(path), read_spans(path)


def span_names(spans: list[SpanRecord]) -> list[str]:
    """Span names in start order."""
    return [s.name for s in spans]
