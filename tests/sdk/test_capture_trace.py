"""Data tracing: @runtel.trace(capture=...) summaries on spans, and runtel.load() to browse them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

import runtel
from runtel.query.notebook import LoadedRun, TraceCall, TraceStage
from runtel.rundir.reader import read_spans


def _function_spans(run: runtel.Run, name: str) -> list[Any]:
    assert run.dir is not None
    return [s for s in read_spans(run.dir) if s.name == name]


def _size(attributes: dict[str, Any]) -> int:
    return len(json.dumps(attributes))


def test_numpy_arrays_are_summaries_not_data(rt: object) -> None:
    """An array argument becomes shape/dtype/min/max/mean/NaN count; a 1e6-element array costs < 2 KB."""

    @runtel.trace(capture=True, capture_return=True)
    def normalize(x: Any) -> Any:
        return x / 2

    big = np.arange(1_000_000, dtype=np.float64)
    big[3] = np.nan
    with runtel.run_span("t") as run:
        normalize(big)
    (span,) = _function_spans(run, "test_numpy_arrays_are_summaries_not_data.<locals>.normalize")
    a = span.attributes
    assert a["runtel.param.x.shape"] == [1_000_000] and a["runtel.param.x.dtype"] == "float64"
    assert a["runtel.param.x.nan_count"] == 1 and a["runtel.param.x.min"] == 0.0
    assert a["runtel.param.x.max"] == 999_999.0 and a["runtel.return.shape"] == [1_000_000]
    assert a["runtel.param.x.mean"] == pytest.approx(np.nanmean(big))
    captured = {k: v for k, v in a.items() if k.startswith(("runtel.param.", "runtel.return"))}
    assert _size(captured) < 2048
    assert _size(a) < 4096


class _Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_object_whose_repr_raises(rt: object) -> None:
    """An argument whose __repr__ raises is captured as a placeholder and the call still returns."""

    @runtel.trace(capture=True, capture_return=True)
    def use(obj: Any) -> Any:
        return obj

    with runtel.run_span("t") as run:
        result = use(_Hostile())
    assert isinstance(result, _Hostile)
    (span,) = _function_spans(run, "test_object_whose_repr_raises.<locals>.use")
    assert span.attributes["runtel.param.obj.type"].endswith("_Hostile")
    assert "repr failed" in span.attributes["runtel.param.obj.repr"]
    assert span.status_code != 2


def test_kwargs_and_selected_params(rt: object) -> None:
    """Keyword arguments (named and **kwargs) are captured; a name list captures only those."""

    @runtel.trace(capture=True)
    def every(a: int, *, lr: float = 0.1, **extra: Any) -> None:
        pass

    @runtel.trace(capture=["lr"])
    def some(a: int, lr: float = 0.1) -> None:
        pass

    with runtel.run_span("t") as run:
        every(1, lr=0.5, momentum=0.9)
        some(2, lr=0.01)
    (e,) = _function_spans(run, "test_kwargs_and_selected_params.<locals>.every")
    assert e.attributes["runtel.param.a"] == 1 and e.attributes["runtel.param.lr"] == 0.5
    assert e.attributes["runtel.param.extra.type"] == "dict" and e.attributes["runtel.param.extra.len"] == 1
    assert "momentum" in str(e.attributes["runtel.param.extra.keys"])
    (s,) = _function_spans(run, "test_kwargs_and_selected_params.<locals>.some")
    params = {k for k in s.attributes if k.startswith("runtel.param.")}
    assert params == {"runtel.param.lr"} and s.attributes["runtel.param.lr"] == 0.01


def test_capture_limit_over_ten_thousand_calls(rt: object) -> None:
    """With capture_limit=5, only 5 of 10,000 spans carry runtel.param.*; all 10,000 are timed."""

    @runtel.trace(capture=True, capture_return=True, capture_limit=5, stage="evaluation")
    def step(i: int) -> int:
        return i * 2

    with runtel.run_span("t") as run:
        for i in range(10_000):
            step(i)
    spans = _function_spans(run, "test_capture_limit_over_ten_thousand_calls.<locals>.step")
    assert len(spans) == 10_000
    captured = [s for s in spans if any(k.startswith("runtel.param.") for k in s.attributes)]
    assert [s.attributes["runtel.param.i"] for s in captured] == [0, 1, 2, 3, 4]
    assert all(s.end_ns >= s.start_ns > 0 for s in spans)
    assert all(s.attributes["runtel.stage"] == "evaluation" for s in spans)


def test_stage_is_recorded_and_loadable(rt: object) -> None:
    """runtel.load groups calls by stage and function, with params, return values and durations."""

    @runtel.trace(capture=True, capture_return=True, stage="dataset_getter")
    def get_item(index: int) -> Any:
        return np.full((2, 3), index, dtype=np.float32)

    @runtel.trace(capture=True, capture_return=True, stage="evaluation")
    def forward(batch: Any) -> float:
        return float(batch.sum())

    with runtel.run_span("t", config={"lr": 0.1}) as run:
        for i in range(3):
            forward(get_item(i))
        run.add_metadata(note="x")
    rec = runtel.load(run)
    assert isinstance(rec, LoadedRun) and rec.status == "ok" and rec.config == {"lr": 0.1}
    assert set(rec.stages) == {"dataset_getter", "evaluation"}
    stage = rec.stages["evaluation"]
    assert isinstance(stage, TraceStage) and len(stage) == 3 and rec.evaluation is stage
    call = stage[2]
    assert isinstance(call, TraceCall) and call.returned == 12.0
    assert call.params["batch"]["shape"] == [2, 3] and call.params["batch"]["mean"] == 2.0
    assert call.batch == call["batch"] == call.params["batch"] and call.duration_s >= 0
    (full,) = [k for k in rec.functions if k.endswith(".get_item")]
    assert full.endswith("test_stage_is_recorded_and_loadable.<locals>.get_item") and len(rec.functions[full]) == 3
    assert rec["get_item"] == rec.functions[full] == rec.get_item
    assert stage["forward"] == list(stage)
    assert rec.metadata == {"note": "x"}


def test_load_browsing_aids(rt: object, runs_dir: object) -> None:
    """repr is readable, dir() offers stages and short function names, unknown keys raise clearly."""

    @runtel.trace(capture=True, stage="evaluation")
    def score(x: int) -> int:
        return x

    with runtel.run_span("t") as run:
        score(4)
    rec = runtel.load(run.id)
    text = repr(rec)
    assert run.id in text and "stage evaluation: 1 call(s)" in text
    assert "score(x=4)" in repr(rec.evaluation)
    assert {"evaluation", "score", "stages", "functions", "record"} <= set(dir(rec))
    assert "x" in dir(rec.evaluation[0])
    with pytest.raises(AttributeError, match="evaluation"):
        _ = rec.no_such_thing
    with pytest.raises(KeyError):
        _ = rec["no_such_thing"]
    assert runtel.load("latest").id == run.id


def test_load_unknown_run(rt: object) -> None:
    """Loading a run that does not exist raises RunNotFound."""
    from runtel.errors import RunNotFound

    with pytest.raises(RunNotFound):
        runtel.load("does-not-exist")


def test_notebook_views_say_what_was_not_captured_and_render_html(rt: object) -> None:
    """Calls past capture_limit read as not captured (not as calls without arguments); LoadedRun and a
    stage render as escaped HTML tables; a SpanRecord's repr is one short line."""

    @runtel.trace(capture=True, capture_limit=1, stage="eval")
    def forward(x: int) -> int:
        return x

    with runtel.run_span("nb <b>") as run:
        forward(1)
        forward(2)
        run.set_result(accuracy=0.5)
    loaded = runtel.load(run)
    first, second = loaded.stages["eval"]
    assert first.captured and not first.capture_skipped and "x=1" in first.brief()
    assert second.capture_skipped and "not captured (past capture_limit)" in second.brief()
    assert "forward()" not in second.brief()
    page = loaded._repr_html_()
    assert "<table>" in page and "accuracy" in page and "nb &lt;b&gt;" in page and "nb <b>" not in page
    assert "<table>" in loaded.stages["eval"]._repr_html_()
    span_repr = repr(read_spans(run.dir)[0])
    assert span_repr.startswith("SpanRecord(") and "\n" not in span_repr and len(span_repr) < 200
