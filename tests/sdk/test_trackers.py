"""RUNTEL_TRACKER as a comma list: every write of a run fans out to each backend; a failing one is contained."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import runtel
from runtel.backends import base
from runtel.backends.base import TrackerWriter, parse_names
from runtel.errors import ConfigError
from runtel.query.tracker import FolderTracker
from runtel.testing import isolated

CALLS: list[tuple[str, Any]] = []


class Recorder(TrackerWriter):
    """A backend that keeps every call (what a database tracker would store)."""

    def __init__(self, root: Path, config: str | None) -> None:
        self.config = config

    def start_run(self, run_id: str, record: Mapping[str, Any]) -> Mapping[str, Any]:
        CALLS.append(("start", (record["name"], record.get("config"), record.get("tags"), self.config)))
        return {"run_id": "rec-" + run_id}

    def add_metadata(self, run_id: str, **metadata: Any) -> None:
        CALLS.append(("metadata", metadata))

    def add_artifact(self, run_id: str, name: str, path: str, metadata: Mapping[str, Any] | None = None,
                     *, entry: Mapping[str, Any] | None = None) -> None:
        CALLS.append(("artifact", (name, Path(path).name, metadata, (entry or {}).get("hash"))))

    def add_source(self, run_id: str, source_id: str, artifact_name: str | None = None,
                   *, entry: Mapping[str, Any] | None = None) -> None:
        CALLS.append(("source", (source_id, artifact_name)))

    def set_result(self, run_id: str, **values: Any) -> None:
        CALLS.append(("result", values))

    def log(self, run_id: str, step: int, values: Mapping[str, float], time_ns: int) -> None:
        CALLS.append(("log", (step, dict(values))))

    def end_run(self, run_id: str, record: Mapping[str, Any], run_dir: Path | None) -> Mapping[str, Any]:
        spans = (run_dir / "spans.jsonl").read_text() if run_dir else ""
        CALLS.append(("end", (record["status"], record["results"]["final"], "train" in spans)))
        return {"sent": True}


class Broken(TrackerWriter):
    """A backend whose server answers errors to everything but the start."""

    def __init__(self, root: Path, config: str | None) -> None:
        pass

    def add_metadata(self, run_id: str, **metadata: Any) -> None:
        raise ConnectionRefusedError("server down")

    def log(self, run_id: str, step: int, values: Mapping[str, float], time_ns: int) -> None:
        raise ConnectionRefusedError("server down")


class DeadAtStart(TrackerWriter):
    def __init__(self, root: Path, config: str | None) -> None:
        pass

    def start_run(self, run_id: str, record: Mapping[str, Any]) -> None:
        raise TimeoutError("no answer")


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    CALLS.clear()
    monkeypatch.setattr(base, "entry_points", lambda group=base.ENTRY_POINT_GROUP: {
        "rec": lambda: Recorder, "broken": lambda: Broken, "dead": lambda: DeadAtStart})


def test_every_write_fans_out_and_a_failing_backend_is_contained(
        registered: None, runs_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each backend of the list gets every write (redacted); broken/dead/unknown ones are logged once and counted."""
    monkeypatch.setenv("RUNTEL_TRACKER_REC_CONFIG", "db://x")
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    caplog.set_level(logging.WARNING, logger="runtel")
    with isolated(runs_dir, sampling=False, trackers=("runfolder", "broken", "dead", "nope", "rec")):
        with runtel.run_span("train", config={"lr": 0.1}, tags={"team": "vision"}) as run:
            run.add_metadata(dataset="cifar10", api_key="sk-live-0123456789abcdef0123")
            run.add_metadata(split="val")
            for step in range(3):
                run.log(step, loss=1.0 / (step + 1))
            run.add_artifact("model", model, {"epochs": 3})
            run.add_source("external-experiment-17", artifact_name="data")
            run.set_result(accuracy=0.9)
    kinds = [k for k, _ in CALLS]
    assert kinds == ["start", "metadata", "metadata", "log", "log", "log", "artifact", "source", "result", "end"]
    assert CALLS[0][1] == ("train", {"lr": 0.1}, {"team": "vision"}, "db://x")
    assert CALLS[1][1]["dataset"] == "cifar10" and "sk-live" not in json.dumps(CALLS[1][1])
    assert CALLS[5][1] == (2, {"loss": pytest.approx(1 / 3)})
    assert CALLS[6][1][:3] == ("model", "model.pt", {"epochs": 3}) and CALLS[6][1][3]
    assert CALLS[7][1] == ("external-experiment-17", "data")
    assert CALLS[9][1] == ("ok", {"accuracy": 0.9}, True)  # the end sees the flushed spans
    record = json.loads((runs_dir / run.id / "run.json").read_text())
    assert record["status"] == "ok" and record["results"]["final"] == {"accuracy": 0.9}
    trackers = record["trackers"]
    assert trackers["rec"] == {"run_id": "rec-" + run.id, "sent": True}
    assert trackers["broken"]["errors"] == 5 and "server down" in trackers["broken"]["error"]
    assert trackers["dead"]["errors"] == 1 and trackers["dead"]["dropped"] == 9
    assert trackers["nope"]["error"].startswith("load: ConfigError: no tracker backend 'nope'")
    warnings = [r.getMessage() for r in caplog.records if "tracker backend" in r.getMessage()]
    assert len(warnings) == 3, warnings  # once per backend: broken (metadata, then log), dead, nope


def test_only_the_run_folder_means_no_backends(registered: None, runs_dir: Path) -> None:
    """The default (and runfolder alone) builds nothing and records no trackers section."""
    assert parse_names(None) == ("folder",) and parse_names(" runfolder, mlflow ,") == ("runfolder", "mlflow")
    with isolated(runs_dir, sampling=False, trackers=("runfolder",)):
        with runtel.run_span("train") as run:
            run.add_metadata(a=1)
    assert "trackers" not in json.loads((runs_dir / run.id / "run.json").read_text())
    assert CALLS == []


def test_tracker_queries_use_the_first_backend_that_reads(runs_dir: Path) -> None:
    """Tracker("runfolder,mlflow") reads the run folders, and so does a list of write-only backends."""
    with isolated(runs_dir, sampling=False):
        with runtel.run_span("train") as run:
            run.add_metadata(a=1)
    t = runtel.Tracker(runs_dir, backend="runfolder,mlflow")
    assert isinstance(t.backend, FolderTracker) and t.backend_name == "runfolder"
    assert t.metadata(run.id) == {"a": 1}
    only_writers = runtel.Tracker(runs_dir, backend="mlflow")  # the run folders are written anyway
    assert isinstance(only_writers.backend, FolderTracker) and only_writers.metadata(run.id) == {"a": 1}
    with pytest.raises(ConfigError, match="no tracker backend 'nope'"):
        runtel.Tracker(runs_dir, backend="runfolder,nope")
