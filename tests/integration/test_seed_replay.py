"""Recorded seeds replay: reproduce.sh pins them through RUNTEL_SEED, whatever the working directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PY = sys.executable


def _only_run(runs: Path) -> Path:
    (folder,) = [p for p in runs.iterdir() if p.is_dir()]
    return folder


def test_seed_true_job_replays_byte_identical_from_root(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A ``seed=True`` job drawing random.random() re-run by reproduce.sh with bash from / prints the same."""
    job = tmp_path / "job.py"
    job.write_text(
        "import random, runtel\n"
        "with runtel.run_span('job', seed=True):\n"
        "    print(repr([random.random() for _ in range(3)]))\n"
    )
    runs = tmp_path / "runs"
    env = {**clean_env, "RUNTEL_DIR": str(runs)}
    first = subprocess.run([PY, str(job)], env=env, cwd=tmp_path, capture_output=True, timeout=60, check=True)
    folder = _only_run(runs)
    record = json.loads((folder / "run.json").read_text())
    assert record["seed_libraries"] == ["random"]
    script = (folder / "reproduce.sh").read_text()
    assert f"export RUNTEL_SEED={record['seed']}\n" in script
    again = subprocess.run(["bash", str(folder / "reproduce.sh")], env=env, cwd="/", capture_output=True,
                           timeout=60, check=True)
    assert again.stdout == first.stdout


def test_late_seed_everything_is_pinned_in_reproduce_sh(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """seed_everything() after the run started rewrites reproduce.sh's seed line; numpy is named as seeded."""
    job = tmp_path / "job.py"
    job.write_text(
        "import random, numpy, runtel\n"
        "with runtel.run_span('job'):\n"
        "    runtel.seed_everything()\n"
        "    print(random.random(), numpy.random.rand())\n"
    )
    runs = tmp_path / "runs"
    env = {**clean_env, "RUNTEL_DIR": str(runs)}
    first = subprocess.run([PY, str(job)], env=env, cwd=tmp_path, capture_output=True, timeout=60, check=True)
    folder = _only_run(runs)
    record = json.loads((folder / "run.json").read_text())
    assert record["seed_libraries"] == ["random", "numpy"]
    assert f"export RUNTEL_SEED={record['seed']}\n" in (folder / "reproduce.sh").read_text()
    again = subprocess.run(["bash", str(folder / "reproduce.sh")], env=env, cwd="/", capture_output=True,
                           timeout=60, check=True)
    assert again.stdout == first.stdout


def test_pinned_seed_is_honoured_everywhere(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """RUNTEL_SEED pins run_span(seed=True), seed_everything() and seed_parameter; explicit seeds win."""
    code = (
        "import runtel\n"
        "@runtel.trace(seed_parameter='seed')\n"
        "def f(seed=None):\n"
        "    return seed\n"
        "print(f(), runtel.seed_everything(), runtel.seed_everything(5), f(seed=9))\n"
        "with runtel.run_span('r', seed=True) as run:\n"
        "    print(run.seed)\n"
    )
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs"), "RUNTEL_SEED": "77"}
    out = subprocess.run([PY, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert out.split() == ["77", "77", "5", "9", "77"]


def test_seed_parameter_outside_a_run_is_recorded_on_its_span(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A traced call with a generated seed and no run still records the seed (its own span's runtel.seed)."""
    code = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "memory = InMemorySpanExporter(); provider = TracerProvider()\n"
        "provider.add_span_processor(SimpleSpanProcessor(memory)); trace.set_tracer_provider(provider)\n"
        "import runtel\n"
        "@runtel.trace(seed_parameter='seed')\n"
        "def f(seed=None):\n"
        "    return seed\n"
        "seed = f()\n"
        "(span,) = [s for s in memory.get_finished_spans() if s.name.endswith('f')]\n"
        "print(seed == span.attributes['runtel.seed'])\n"
    )
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    out = subprocess.run([PY, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
