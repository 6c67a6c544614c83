"""The runtel CLI as users run it: real subprocesses, real run folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PY = sys.executable


def runtel_cli(args: list[str], env: dict[str, str], cwd: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "runtel", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60, **kw)  # type: ignore[call-overload]


def _records(runs: Path) -> list[dict[str, object]]:
    return [json.loads((p / "run.json").read_text()) for p in sorted(runs.iterdir()) if (p / "run.json").exists()]


def test_run_exit_code_and_record(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel run` exits with the child's code and records status error with that exit code."""
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    proc = runtel_cli(["run", "--name", "fails", "--tag", "k=v", "--", PY, "-c", "import sys; sys.exit(3)"], env, tmp_path)
    assert proc.returncode == 3, proc.stderr
    (record,) = _records(tmp_path / "runs")
    assert record["status"] == "error" and record["exit_code"] == 3
    assert record["name"] == "fails" and record["tags"] == {"k": "v"}
    assert "runs" in proc.stderr and record["id"] in proc.stderr


def test_run_success_and_child_joins_trace(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A child that uses runtel nests its run inside the wrapper's trace and names the wrapper as parent."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent("""
        import runtel
        with runtel.run_span("child-work", config={"k": 1}):
            with runtel.block("step"):
                pass
    """))
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    proc = runtel_cli(["run", "--name", "wrapper", "--", PY, str(script)], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = {r["name"]: r for r in _records(tmp_path / "runs")}
    wrapper, child = records["wrapper"], records["child-work"]
    assert wrapper["status"] == "ok" and wrapper["exit_code"] == 0
    assert child["trace_id"] == wrapper["trace_id"]
    assert child["parent"]["run_id"] == wrapper["id"]
    assert child["parent"]["span_id"] == wrapper["span_id"]
    shown = runtel_cli(["show", str(wrapper["id"]), "--json"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    tree = json.loads(shown.stdout)["spans"]
    assert tree[0]["name"] == "wrapper"
    assert tree[0]["children"][0]["name"] == "child-work"
    assert tree[0]["children"][0]["children"][0]["name"] == "step"


def test_run_forwards_sigterm(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """SIGTERM to the wrapper reaches the child; the wrapper exits 128+15 and records 'interrupted'."""
    ready = tmp_path / "ready"
    code = f"import pathlib, time; pathlib.Path({str(ready)!r}).write_text('x'); time.sleep(30)"
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    proc = subprocess.Popen([PY, "-m", "runtel", "run", "--", PY, "-c", code], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    (record,) = _records(tmp_path / "runs")
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_killed_wrapper_takes_its_child_along(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """SIGKILL to the wrapper (nothing can be forwarded) still ends the child: its parent-death signal."""
    ready = tmp_path / "ready"
    code = (f"import os, pathlib, time; pathlib.Path({str(ready)!r}).write_text(str(os.getpid())); "
            "time.sleep(60)")
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    proc = subprocess.Popen([PY, "-m", "runtel", "run", "--", PY, "-c", code], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (ready.exists() and ready.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int(ready.read_text())
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{child_pid}/stat").read_text()
        except FileNotFoundError:
            break  # gone (reaped by init)
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            break  # dead, waiting for init to reap it
        time.sleep(0.05)
    else:
        os.kill(child_pid, signal.SIGKILL)
        raise AssertionError("the child outlived its killed wrapper")


def test_run_child_killed_by_signal(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A child killed by SIGKILL gives exit code 137."""
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    proc = runtel_cli(["run", "--", PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], env, tmp_path)
    assert proc.returncode == 137


def test_run_missing_command(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A command that cannot be started gives 127 and one error line, and is recorded as an error."""
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    proc = runtel_cli(["run", "--", "definitely-not-a-command-xyz"], env, tmp_path)
    assert proc.returncode == 127
    assert "cannot start" in proc.stderr and "Traceback" not in proc.stderr
    (record,) = _records(tmp_path / "runs")
    assert record["status"] == "error"


def test_run_unwritable_dir_fails_fast(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """An unwritable --dir exits 2 with one line naming the path, before starting the child."""
    blocker = tmp_path / "blocker"
    blocker.write_text("file, not a folder")
    marker = tmp_path / "started"
    proc = runtel_cli(["run", "--dir", str(blocker / "runs"), "--", PY, "-c",
                       f"open({str(marker)!r}, 'w').close()"], clean_env, tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(blocker) in lines[0]
    assert not marker.exists()


def test_ls_and_show(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """ls lists runs newest first; show accepts an id prefix, a path or 'latest'; --json is machine readable."""
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    for name in ("first", "second"):
        assert runtel_cli(["run", "--name", name, "-q", "--", PY, "-c", "pass"], env, tmp_path).returncode == 0
        time.sleep(0.01)
    listed = json.loads(runtel_cli(["ls", "--json"], env, tmp_path).stdout)
    assert [r["name"] for r in listed] == ["second", "first"]
    assert all(r["status"] == "ok" for r in listed)
    text = runtel_cli(["ls"], env, tmp_path).stdout
    assert "first" in text and "second" in text
    first_id = str(listed[1]["id"])
    by_prefix = json.loads(runtel_cli(["show", first_id[:-2], "--json"], env, tmp_path).stdout)
    assert by_prefix["run"]["id"] == first_id
    by_path = json.loads(runtel_cli(["show", str(listed[1]["dir"]), "--json"], env, tmp_path).stdout)
    assert by_path["run"]["id"] == first_id
    latest = runtel_cli(["show", "latest"], env, tmp_path)
    assert latest.returncode == 0 and "second" in latest.stdout


def test_show_errors_are_one_line(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """Unknown runs and unreadable folders give one stderr line and a non-zero exit, never a traceback."""
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    (tmp_path / "runs" / "broken").mkdir(parents=True)
    (tmp_path / "runs" / "broken" / "run.json").write_text("{not json")
    for args in (["show", "nope"], ["show", str(tmp_path / "runs" / "broken")], ["show", "latest"]):
        proc = runtel_cli(args, env, tmp_path)
        assert proc.returncode == 1, args
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("runtel: error:"), proc.stderr
        assert "Traceback" not in proc.stderr


def test_python_dash_m_and_version(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`python -m runtel --version` works and prints the package version."""
    import runtel

    proc = runtel_cli(["--version"], clean_env, tmp_path)
    assert proc.returncode == 0 and runtel.__version__ in proc.stdout


def test_killed_process_leaves_finished_spans(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """SIGKILL after some spans ended leaves those spans on disk; the run reads as interrupted."""
    ready = tmp_path / "ready"
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import pathlib, time, runtel
        with runtel.run_span("doomed"):
            for i in range(5):
                with runtel.block("step", i=i):
                    pass
            time.sleep(1.0)  # batch delay is 0.2 s: every finished span is exported by now
            pathlib.Path({str(ready)!r}).write_text("x")
            time.sleep(60)
    """))
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    proc = subprocess.Popen([PY, str(script)], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    (record,) = _records(tmp_path / "runs")
    assert record["status"] == "running"
    spans_file = Path(str(record.get("dir") or tmp_path / "runs" / str(record["id"]))) / "spans.jsonl"
    names = [s["name"] for line in spans_file.read_text().splitlines()
             for rs in json.loads(line)["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert names.count("step") == 5
    listed = json.loads(runtel_cli(["ls", "--json"], env, tmp_path).stdout)
    assert listed[0]["status"] == "interrupted"


def test_applications_own_tracer_provider_is_kept(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """With the application's SDK provider installed, runtel adds to it: both see the same spans, one trace."""
    out = tmp_path / "seen.json"
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(f"""
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        import runtel
        with runtel.run_span("app-run") as run:
            with trace.get_tracer("http-client").start_as_current_span("GET /data"):
                pass
        assert trace.get_tracer_provider() is provider
        names = sorted((s.name, format(s.context.trace_id, "032x")) for s in exporter.get_finished_spans())
        json.dump({{"names": names, "trace": run.trace_id, "dir": str(run.dir)}}, open({str(out)!r}, "w"))
    """))
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    proc = subprocess.run([PY, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(out.read_text())
    assert [n for n, _ in seen["names"]] == ["GET /data", "app-run"]
    assert {t for _, t in seen["names"]} == {seen["trace"]}
    spans_text = (Path(seen["dir"]) / "spans.jsonl").read_text()
    assert "GET /data" in spans_text and "app-run" in spans_text


def test_traceparent_from_environment(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A process started with TRACEPARENT records its run as a child of that remote span."""
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs"), "TRACEPARENT": f"00-{trace_id}-{span_id}-01"}
    code = "import runtel\nwith runtel.run_span('joined'):\n    pass\n"
    proc = subprocess.run([PY, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (record,) = _records(tmp_path / "runs")
    assert record["trace_id"] == trace_id
    assert record["parent"]["span_id"] == span_id


def test_show_lists_artifacts_sources_metadata(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel show` prints the run's artifacts, sources and metadata."""
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    code = textwrap.dedent("""
        import pathlib, runtel
        pathlib.Path("model.bin").write_bytes(b"weights")
        with runtel.run_span("producer") as run:
            run.add_artifact("model", "model.bin")
            run.add_metadata(dataset="cifar10")
    """)
    assert subprocess.run([PY, "-c", code], env=env, cwd=tmp_path, timeout=60).returncode == 0
    shown = runtel_cli(["show", "latest"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "artifact  model:" in shown.stdout and "model.bin" in shown.stdout
    assert "metadata  dataset = cifar10" in shown.stdout


def test_standard_resource_variables(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES end up on the Resource of every exported line."""
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs"), "OTEL_SERVICE_NAME": "trainer",
           "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test,team=vision"}
    code = "import runtel\nwith runtel.run_span('res'):\n    pass\n"
    assert subprocess.run([PY, "-c", code], env=env, cwd=tmp_path, timeout=60).returncode == 0
    (folder,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    for line in (folder / "spans.jsonl").read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            attrs = {a["key"]: a["value"].get("stringValue") for a in rs["resource"]["attributes"]}
            assert attrs["service.name"] == "trainer"
            assert attrs["deployment.environment.name"] == "test" and attrs["team"] == "vision"
            assert attrs["host.arch"] in ("amd64", "arm64", "x86", "ppc64", "s390x", "arm32", "ia64", "ppc32")


def test_reproduce_script_reruns_the_job(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """reproduce.sh from a run folder re-runs the same command line (quoting intact) from the original folder."""
    work = tmp_path / "work"
    work.mkdir()
    script = work / "job.py"
    script.write_text(textwrap.dedent("""
        import json, sys, runtel
        with runtel.run_span("job"):
            with open("argv.jsonl", "a") as f:
                f.write(json.dumps(sys.argv[1:]) + "\\n")
    """))
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    args = ["--name", "two words", "--expr", "$HOME and 'quotes'", "--lr=0.1"]
    assert subprocess.run([PY, str(script), *args], env=env, cwd=work, timeout=60).returncode == 0
    (folder,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    reproduce = folder / "reproduce.sh"
    assert reproduce.exists()
    proc = subprocess.run(["bash", str(reproduce)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    runs = [json.loads(line) for line in (work / "argv.jsonl").read_text().splitlines()]
    assert runs == [args, args]
    assert len([p for p in (tmp_path / "runs").iterdir() if p.is_dir()]) == 2


def test_info_json(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel info --json` prints the machine inventory a run would record, redacted like a run."""
    env = {**clean_env, "MY_API_TOKEN": "tok-should-not-appear-123"}
    proc = runtel_cli(["info", "--json"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["level"] == "full"
    assert info["record"]["machine"]["cpu"]["logical_cores"] >= 1
    assert info["resource"]["os.type"] == "linux"
    assert "tok-should-not-appear-123" not in proc.stdout
    text = runtel_cli(["info"], env, tmp_path)
    assert text.returncode == 0 and "machine" in text.stdout.lower()


def test_version_answers_without_building_the_parser(clean_env: dict[str, str], tmp_path: Path) -> None:
    """`runtel --version` loads no sub-command module (start-up cost: the parser imports all of them)."""
    code = ("import sys; from runtel.cli import main; code = main(['--version']); "
            "print(code, sorted(m for m in sys.modules if m.startswith('runtel.cli.')))")
    proc = subprocess.run([PY, "-c", code], env=clean_env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    version_line, result = proc.stdout.splitlines()
    assert version_line.startswith("runtel ") and result == "0 []"


def test_errors_are_json_on_stdout_under_json(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """With --json, a failing command still prints JSON on stdout (the error), besides its stderr line."""
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    proc = runtel_cli(["show", "no-such-run", "--json"], env, tmp_path)
    assert proc.returncode == 1
    assert "runtel: error:" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["type"] == "RunNotFound" and "no-such-run" in out["error"]
