"""A plain child process that records spans without opening a run gets a worker run automatically.

The parent opens a run and starts ``python child.py`` with ``subprocess`` (no ``inject_env``, no
helper in the child); the child uses ``runtel.block``, ``@runtel.trace`` and a plain OpenTelemetry
span, then ends normally, through ``os._exit``, by SIGTERM from the parent, or after exec'ing from a
shell. Each case checks the exact spans on disk, their trace (the parent's) and the worker run's parent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runtel.rundir.reader import list_runs, read_spans

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from opentelemetry import trace as otel_trace
    import runtel

    @runtel.trace
    def step(i):
        return i

    mode = sys.argv[1]
    with runtel.block("child-work"):         # the first span opens the worker run
        for i in range(3):
            step(i)
        with otel_trace.get_tracer("plain").start_as_current_span("plain-otel"):  # runtel's provider by now
            pass
    if mode == "os_exit":
        os._exit(0)                           # no atexit, no flush
    if mode == "configure":                   # settings changed after the worker run opened: no error,
        runtel.configure(sampling=False)      # the worker run closes and the next span opens another
        with runtel.block("after-configure"):
            pass
    if mode in ("sigterm", "sigkill"):
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        time.sleep(60)                        # the parent terminates or kills us
    """
)

PARENT = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys
    import runtel

    mode, runs, child = sys.argv[1], sys.argv[2], sys.argv[3]
    runtel.configure(dir=runs, sampling=False, strict=True)
    with runtel.run_span("parent") as run:
        if mode in ("sigterm", "sigkill"):
            p = subprocess.Popen([sys.executable, child, mode], stdout=subprocess.PIPE, text=True)
            assert p.stdout.readline() == "ready\\n"
            p.send_signal(signal.SIGTERM if mode == "sigterm" else signal.SIGKILL)
            code = p.wait()
        elif mode == "exec":                  # a shell that execs the interpreter
            code = subprocess.run(["sh", "-c", 'exec "$0" "$1" "$2"', sys.executable, child, mode]).returncode
        else:
            code = subprocess.run([sys.executable, child, mode]).returncode
        print(json.dumps({"run": run.id, "trace": format(run.span.get_span_context().trace_id, "032x"),
                          "span": format(run.span.get_span_context().span_id, "016x"), "code": code}))
    """
)


def _drive(tmp_path: Path, clean_env: dict[str, str], mode: str, **env: str) -> tuple[dict[str, Any], Path]:
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "parent.py").write_text(PARENT)
    runs = tmp_path / f"runs-{mode}"
    done = subprocess.run([sys.executable, str(tmp_path / "parent.py"), mode, str(runs), str(tmp_path / "child.py")],
                          env={**clean_env, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), runs


@pytest.mark.parametrize("mode", ["normal", "os_exit", "sigterm", "sigkill", "exec"])
def test_plain_child_gets_a_worker_run(tmp_path: Path, clean_env: dict[str, str], mode: str) -> None:
    """5 spans of the child on disk in a worker run whose parent is the parent run, all in its trace."""
    out, runs = _drive(tmp_path, clean_env, mode)
    records = {r["id"]: r for r in list_runs(runs)}
    assert len(records) == 2
    (child,) = [r for r in records.values() if r["id"] != out["run"]]
    assert child["parent"]["run_id"] == out["run"] and child["parent"]["span_id"] == out["span"]
    assert child["name"] == "child" and child["trace_id"] == out["trace"]
    spans = read_spans(Path(child["dir"]))
    names = sorted(s.name for s in spans if s.attributes.get("runtel.kind") != "run")
    assert names == ["child-work", "plain-otel", "step", "step", "step"]
    assert {s.trace_id for s in spans} == {out["trace"]}
    assert {s.attributes.get("runtel.run.id") for s in spans} == {child["id"]}
    work = next(s for s in spans if s.name == "child-work")
    assert work.parent_span_id == child["span_id"]  # under the worker run's span
    if mode in ("os_exit", "sigkill"):  # the spans were written as they ended; the record could not be closed
        assert child["status"] in ("running", "interrupted") and out["code"] in (0, -9)
    else:
        assert child["status"] == "ok"
    if mode == "sigterm":
        assert out["code"] == 128 + 15  # the worker's SIGTERM handler closed the run, then exited as terminated


def test_plain_child_opt_out(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """RUNTEL_PROPAGATE=false: the child opens no run, records nothing."""
    out, runs = _drive(tmp_path, clean_env, "normal", RUNTEL_PROPAGATE="false")
    assert [r["id"] for r in list_runs(runs)] == [out["run"]]


def test_child_without_a_parent_run_records_nothing(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A script run on its own (no RUNTEL_PARENT_RUN_ID) that uses blocks: no run appears."""
    (tmp_path / "child.py").write_text(CHILD)
    runs = tmp_path / "runs"
    done = subprocess.run([sys.executable, str(tmp_path / "child.py"), "normal"], cwd=tmp_path,
                          env={**clean_env, "RUNTEL_DIR": str(runs)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not runs.exists() or list_runs(runs) == []
    assert os.environ.get("RUNTEL_PARENT_RUN_ID") is None


def test_runtel_run_child_terminated(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel run -- python child.py`, SIGTERM to the wrapper: the child's worker run closes `ok` with its
    5 spans and exits 143; the wrapper's run is `interrupted` (it passed the signal on), not `error`."""
    (tmp_path / "child.py").write_text(CHILD)
    runs = tmp_path / "runs"
    runtel = Path(sys.executable).with_name("runtel")
    wrapper = subprocess.Popen([str(runtel), "run", "-q", "--dir", str(runs), "--", sys.executable,
                                str(tmp_path / "child.py"), "sigterm"], env=clean_env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert wrapper.stdout is not None and wrapper.stdout.readline() == "ready\n"
    wrapper.terminate()
    _, err = wrapper.communicate(timeout=60)
    assert wrapper.returncode == 143, err
    records = list_runs(runs)
    (parent,) = [r for r in records if r["parent"] is None]
    (child,) = [r for r in records if r["parent"] is not None]
    assert parent["status"] == "interrupted" and child["status"] == "ok"
    assert child["parent"]["run_id"] == parent["id"] and child["trace_id"] == parent["trace_id"]
    assert len([s for s in read_spans(Path(child["dir"])) if s.attributes.get("runtel.kind") != "run"]) == 5


def test_configure_after_the_worker_run_opened(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """runtel.configure() in a child after its first span does not raise: the worker run closes (ok, its
    5 spans) and the next span opens a second one, both children of the parent run, in its trace."""
    out, runs = _drive(tmp_path, clean_env, "configure")
    children = [r for r in list_runs(runs) if r["id"] != out["run"]]
    assert len(children) == 2 and all(r["status"] == "ok" for r in children)
    assert all(r["parent"]["run_id"] == out["run"] and r["trace_id"] == out["trace"] for r in children)
    names = sorted(s.name for r in children for s in read_spans(Path(r["dir"]))
                   if s.attributes.get("runtel.kind") != "run")
    assert names == ["after-configure", "child-work", "plain-otel", "step", "step", "step"]


def test_runtel_run_hook_runs_the_users_own_sitecustomize(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel run` puts its start-up hook first on PYTHONPATH; a sitecustomize of the user's own further on
    the path still runs, once, and a program that never imports uvicorn loads nothing of runtel."""
    user = tmp_path / "user_site"
    user.mkdir()
    (user / "sitecustomize.py").write_text("import builtins\nbuiltins.USER_SITE = getattr(builtins, 'USER_SITE', 0) + 1\n")
    probe = "import builtins, sys; print(getattr(builtins, 'USER_SITE', 0), 'runtel' in sys.modules)"
    runtel = Path(sys.executable).with_name("runtel")
    env = {**clean_env, "PYTHONPATH": f"{user}{os.pathsep}{clean_env['PYTHONPATH']}"}
    done = subprocess.run([str(runtel), "run", "-q", "--dir", str(tmp_path / "runs"), "--", sys.executable, "-c", probe],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "False"]  # once in this process


def test_a_failing_user_sitecustomize_is_reported_as_python_reports_it(tmp_path: Path,
                                                                        clean_env: dict[str, str]) -> None:
    """A user's sitecustomize that raises: the error is printed (as Python prints it) and the program still runs."""
    user = tmp_path / "user_site"
    user.mkdir()
    (user / "sitecustomize.py").write_text("raise RuntimeError('broken site')\n")
    runtel = Path(sys.executable).with_name("runtel")
    env = {**clean_env, "PYTHONPATH": f"{user}{os.pathsep}{clean_env['PYTHONPATH']}"}
    done = subprocess.run([str(runtel), "run", "-q", "--dir", str(tmp_path / "runs"), "--", sys.executable, "-c",
                           "print('ran')"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ran"]
    assert "Error in sitecustomize" in done.stderr and "RuntimeError: broken site" in done.stderr


EARLY_SIGNAL = """
import os, signal, subprocess, sys
from runtel.cli import main

real = subprocess.Popen


class SignalledWhileStarting(real):  # SIGTERM reaches the wrapper while it is still starting the command
    def __init__(self, args, *rest, **kwargs):
        if "import time; time.sleep(60)" in args:  # the command, not git or another tool runtel asks
            os.kill(os.getpid(), signal.SIGTERM)
        super().__init__(args, *rest, **kwargs)


subprocess.Popen = SignalledWhileStarting
sys.exit(main(["run", "-q", "--dir", sys.argv[1], "--", sys.executable, "-c", "import time; time.sleep(60)"]))
"""


def test_runtel_run_passes_on_a_signal_that_came_while_starting(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A SIGTERM that reaches `runtel run` before the command's Popen returned is passed on once it has
    (it used to be dropped, and the command ran to its end): the command ends on it, the run is interrupted."""
    runs = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-c", EARLY_SIGNAL, str(runs)], env=clean_env, capture_output=True,
                          text=True, timeout=50)
    assert done.returncode == 128 + 15, done.stderr
    (record,) = list_runs(runs)
    assert record["status"] == "interrupted"
