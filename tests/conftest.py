"""Shared fixtures: every test gets an isolated runtel runtime writing into its own tmp folder."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtel import _sdk
from runtel.config import Settings
from runtel.testing import isolated

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """Folder that receives run folders."""
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def rt(runs_dir: Path) -> Iterator[Settings]:
    """An isolated, strict runtime with sampling off (sampling tests turn it on themselves)."""
    with isolated(runs_dir, sampling=False) as settings:
        yield settings


@pytest.fixture
def rt_sampling(runs_dir: Path) -> Iterator[Settings]:
    """An isolated, strict runtime with a fast resource sampler."""
    with isolated(runs_dir, sampling=True, sample_interval=0.05, metric_interval=0.2, gpu_backend="none") as settings:
        yield settings


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The environment for child processes: runtel variables removed, sampling off unless a test turns it on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_", "TRACEPARENT", "TRACESTATE"))}
    env["RUNTEL_SAMPLING"] = "false"
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(autouse=True)
def _no_leaked_runtime() -> Iterator[None]:
    """No test leaves a runtime (or an open run) behind for the next one."""
    yield
    rt = _sdk.current_runtime()
    if rt is not None:
        leaked = list(rt.open_runs)
        _sdk.reset()
        assert not leaked, f"runs left open: {leaked}"


PYTHON = sys.executable
