"""One bad run folder cannot break the read side: a corpus of corrupted folders through every reader.

The corpus is made in tmp next to two runs recorded by `runtel run`: torn and binary run.json,
100k nested brackets, wrong-typed fields, a FIFO and a directory where run.json should be, and a
spans.jsonl with garbage lines, wrong-typed spans and parent cycles. Every CLI read command, then
``runtel.load`` and ``Tracker``, must go through it without a traceback and still show the good runs.
A 2 GB sparse spans.jsonl without a newline (``truncate``: no disk used) must be read in bounded memory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PY = sys.executable

#: folder -> run.json text of the folders whose run.json cannot be read at all
UNREADABLE = {
    "torn": '{"id": "torn", "status": "o',
    "deep": "[" * 100_000,
    "not-an-object": "[1, 2, 3]",
    "empty": "",
}
#: folder -> (run.json, what the reader must say) for records that parse but hold wrong types
WRONG_TYPES = {
    "wrong-parent": ({"id": "wrong-parent", "status": "ok", "parent": "y"}, "parent"),
    "wrong-many": ({"id": "wrong-many", "status": 3, "duration_s": "long", "tags": [1], "artifacts": {"m": 5},
                    "sources": "s", "process": {"pid": "x"}, "environment": {"git": "no"},
                    "resource_usage": {"max_ram": "x", "energy": [1]}, "start_time_unix_nano": "soon",
                    "config": json.loads("[" * 500 + "]" * 500), "metadata": {"k": 1}}, "duration_s"),
}


def runtel_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "runtel", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    for line in proc.stderr.splitlines():
        assert line.startswith(("runtel: warning:", "runtel: error:")), proc.stderr


def _bad_spans() -> bytes:
    spans = [
        {"traceId": 1, "spanId": 2},  # ids not strings
        {"traceId": "a" * 32, "spanId": "b" * 16, "name": 5, "startTimeUnixNano": "x"},  # a time that is no number
        {"traceId": "a" * 32, "spanId": "c" * 16, "parentSpanId": "c" * 16, "name": "self-parent",
         "attributes": [{"key": 1}, {"key": "k", "value": {"arrayValue": "x"}}, "junk",
                        {"key": "fine", "value": {"stringValue": "v"}}]},
        {"traceId": "a" * 32, "spanId": "d" * 16, "parentSpanId": "e" * 16, "name": "cycle-1"},
        {"traceId": "a" * 32, "spanId": "e" * 16, "parentSpanId": "d" * 16, "name": "cycle-2"},
        {"traceId": "a" * 32, "spanId": "f" * 16, "name": "odd-fields", "events": "x", "links": [1],
         "status": "bad", "attributes": {"not": "a list"}},
    ]
    lines = [
        b'{"resourceSpans": "x"}',
        b'{"resourceSpans": [1, {"scopeSpans": {"spans": 3}}]}',
        bytes(range(256)) * 4,
        b"[" * 100_000,
        b'{"torn": ',
        b"[1, 2]",
        json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode(),
    ]
    return b"\n".join(lines) + b"\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Two good runs and every kind of bad folder beside them."""
    base = tmp_path_factory.mktemp("corpus")
    runs = base / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_"))}
    env["RUNTEL_DIR"] = str(runs)
    good = []
    for name in ("alpha", "beta"):
        proc = runtel_cli(["run", "--name", name, "-q", "--", PY, "-c", "pass"], env, base)
        assert proc.returncode == 0, proc.stderr
    for entry in sorted(p for p in runs.iterdir() if p.is_dir()):
        good.append(json.loads((entry / "run.json").read_text())["id"])
    template = json.loads((runs / good[1] / "run.json").read_text())
    for name, text in UNREADABLE.items():
        (runs / name).mkdir()
        (runs / name / "run.json").write_text(text)
    (runs / "binary").mkdir()
    (runs / "binary" / "run.json").write_bytes(bytes(range(256)) * 16)
    (runs / "fifo").mkdir()
    os.mkfifo(runs / "fifo" / "run.json")  # opening it would block every reader
    (runs / "a-dir").mkdir()
    (runs / "a-dir" / "run.json").mkdir()
    for name, (record, _) in WRONG_TYPES.items():
        (runs / name).mkdir()
        (runs / name / "run.json").write_text(json.dumps(record))
    for name in ("bad-spans", "missing-spans"):
        (runs / name).mkdir()
        (runs / name / "run.json").write_text(json.dumps({**template, "id": name, "name": name,
                                                              "start_time_unix_nano": "1"}))
    (runs / "bad-spans" / "spans.jsonl").write_bytes((runs / good[1] / "spans.jsonl").read_bytes() + _bad_spans())
    (runs / "bad-spans" / "metrics.jsonl").write_bytes(_bad_spans())
    (runs / "spans-dir").mkdir()
    (runs / "spans-dir" / "run.json").write_text(json.dumps({**template, "id": "spans-dir", "start_time_unix_nano": "1"}))
    (runs / "spans-dir" / "spans.jsonl").mkdir()
    (runs / ".runtel-artifacts.jsonl").write_bytes(b"[" * 100_000 + b"\n" + bytes(range(256)) + b"\n" + _bad_spans())
    (runs / "not-a-run").mkdir()  # no run.json: not listed at all
    unreadable = sorted([*UNREADABLE, "binary", "fifo", "a-dir"])
    return {"base": base, "runs": runs, "env": env, "good": good, "unreadable": unreadable,
            "wrong": sorted(WRONG_TYPES)}


