"""The write side in a hostile world (issue 19): colliding ids, clock steps, bad arguments, hostile
exceptions, a run_span shared between threads. Whatever happens, the user's code runs and the
user's exception is the one that propagates."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace as otel_trace

import runtel
from runtel import _context
from runtel.config import Settings
from runtel.errors import ConfigError
from runtel.recording import lifecycle
from runtel.rundir.schema import RECORD_FILE
from runtel.testing import isolated, read_run


class Unprintable:
    """An object whose text cannot be had: ``str`` and ``repr`` raise."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class HostileError(Exception):
    """A user exception whose ``__str__`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("str of the user's exception failed")


@pytest.fixture
def lenient(runs_dir: Path) -> Iterator[Settings]:
    """A runtime as users have it: not strict, wrong arguments warned about and coerced."""
    with isolated(runs_dir, sampling=False, strict=False) as s:
        yield s


def _records(runs_dir: Path) -> list[dict[str, Any]]:
    return [json.loads((d / RECORD_FILE).read_text(encoding="utf-8")) for d in sorted(runs_dir.iterdir()) if d.is_dir()]


# --- run ids ---------------------------------------------------------------------------------------


def test_thousands_of_same_name_runs_each_get_a_folder(lenient: Settings, runs_dir: Path) -> None:
    """3,000 runs of one name in one process: 3,000 folders, each with its record (no 'goes on without')."""
    ids = []
    for _ in range(3000):
        with runtel.run_span("same", telemetry="off") as run:
            ids.append(run.id)
            assert run.dir is not None
    assert len(set(ids)) == 3000
    assert sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) == sorted(ids)


def test_a_taken_folder_means_a_new_suffix(rt: Settings, runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process took the folder (same second, same suffix): the run draws again and keeps a record."""
    real = lifecycle.new_run_id
    taken = real("clash")
    (runs_dir / taken).mkdir()
    calls = iter([taken])
    monkeypatch.setattr(lifecycle, "new_run_id", lambda name, now=None: next(calls, None) or real(name, now))
    with runtel.run_span("clash") as run:
        pass
    assert run.id != taken and run.dir is not None
    assert json.loads((run.dir / RECORD_FILE).read_text(encoding="utf-8"))["status"] == "ok"
    assert list((runs_dir / taken).iterdir()) == []


# --- clock steps -----------------------------------------------------------------------------------


def test_wall_clock_stepped_back_mid_run_gives_a_true_duration(rt: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Duration from the monotonic clock; the wall-clock times are recorded as they were read."""
    real = time.time_ns
    with runtel.run_span("stepped") as run:
        time.sleep(0.05)
        monkeypatch.setattr(time, "time_ns", lambda: real() - 3600 * 10**9)
    monkeypatch.undo()
    record, _ = read_run(run.dir)  # type: ignore[arg-type]
    assert 0.05 <= record["duration_s"] < 3600
    assert int(record["end_time_unix_nano"]) < int(record["start_time_unix_nano"])  # as the clock said


# --- bad arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "check"),
    [
        ({"tags": 5}, lambda r: r["tags"] == {}),
        ({"tags": {Unprintable(): "v", "k": Unprintable()}}, lambda r: r["tags"]["k"] == "<unprintable Unprintable>"),
        ({"tags": "team=vision"}, lambda r: r["tags"] == {"team": "vision"}),
        ({"name": 123}, lambda r: r["name"] == "123"),
        ({"name": b"x"}, lambda r: r["name"] == "x"),
        ({"output_dir": 123}, lambda r: "output_dir" not in r),
        ({"telemetry": "bogus"}, lambda r: r["telemetry"] == "full"),
        ({"seed": "not a seed"}, lambda r: r["seed"] is None),
        ({"config": {Unprintable(): 1, "lr": 0.1}}, lambda r: r["config"]["lr"] == 0.1),
        ({"config": {"a": {Unprintable(): 1, "b": 2}}}, lambda r: r["config"]["a"]["b"] == 2),
    ],
)
def test_bad_arguments_are_coerced_with_a_warning(lenient: Settings, runs_dir: Path, caplog: pytest.LogCaptureFixture,
                                                  kwargs: dict[str, Any], check: Any) -> None:
    ran = []
    with runtel.run_span(**kwargs) as run:
        ran.append(True)
    assert ran == [True]
    [record] = _records(runs_dir)
    assert record["id"] == run.id and record["status"] == "ok"
    assert check(record), record


def test_bad_arguments_raise_config_error_in_strict_mode(rt: Settings) -> None:
    for kwargs in ({"tags": 5}, {"name": b"x"}, {"output_dir": 123}, {"telemetry": "bogus"}):
        with pytest.raises(ConfigError):
            runtel.run_span(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"telemetry": "bogus"}, {"telemetry": 5}, {"sampling": "maybe"},
                                    {"sampling": 1}, {"dir": 123}, {"attribute_max_length": 1.5},
                                    {"exporters": [1]}])
def test_configure_rejects_unknown_values(runs_dir: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        runtel.configure(**kwargs)


def test_bad_span_limit_variable_is_dropped_with_a_warning(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=abc made the SDK's import raise at run start; now the run records."""
    code = ("import runtel\nwith runtel.run_span('limits') as run:\n    print('ran', run.enabled)\n")
    env = {**clean_env, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "abc", "RUNTEL_DIR": str(tmp_path / "runs")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ran True"
    assert "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT" in proc.stderr and "Traceback" not in proc.stderr
    [folder] = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))["status"] == "ok"


