"""Run results: final values (set_result) and series (log) in run.json, on the span, and in metrics.jsonl."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import runtel
from runtel import semconv
from runtel.config import Settings
from runtel.rundir.otlp_json import attributes_from_otlp, value_from_otlp
from runtel.rundir.reader import read_record
from runtel.testing import read_run


def _series_points(run_dir: Path) -> list[tuple[str, dict[str, object], object]]:
    """(metric name, attributes, value) of every runtel.result.* point in metrics.jsonl (the run id, stated once
    per line on the Resource there, added to each point's attributes)."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        for rm in json.loads(line)["resourceMetrics"]:
            run_id = attributes_from_otlp(rm["resource"]["attributes"])[semconv.RUN_ID]
            for sm in rm["scopeMetrics"]:
                for metric in sm["metrics"]:
                    if not metric["name"].startswith(semconv.RESULT_PREFIX):
                        continue
                    for p in metric["gauge"]["dataPoints"]:
                        value = p.get("asDouble", p.get("asInt"))
                        out.append((metric["name"], {**attributes_from_otlp(p["attributes"]), semconv.RUN_ID: run_id},
                                    value_from_otlp({"doubleValue": value}) if "asDouble" in p else int(value)))
    return out


def test_final_results_in_record_and_span(rt: Settings) -> None:
    with runtel.run_span("train") as run:
        run.set_result(accuracy=0.913, f1=0.5)
        run.set_result(f1=0.88, label="best")
    record, spans = read_run(run.dir)  # type: ignore[arg-type]
    assert record["results"]["final"] == {"accuracy": 0.913, "f1": 0.88, "label": "best"}
    root = spans[0]
    assert root.attributes["runtel.result.accuracy"] == 0.913
    assert root.attributes["runtel.result.f1"] == 0.88


def test_series_points_and_summary(rt: Settings) -> None:
    losses = [1.0, 0.5, 0.7, 0.25]
    with runtel.run_span("train") as run:
        for epoch, loss in enumerate(losses):
            run.log(step=epoch, loss=loss, lr=0.1)
        run.log(loss=0.3)  # no step: one more than the last
    record = read_record(run.dir)  # type: ignore[arg-type]
    loss = record["results"]["series"]["loss"]
    assert loss == {"count": 5, "last": 0.3, "last_step": 4, "min": 0.25, "max": 1.0}
    assert record["results"]["series"]["lr"]["count"] == 4
    points = _series_points(run.dir)  # type: ignore[arg-type]
    loss_points = [(a[semconv.STEP], v) for n, a, v in points if n == "runtel.result.loss"]
    assert loss_points == [(0, 1.0), (1, 0.5), (2, 0.7), (3, 0.25), (4, 0.3)]
    assert all(a[semconv.RUN_ID] == run.id for _, a, _ in points)
    assert len(points) == 9


def test_non_numbers_skipped_with_one_warning(rt: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="runtel"):
        with runtel.run_span("train") as run:
            for i in range(3):
                run.log(step=i, loss="high", ok=True, acc=i / 10)
            run.log(step="x", acc=1)  # type: ignore[arg-type]
    record = read_record(run.dir)  # type: ignore[arg-type]
    series = record["results"]["series"]
    assert set(series) == {"acc"}
    assert series["acc"] == {"count": 4, "last": 1, "last_step": 3, "min": 0.0, "max": 1}
    warnings = [r for r in caplog.records if "loss" in r.getMessage()]
    assert len(warnings) == 1


def test_nan_is_last_but_not_min_max(rt: Settings) -> None:
    with runtel.run_span("train") as run:
        run.log(loss=2.0)
        run.log(loss=float("nan"))
    summary = read_record(run.dir)["results"]["series"]["loss"]  # type: ignore[arg-type]
    assert summary["min"] == summary["max"] == 2.0 and summary["count"] == 2 and summary["last"] is None


def test_numpy_like_scalars_accepted(rt: Settings) -> None:
    class Scalar:
        def __init__(self, v: float) -> None:
            self.v = v

        def item(self) -> float:
            return self.v

    with runtel.run_span("train") as run:
        run.log(step=0, loss=Scalar(0.5))
    assert read_record(run.dir)["results"]["series"]["loss"]["last"] == 0.5  # type: ignore[arg-type]


def test_results_redacted(rt: Settings) -> None:
    with runtel.run_span("train") as run:
        run.set_result(db_password="hunter2hunter2", accuracy=0.9)
        run.log(step=0, password=1.0, loss=0.1)
    record, spans = read_run(run.dir)  # type: ignore[arg-type]
    text = (run.dir / "run.json").read_text() + (run.dir / "spans.jsonl").read_text()  # type: ignore[operator]
    assert "hunter2" not in text
    assert record["results"]["final"]["db_password"] == "[REDACTED]"
    assert "password" not in record["results"]["series"]
    assert not [n for n, _, _ in _series_points(run.dir) if "password" in n]  # type: ignore[arg-type]


def test_series_count_bounded(rt: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtel.recording import run as run_module

    monkeypatch.setattr(run_module, "MAX_SERIES", 3)
    with runtel.run_span("train") as run:
        run.log(step=0, **{f"s{i}": float(i) for i in range(5)})
        run.log(step=1, s0=1.0, s9=2.0)
    results = read_record(run.dir)["results"]  # type: ignore[arg-type]
    assert set(results["series"]) == {"s0", "s1", "s2"}
    assert results["series_dropped"] == 3


def test_results_on_disabled_run_are_ignored(tmp_path: Path) -> None:
    run = runtel.Run("off")
    run.set_result(accuracy=1.0)
    run.log(loss=1.0)
    assert run.record == {}


def test_long_series_name_skipped(rt: Settings) -> None:
    from runtel.recording.run import MAX_SERIES_NAME

    with runtel.run_span("train") as run:
        run.log(step=0, **{"x" * (MAX_SERIES_NAME + 1): 1.0, "y" * MAX_SERIES_NAME: 2.0})
    series = read_record(run.dir)["results"]["series"]  # type: ignore[arg-type]
    assert list(series) == ["y" * MAX_SERIES_NAME]
    assert len(semconv.RESULT_PREFIX + "y" * MAX_SERIES_NAME) == 255  # an OTel instrument name's limit
