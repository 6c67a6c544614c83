"""reproduce.sh: executed with bash, the re-run must receive the identical argv, cwd and variables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtel.environment import collect_environment
from runtel.environment.worktree import TOPLEVEL_ENV, WORKTREE_ENV, relocation
from runtel.redaction import REDACTED, Redactor
from runtel.rundir.reproduce import pin_seed, render_reproduce_script

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")

NASTY_ARGS = [
    "plain",
    "with space",
    "it's quoted",
    'double "quotes"',
    "$HOME and $(echo injected) and `echo tick`",
    "line1\nline2",
    "",
    "back\\slash",
    "*.glob?",
    "--flag=a b",
    "ünïcødé",
    "-",
    ";exit 3",
]

RECORDER = """\
import json, os, sys
with open(os.environ["OUT_FILE"], "w") as fh:
    json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "extra": os.environ.get("EXTRA")}, fh)
"""


def _run(script_text: str, where: Path) -> subprocess.CompletedProcess[str]:
    script = where / "reproduce.sh"
    script.write_text(script_text)
    script.chmod(0o755)
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})


def test_rerun_receives_identical_argv(tmp_path: Path) -> None:
    """Spaces, quotes, $, backticks, newlines and empty strings reach the re-run unchanged."""
    workdir = tmp_path / "dir with 'odd' name $x"
    workdir.mkdir()
    (workdir / "record.py").write_text(RECORDER)
    out_file = tmp_path / "out.json"
    text = render_reproduce_script(
        argv=["record.py", *NASTY_ARGS],
        cwd=str(workdir),
        python_executable=sys.executable,
        git=None,
        env={"OUT_FILE": str(out_file), "EXTRA": "a 'b' $c\nd"},
        run_id="run-1",
    )
    result = _run(text, tmp_path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(out_file.read_text())
    assert seen["argv"] == NASTY_ARGS
    assert os.path.realpath(seen["cwd"]) == os.path.realpath(workdir)
    assert seen["extra"] == "a 'b' $c\nd"


def test_non_python_command_runs_as_is(tmp_path: Path) -> None:
    """A command that is not a .py script is executed directly, without the interpreter prefix."""
    out_file = tmp_path / "args.txt"
    text = render_reproduce_script(
        argv=["bash", "-c", 'printf "%s|" "$@" > "$0"', str(out_file), "a b", "c"],
        cwd=str(tmp_path),
        python_executable="/nonexistent/python",
        git=None,
        env={},
        run_id="run-2",
    )
    assert _run(text, tmp_path).returncode == 0
    assert out_file.read_text() == "a b|c|"


def test_redacted_variables_are_not_exported() -> None:
    """Variables whose value was redacted are listed as skipped, never exported."""
    text = render_reproduce_script(
        argv=["x.py"],
        cwd="/w",
        python_executable="/usr/bin/python3",
        git=None,
        env={"HF_TOKEN": REDACTED, "URL": f"https://{REDACTED}@h/x", "OMP_NUM_THREADS": "4", "bad name": "x"},
        run_id="r",
    )
    assert "export OMP_NUM_THREADS=4" in text
    assert "export HF_TOKEN" not in text and "export URL" not in text and "bad name" not in text
    assert "# not exported (redacted): HF_TOKEN, URL" in text


def test_header_and_git_hints() -> None:
    """The script names the run, is strict bash, and hints at checkout and the saved diff."""
    text = render_reproduce_script(
        argv=["train.py", "--lr", "0.1"],
        cwd="/work/proj",
        python_executable="/opt/py/bin/python",
        git={"commit": "abc123", "branch": "main", "dirty": True},
        env={},
        run_id="run-42\nrm -rf /",
    )
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines
    assert any(line.startswith("#") and "run-42" in line for line in lines)
    assert "rm -rf /" not in [line.strip() for line in lines if not line.startswith("#")]
    assert any(line.startswith("#") and "git checkout abc123" in line for line in lines)
    assert '#   git apply "$(dirname "$0")/git.diff"    # uncommitted changes, saved next to this script' in lines
    assert "cd -- /work/proj" in lines
    assert lines[-1] == "exec /opt/py/bin/python train.py --lr 0.1"


def test_clean_repo_has_no_apply_hint() -> None:
    """Without uncommitted changes there is no git apply line."""
    text = render_reproduce_script(
        argv=["t.py"], cwd="/w", python_executable=None, git={"commit": "abc", "dirty": False}, env={}, run_id="r"
    )
    assert "git apply" not in text and "git checkout abc" in text
    assert text.splitlines()[-1] == "exec python3 t.py"


def test_empty_argv_fails_clearly(tmp_path: Path) -> None:
    """A run without a recorded command line gives a script that exits 1 with a message."""
    text = render_reproduce_script(argv=[], cwd=str(tmp_path), python_executable=None, git=None, env={}, run_id="r")
    result = _run(text, tmp_path)
    assert result.returncode == 1 and "no command line" in result.stderr


def test_script_is_valid_bash(tmp_path: Path) -> None:
    """bash -n accepts the generated script."""
    text = render_reproduce_script(
        argv=["-m", "pkg.train", "--x", "$y"],
        cwd=str(tmp_path),
        python_executable=sys.executable,
        git={"commit": "c\nd", "dirty": True},
        env={"A": "1"},
        run_id="r",
    )
    script = tmp_path / "r.sh"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert text.splitlines()[-1].startswith(f"exec {sys.executable} -m pkg.train")


def test_notebook_kernel_session_is_not_rerun() -> None:
    """A kernel's argv (a connection file that no longer exists) is not re-run; the script says why."""
    text = render_reproduce_script(argv=["/venv/lib/ipykernel_launcher.py", "-f", "/tmp/kernel-1.json"], cwd="/w",
                                   python_executable=None, git=None, env={}, run_id="r")
    assert "notebook kernel session" in text and text.splitlines()[-1] == "exit 1"
    assert "kernel-1.json" not in text