# --- property tests: arbitrary argument types and values -------------------------------------------

_ANY = st.deferred(lambda: st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), st.binary(max_size=20),
    st.builds(Unprintable), st.builds(object), st.just(float("nan")), st.just(2**200),
    st.lists(_ANY, max_size=3), st.dictionaries(st.one_of(st.text(max_size=5), st.integers(), st.builds(Unprintable)),
                                                _ANY, max_size=3),
    st.tuples(_ANY, _ANY),
))
_NOT_A_PATH = st.one_of(st.none(), st.integers(), st.builds(Unprintable), st.binary(max_size=0), st.floats())
_KWARGS = st.dictionaries(st.text(min_size=1, max_size=8).filter(str.isidentifier), _ANY, max_size=3)
_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(name=_ANY, tags=_ANY, config=_ANY, output_dir=_NOT_A_PATH, seed=_ANY, telemetry=_ANY, attributes=_KWARGS)
def test_run_span_takes_anything(lenient: Settings, name: Any, tags: Any, config: Any, output_dir: Any, seed: Any,
                                 telemetry: Any, attributes: dict[str, Any]) -> None:
    ran = []
    if isinstance(seed, int) and not isinstance(seed, bool):
        seed = seed % 2**32
    with runtel.run_span(name, tags=tags, config=config, output_dir=output_dir, seed=seed, telemetry=telemetry,
                         **attributes) as run:
        ran.append(run.id)
        run.set_attributes(**attributes)
    assert ran == [run.id]
    assert _context.current_run() is None


@_SETTINGS
@given(name=_ANY, attributes=_KWARGS, later=_KWARGS)
def test_block_takes_anything(lenient: Settings, name: Any, attributes: dict[str, Any], later: dict[str, Any]) -> None:
    ran = []
    with runtel.run_span("blocks") as run:
        with runtel.block(name, **attributes) as b:
            b.set_attributes(**later)
            ran.append(True)
        assert _context.current_run() is run
    assert ran == [True]


@_SETTINGS
@given(name=_ANY, attributes=_ANY, capture=_ANY, capture_return=_ANY, capture_limit=_ANY, stage=_ANY,
       args=st.lists(_ANY, max_size=3), result=_ANY)
def test_trace_takes_anything(lenient: Settings, name: Any, attributes: Any, capture: Any, capture_return: Any,
                              capture_limit: Any, stage: Any, args: list[Any], result: Any) -> None:
    @runtel.trace(name=name, attributes=attributes, capture=capture, capture_return=capture_return,
                  capture_limit=capture_limit, stage=stage)
    def fn(*a: Any) -> Any:
        return result

    with runtel.run_span("traced"):
        assert fn(*args) is result


@_SETTINGS
@given(name=_ANY, metadata=_ANY, partial_limit=_ANY, kind=st.sampled_from(["file", "missing", "other"]),
       other=_NOT_A_PATH)
def test_add_artifact_takes_anything(lenient: Settings, tmp_path: Path, name: Any, metadata: Any, partial_limit: Any,
                                     kind: str, other: Any) -> None:
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"weights")
    path = {"file": str(artifact), "missing": str(tmp_path / "nope"), "other": other}[kind]
    with runtel.run_span("artifacts") as run:
        entry = run.add_artifact(name, path, metadata, partial_limit=partial_limit)
    assert isinstance(entry, dict)


# --- the user's exception is the one that propagates ----------------------------------------------


