"""run_span(): the run span, its folder and record, status and error semantics."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import runtel
from runtel import semconv
from runtel.config import Settings
from runtel.rundir.reader import read_record
from runtel.testing import isolated, read_run, span_names


def _only_run(runs_dir: Path) -> Path:
    folders = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def test_run_folder_has_record_and_otlp_spans(rt: Settings, runs_dir: Path) -> None:
    """A run writes run.json and spans.jsonl with the run span as root and blocks as children."""
    with runtel.run_span("train", config={"lr": 0.1}, tags={"team": "ml"}, epochs=3) as run:
        assert runtel.current_run() is run
        with runtel.block("epoch", index=0):
            pass
    assert runtel.current_run() is None
    record, spans = read_run(run.dir)  # type: ignore[arg-type]
    assert record["status"] == "ok"
    assert record["name"] == "train"
    assert record["config"] == {"lr": 0.1}
    assert record["tags"] == {"team": "ml"}
    assert record["attributes"] == {"epochs": 3}
    assert record["trace_id"] == run.trace_id and len(run.trace_id) == 32
    assert record["duration_s"] >= 0
    assert span_names(spans) == ["train", "epoch"]
    root, epoch = spans
    assert root.parent_span_id is None
    assert epoch.parent_span_id == root.span_id
    assert root.attributes["config.lr"] == 0.1
    assert root.attributes[semconv.TAG_PREFIX + "team"] == "ml"
    assert root.attributes[semconv.RUN_ID] == run.id
    assert epoch.attributes[semconv.RUN_ID] == run.id
    assert epoch.attributes["index"] == 0
    assert root.status_code == 1  # OK


def test_run_id_is_sortable_and_readable(rt: Settings) -> None:
    """Run ids start with a UTC timestamp, carry the name, and are unique."""
    ids = []
    for _ in range(3):
        with runtel.run_span("my job/1") as run:
            ids.append(run.id)
    assert len(set(ids)) == 3
    for rid in ids:
        stamp, _, rest = rid.partition("-")
        assert len(stamp) == 16 and stamp.endswith("Z")
        assert rest.startswith("my-job-1-")
    assert [r[:16] for r in ids] == sorted(r[:16] for r in ids)  # start-time order at second resolution


def test_record_is_running_while_open(rt: Settings) -> None:
    """run.json exists with status running while the run is open, then is replaced atomically."""
    with runtel.run_span("long") as run:
        assert run.dir is not None
        during = json.loads((run.dir / "run.json").read_text())
        assert during["status"] == "running"
        assert during["end_time"] is None
    after = json.loads((run.dir / "run.json").read_text())
    assert after["status"] == "ok"
    assert not list(run.dir.glob(".run.*.tmp"))


def test_spans_jsonl_lines_are_otlp_json(rt: Settings) -> None:
    """Each line is an ExportTraceServiceRequest with lowerCamelCase keys, hex ids and string int64s."""
    with runtel.run_span("fmt") as run:
        with runtel.block("b", count=7):
            pass
    lines = (run.dir / "spans.jsonl").read_text().splitlines()  # type: ignore[union-attr]
    assert lines
    for line in lines:
        request = json.loads(line)
        assert set(request) == {"resourceSpans"}
        for rs in request["resourceSpans"]:
            assert "resource" in rs and "scopeSpans" in rs
            for ss in rs["scopeSpans"]:
                assert ss["scope"]["name"] == "runtel"
                for span in ss["spans"]:
                    assert len(span["traceId"]) == 32 and int(span["traceId"], 16)
                    assert len(span["spanId"]) == 16
                    assert isinstance(span["kind"], int)
                    assert isinstance(span["startTimeUnixNano"], str)
                    assert all("_" not in key for key in span)
    b = next(s for line in lines for rs in json.loads(line)["resourceSpans"] for ss in rs["scopeSpans"]
             for s in ss["spans"] if s["name"] == "b")
    assert {"key": "count", "value": {"intValue": "7"}} in b["attributes"]


def test_exception_is_recorded_and_reraised(rt: Settings) -> None:
    """An exception ends the run with status error, an exception event, and is re-raised unchanged."""
    with pytest.raises(ZeroDivisionError):
        with runtel.run_span("fails") as run:
            1 / 0  # noqa: B018
    record, spans = read_run(run.dir)  # type: ignore[arg-type]
    assert record["status"] == "error"
    assert record["error"]["type"] == "builtins.ZeroDivisionError"
    root = spans[0]
    assert root.status_code == 2
    assert root.attributes[semconv.ERROR_TYPE] == "ZeroDivisionError"
    assert [e["name"] for e in root.events] == ["exception"]
    assert root.events[0]["attributes"]["exception.type"] == "ZeroDivisionError"


@pytest.mark.parametrize(
    ("exc", "status", "span_code"),
    [
        (KeyboardInterrupt(), "interrupted", 2),
        (SystemExit(3), "error", 2),
        (SystemExit(0), "ok", 1),
    ],
)
def test_base_exceptions(rt: Settings, exc: BaseException, status: str, span_code: int) -> None:
    """KeyboardInterrupt and SystemExit are recorded, classified, and re-raised."""
    with pytest.raises(type(exc)):
        with runtel.run_span("base") as run:
            raise exc
    record, spans = read_run(run.dir)  # type: ignore[arg-type]
    assert record["status"] == status
    assert spans[0].status_code == span_code


async def _async_run(name: str) -> runtel.Run:
    async with runtel.run_span(name) as run:
        async with runtel.block("async-block"):
            pass
    return run


def test_async_with_run_span(rt: Settings) -> None:
    """run_span and block work with async with; the record is finalised off the event loop."""
    import asyncio

    run = asyncio.run(_async_run("async-run"))
    record, spans = read_run(run.dir)  # type: ignore[arg-type]
    assert record["status"] == "ok"
    assert span_names(spans) == ["async-run", "async-block"]
    assert spans[1].parent_span_id == spans[0].span_id


def test_nested_run_is_a_child_run(rt: Settings, runs_dir: Path) -> None:
    """A run_span inside a run is a child run span with its own folder that names its parent."""
    with runtel.run_span("sweep") as outer:
        with runtel.run_span("trial", config={"x": 1}) as inner:
            with runtel.block("work"):
                pass
            assert runtel.current_run() is inner
        assert runtel.current_run() is outer
    assert inner.dir != outer.dir
    assert inner.trace_id == outer.trace_id
    inner_record, inner_spans = read_run(inner.dir)  # type: ignore[arg-type]
    assert inner_record["parent"]["run_id"] == outer.id
    assert inner_spans[0].parent_span_id == outer.span_id
    assert span_names(inner_spans) == ["trial", "work"]
    _, outer_spans = read_run(outer.dir)  # type: ignore[arg-type]
    assert span_names(outer_spans) == ["sweep"]


def test_user_span_becomes_parent(rt: Settings) -> None:
    """A run started inside the application's own span joins that span's trace."""
    from opentelemetry import trace

    with runtel.run_span("outer") as outer:
        tracer = trace.get_tracer("app")
        with tracer.start_as_current_span("request") as request:
            with runtel.run_span("inner") as inner:
                pass
    assert inner.trace_id == outer.trace_id
    record, spans = read_run(inner.dir)  # type: ignore[arg-type]
    assert spans[0].parent_span_id == format(request.get_span_context().span_id, "016x")
    _, outer_spans = read_run(outer.dir)  # type: ignore[arg-type]
    assert "request" in span_names(outer_spans)  # a foreign instrumentation's span lands in the run's file


def test_set_attributes(rt: Settings) -> None:
    """Run.set_attributes reaches the span (flattened) and run.json (full), with secrets redacted."""
    with runtel.run_span("attrs") as run:
        run.set_attributes(dataset={"name": "cifar", "size": 50000}, api_token="abc123secret")
    record, spans = read_run(run.dir)  # type: ignore[arg-type]
    assert record["attributes"]["dataset"] == {"name": "cifar", "size": 50000}
    assert record["attributes"]["api_token"] == "[REDACTED]"
    assert spans[0].attributes["dataset.name"] == "cifar"
    assert spans[0].attributes["api_token"] == "[REDACTED]"
    assert "abc123secret" not in (run.dir / "spans.jsonl").read_text()  # type: ignore[union-attr]


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    __str__ = __repr__


def test_odd_config_values_never_raise(rt: Settings) -> None:
    """Configs with cycles, raising reprs, huge strings and odd keys are recorded safely."""
    import enum
    from dataclasses import dataclass

    class Color(enum.Enum):
        RED = "red"

    @dataclass
    class Opt:
        lr: float = 0.1

    cyclic: dict[str, object] = {"a": 1}
    cyclic["self"] = cyclic
    config = {
        "cyclic": cyclic,
        "bad": _BadRepr(),
        "huge": "x" * 10_000_000,
        1: "int key",
        ("t", 2): {3, 4},
        "path": Path("/tmp/x"),
        "color": Color.RED,
        "opt": Opt(),
        "nan": float("nan"),
        "big": 2**80,
    }
    with runtel.run_span("odd", config=config) as run:
        pass
    record, spans = read_run(run.dir)  # type: ignore[arg-type]
    assert record["status"] == "ok"
    assert record["config"]["opt"] == {"lr": 0.1}
    assert record["config"]["color"] == "red"
    assert len(spans[0].attributes["config.huge"]) <= 4096 + 20
    assert spans[0].attributes["config.opt.lr"] == 0.1


def test_attribute_length_limit_is_configurable(runs_dir: Path) -> None:
    """RUNTEL_ATTRIBUTE_MAX_LENGTH / attribute_max_length caps span attribute strings."""
    with isolated(runs_dir, sampling=False, attribute_max_length=10):
        with runtel.run_span("cap", config={"s": "y" * 100}) as run:
            pass
    _, spans = read_run(run.dir)  # type: ignore[arg-type]
    value = spans[0].attributes["config.s"]
    assert value.startswith("y" * 10) and len(value) < 30


def test_disabled_sdk_writes_nothing(runs_dir: Path) -> None:
    """OTEL_SDK_DISABLED=true makes run_span, block and trace no-ops that write no files."""
    @runtel.trace
    def work() -> int:
        return 42

    with isolated(runs_dir, disabled=True):
        with runtel.run_span("off") as run:
            with runtel.block("b"):
                assert work() == 42
            run.set_attributes(x=1)
            assert runtel.current_run() is run
        assert not run.enabled and run.dir is None
    assert list(runs_dir.iterdir()) == []


def test_unwritable_dir_logs_once_and_code_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A run folder that cannot be created logs one warning; the user's code runs on without a record."""
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with isolated(blocker / "runs", sampling=False, strict=False):
        results = []
        for i in range(3):
            with runtel.run_span("nodir") as run:
                with runtel.block("b"):
                    results.append(i)
            assert run.dir is None
    assert results == [0, 1, 2]
    warnings = [r for r in caplog.records if "cannot create the run folder" in r.getMessage()]
    assert len(warnings) == 1
    assert str(blocker) in warnings[0].getMessage()


