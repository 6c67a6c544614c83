"""@trace(seed_parameter=...) and @trace(record_dir_parameter=...), pycrumbs-style."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import runtel
from runtel import semconv
from runtel.config import Settings
from runtel.testing import read_run


@runtel.trace(seed_parameter="seed")
def sample(n: int, seed: int | None = None) -> tuple[int | None, float]:
    return seed, random.random()


def test_seed_parameter_injects_records_and_reproduces(rt: Settings) -> None:
    """A seed left None is generated, injected, recorded on span and run, and re-running with it reproduces."""
    with runtel.run_span("seeded") as run:
        seed, first = sample(3)
        again_seed, again = sample(3, seed=seed)
    assert isinstance(seed, int)
    assert again_seed == seed and again == first
    record, spans = read_run(run.dir)  # type: ignore[arg-type]
    calls = [s for s in spans if s.name == "sample"]
    assert [s.attributes[semconv.SEED] for s in calls] == [seed, seed]
    assert record["seed"] == seed


def test_seed_parameter_must_exist() -> None:
    """Naming a parameter the function does not have fails at decoration time."""
    with pytest.raises(ValueError):

        @runtel.trace(seed_parameter="rng_seed")
        def f(x: int) -> int:
            return x


@runtel.trace(record_dir_parameter="out")
def export_model(out: Path, epochs: int = 2) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.txt").write_text("weights")
    return out


def test_record_dir_parameter_without_a_run_records_one(rt: Settings, tmp_path: Path, runs_dir: Path) -> None:
    """Called outside a run, the decorated entry point records a run and writes its record next to its outputs."""
    out = export_model(tmp_path / "outputs", epochs=3)
    (copy,) = out.glob("runtel-*.json")
    record = json.loads(copy.read_text())
    assert record["name"] == "export_model" and record["status"] == "ok"
    assert record["config"]["epochs"] == 3 and record["config"]["out"] == str(tmp_path / "outputs")
    assert (runs_dir / record["id"] / "run.json").exists()


def test_record_dir_parameter_inside_a_run_copies_that_run(rt: Settings, tmp_path: Path) -> None:
    """Inside a run, the run's own record is also written into the function's output folder."""
    with runtel.run_span("outer") as run:
        export_model(tmp_path / "outputs")
    copy = json.loads((tmp_path / "outputs" / f"runtel-{run.id}.json").read_text())
    assert copy["id"] == run.id and copy["status"] == "ok"