def test_block_reraises_a_hostile_exception_unchanged_and_detaches(rt: Settings) -> None:
    exc = HostileError()
    with runtel.run_span("hostile") as run:
        before = otel_trace.get_current_span()
        with pytest.raises(HostileError) as info:
            with runtel.block("b"):
                raise exc
        assert info.value is exc
        assert otel_trace.get_current_span() is before  # the block's context was left
    _, spans = read_run(run.dir)  # type: ignore[arg-type]
    block = next(s for s in spans if s.name == "b")
    assert block.status_code == 2
    assert block.events[0]["attributes"]["exception.message"] == "<unprintable HostileError>"


def test_trace_reraises_a_hostile_exception_unchanged(rt: Settings) -> None:
    exc = HostileError()

    @runtel.trace
    def plain() -> None:
        raise exc

    @runtel.trace(capture=True)
    def captured(x: int) -> None:
        raise exc

    @runtel.trace
    async def coro() -> None:
        raise exc

    @runtel.trace
    def gen() -> Iterator[int]:
        yield 1
        raise exc

    with runtel.run_span("hostile") as run:
        for call in (plain, lambda: captured(1), lambda: asyncio.run(coro()), lambda: list(gen())):
            with pytest.raises(HostileError) as info:
                call()
            assert info.value is exc
        assert _context.current_run() is run


def test_run_span_reraises_a_hostile_exception_and_records_it(rt: Settings) -> None:
    exc = HostileError()
    with pytest.raises(HostileError) as info:
        with runtel.run_span("hostile") as run:
            raise exc
    assert info.value is exc
    record, _ = read_run(run.dir)  # type: ignore[arg-type]
    assert record["status"] == "error"
    assert record["error"] == {"type": f"{__name__}.HostileError", "message": "<unprintable HostileError>"}


# --- one run_span object, several entries at once ----------------------------------------------------


def test_shared_run_span_entered_from_two_threads(rt: Settings, runs_dir: Path) -> None:
    """Each thread's exit ends the run its own entry opened; no run is left 'running'."""
    shared = runtel.run_span("shared")
    inside = threading.Barrier(2)
    seen: dict[int, str] = {}

    def work(i: int) -> None:
        with shared as run:
            inside.wait(timeout=30)
            seen[i] = run.id
            assert _context.current_run() is run
            inside.wait(timeout=30)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen.values())) == 2
    records = _records(runs_dir)
    assert sorted(r["id"] for r in records) == sorted(seen.values())
    assert [r["status"] for r in records] == ["ok", "ok"]


def test_shared_run_span_in_two_tasks_and_nested(rt: Settings, runs_dir: Path) -> None:
    shared = runtel.run_span("shared")

    async def task() -> str:
        async with shared as run:
            await asyncio.sleep(0.01)
            assert _context.current_run() is run
        return run.id

    async def main() -> list[str]:
        return list(await asyncio.gather(task(), task()))

    ids = asyncio.run(main())
    with shared as outer, shared as inner:
        assert inner.parent_id == outer.id
    assert len({*ids, outer.id, inner.id}) == 4
    assert [r["status"] for r in _records(runs_dir)] == ["ok"] * 4