def test_ls_lists_good_runs_and_names_corrupt_ones(corpus: dict[str, object]) -> None:
    """ls shows every run: good ones as recorded, bad ones as corrupt with a reason; one stderr line each."""
    env, base = corpus["env"], corpus["base"]
    proc = runtel_cli(["ls", "--json"], env, base)  # type: ignore[arg-type]
    _no_traceback(proc)
    assert proc.returncode == 1
    rows = {r["id"]: r for r in json.loads(proc.stdout)}
    for run_id in corpus["good"]:  # type: ignore[attr-defined]
        assert rows[run_id]["status"] == "ok"
    for run_id in ["bad-spans", "missing-spans", "spans-dir"]:
        assert rows[run_id]["status"] == "ok"
    for run_id in [*corpus["unreadable"], *corpus["wrong"]]:  # type: ignore[misc]
        assert rows[run_id]["status"] == "corrupt", rows.get(run_id)
        assert rows[run_id]["problems"]
    assert "not-a-run" not in rows
    assert "nested too deeply" in rows["deep"]["problems"][0]
    assert "not a regular file" in rows["fifo"]["problems"][0]
    assert "parent" in rows["wrong-parent"]["problems"][0] and rows["wrong-parent"]["parent_run_id"] is None
    warned = [line for line in proc.stderr.splitlines() if line.startswith("runtel: warning:")]
    assert len(warned) == sum(len(r.get("problems", ())) for r in rows.values())
    text = runtel_cli(["ls"], env, base)  # type: ignore[arg-type]
    _no_traceback(text)
    assert all(run_id in text.stdout for run_id in corpus["good"])  # type: ignore[attr-defined]


def test_show_good_runs_unaffected(corpus: dict[str, object]) -> None:
    """show of a good run (by id, and as 'latest') succeeds with the corrupt folders beside it."""
    env, base = corpus["env"], corpus["base"]
    for ref in [*corpus["good"], "latest"]:  # type: ignore[misc]
        proc = runtel_cli(["show", ref], env, base)  # type: ignore[arg-type]
        assert proc.returncode == 0 and proc.stderr == "", (ref, proc.stderr)
    shown = json.loads(runtel_cli(["show", "latest", "--json"], env, base).stdout)  # type: ignore[arg-type]
    assert shown["run"]["id"] in corpus["good"] and shown["problems"] == []  # type: ignore[operator]


