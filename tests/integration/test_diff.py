"""``runtel diff``: two real runs in a temp git repository; exactly their differences are listed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PY = sys.executable

JOB = """\
import json, runtel
config = json.load(open("config.json"))
with runtel.run_span("job", config=config):
    pass
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True,
                   capture_output=True)


def _run_ids(runs: Path) -> list[str]:
    records = [json.loads((p / "run.json").read_text()) for p in runs.iterdir() if (p / "run.json").exists()]
    return [str(r["id"]) for r in sorted(records, key=lambda r: r["start_time_unix_nano"])]


def test_diff_lists_config_package_and_commit(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A changed nested config key, an added package and a new commit: those three rows and nothing else."""
    repo, runs = tmp_path / "repo", tmp_path / "runs"
    repo.mkdir()
    (repo / "job.py").write_text(JOB)
    (repo / "config.json").write_text(json.dumps({"optim": {"lr": 0.1, "momentum": 0.9}, "epochs": 3}))
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "first")
    env = {**clean_env, "RUNTEL_DIR": str(runs)}
    subprocess.run([PY, "job.py"], cwd=repo, env=env, check=True, timeout=60)
    (repo / "config.json").write_text(json.dumps({"optim": {"lr": 0.2, "momentum": 0.9}, "epochs": 3}))
    _git(repo, "commit", "-qam", "second")
    subprocess.run([PY, "job.py"], cwd=repo, env=env, check=True, timeout=60)
    a, b = _run_ids(runs)
    # The package change is faked: run B's run.json gets one more package (a second venv costs ~10 s).
    record_b = runs / b / "run.json"
    data = json.loads(record_b.read_text())
    assert "extra-package" not in data["environment"]["packages"]
    data["environment"]["packages"]["extra-package"] = "1.2.3"
    record_b.write_text(json.dumps(data))

    out = subprocess.run([PY, "-m", "runtel", "diff", a, b, "--json"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    result = json.loads(out)
    assert (result["a"], result["b"]) == (a, b)
    rows = {(d["section"], d["key"]): d for d in result["differences"]}
    assert set(rows) == {("config", "optim.lr"), ("packages", "extra-package"), ("git", "commit")}, rows
    assert rows["config", "optim.lr"] == {"section": "config", "key": "optim.lr", "kind": "changed",
                                          "a": 0.1, "b": 0.2}
    assert rows["packages", "extra-package"] == {"section": "packages", "key": "extra-package", "kind": "added",
                                                 "b": "1.2.3"}
    assert rows["git", "commit"]["kind"] == "changed"

    table = subprocess.run([PY, "-m", "runtel", "diff", a, b], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60, check=True).stdout
    assert "optim.lr" in table and "extra-package" in table and "(absent)" in table and "commit" in table
    same = subprocess.run([PY, "-m", "runtel", "diff", a, a], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60, check=True).stdout
    assert "no differences" in same
