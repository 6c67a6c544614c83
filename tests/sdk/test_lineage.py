"""Artifacts, metadata, sources, the artifact index, the Tracker API and the lineage CLI."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import runtel
from runtel.cli import main as cli_main
from runtel.errors import ConfigError, RunNotFound
from runtel.query import tracker
from runtel.query.tracker import FolderTracker, Lineage, TrackerArtifact, TrackerBackend
from runtel.recording import lineage
from runtel.rundir import artifacts
from runtel.rundir.reader import read_record, read_spans


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run_span(run_dir: Path | None) -> Any:
    assert run_dir is not None
    return next(s for s in read_spans(run_dir) if s.attributes.get("runtel.kind") == "run")


def _index_lines(root: Path) -> list[dict[str, Any]]:
    path = root / artifacts.INDEX_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- artifacts ---------------------------------------------------------------------------------------


def test_add_artifact_records_hash_event_record_and_index(rt: object, runs_dir: Path, tmp_path: Path) -> None:
    """A file artifact gets an absolute path, sha256, size, an event, a run.json entry and an index line."""
    data = b"a,b\n1,2\n"
    (tmp_path / "out.csv").write_bytes(data)
    with runtel.run_span("prep") as run:
        art = run.add_artifact("table", tmp_path / "out.csv", {"rows": 1})
    assert art["hash"] == _sha(data) and art["hash_kind"] == "sha256" and art["size"] == len(data)
    assert art["path"] == str(tmp_path / "out.csv") and art["metadata"] == {"rows": 1}
    assert read_record(run.dir)["artifacts"]["table"]["hash"] == _sha(data)
    event = next(e for e in _run_span(run.dir).events if e["name"] == lineage.ARTIFACT_EVENT)
    assert event["attributes"]["runtel.artifact.hash"] == _sha(data)
    assert event["attributes"]["runtel.artifact.name"] == "table"
    assert [(e["run_id"], e["name"], e["hash"]) for e in _index_lines(runs_dir)] == [(run.id, "table", _sha(data))]


def test_artifact_metadata_is_redacted(rt: object, tmp_path: Path) -> None:
    """Secret-looking metadata keys never reach run.json."""
    (tmp_path / "f").write_text("x")
    with runtel.run_span("prep") as run:
        run.add_artifact("f", tmp_path / "f", {"api_key": "sk-live-123456", "rows": 3})
    meta = read_record(run.dir)["artifacts"]["f"]["metadata"]
    assert meta["rows"] == 3 and "sk-live-123456" not in json.dumps(meta)


def test_hash_streams_files_larger_than_the_chunk(tmp_path: Path) -> None:
    """A 24 MiB file hashes correctly while Python memory stays far below the file size."""
    path = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        for _ in range(24):
            f.write(block)
        f.write(b"tail")
    tracemalloc.start()
    try:
        info = artifacts.hash_path(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info["hash"] == _sha(block * 24 + b"tail") and info["hash_kind"] == "sha256"
    assert peak < 4 * artifacts.HASH_CHUNK_SIZE


def test_partial_hash_above_the_limit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Above the limit only first/middle/last blocks and the size count, and the record says so."""
    monkeypatch.setattr(artifacts, "PARTIAL_BLOCK_SIZE", 100)
    data = bytearray(os.urandom(20_000))
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    first = artifacts.hash_path(path, partial_limit=1000)
    assert first["hash_kind"] == "partial" and first["hash"] != _sha(bytes(data))
    data[5000] ^= 0xFF  # outside the sampled blocks: unseen by a partial hash
    path.write_bytes(data)
    assert artifacts.hash_path(path, partial_limit=1000)["hash"] == first["hash"]
    data[0] ^= 0xFF  # inside the first block
    path.write_bytes(data)
    assert artifacts.hash_path(path, partial_limit=1000)["hash"] != first["hash"]
    assert artifacts.hash_path(path)["hash_kind"] == "sha256"  # below the default limit: full hash


