"""``runtel run -- CMD`` records the user's repository and a command line that ``runtel reproduce`` can re-run.

Two ways a wrapped run could not be re-run, found on 2026-12-06: ``mkdir -p build`` lost "build" to the
``-p PASSWORD`` rule, and the wrapper's own entry point (``.venv/bin/runtel`` inside runtel's checkout)
was taken for the script, so the run recorded runtel's repository and reproduced at runtel's commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PY = sys.executable


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True,
                   capture_output=True)


def _runtel(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "runtel", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _only_run(runs: Path) -> tuple[str, dict[str, object]]:
    (folder,) = [p for p in runs.iterdir() if p.is_dir()]
    return folder.name, json.loads((folder / "run.json").read_text())


def test_a_wrapped_shell_command_records_the_cwd_repository_and_reproduces(
        tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel run -- bash -c "mkdir -p build && ..."` in a repository: that repository, the argv whole, and
    `runtel reproduce` makes the same file in a worktree at the recorded commit."""
    repo = tmp_path / "project"
    repo.mkdir()
    (repo / "data.txt").write_text("v1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "first")
    runs = tmp_path / "runs"
    env = {**clean_env, "RUNTEL_DIR": str(runs)}
    command = "mkdir -p build && cat data.txt > build/out.txt"
    proc = _runtel("run", "--", "bash", "-c", command, cwd=repo, env=env)
    assert proc.returncode == 0, proc.stderr
    run_id, record = _only_run(runs)
    assert record["argv"][-3:] == ["bash", "-c", command]  # type: ignore[index]
    git = record["environment"]["git"]  # type: ignore[index]
    assert set(git) == {"cwd"} and os.path.realpath(git["cwd"]["toplevel"]) == os.path.realpath(repo)
    assert "runtel" not in Path(git["cwd"]["toplevel"]).name

    (repo / "data.txt").write_text("v2, after the run\n")  # the re-run must use the recorded state
    _git(repo, "commit", "-qam", "moved on")
    keep = tmp_path / "rerun"
    proc = _runtel("reproduce", run_id, "--in", str(keep), cwd=repo, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (keep / "build" / "out.txt").read_text() == "v1\n"


def test_a_wrapped_python_script_records_its_own_repository(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel run -- python other/job.py` from outside: the script's repository is the project."""
    repo = tmp_path / "other"
    repo.mkdir()
    (repo / "job.py").write_text("print('ok')\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "first")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    runs = tmp_path / "runs"
    proc = _runtel("run", "--", PY, "-u", str(repo / "job.py"), cwd=outside, env={**clean_env, "RUNTEL_DIR": str(runs)})
    assert proc.returncode == 0, proc.stderr
    _run_id, record = _only_run(runs)
    git = record["environment"]["git"]  # type: ignore[index]
    assert set(git) == {"script"} and os.path.realpath(git["script"]["toplevel"]) == os.path.realpath(repo)


def test_reproduce_sh_refuses_a_command_line_with_a_hidden_password(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A credential hidden in the argv: reproduce.sh says so and exits 1 before running anything (it ran
    ``sshpass -p [REDACTED]`` before), as `runtel reproduce` does."""
    runs = tmp_path / "runs"
    env = {**clean_env, "RUNTEL_DIR": str(runs)}
    proc = _runtel("run", "--", "bash", "-c", "sshpass -p hunter2 true; echo ran > marker.txt", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    run_id, record = _only_run(runs)
    assert "hunter2" not in json.dumps(record)
    (tmp_path / "marker.txt").unlink()
    script = runs / run_id / "reproduce.sh"
    assert "hunter2" not in script.read_text()
    rerun = subprocess.run(["bash", str(script)], cwd="/", env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 1
    assert "redacted values" in rerun.stderr
    assert not (tmp_path / "marker.txt").exists()
    proc = _runtel("reproduce", run_id, cwd=tmp_path, env=env)
    assert proc.returncode != 0 and "redacted values" in proc.stderr
