"""``runtel reproduce --check``: a recorded run re-run from its commit + diff in a worktree, artifacts compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PY = sys.executable

SEEDED = """\
import random, numpy, runtel
with runtel.run_span("job", seed=True) as run:
    values = [random.random() for _ in range(3)] + list(numpy.random.rand(3))
    with open("out.txt", "w") as f:
        f.write(repr(values) + VARIANT + "\\n")
    run.add_artifact("out", "out.txt")
"""

UNSEEDED = """\
import os, runtel
with runtel.run_span("job") as run:
    with open("out.txt", "w") as f:
        f.write(os.urandom(8).hex() + VARIANT + "\\n")
    run.add_artifact("out", "out.txt")
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True,
                   capture_output=True)


def _record_then_move_on(tmp_path: Path, job: str, env: dict[str, str]) -> tuple[Path, str]:
    """Record a run of ``job`` with an uncommitted edit, then commit something else and dirty the tree."""
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "job.py").write_text(job.replace("VARIANT", "' committed'"))
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "first")
    (repo / "src" / "job.py").write_text(job.replace("VARIANT", "' uncommitted'"))  # the run sees a dirty tree
    subprocess.run([PY, "job.py"], cwd=repo / "src", env=env, check=True, timeout=60)
    (repo / "src" / "job.py").write_text(job.replace("VARIANT", "' later'"))
    _git(repo, "commit", "-qam", "moved on")
    (repo / "src" / "job.py").write_text(job.replace("VARIANT", "' dirtied later'"))
    (folder,) = [p for p in Path(env["RUNTEL_DIR"]).iterdir() if p.is_dir()]
    record = json.loads((folder / "run.json").read_text())
    assert record["environment"]["git"]["script"]["dirty"] is True
    assert (folder / "git.diff").is_file()
    return repo, str(record["id"])


def _reproduce(run_id: str, env: dict[str, str], cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "runtel", "reproduce", run_id, "--check", *extra], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_seeded_job_reproduces_identically(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """Seeded with seed=True (random and numpy): the re-run from another cwd writes an identical artifact."""
    runs = tmp_path / "runs"
    env = {**clean_env, "RUNTEL_DIR": str(runs)}
    repo, run_id = _record_then_move_on(tmp_path, SEEDED, env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Faked into the record (cheaper than a second venv): a package the re-run lacks, a redacted variable.
    record_file = runs / run_id / "run.json"
    record = json.loads(record_file.read_text())
    record["environment"]["packages"]["ghost-package"] = "0.1"
    record["environment"]["env"]["WANDB_API_KEY"] = "[REDACTED]"
    record_file.write_text(json.dumps(record))
    proc = _reproduce(run_id, {**clean_env, "RUNTEL_DIR": str(runs)}, elsewhere)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "identical" in proc.stdout and "differs" not in proc.stdout
    assert "the package set differs from the record: -ghost-package 0.1" in proc.stderr
    assert "not restored (redacted when recorded): WANDB_API_KEY" in proc.stderr
    # The user's checkout is untouched and the temporary worktree is gone.
    assert "dirtied later" in (repo / "src" / "job.py").read_text()
    listed = subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True, check=True)
    assert len(listed.stdout.splitlines()) == 1
    assert not (repo / "src" / "out.txt").read_text().endswith("dirtied later\n")


def test_non_deterministic_job_differs(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A job writing random bytes: exit 1 and "differs"; --in keeps the worktree with the diff applied."""
    runs = tmp_path / "runs"
    env = {**clean_env, "RUNTEL_DIR": str(runs)}
    _repo, run_id = _record_then_move_on(tmp_path, UNSEEDED, env)
    into = tmp_path / "kept"
    proc = _reproduce(run_id, env, Path("/"), "--in", str(into), "--json")
    assert proc.returncode == 1, proc.stderr
    verdicts = json.loads(proc.stdout)["artifacts"]
    assert [(v["name"], v["verdict"]) for v in verdicts] == [("out", "differs")]
    assert "' uncommitted'" in (into / "src" / "job.py").read_text()


@pytest.mark.parametrize("edit", ["truncated", "redacted"])
def test_unappliable_diff_is_refused(tmp_path: Path, clean_env: dict[str, str], edit: str) -> None:
    """A truncated or redacted git.diff cannot restore the code: one clear line, exit 1, nothing run."""
    runs = tmp_path / "runs"
    env = {**clean_env, "RUNTEL_DIR": str(runs)}
    _repo, run_id = _record_then_move_on(tmp_path, SEEDED, env)
    diff = runs / run_id / "git.diff"
    if edit == "truncated":
        diff.write_text(diff.read_text() + "# runtel: diff truncated at 10 bytes of 99\n")
    else:
        diff.write_text(diff.read_text().replace("uncommitted", "[REDACTED]"))
    proc = _reproduce(run_id, env, tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and edit in lines[0] and "Traceback" not in proc.stderr
    assert len([p for p in runs.iterdir() if p.is_dir()]) == 1
    assert os.path.isdir(runs / run_id)


def test_reproduce_sh_restores_the_code_state(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """reproduce.sh (no runtel needed) re-runs in a worktree at commit + git.diff with the seed: same bytes."""
    runs = tmp_path / "runs"
    env = {**clean_env, "RUNTEL_DIR": str(runs)}
    repo, run_id = _record_then_move_on(tmp_path, SEEDED, env)
    original = (repo / "src" / "out.txt").read_text()
    proc = subprocess.run(["bash", str(runs / run_id / "reproduce.sh")], cwd="/", env=clean_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("runtel: re-running in ")]
    worktree = Path(line.split()[3])
    assert (worktree / "src" / "out.txt").read_text() == original
    assert "dirtied later" in (repo / "src" / "job.py").read_text()  # the checkout is untouched
    assert len([p for p in runs.iterdir() if p.is_dir()]) == 2  # the re-run is recorded next to the original
    subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=repo, check=True)


def test_reproduce_sh_refuses_a_truncated_diff(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A diff cut at RUNTEL_GIT_DIFF_MAX_BYTES cannot restore the code: reproduce.sh says so and exits 1."""
    runs = tmp_path / "runs"
    env = {**clean_env, "RUNTEL_DIR": str(runs), "RUNTEL_GIT_DIFF_MAX_BYTES": "10"}
    _repo, run_id = _record_then_move_on(tmp_path, SEEDED, env)
    proc = subprocess.run(["bash", str(runs / run_id / "reproduce.sh")], cwd="/", env=clean_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "the uncommitted diff was truncated" in proc.stderr