def test_add_artifact_partial_limit(rt: object, tmp_path: Path) -> None:
    """add_artifact passes its partial_limit through and marks the artifact partial."""
    (tmp_path / "w.bin").write_bytes(b"x" * 5000)
    with runtel.run_span("train") as run:
        art = run.add_artifact("weights", tmp_path / "w.bin", partial_limit=1024)
    assert art["hash_kind"] == "partial"
    assert read_record(run.dir)["artifacts"]["weights"]["hash_kind"] == "partial"


def test_directory_artifact_is_a_manifest_hash(rt: object, tmp_path: Path) -> None:
    """A directory hashes as a manifest: count and size recorded; content or name changes change it."""
    d = tmp_path / "ckpt"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("alpha")
    (d / "sub" / "b.txt").write_text("beta")
    with runtel.run_span("train") as run:
        art = run.add_artifact("checkpoint", d)
    assert art["kind"] == "directory" and art["hash_kind"] == "manifest"
    assert art["files"] == 2 and art["size"] == 9
    before = art["hash"]
    (d / "sub" / "b.txt").write_text("BETA")
    changed = artifacts.hash_path(d)["hash"]
    (d / "sub" / "b.txt").rename(d / "sub" / "c.txt")
    renamed = artifacts.hash_path(d)["hash"]
    assert len({before, changed, renamed}) == 3