def test_disk_full_message_is_one_line(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """The writer's report of a full disk is a single line, logged once however many files fail."""
    import errno

    from runtel._guard import reset_log_once
    from runtel.rundir.writer import report_write_error

    reset_log_once()
    caplog.set_level(logging.WARNING, logger="runtel")
    for name in ("run.json", "spans.jsonl", "metrics.jsonl"):
        report_write_error(tmp_path / name, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "it")
    [line] = [r.getMessage() for r in caplog.records]
    assert "no space left" in line and "\n" not in line


def test_huge_block_attributes_are_cut_before_they_are_scanned(rt: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 10 MB string, a 10^6-item list and a 10^6-key dict as block attributes: the scrubber sees text no longer
    than the limit plus its scan margin and a bounded number of values (so its cost is the limit's, not the
    input's), and the span holds what the limits promise: the cut string, the list's first 256 items, the
    flag; a token the cut goes through is still redacted whole."""
    from runtel.redaction import SCAN_MARGIN, Redactor

    seen: list[int] = []
    counting = False
    original = Redactor.redact_text

    def counted(self: Redactor, text: str) -> str:
        if counting:
            seen.append(len(text))
        return original(self, text)

    monkeypatch.setattr(Redactor, "redact_text", counted)
    big_list = list(range(1_000_000))
    big_dict = {f"k{i}": f"v{i}" for i in range(1_000_000)}
    with runtel.run_span("huge") as run:
        counting = True
        with runtel.block("text", note="password=hunter2 " + "x" * 10_000_000):
            pass
        with runtel.block("containers", ids=big_list, nested={"s": "y" * 10_000_000}, table=big_dict):
            pass
        token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"
        across = "z" * (rt.attribute_max_length - 10) + " " + token + " tail"
        with runtel.block("across", flat=across, nested={"t": across}):
            pass
        counting = False
    limit = rt.attribute_max_length
    assert seen and max(seen) <= limit + SCAN_MARGIN + len("…[truncated]"), max(seen)
    assert len(seen) < 50_000, len(seen)
    spans = {s.name: s for s in read_run(run.dir)[1]}
    note = spans["text"].attributes["note"]
    assert note.startswith("password=[REDACTED]") and note.endswith("…[truncated]") and "hunter2" not in note
    attrs = spans["containers"].attributes
    assert list(attrs["ids"]) == list(range(256)) and attrs["__truncated__"] is True
    assert len(attrs["nested.s"]) <= limit + len("…[truncated]")
    cut = spans["across"].attributes
    assert "ghp_" not in cut["flat"] and "ghp_" not in cut["nested.t"], cut  # once kept: 'ghp_A1b2C3…'
    assert cut["flat"].endswith("…[truncated]") and len(cut["flat"]) == limit + len("…[truncated]")


def test_a_self_referencing_config_and_ints_past_int64_keep_everything_else(rt: Settings, runs_dir: Path) -> None:
    """A cycle in a config is marked where it closes and the keys after it stay whole; ints outside int64 in
    block, span and config attributes become decimal strings and run.log values floats, so every spans and
    metrics line is still OTLP/JSON a protobuf parser (what `runtel export` uses) accepts."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    cyc: dict[str, Any] = {"a": 1}
    cyc["self"] = cyc
    with runtel.run_span("hostile", config={"cyc": cyc, "other": [1, 2, 3], "z": {"k": "v"}, "c": 2**64}) as run:
        with runtel.block("big", over=2**63, under=-(2**63) - 1, edge=2**63 - 1, mixed=[1, 2**70], huge=10**5000):
            otel_trace.get_current_span().set_attribute("user", 2**65)
        run.log(step=2**64, loss=10**400, big=2**70, fine=3)
    record, spans = read_run(run.dir)
    assert record["config"] == {"cyc": {"a": 1, "self": "<cycle>"}, "other": [1, 2, 3], "z": {"k": "v"}, "c": str(2**64)}
    run_span = next(s for s in spans if s.name == "hostile")
    assert list(run_span.attributes["config.other"]) == [1, 2, 3] and run_span.attributes["config.z.k"] == "v"
    big = next(s for s in spans if s.name == "big").attributes
    assert (big["over"], big["under"], big["edge"], big["user"]) == (
        str(2**63), str(-(2**63) - 1), 2**63 - 1, str(2**65))
    assert str(2**70) in big["mixed"] and "bits" in big["huge"]
    series = record["results"]["series"]
    assert series["loss"]["last_text"] == "inf" and series["big"]["last"] == float(2**70)
    assert series["fine"]["last"] == 3 and series["fine"]["last_step"] == 2**64
    for name, message in (("spans.jsonl", ExportTraceServiceRequest), ("metrics.jsonl", ExportMetricsServiceRequest)):
        lines = (run.dir / name).read_text(encoding="utf-8").splitlines()
        assert lines, name
        for line in lines:
            json_format.Parse(line, message())


def test_a_name_value_pair_is_hidden_after_flattening(rt: Settings) -> None:
    """{"name": "DB_PASSWORD", "value": ...} in a block attribute or a config: flattened to X.name / X.value,
    the value is still hidden (Kubernetes env entries, AWS Key/Value tags); other pairs are kept."""
    with runtel.run_span("pairs", config={"env": [{"name": "A"}], "e": {"name": "DB_PASSWORD", "value": "p1"}}) as run:
        with runtel.block("b", env={"name": "DB_PASSWORD", "value": "p2"}, tag={"Key": "API_TOKEN", "Value": "p3"},
                          ok={"name": "lr", "value": 0.1}):
            pass
    spans = {s.name: s.attributes for s in read_run(run.dir)[1]}
    block = spans["b"]
    assert (block["env.value"], block["tag.Value"], block["ok.value"]) == ("[REDACTED]", "[REDACTED]", 0.1)
    assert spans["pairs"]["config.e.value"] == "[REDACTED]"
    assert "p1" not in (run.dir / "spans.jsonl").read_text() and "p2" not in (run.dir / "spans.jsonl").read_text()