def test_seed_line_is_pinned_and_repinned() -> None:
    """The recorded seed is exported; pin_seed rewrites the line for a seed recorded later."""
    with_seed = render_reproduce_script(argv=["t.py"], cwd="/w", python_executable=None, git=None,
                                        env={"RUNTEL_SEED": "1"}, run_id="r", seed=42)
    assert "export RUNTEL_SEED=42" in with_seed and "RUNTEL_SEED=1" not in with_seed
    without = render_reproduce_script(argv=["t.py"], cwd="/w", python_executable=None, git=None, env={}, run_id="r")
    assert "export RUNTEL_SEED" not in without
    assert "export RUNTEL_SEED=7\n" in pin_seed(without, 7)


def test_repository_paths_point_into_the_worktree() -> None:
    """With the repository known, argv paths inside it are mapped into the worktree; the interpreter is not."""
    text = render_reproduce_script(argv=["/repo/src/t.py", "/data/x"], cwd="/repo/src",
                                   python_executable="/repo/.venv/bin/python",
                                   git={"commit": "abc", "dirty": False, "toplevel": "/repo"}, env={}, run_id="r")
    assert "worktree add -q --detach" in text and "git apply" not in text
    assert text.splitlines()[-1] == 'exec /repo/.venv/bin/python "${runtel_work:-/repo}"/src/t.py /data/x'


def test_per_rerun_variables_are_set_by_the_script_not_replayed(tmp_path: Path) -> None:
    """A re-run's recorded RUNTEL_REPRODUCE_* name its own, gone worktree: the script sets fresh ones."""
    folder = tmp_path / "20261202T000000Z-job-abc123"
    folder.mkdir()
    (folder / "record.py").write_text(
        "import json, os\n"
        "print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('RUNTEL_REPRODUCE_')}))\n")
    stale = {"RUNTEL_REPRODUCE_WORKTREE": "/tmp/runtel-reproduce-gone/worktree",
             "RUNTEL_REPRODUCE_TOPLEVEL": "/gone", "RUNTEL_REPRODUCE_OF": "older-run"}
    text = render_reproduce_script(argv=["record.py"], cwd=str(folder), python_executable=sys.executable, git=None,
                                   env=stale, run_id="20261202T000000Z-job-abc123")
    assert "/gone" not in text and "older-run" not in text
    script = folder / "reproduce.sh"
    script.write_text(text)
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={"PATH": os.environ["PATH"]},
                          cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"RUNTEL_REPRODUCE_OF": folder.name}


def test_worktree_script_names_the_repository_for_the_rerun() -> None:
    """In the worktree branch the re-run is told which repository the worktree stands for."""
    text = render_reproduce_script(argv=["t.py"], cwd="/repo", python_executable=None,
                                   git={"commit": "abc", "dirty": False, "toplevel": "/repo"}, env={}, run_id="r")
    assert 'export RUNTEL_REPRODUCE_WORKTREE="$runtel_work" RUNTEL_REPRODUCE_TOPLEVEL=/repo' in text


def test_relocation_maps_worktree_paths_to_the_repository(tmp_path: Path) -> None:
    """Paths in the worktree (given or symlink-resolved) become repository paths; others and half-set pairs stay."""
    real = tmp_path / "real"
    (real / "worktree").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    moved = relocation({WORKTREE_ENV: str(link / "worktree"), TOPLEVEL_ENV: "/src/repo"})
    assert moved is not None
    assert moved.path(str(link / "worktree")) == "/src/repo"
    assert moved.path(str(real / "worktree" / "a" / "job.py")) == "/src/repo/a/job.py"
    assert moved.path(str(real / "worktree2")) == str(real / "worktree2")
    assert moved.argv(["--out", str(link / "worktree" / "o.txt"), "x"]) == ["--out", "/src/repo/o.txt", "x"]
    assert relocation({WORKTREE_ENV: str(link)}) is None
    assert relocation({WORKTREE_ENV: "relative", TOPLEVEL_ENV: "/src/repo"}) is None


def test_environment_capture_records_the_repository_not_the_worktree(tmp_path: Path) -> None:
    """collect_environment in a worktree told to stand for a repository: toplevel, cwd and argv are relocated."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "job.py").write_text("pass\n")
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "j"], cwd=repo, check=True)
    worktree = tmp_path / "wt" / "worktree"
    subprocess.run([*git, "worktree", "add", "-q", "--detach", str(worktree)], cwd=repo, check=True)
    env = {"PATH": os.environ["PATH"], WORKTREE_ENV: str(worktree), TOPLEVEL_ENV: str(repo)}
    e = collect_environment(level="full", env=env, argv=[str(worktree / "job.py"), "--x"], cwd=str(worktree),
                            script_path=str(worktree / "job.py"), redactor=Redactor(), git_diff_max_bytes=1024)
    assert e.record["git"]["script"]["toplevel"] == str(repo)
    assert e.record["git"]["script"]["commit"]
    assert e.record["process"]["cwd"] == str(repo)
    assert e.record["process"]["argv"] == [str(repo / "job.py"), "--x"]
    assert str(worktree) not in json.dumps([e.record["git"], e.record["process"], e.resource])
