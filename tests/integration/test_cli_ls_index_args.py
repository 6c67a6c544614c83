"""`runtel ls` rejects bad -n/--tag values like argparse and `runtel run` do (exit 2); `runtel index` on an
empty or missing runs folder says so and exits 0, and keeps exit 1 for a real problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PY = sys.executable


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "runtel", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture(scope="module")
def four_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose runs/ holds four runs (one process)."""
    cwd = tmp_path_factory.mktemp("ls")
    code = "import runtel\nfor i in range(4):\n    with runtel.run_span(f'r{i}', tags={'k': str(i)}): pass\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_", "TRACEPARENT"))}
    env["RUNTEL_SAMPLING"] = "false"
    subprocess.run([PY, "-c", code], cwd=cwd, env=env, check=True, timeout=60)
    return cwd


@pytest.mark.parametrize("value", ["-1", "-5"])
def test_ls_rejects_a_negative_limit(four_runs: Path, clean_env: dict[str, str], value: str) -> None:
    """`-n -1` used to show 3 of 4 rows and claim "5 more runs not shown"."""
    proc = _cli(["ls", "-n", value], four_runs, clean_env)
    assert proc.returncode == 2
    assert f"argument -n/--limit: invalid non-negative int value: '{value}'" in proc.stderr
    assert proc.stdout == ""


def test_ls_limit_zero_and_positive_still_work(four_runs: Path, clean_env: dict[str, str]) -> None:
    """0 means all, N at most N."""
    assert len(json.loads(_cli(["ls", "--json", "-n", "0"], four_runs, clean_env).stdout)) == 4
    assert len(json.loads(_cli(["ls", "--json", "-n", "2"], four_runs, clean_env).stdout)) == 2


def test_ls_rejects_a_tag_without_equals_like_run(four_runs: Path, clean_env: dict[str, str]) -> None:
    """`ls --tag bad` said "no runs match"; `run --tag bad` rejects it: both now say --tag expects K=V (exit 2)."""
    ls = _cli(["ls", "--tag", "bad"], four_runs, clean_env)
    run = _cli(["run", "--tag", "bad", "--", "true"], four_runs, clean_env)
    assert ls.returncode == run.returncode == 2
    assert ls.stderr == run.stderr == "runtel: error: --tag expects K=V, got 'bad'\n"
    as_json = _cli(["ls", "--json", "--tag", "k=1", "--tag", "bad"], four_runs, clean_env)
    assert as_json.returncode == 2 and json.loads(as_json.stdout)["type"] == "UsageError"
    good = _cli(["ls", "--json", "--tag", "k=1"], four_runs, clean_env)
    assert good.returncode == 0 and [r["name"] for r in json.loads(good.stdout)] == ["r1"]


def test_index_on_an_empty_runs_folder_creates_the_empty_index(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """The audit's repro: `mkdir -p e/runs && cd e && runtel index` exited 1 with "no usable run index"."""
    (tmp_path / "runs").mkdir()
    proc = _cli(["index"], tmp_path, clean_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "runs/.runtel-index.sqlite: 0 runs (created)" and proc.stderr == ""
    again = _cli(["index", "--json"], tmp_path, clean_env)
    assert again.returncode == 0
    assert json.loads(again.stdout) == {"index": "runs/.runtel-index.sqlite", "runs": 0, "rebuilt": False,
                                        "created": False, "exists": True}
    rebuilt = _cli(["index", "--rebuild"], tmp_path, clean_env)
    assert rebuilt.returncode == 0 and rebuilt.stdout.strip() == "runs/.runtel-index.sqlite: 0 runs (rebuilt)"


def test_index_on_a_missing_runs_folder_says_so_and_creates_nothing(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A new project (no runs/ yet): 0 runs, exit 0, no folder made."""
    for args in (["index"], ["index", "--rebuild"]):
        proc = _cli(args, tmp_path, clean_env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "0 runs: runs does not exist yet (no runs, no index)"
    assert json.loads(_cli(["index", "--json"], tmp_path, clean_env).stdout)["exists"] is False
    assert list(tmp_path.iterdir()) == []


def test_index_keeps_exit_1_for_a_real_problem(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """Turned off, not a folder, or an index path that cannot be opened: one true line, exit 1."""
    (tmp_path / "runs").mkdir()
    off = _cli(["index"], tmp_path, {**clean_env, "RUNTEL_RUN_INDEX": "false"})
    assert off.returncode == 1 and "the run index is turned off (RUNTEL_RUN_INDEX)" in off.stderr
    assert list((tmp_path / "runs").iterdir()) == []
    (tmp_path / "file").write_text("x")
    not_dir = _cli(["index", "--dir", "file"], tmp_path, clean_env)
    assert not_dir.returncode == 1 and "file is not a folder" in not_dir.stderr
    (tmp_path / "runs" / ".runtel-index.sqlite").mkdir()
    blocked = _cli(["index"], tmp_path, clean_env)
    assert blocked.returncode == 1 and "cannot be opened" in blocked.stderr