def test_show_corrupt_runs_one_line_per_problem(corpus: dict[str, object]) -> None:
    """An unreadable run.json is one error line; wrong types and bad span lines are shown and warned about."""
    env, base, runs = corpus["env"], corpus["base"], corpus["runs"]
    for name in corpus["unreadable"]:  # type: ignore[attr-defined]
        proc = runtel_cli(["show", str(runs / name)], env, base)  # type: ignore[arg-type, operator]
        _no_traceback(proc)
        assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, (name, proc.stderr)
        assert proc.stderr.startswith("runtel: error: cannot read")
    for name, (_, key) in WRONG_TYPES.items():
        for extra in ([], ["--json"]):
            proc = runtel_cli(["show", str(runs / name), *extra], env, base)  # type: ignore[arg-type, operator]
            _no_traceback(proc)
            assert proc.returncode == 1 and key in proc.stderr, proc.stderr
    shown = json.loads(runtel_cli(["show", str(runs / "wrong-many"), "--json"], env, base).stdout)  # type: ignore
    assert shown["run"]["status"] == "corrupt" and "config" not in shown["run"]
    assert shown["run"]["metadata"] == {"k": 1}  # the values of the right type are kept
    proc = runtel_cli(["show", "bad-spans", "--json"], env, base)  # type: ignore[arg-type]
    _no_traceback(proc)
    assert proc.returncode == 1
    names: list[str] = []
    stack = list(json.loads(proc.stdout)["spans"])
    while stack:
        node = stack.pop()
        names.append(node["name"])
        stack.extend(node["children"])
    assert {"alpha", "beta"} & set(names) or len(names) > 3  # the good spans of the copied run
    assert {"self-parent", "cycle-1", "cycle-2", "odd-fields"} <= set(names)
    assert "not a JSON object" in proc.stderr and "malformed span" in proc.stderr
    assert "cycle" in proc.stderr and "malformed attribute" in proc.stderr
    text = runtel_cli(["show", "bad-spans"], env, base)  # type: ignore[arg-type]
    _no_traceback(text)
    assert "self-parent" in text.stdout
    no_spans = runtel_cli(["show", "spans-dir"], env, base)  # type: ignore[arg-type]
    _no_traceback(no_spans)
    assert no_spans.returncode == 1 and "spans-dir" in no_spans.stdout and "not a regular file" in no_spans.stderr


def test_compare_lineage_export_through_the_corpus(corpus: dict[str, object]) -> None:
    """compare, lineage and export work on good runs and fail in one line per problem on bad ones."""
    env, base, runs = corpus["env"], corpus["base"], corpus["runs"]
    a, b = corpus["good"]  # type: ignore[misc]
    ok = runtel_cli(["compare", a, b, "--json"], env, base)  # type: ignore[arg-type]
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
    bad = runtel_cli(["compare", a, "bad-spans", "wrong-many"], env, base)  # type: ignore[arg-type]
    _no_traceback(bad)
    assert bad.returncode == 1 and "bad-spans" in bad.stderr and "wrong-many" in bad.stderr
    unreadable = runtel_cli(["compare", a, str(runs / "deep")], env, base)  # type: ignore[arg-type, operator]
    _no_traceback(unreadable)
    assert unreadable.returncode == 1 and len(unreadable.stderr.splitlines()) == 1
    for target in [a, "latest"]:
        proc = runtel_cli(["lineage", target], env, base)  # type: ignore[arg-type]
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for target in ["wrong-parent", "wrong-many", "bad-spans", str(runs / "torn")]:  # type: ignore[operator]
        proc = runtel_cli(["lineage", target, "--json"], env, base)  # type: ignore[arg-type]
        _no_traceback(proc)
    assert runtel_cli(["lineage", str(runs / "torn")], env, base).returncode == 1  # type: ignore[arg-type, operator]
    (base / "input.txt").write_text("no run made this")  # type: ignore[operator]
    orphan = runtel_cli(["lineage", str(base / "input.txt")], env, base)  # type: ignore[arg-type, operator]
    _no_traceback(orphan)  # the artifact index beside the runs is garbage too
    assert orphan.returncode == 1 and "no recorded run" in orphan.stderr
    assert runtel_cli(["export", "--help"], env, base).returncode == 0  # type: ignore[arg-type]
    # Port 9 (discard) on loopback: nothing listens, so every send fails fast and is reported per run.
    proc = runtel_cli(["export", "--all", "--json", "--endpoint", "http://127.0.0.1:9", "--timeout", "2"],
                      env, base)  # type: ignore[arg-type]
    _no_traceback(proc)
    assert proc.returncode == 1
    results = {r["run_id"]: r for r in json.loads(proc.stdout)["results"]}
    assert set(corpus["good"]) <= set(results)  # type: ignore[arg-type]
    assert all(not results[g]["ok"] and results[g]["error"] for g in corpus["good"])  # type: ignore[attr-defined]


def _copy_run(corpus: dict[str, object], where: Path, name: str, spans_tail: str) -> Path:
    """A copy in ``where`` of the first good run, as run ``name``, with ``spans_tail`` appended to its spans.jsonl."""
    good = Path(str(corpus["runs"])) / corpus["good"][0]  # type: ignore[index]
    copy = where / name
    shutil.copytree(good, copy)
    (copy / "run.json").write_text(json.dumps({**json.loads((good / "run.json").read_text()), "id": name}))
    with (copy / "spans.jsonl").open("a") as f:
        f.write(spans_tail)
    return copy