def test_output_dir_gets_a_copy_of_the_record(rt: Settings, tmp_path: Path) -> None:
    """run_span(output_dir=...) also writes the run record next to the job's outputs."""
    out = tmp_path / "outputs"
    with runtel.run_span("crumbs", output_dir=out) as run:
        pass
    copy = json.loads((out / f"runtel-{run.id}.json").read_text())
    assert copy["id"] == run.id and copy["status"] == "ok"


def test_seed_is_recorded(rt: Settings) -> None:
    """run_span(seed=...) seeds random and records the seed; seed=True generates one."""
    import random

    with runtel.run_span("seeded", seed=123) as run:
        first = random.random()
    with runtel.run_span("seeded", seed=123):
        second = random.random()
    assert first == second
    record, spans = read_run(run.dir)  # type: ignore[arg-type]
    assert record["seed"] == 123 and spans[0].attributes[semconv.SEED] == 123
    with runtel.run_span("generated", seed=True) as run2:
        pass
    assert isinstance(run2.seed, int)
    assert read_run(run2.dir)[0]["seed"] == run2.seed  # type: ignore[arg-type]


def test_large_configs_keep_all_attributes(rt: Settings) -> None:
    """A run span with hundreds of config keys keeps them all (runtel's provider raises the 128 default)."""
    config = {f"k{i}": i for i in range(300)}
    with runtel.run_span("wide", config=config) as run:
        pass
    _, spans = read_run(run.dir)  # type: ignore[arg-type]
    assert sum(1 for k in spans[0].attributes if k.startswith("config.k")) == 300


