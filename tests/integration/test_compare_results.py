"""compare: config / results / environment diffs, per-block statistics, and the runtel.compare API."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import runtel
from runtel.cli import main as cli_main
from runtel.config import Settings
from runtel.query.compare import BlockStats, LoadedRun, compare_runs


def _block(path: str, durations: list[float], rss: list[float]) -> BlockStats:
    stats = BlockStats(path)
    for d, r in zip(durations, rss, strict=True):
        stats.add({"duration_s": d, "attributes": {"runtel.usage.memory.rss.max.combined": r}, "kind": "block"})
    return stats


def _loaded(run_id: str, blocks: list[BlockStats], **record: object) -> LoadedRun:
    return LoadedRun(run_id, {"id": run_id, "name": "train", **record}, {b.path: b for b in blocks})  # type: ignore[typeddict-item]


@pytest.mark.parametrize(("stat", "a", "b"), [
    # a: epoch durations 1, 2, 3 ; b: 2, 4 — computed by hand
    ("min", 1.0, 2.0),
    ("max", 3.0, 4.0),
    ("total", 6.0, 6.0),
    ("mean", 2.0, 3.0),
    ("std", 1.0, math.sqrt(2.0)),  # sample std: sqrt(((1-2)^2+0+(3-2)^2)/2) = 1 ; sqrt(((2-3)^2+(4-3)^2)/1)
])
def test_block_statistics(stat: str, a: float, b: float) -> None:
    runs = [_loaded("a", [_block("epoch", [1.0, 2.0, 3.0], [10, 30, 20])]),
            _loaded("b", [_block("epoch", [2.0, 4.0], [40, 40])])]
    table = compare_runs(runs, stat)
    (block,) = table["blocks"]
    time = block["metrics"]["time_s"]
    assert time["values"] == pytest.approx([a, b])
    assert time["diff"][1] == pytest.approx(b - a)
    assert time["ratio"][1] == pytest.approx(b / a)
    assert block["metrics"]["count"]["values"] == [3.0, 2.0]
    rss = block["metrics"]["peak_rss_bytes"]["values"]
    expected = {"min": [10, 40], "max": [30, 40], "total": [60, 80], "mean": [20, 40], "std": [10, 0]}[stat]
    assert rss == pytest.approx(expected)


def test_default_block_table_unchanged() -> None:
    runs = [_loaded("a", [_block("epoch", [1.0, 2.0, 3.0], [10, 30, 20])]), _loaded("b", [_block("epoch", [2.0], [5])])]
    metrics = compare_runs(runs)["blocks"][0]["metrics"]
    assert metrics["total_s"]["values"] == [6.0, 2.0] and metrics["mean_s"]["values"] == [2.0, 2.0]
    assert metrics["max_s"]["values"] == [3.0, 2.0] and metrics["peak_rss_bytes"]["values"] == [30, 5]
    assert "time_s" not in metrics
    std = compare_runs(runs, "std")["blocks"][0]["metrics"]["time_s"]
    assert std["values"] == [1.0, None] and std["diff"] == [0.0, None]  # one call: no sample std


def test_config_results_environment_diffs() -> None:
    env_a = {"git": {"script": {"commit": "a" * 40, "dirty": False}}, "packages": {"numpy": "1.26", "torch": "2.3"}}
    env_b = {"git": {"script": {"commit": "b" * 40, "dirty": True}}, "packages": {"numpy": "1.26", "torch": "2.4"}}
    runs = [
        _loaded("a", [], config={"model": {"n_estimators": 40, "depth": 3}, "seed": 1}, environment=env_a,
                results={"final": {"accuracy": 0.8, "note": "x"}, "series": {"loss": {"last": 0.5, "min": 0.4}}}),
        _loaded("b", [], config={"model": {"n_estimators": 15, "depth": 3}}, environment=env_b,
                results={"final": {"accuracy": 0.9, "note": "y", "f1": 0.7}}),
    ]
    table = compare_runs(runs)
    config = {r["key"]: r for r in table["config"]}
    assert set(config) == {"model.n_estimators", "seed"}
    assert config["model.n_estimators"]["values"] == [40, 15]
    assert config["seed"]["values"] == [1, None] and config["seed"]["present"] == [True, False]
    results = {r["name"]: r for r in table["results"]}
    assert results["accuracy"]["values"] == [0.8, 0.9]
    assert results["accuracy"]["diff"][1] == pytest.approx(0.1)
    assert results["accuracy"]["ratio"][1] == pytest.approx(1.125)
    assert results["note"]["numeric"] is False and results["note"]["values"] == ["x", "y"]
    assert results["f1"]["values"] == [None, 0.7] and results["f1"]["diff"] == [None, None]
    assert results["loss (last)"]["values"] == [0.5, None]
    env = {r["key"]: r["values"] for r in table["environment"]}
    assert env == {"git commit": ["a" * 12, "b" * 12], "git dirty": [False, True], "package torch": ["2.3", "2.4"]}


def test_compare_api_and_cli(rt: Settings, runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made = []
    for n, acc in ((40, 0.91), (15, 0.87)):
        with runtel.run_span("fit", config={"n_estimators": n}) as run:
            for _ in range(2):
                with runtel.block("epoch"):
                    pass
            run.set_result(accuracy=acc)
        made.append(run)
    table = runtel.compare(made[0], made[1].id, stat="mean", dir=runs_dir)
    assert [r["id"] for r in table["runs"]] == [made[0].id, made[1].id]
    assert table["stat"] == "mean"
    assert table["config"] == [{"key": "n_estimators", "values": [40, 15], "present": [True, True]}]
    assert table["results"][0]["name"] == "accuracy" and table["results"][0]["diff"][1] == pytest.approx(-0.04)
    assert table["blocks"][0]["path"] == "epoch" and table["blocks"][0]["metrics"]["count"]["values"] == [2.0, 2.0]
    with pytest.raises(ValueError):
        runtel.compare(made[0], dir=runs_dir)
    with pytest.raises(ValueError):
        runtel.compare(made[0], made[1], stat="median", dir=runs_dir)
    capsys.readouterr()
    assert cli_main(["compare", made[0].id, made[1].id, "--dir", str(runs_dir), "--stat", "max", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"] == table["config"]
    assert cli_main(["compare", made[0].id, made[1].id, "--dir", str(runs_dir), "--stat", "std"]) == 0
    text = capsys.readouterr().out
    for needle in ("config (keys that differ)", "n_estimators", "results (relative to the baseline)", "accuracy",
                   "time (std)"):
        assert needle in text, needle
    assert text.index("n_estimators") < text.index("accuracy") < text.index("time (std)")


def test_compare_renders_as_html_in_a_notebook(rt: Settings, runs_dir: Path) -> None:
    """runtel.compare(...) is the plain dict and also renders its sections as escaped HTML tables."""
    ids = []
    for lr in (0.1, 0.2):
        with runtel.run_span("t<b>", config={"lr": lr}) as run:
            with runtel.block("epoch"):
                pass
            run.set_result(accuracy=1 - lr)
        ids.append(run.id)
    table = runtel.compare(*ids, dir=runs_dir)
    assert isinstance(table, dict) and table["config"]
    page = table._repr_html_()
    assert "<table>" in page and "accuracy" in page and "epoch" in page and "t&lt;b&gt;" in page