def test_a_line_that_is_not_otlp_is_warned_about(corpus: dict[str, object], tmp_path: Path) -> None:
    """A spans line that is a JSON object but not an OTLP/JSON request ({"resourceSpans": "str"}) is skipped
    and named by show (tree and --json) and compare, which exit 1 as for any other skipped line."""
    run_dir = _copy_run(corpus, tmp_path, "not-otlp", '{"resourceSpans": "str"}\n')
    env, base = corpus["env"], corpus["base"]
    for args in (["show", str(run_dir)], ["show", str(run_dir), "--json"],
                 ["compare", str(run_dir), str(run_dir)]):
        proc = runtel_cli(args, env, base)  # type: ignore[arg-type]
        _no_traceback(proc)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "run not-otlp: spans.jsonl: 1 line(s) that are not OTLP/JSON" in proc.stderr, (args, proc.stderr)
    shown = json.loads(runtel_cli(["show", str(run_dir), "--json"], env, base).stdout)  # type: ignore[arg-type]
    assert shown["spans"] and any("not OTLP/JSON" in p for p in shown["problems"])


def _damaged(corpus: dict[str, object], where: Path) -> tuple[Path, list[str]]:
    """A copy of a good run with two non-JSON lines and two malformed spans in spans.jsonl (metrics.jsonl intact),
    and the warnings show prints for it."""
    bad_span = {"traceId": 5, "spanId": "b" * 16}
    run_dir = _copy_run(corpus, where, "damaged", "not json\n[1, 2]\n" + json.dumps(
        {"resourceSpans": [{"scopeSpans": [{"spans": [bad_span, {**bad_span, "spanId": "c" * 16}]}]}]}) + "\n")
    show = runtel_cli(["show", str(run_dir)], corpus["env"], corpus["base"])  # type: ignore[arg-type]
    warnings = [line for line in show.stderr.splitlines() if line.startswith("runtel: warning:")]
    assert show.returncode == 1 and warnings == [
        "runtel: warning: run damaged: spans.jsonl: 2 line(s) that are not a JSON object skipped",
        "runtel: warning: run damaged: spans.jsonl: 2 malformed span(s) skipped"], show.stderr
    return run_dir, warnings


def test_chrome_trace_names_the_damaged_file(corpus: dict[str, object], tmp_path: Path) -> None:
    """A damaged spans.jsonl beside an intact metrics.jsonl: export --format chrome-trace warns as show does,
    naming spans.jsonl, not metrics.jsonl."""
    run_dir, expected = _damaged(corpus, tmp_path)
    trace = runtel_cli(["export", "--format", "chrome-trace", "-o", str(tmp_path / "t.json"), str(run_dir)],
                       corpus["env"], corpus["base"])  # type: ignore[arg-type]
    assert "Traceback" not in trace.stderr and trace.returncode == 1, trace.stderr
    assert "metrics.jsonl" not in trace.stderr, trace.stderr
    assert [line for line in trace.stderr.splitlines() if line.startswith("runtel: warning:")] == expected
    problems = json.loads((tmp_path / "t.json").read_text())["otherData"]["problems"]
    assert problems == [line.removeprefix("runtel: warning: ") for line in expected]


def test_report_warns_about_the_damaged_file(corpus: dict[str, object], tmp_path: Path) -> None:
    """report of a run with a damaged spans.jsonl writes the page and warns as show does, one line per kind of
    problem, and exits 1 as show and compare do."""
    run_dir, expected = _damaged(corpus, tmp_path)
    for extra in ([], ["--json"]):
        output = tmp_path / f"r{len(extra)}.html"
        report = runtel_cli(["report", "-o", str(output), str(run_dir), *extra],
                            corpus["env"], corpus["base"])  # type: ignore[arg-type]
        assert "Traceback" not in report.stderr and report.returncode == 1, report.stderr
        assert [line for line in report.stderr.splitlines() if line.startswith("runtel: warning:")] == expected
        assert output.stat().st_size > 0  # the page is written all the same
    out = json.loads(report.stdout)
    assert out["output"] == str(output) and out["problems"] == [w.removeprefix("runtel: warning: ") for w in expected]