def test_missing_artifact_is_recorded_with_an_error(rt: object, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A missing file never raises: it is recorded with an error, logged once, and not indexed."""
    with caplog.at_level(logging.WARNING, logger="runtel"):
        with runtel.run_span("train") as run:
            art = run.add_artifact("model", tmp_path / "nope.pt")
            run.add_artifact("model", tmp_path / "nope.pt")
    assert "hash" not in art and "FileNotFoundError" in art["error"]
    assert read_record(run.dir)["artifacts"]["model"]["error"] == art["error"]
    assert sum("nope.pt" in r.getMessage() for r in caplog.records) == 1
    assert _index_lines(run.dir.parent) == []


# --- metadata and sources ----------------------------------------------------------------------------


def test_add_metadata_goes_to_record_and_span(rt: object) -> None:
    """Metadata is stored in run.json and as runtel.metadata.* span attributes, secrets redacted."""
    with runtel.run_span("train") as run:
        run.add_metadata(dataset="cifar10", split={"train": 0.8}, password="hunter2")
    record = read_record(run.dir)
    assert record["metadata"]["dataset"] == "cifar10" and record["metadata"]["split"] == {"train": 0.8}
    assert record["metadata"]["password"] != "hunter2"
    attrs = _run_span(run.dir).attributes
    assert attrs["runtel.metadata.dataset"] == "cifar10" and attrs["runtel.metadata.split.train"] == 0.8


def test_add_source_run_id_becomes_a_span_link(rt: object) -> None:
    """A run-id source is a span link carrying the upstream run's trace and span ids."""
    with runtel.run_span("prep") as up:
        pass
    with runtel.run_span("train") as run:
        entry = run.add_source(up.id, artifact_name="table")
        run.add_source(up.id, artifact_name="table")  # duplicates are recorded once
    assert entry["kind"] == "run" and entry["trace_id"] == up.trace_id
    links = _run_span(run.dir).links
    assert [(link["trace_id"], link["span_id"]) for link in links] == [(up.trace_id, up.span_id)]
    assert links[0]["attributes"]["runtel.source.artifact_name"] == "table"
    assert [s["run_id"] for s in read_record(run.dir)["sources"]] == [up.id]


def test_add_source_external_and_missing_path(rt: object) -> None:
    """Unknown ids are external sources; path-like missing sources are files with an error."""
    with runtel.run_span("train") as run:
        ext = run.add_source("mlflow-exp-42")
        missing = run.add_source("data/none.csv")
    assert ext["kind"] == "external" and ext["run_id"] == "mlflow-exp-42"
    assert missing["kind"] == "file" and "error" in missing
    assert [e["name"] for e in _run_span(run.dir).events].count(lineage.SOURCE_EVENT) == 2


def test_use_artifact_links_to_the_producing_run(rt: object, tmp_path: Path) -> None:
    """use_artifact finds the run that wrote identical content and records it as a source."""
    out = tmp_path / "model.pt"
    with runtel.run_span("train") as producer:
        out.write_bytes(b"weights")
        producer.add_artifact("model", out)
    copy = tmp_path / "copy.pt"
    copy.write_bytes(b"weights")  # same content, another path
    with runtel.run_span("evaluate") as run:
        found = runtel.use_artifact(copy)
    assert found is not None and found["run_id"] == producer.id and found["name"] == "model"
    source = read_record(run.dir)["sources"][0]
    assert source["run_id"] == producer.id and source["artifact_name"] == "model"
    assert source["path"] == str(copy) and source["produced_path"] == str(out)
    assert _run_span(run.dir).links[0]["span_id"] == producer.span_id


def test_use_artifact_unknown_file_is_a_plain_input(rt: object, tmp_path: Path) -> None:
    """A file no run produced is recorded as an input with its hash, and None is returned."""
    raw = tmp_path / "raw.csv"
    raw.write_text("raw")
    with runtel.run_span("prep") as run:
        assert runtel.use_artifact(raw, name="raw") is None
        assert runtel.use_artifact(tmp_path / "absent.csv") is None
    sources = read_record(run.dir)["sources"]
    assert sources[0] == {**sources[0], "kind": "file", "hash": _sha(b"raw"), "artifact_name": "raw"}
    assert "error" in sources[1]


def test_lookup_without_index_scans_and_rebuilds(rt: object, runs_dir: Path, tmp_path: Path) -> None:
    """With the index gone (copied run folders), a scan finds the producer and indexes finished runs."""
    out = tmp_path / "a.bin"
    out.write_bytes(b"A")
    with runtel.run_span("prep") as producer:
        producer.add_artifact("a", out)
    with runtel.run_span("idle") as idle:
        pass
    (runs_dir / artifacts.INDEX_FILE).unlink()
    found = artifacts.find_artifacts(runs_dir, _sha(b"A"))
    assert [(f["run_id"], f["name"]) for f in found] == [(producer.id, "a")]
    lines = _index_lines(runs_dir)
    assert {line["run_id"] for line in lines if line.get("scanned")} == {producer.id, idle.id}
    assert artifacts.rebuild_index(runs_dir) == 1


def test_index_entries_of_deleted_runs_are_ignored(rt: object, runs_dir: Path, tmp_path: Path) -> None:
    """A stale index line whose run folder was deleted is never returned."""
    out = tmp_path / "a.bin"
    out.write_bytes(b"A")
    with runtel.run_span("prep") as producer:
        producer.add_artifact("a", out)
    (producer.dir / "run.json").unlink()
    assert artifacts.find_artifacts(runs_dir, _sha(b"A")) == []


def test_lineage_calls_without_a_run_never_raise(rt: object, tmp_path: Path) -> None:
    """use_artifact works as a lookup outside a run; a disabled placeholder run accepts every call."""
    (tmp_path / "x").write_text("x")
    assert runtel.use_artifact(tmp_path / "x") is None
    placeholder = runtel.Run("off")
    assert placeholder.add_artifact("x", tmp_path / "x")["hash"] == _sha(b"x")
    placeholder.add_metadata(a=1)
    assert placeholder.record == {}


# --- Tracker -----------------------------------------------------------------------------------------


def _pipeline(tmp_path: Path) -> tuple[Any, Any, Any]:
    """prepare -> train -> evaluate through files, in one process."""
    data, model, metrics = tmp_path / "data.csv", tmp_path / "model.pt", tmp_path / "metrics.json"
    with runtel.run_span("prepare", tags={"team": "vision"}) as a:
        data.write_text("1,2,3")
        a.add_artifact("data", data)
        a.add_metadata(rows=3)
    with runtel.run_span("train", tags=["team=vision", "gpu"]) as b:
        runtel.use_artifact(data)
        model.write_bytes(b"model")
        b.add_artifact("model", model)
    with runtel.run_span("evaluate") as c:
        runtel.use_artifact(model)
        metrics.write_text("{}")
        c.add_artifact("metrics", metrics)
    return a, b, c


def test_tracker_queries(rt: object, runs_dir: Path, tmp_path: Path) -> None:
    """metadata, artifacts, sources and children read back what the runs recorded."""
    a, b, c = _pipeline(tmp_path)
    t = runtel.Tracker(runs_dir)
    assert t.metadata(a.id) == {"rows": 3}
    arts = t.artifacts(b.id)
    assert list(arts) == ["model"] and isinstance(arts["model"], TrackerArtifact)
    assert arts["model"].hash == _sha(b"model") and arts["model"].run_id == b.id
    assert [(s.source_run_id, s.artifact_name) for s in t.sources(c.id)] == [(b.id, "model")]
    assert t.sources(c.id, artifact_name="data") == []
    assert t.children(a.id) == [b.id] and t.children(c.id) == []
    producer = t.find_producer(tmp_path / "metrics.json")
    assert producer is not None and producer.run_id == c.id


def test_tracker_filters(rt: object, runs_dir: Path, tmp_path: Path) -> None:
    """run_ids filters by name, tag, status, time window and parent run."""
    a, b, c = _pipeline(tmp_path)
    with runtel.run_span("outer") as outer:
        with runtel.run_span("inner") as inner:
            pass
    with pytest.raises(ValueError):
        with runtel.run_span("broken"):
            raise ValueError("boom")
    t = runtel.Tracker(runs_dir)
    assert t.run_ids(name="train") == [b.id]
    assert set(t.run_ids(tag="team=vision")) == {a.id, b.id}
    assert t.run_ids(tag={"team": "vision", "gpu": "true"}) == [b.id]
    assert t.run_ids(status="error") == [t.run_ids(name="broken")[0]]
    assert t.run_ids(parent=outer.id) == [inner.id]
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert t.run_ids(since=future) == []
    assert len(t.run_ids(until=future.isoformat())) == 6
    assert t.run_ids(since="2000-01-01T00:00:00Z")[0] == t.run_ids()[0]
    with pytest.raises(ConfigError):
        t.run_ids(colour="red")


def test_lineage_is_transitive_both_ways(rt: object, runs_dir: Path, tmp_path: Path) -> None:
    """lineage() walks sources upstream and consumers downstream, with artifact names on edges."""
    a, b, c = _pipeline(tmp_path)
    t = runtel.Tracker(runs_dir)
    lin = t.lineage(c.id)
    assert isinstance(lin, Lineage) and lin.ancestors() == [b.id, a.id]
    assert {(e.parent, e.child, e.artifact_name) for e in lin.edges} == {(a.id, b.id, "data"), (b.id, c.id, "model")}
    assert lin.nodes[a.id].name == "prepare" and lin.nodes[a.id].status == "ok"
    mid = t.lineage(b.id)
    assert mid.ancestors() == [a.id] and mid.descendants() == [c.id]
    assert t.lineage(a.id).descendants() == [b.id, c.id]
    assert json.loads(json.dumps(lin.to_dict()))["root"] == c.id


def test_generic_backend_lineage_matches_folder(rt: object, runs_dir: Path, tmp_path: Path) -> None:
    """The base-class lineage (what a database backend inherits) gives the folder tracker's graph."""
    a, b, c = _pipeline(tmp_path)
    folder = FolderTracker(runs_dir)
    generic = TrackerBackend.lineage(folder, b.id)
    assert generic.to_dict() == folder.lineage(b.id).to_dict()


class _FakeBackend(TrackerBackend):
    def __init__(self, root: Path, config: str | None) -> None:
        self.root, self.config = root, config

    def run_ids(self, **filters: Any) -> list[str]:
        return ["db-run"]

    def record(self, run_id: str) -> dict[str, Any]:
        if run_id != "db-run":
            raise RunNotFound(run_id)
        return {"id": "db-run", "name": "db", "metadata": {"source": self.config}}

    def children(self, run_id: str) -> list[str]:
        return []

    def find_artifacts(self, digest: str) -> list[TrackerArtifact]:
        return []


def test_backend_from_entry_point(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tracker picks a backend registered in runtel.trackers by argument or RUNTEL_TRACKER, with its config."""
    monkeypatch.setattr(tracker, "_entry_points", lambda group=tracker.ENTRY_POINT_GROUP: {"db": lambda: _FakeBackend})
    t = runtel.Tracker(tmp_path, backend="db", config="sqlite:///x")
    assert isinstance(t.backend, _FakeBackend) and t.run_ids() == ["db-run"]
    assert t.metadata("db-run") == {"source": "sqlite:///x"}
    monkeypatch.setenv("RUNTEL_TRACKER", "db")
    monkeypatch.setenv("RUNTEL_TRACKER_DB_CONFIG", "postgres://h/db")
    assert runtel.Tracker(tmp_path).metadata("db-run") == {"source": "postgres://h/db"}
    with pytest.raises(ConfigError, match="no tracker backend 'nope'"):
        runtel.Tracker(tmp_path, backend="nope")


def test_backend_from_module_spec_and_installed_entry_point(tmp_path: Path) -> None:
    """module:attribute specs load, and the installed 'folder' entry point names FolderTracker."""
    t = runtel.Tracker(tmp_path, backend="runtel.query.tracker:FolderTracker")
    assert isinstance(t.backend, FolderTracker)
    assert tracker._entry_points()["folder"]() is FolderTracker
    with pytest.raises(ConfigError):
        runtel.Tracker(tmp_path, backend="runtel.query.tracker:Missing")


# --- CLI ---------------------------------------------------------------------------------------------


def test_cli_lineage_of_a_file(rt: object, runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`runtel lineage FILE --json` finds the producer and the chain; the tree names every run."""
    a, b, c = _pipeline(tmp_path)
    assert cli_main(["lineage", str(tmp_path / "metrics.json"), "--dir", str(runs_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run"] == c.id and out["file"]["artifact_name"] == "metrics"
    assert set(out["lineage"]["nodes"]) == {a.id, b.id, c.id}
    assert cli_main(["lineage", str(tmp_path / "model.pt"), "--dir", str(runs_dir)]) == 0
    text = capsys.readouterr().out
    assert "produced as model by run train" in text and "← data" in text and "used by" in text
    assert "evaluate" in text and "prepare" in text


def test_cli_lineage_unknown_target(rt: object, runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown run or a file no run produced is one error line and exit code 1."""
    (tmp_path / "orphan.txt").write_text("orphan")
    assert cli_main(["lineage", "no-such-run", "--dir", str(runs_dir)]) == 1
    assert cli_main(["lineage", str(tmp_path / "orphan.txt"), "--dir", str(runs_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("runtel: error:") for line in err)


def test_index_lookup_is_fast_with_many_runs(rt: object, runs_dir: Path, tmp_path: Path) -> None:
    """After one scan, lookups among 300 runs are answered from the index alone (well under a second)."""
    for i in range(300):
        d = runs_dir / f"20260101T000000Z-r{i:04d}-000000"
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"id": d.name, "status": "ok", "artifacts": {
            "out": {"name": "out", "hash": f"{i:064x}", "path": f"/x/{i}"}}}))
    assert artifacts.find_artifacts(runs_dir, f"{7:064x}")[0]["run_id"].endswith("r0007-000000")  # first: scan
    for d in runs_dir.iterdir():  # from now on only the index can answer
        if d.is_dir():
            (d / "run.json").write_text("{}")
    start = time.perf_counter()
    for i in range(20):
        assert artifacts.find_artifacts(runs_dir, f"{i:064x}")[0]["path"] == f"/x/{i}"
    assert time.perf_counter() - start < 1.0
