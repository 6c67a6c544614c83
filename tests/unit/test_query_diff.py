"""The read-side comparison behind ``runtel diff`` and ``runtel reproduce --check`` (pure data)."""

from __future__ import annotations

from typing import Any, cast

from runtel.query.diff import compare_artifacts, compare_results, diff_records
from runtel.rundir.schema import RunRecord


def _record(**fields: Any) -> RunRecord:
    return cast("RunRecord", fields)


def test_nested_config_env_machine_and_python() -> None:
    """Nested keys are dotted; removed/added/changed are told apart; GPUs by index with driver and CUDA."""
    gpu = {"name": "A100", "driver_version": "550.1", "cuda_version": "12.4"}
    a = _record(config={"opt": {"lr": 0.1, "wd": 0.0}}, environment={
        "env": {"OMP_NUM_THREADS": "4"}, "machine": {"cpu": {"model": "X"}, "gpus": [gpu]},
        "python": {"implementation": "cpython", "version": "3.11.7"}})
    b = _record(config={"opt": {"lr": 0.1}, "epochs": 2}, environment={
        "env": {"OMP_NUM_THREADS": "8"}, "machine": {"cpu": {"model": "X"}, "gpus": [{**gpu, "driver_version": "560"}]},
        "python": {"implementation": "cpython", "version": "3.12.1"}})
    got = {(d.section, d.key, d.kind) for d in diff_records(a, b)}
    assert got == {
        ("config", "opt.wd", "removed"), ("config", "epochs", "added"), ("env", "OMP_NUM_THREADS", "changed"),
        ("machine", "gpu[0].driver_version", "changed"), ("python", "version", "changed"),
    }


def test_git_diff_presence_is_a_difference() -> None:
    """A run with uncommitted changes differs from a clean one at the same commit."""
    git = {"environment": {"git": {"script": {"commit": "c1", "dirty": False}}}}
    dirty = {"environment": {"git": {"script": {"commit": "c1", "dirty": True}}}}
    got = {d.key: d for d in diff_records(_record(**git), _record(**dirty), git_diff_b="diff --git a b\n")}
    assert set(got) == {"dirty", "diff"} and got["diff"].a == "none"


def test_artifact_and_result_verdicts() -> None:
    """identical / differs / missing per artifact (by hash) and per result (by value)."""
    art = {"name": "m", "hash": "aa", "hash_kind": "sha256"}
    recorded = _record(artifacts={"m": art, "gone": art, "x": art}, results={"loss": 0.5, "acc": 0.9})
    rerun = _record(artifacts={"m": art, "x": {**art, "hash": "bb"}}, results={"loss": 0.5, "acc": 0.8})
    assert [(n, v) for n, v, _ in compare_artifacts(recorded, rerun)] == [
        ("gone", "missing"), ("m", "identical"), ("x", "differs")]
    assert [(n, v) for n, v, _ in compare_results(recorded, rerun)] == [
        ("result acc", "differs"), ("result loss", "identical")]
    assert compare_artifacts(recorded, None)[0][1] == "missing"


def test_argv_is_one_value_and_absent_when_not_recorded() -> None:
    """The command line is compared whole (an inserted argument shifts the rest); a run that recorded none
    (argv null: telemetry below full) has it absent, not changed to null."""
    one, other = _record(argv=["ep.py", "--epochs", "1"]), _record(argv=["ep.py", "--epochs", "100"])
    (d,) = diff_records(one, other)
    assert (d.section, d.key, d.kind, d.a, d.b) == ("argv", "argv", "changed", ["ep.py", "--epochs", "1"],
                                                    ["ep.py", "--epochs", "100"])
    assert diff_records(one, _record(argv=["ep.py", "--epochs", "1"])) == []
    (gone,) = diff_records(one, _record(argv=None))
    assert (gone.kind, gone.a) == ("removed", ["ep.py", "--epochs", "1"]) and "b" not in gone.to_dict()
    assert [d.kind for d in diff_records(_record(), other)] == ["added"]
    assert diff_records(_record(argv=None), _record()) == []