def test_load_and_tracker_through_the_corpus(corpus: dict[str, object]) -> None:
    """runtel.load and Tracker read every folder without raising anything but RunNotFound."""
    import runtel
    from runtel.errors import RunNotFound

    runs = Path(str(corpus["runs"]))
    for run_id in corpus["good"]:  # type: ignore[attr-defined]
        loaded = runtel.load(run_id, dir=runs)
        assert loaded.status == "ok" and loaded.problems == [] and loaded.spans
    bad = runtel.load("bad-spans", dir=runs)
    assert bad.status == "ok" and any("malformed span" in p for p in bad.problems)
    assert "problem:" in repr(bad)
    wrong = runtel.load(str(runs / "wrong-parent"))
    assert wrong.status == "corrupt" and wrong.record.get("parent") is None
    for name in corpus["unreadable"]:  # type: ignore[attr-defined]
        with pytest.raises(RunNotFound):
            runtel.load(str(runs / name))

    t = runtel.Tracker(runs)
    ids = t.run_ids()
    assert set(corpus["good"]) <= set(ids)  # type: ignore[arg-type]
    assert set(t.run_ids(status="corrupt")) == {*corpus["unreadable"], *corpus["wrong"]}  # type: ignore[misc]
    assert set(t.run_ids(status="ok")) >= {*corpus["good"], "bad-spans"}  # type: ignore[misc]
    for run_id in ids:
        t.metadata(run_id)
        t.artifacts(run_id)
        t.sources(run_id)
        t.children(run_id)
        lineage = t.lineage(run_id)
        assert lineage.nodes[lineage.root].status == ("corrupt" if run_id in t.run_ids(status="corrupt") else "ok")
    assert t.record("deep")["problems"] and t.record("deep").get("unreadable") is True


def test_debug_flag_shows_the_traceback(corpus: dict[str, object]) -> None:
    """An error is one line; with --debug the traceback comes first."""
    env, base = corpus["env"], corpus["base"]
    plain = runtel_cli(["show", "no-such-run"], env, base)  # type: ignore[arg-type]
    assert plain.returncode == 1 and plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr
    debug = runtel_cli(["--debug", "show", "no-such-run"], env, base)  # type: ignore[arg-type]
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("runtel: error: no run matches")


def test_sparse_2gb_spans_file_is_read_in_bounded_memory(tmp_path: Path, corpus: dict[str, object]) -> None:
    """A 2 GB spans.jsonl with no newline (sparse: no disk used) is skipped by show in at most 200 MB.

    The command runs under a small Python parent that reports its child's peak RSS from
    ``getrusage(RUSAGE_CHILDREN)``, so earlier children of the test process cannot count.
    """
    runs = tmp_path / "runs"
    good = Path(str(corpus["runs"])) / corpus["good"][0]  # type: ignore[index]
    sparse = runs / "sparse"
    sparse.mkdir(parents=True)
    record = json.loads((good / "run.json").read_text())
    (sparse / "run.json").write_text(json.dumps({**record, "id": "sparse"}))
    subprocess.run(["truncate", "-s", "2G", str(sparse / "spans.jsonl")], check=True)
    subprocess.run(["truncate", "-s", "1G", str(sparse / "metrics.jsonl")], check=True)
    assert (sparse / "spans.jsonl").stat().st_size == 2 << 30
    probe = ("import resource, subprocess, sys; "
             "p = subprocess.run([sys.executable, '-m', 'runtel', *sys.argv[1:]], capture_output=True, text=True); "
             "print(p.returncode); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
             "sys.stderr.write(p.stderr)")
    env = {**dict(corpus["env"]), "RUNTEL_DIR": str(runs)}  # type: ignore[call-overload]
    subprocess.run(["truncate", "-s", "1G", str(runs / ".runtel-artifacts.jsonl")], check=True)
    (tmp_path / "input.txt").write_text("x")
    for args in (["show", "sparse"], ["export", "sparse", "--endpoint", "http://127.0.0.1:9", "--timeout", "2"],
                 ["lineage", str(tmp_path / "input.txt")]):
        proc = subprocess.run([PY, "-c", probe, *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        code, peak_kib = (int(x) for x in proc.stdout.split())
        assert "Traceback" not in proc.stderr, proc.stderr
        assert code == 1
        if args[0] != "lineage":
            assert "longer than 16 MiB skipped" in proc.stderr, proc.stderr
        assert peak_kib * 1024 <= 200 * 1024 * 1024, f"{args[0]}: peak RSS {peak_kib} KiB"
