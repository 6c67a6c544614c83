"""Hitting a limit prints one stderr line per kind of limit, however often it is hit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CODE = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
trace.set_tracer_provider(TracerProvider())  # the application's own provider: 128 attributes per span
import runtel
big = "x" * 100_000
for i in range(3):
    with runtel.run_span("r" * 5000, config={f"k{j}": j for j in range(3000)}, tags={"t": big}) as run:
        run.set_attributes(**{f"a{j}": big for j in range(300)})
        for _ in range(5):
            with runtel.block("b" * 5000, note=big):
                pass
"""


def test_one_line_per_kind_of_limit(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """The SDK's attribute-count warning and runtel's cuts (attribute, span name) appear once each."""
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    proc = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert sum("Attributes dict is full" in line for line in lines) == 1, proc.stderr[-2000:]
    assert sum("runtel cut attribute" in line for line in lines) == 1, proc.stderr[-2000:]
    assert sum("runtel cut span name" in line for line in lines) == 1, proc.stderr[-2000:]
    assert len(lines) <= 6, proc.stderr[-2000:]
