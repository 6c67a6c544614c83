"""``runtel reproduce`` as a new user runs it: the default relative ``./runs``, and a re-run reproduced again.

Each test is the shell session of the audit: a real git repository, ``python job.py`` recording into
``./runs`` (no RUNTEL_DIR), then ``runtel reproduce latest --check`` from the repository, as real
subprocesses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PY = sys.executable

JOB = """\
import runtel
with runtel.run_span("job", seed=True) as run:
    open("out.txt","w").write("x")
    run.add_artifact("out","out.txt")
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path: Path, clean_env: dict[str, str]) -> Path:
    """The audit's repository: job.py committed, runs/ and out.txt ignored, one run recorded into ./runs."""
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "i")
    (repo / ".gitignore").write_text("runs/\nout.txt\n")
    (repo / "job.py").write_text(JOB)
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "j")
    return repo


def _job(repo: Path, env: dict[str, str]) -> None:
    subprocess.run([PY, "job.py"], cwd=repo, env=env, check=True, timeout=60, capture_output=True)


def _reproduce(repo: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "runtel", "reproduce", "latest", "--check", *extra], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)


def _records(repo: Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads((p / "run.json").read_text()) for p in (repo / "runs").iterdir() if p.is_dir()}


def _worktrees(repo: Path) -> int:
    listed = subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True, check=True)
    return len(listed.stdout.splitlines())


def _assert_identical(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "identical" in proc.stdout and "missing" not in proc.stdout and "differs" not in proc.stdout


@pytest.mark.parametrize("edit", ["clean", "dirty"])
def test_default_relative_runs_folder(repo: Path, clean_env: dict[str, str], edit: str) -> None:
    """No RUNTEL_DIR: the re-run lands in ./runs beside the original (not in the worktree) and is identical."""
    if edit == "dirty":
        with (repo / "job.py").open("a") as f:
            f.write("#d\n")
    _job(repo, clean_env)
    (original,) = _records(repo)
    proc = _reproduce(repo, clean_env)
    _assert_identical(proc)
    records = _records(repo)
    assert len(records) == 2
    (rerun,) = [r for name, r in records.items() if name != original]
    # The re-run's record names the repository, not the removed worktree, and the run it reproduces.
    assert rerun["reproduces"] == original
    assert rerun["environment"]["git"]["script"]["toplevel"] == str(repo)
    assert rerun["environment"]["git"]["script"]["dirty"] is (edit == "dirty")
    assert rerun["environment"]["process"]["cwd"] == str(repo)
    place = [rerun["argv"], rerun["environment"]["git"], rerun["environment"]["process"]]
    assert "runtel-reproduce-" not in json.dumps(place)  # (artifact paths do name the worktree they were in)
    assert _worktrees(repo) == 1


def test_relative_dir_option(repo: Path, clean_env: dict[str, str]) -> None:
    """``--dir runs`` (relative) from the repository, and a relative run path, with a dirty tree."""
    with (repo / "job.py").open("a") as f:
        f.write("#d\n")
    _job(repo, clean_env)
    (original,) = _records(repo)
    _assert_identical(_reproduce(repo, clean_env, "--dir", "runs"))
    proc = subprocess.run([PY, "-m", "runtel", "reproduce", f"runs/{original}", "--check"], cwd=repo, env=clean_env,
                          capture_output=True, text=True, timeout=120)
    _assert_identical(proc)


def test_a_rerun_is_itself_reproducible(repo: Path, clean_env: dict[str, str]) -> None:
    """The re-run becomes ``latest``; reproducing it (twice, then with --json, then its reproduce.sh) works."""
    with (repo / "job.py").open("a") as f:
        f.write("#d\n")
    _job(repo, clean_env)
    _assert_identical(_reproduce(repo, clean_env))
    _assert_identical(_reproduce(repo, clean_env))
    proc = _reproduce(repo, clean_env, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [(v["name"], v["verdict"]) for v in out["artifacts"]] == [("out", "identical")]
    records = _records(repo)
    assert len(records) == 4
    chain = {r["id"]: r.get("reproduces") for r in records.values()}
    assert chain[out["rerun"]] == out["run"] and chain[out["run"]] in chain
    # The re-run's reproduce.sh (no runtel involved) re-creates a worktree from the repository, too.
    script = repo / "runs" / out["rerun"] / "reproduce.sh"
    assert "runtel-reproduce-" not in script.read_text().split("mktemp", 1)[0]
    sh = subprocess.run(["bash", str(script)], cwd="/", env=clean_env, capture_output=True, text=True, timeout=120)
    assert sh.returncode == 0, sh.stderr
    (line,) = [x for x in sh.stderr.splitlines() if x.startswith("runtel: re-running in ")]
    worktree = Path(line.split()[3])
    (new,) = [r for name, r in _records(repo).items() if name not in records]
    assert new["reproduces"] == out["rerun"]
    assert new["environment"]["git"]["script"]["toplevel"] == str(repo)
    assert (worktree / "out.txt").read_text() == "x"
    subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=repo, check=True)


@pytest.mark.parametrize("json_flag", [False, True])
def test_vanished_repository_is_one_clear_line(tmp_path: Path, repo: Path, clean_env: dict[str, str],
                                               json_flag: bool) -> None:
    """A run whose repository was deleted since: one error line (a RuntelError with --json), exit 1."""
    runs = tmp_path / "kept-runs"
    env = {**clean_env, "RUNTEL_DIR": str(runs)}
    _job(repo, env)
    shutil.rmtree(repo)
    proc = subprocess.run([PY, "-m", "runtel", "reproduce", "latest", "--check", *(["--json"] if json_flag else [])],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    if json_flag:
        error = json.loads(proc.stdout)
        assert error["type"] == "RuntelError" and f"repository {repo} no longer exists" in error["error"]
    else:
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("runtel: error: ") and f"repository {repo} no longer exists" in line