def test_seeding_does_not_repeat_trace_or_span_ids(rt: Settings) -> None:
    """Two runs seeded alike still get distinct trace and span ids (ids do not come from `random`)."""
    ids = []
    for _ in range(2):
        with runtel.run_span("same-seed", seed=7) as run:
            with runtel.block("b") as blk:
                pass
        ids.append((run.trace_id, blk.span.get_span_context().span_id))
    assert ids[0][0] != ids[1][0] and ids[0][1] != ids[1][1]


def test_metric_line_only_for_runs_that_measured_something(runs_dir: Path) -> None:
    """A run whose edges reused a sample taken before it began writes no metric line (the line would
    report a pre-run measurement under its id); a run that took a sample of its own writes one, and
    both keep their usage summary."""
    from runtel import _sdk

    with isolated(runs_dir, sampling=True, sample_interval=30, metric_interval=30, gpu_backend="none"):
        with runtel.run_span("first") as first:
            pass  # the first run of a process takes fresh edge samples
        lines = (first.dir / "metrics.jsonl").read_text().splitlines()  # type: ignore[operator]
        assert len(lines) == 1
        points = [p for m in json.loads(lines[0])["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
                  for p in (m.get("sum") or m.get("gauge"))["dataPoints"]]
        assert points and all(int(p["timeUnixNano"]) >= first.start_time_ns for p in points)
        runtime = _sdk.get_runtime()
        assert runtime is not None and runtime.monitor is not None and runtime.monitor.sampler is not None
        sampler = runtime.monitor.sampler
        time.sleep(0.2)  # past the loop's start: no background tick for the next 30 s
        seen = {"reused": 0, "fresh": 0}
        for _ in range(40):  # a loaded machine may take longer than EDGE_REUSE_S to start a run; retry
            latest = sampler.latest
            assert latest is not None
            stale = latest._replace(time_ns=time.time_ns() - 1_000_000, monotonic_s=time.monotonic())
            sampler.latest = stale  # "taken 1 ms ago, before the run"
            with runtel.run_span("short") as run:
                pass
            record = read_record(run.dir)  # type: ignore[arg-type]
            assert record["resource_usage"]["samples"] >= 1
            if sampler.latest is stale:  # both edges reused the pre-run sample
                seen["reused"] += 1
                assert not (run.dir / "metrics.jsonl").exists()  # type: ignore[operator]
            else:
                seen["fresh"] += 1
                assert sampler.latest.time_ns >= run.start_time_ns
                assert (run.dir / "metrics.jsonl").read_text().count("\n") == 1  # type: ignore[operator]
            if seen["reused"] >= 3:
                break
        assert seen["reused"] >= 1, seen


def test_reproduce_script_of_back_to_back_runs(rt: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of one process reuse the rendered reproduce.sh: each names its own run id, and a different
    command line or working directory gives a different script."""
    argv = ["train.py", "--lr", "0.1", "it's quoted"]
    with runtel.RunSpan("a", _argv=argv) as a:
        pass
    with runtel.RunSpan("b", _argv=argv) as b:
        pass
    text_a = (a.dir / "reproduce.sh").read_text()  # type: ignore[operator]
    text_b = (b.dir / "reproduce.sh").read_text()  # type: ignore[operator]
    assert a.id in text_a and b.id not in text_a
    assert b.id in text_b and a.id not in text_b
    assert text_b == text_a.replace(a.id, b.id)
    with runtel.RunSpan("c", _argv=[*argv[:-1], "other"]) as c:
        pass
    text_c = (c.dir / "reproduce.sh").read_text()  # type: ignore[operator]
    assert text_c.splitlines()[-1].endswith("train.py --lr 0.1 other") and c.id in text_c
    monkeypatch.chdir(tmp_path)
    with runtel.RunSpan("d", _argv=[*argv[:-1], "other"]) as d:
        pass
    text_d = (d.dir / "reproduce.sh").read_text()  # type: ignore[operator]
    assert f"cd -- {tmp_path}" in text_d and f"cd -- {tmp_path}" not in text_c


def test_a_notebook_kernel_run_records_its_notebook_and_is_named_after_it(rt: Settings, tmp_path: Path) -> None:
    """Under a Jupyter kernel (argv ipykernel_launcher, JPY_SESSION_NAME set) the run records the notebook
    path and takes its name from it; reproduce.sh says a kernel session cannot be re-run."""
    import runtel
    from runtel.recording.lifecycle import RunSpan

    notebook = str(tmp_path / "analysis" / "Explore Data.ipynb")
    runtel.configure(dir=str(rt.dir), sampling=False, env={**os.environ, "JPY_SESSION_NAME": notebook})
    argv = [str(tmp_path / "ipykernel_launcher.py"), "-f", "/tmp/kernel-123.json"]
    with RunSpan(None, _argv=argv) as run:
        pass
    record = json.loads((run.dir / "run.json").read_text())
    assert record["notebook"] == notebook
    assert run.name == "Explore Data" and record["name"] == "Explore Data"
    script = (run.dir / "reproduce.sh").read_text()
    assert "notebook kernel session" in script and "cannot be re-run" in script


def test_a_run_without_a_name_is_named_after_the_program(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """``python job.py`` gives ``job``; ``python -m pkg`` (argv[0] ``.../pkg/__main__.py``) gives ``pkg``."""
    import subprocess
    import sys

    pkg = tmp_path / "servekit"
    pkg.mkdir()
    code = "import runtel\nwith runtel.run_span() as run:\n    print(run.name)\n"
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(code)
    (tmp_path / "job.py").write_text(code)
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    names = [subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60, check=True).stdout.strip() for args in (["job.py"], ["-m", "servekit"])]
    assert names == ["job", "servekit"]
