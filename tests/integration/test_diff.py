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


def _second_venv(path: Path) -> Path:
    """A real second virtual environment: this one's packages (by a .pth file) plus ``extra-package 1.2.3``,
    installed as a distribution's metadata (what package inventories read), without pip or a download."""
    subprocess.run([PY, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    site = next((path / "lib").glob("python3*/site-packages"))
    ours = [p for p in sys.path if p.endswith("site-packages")] + [str(Path(__file__).resolve().parents[2] / "src")]
    (site / "zz_parent_env.pth").write_text("\n".join(ours) + "\n")
    dist = site / "extra_package-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-package\nVersion: 1.2.3\n")
    (dist / "RECORD").write_text("")
    return path / "bin" / "python"


def _run_ids(runs: Path) -> list[str]:
    records = [json.loads((p / "run.json").read_text()) for p in runs.iterdir() if (p / "run.json").exists()]
    return [str(r["id"]) for r in sorted(records, key=lambda r: r["start_time_unix_nano"])]


def test_diff_lists_config_package_and_commit(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A changed nested config key, an added package (a real second venv) and a new commit: those three rows."""
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
    second = _second_venv(tmp_path / "venv2")  # the same packages, plus one installed distribution
    subprocess.run([str(second), "job.py"], cwd=repo, env=env, check=True, timeout=60)
    a, b = _run_ids(runs)
    assert "extra-package" not in json.loads((runs / a / "run.json").read_text())["environment"]["packages"]

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


EPOCHS_JOB = """\
import runtel
with runtel.run_span("ep"):
    pass
"""


def test_diff_lists_a_changed_command_line_as_recorded(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`python ep.py --epochs 1` and `--epochs 100`: one argv row (text and --json) with the command lines as
    run.json holds them, a secret option's value redacted on both sides; the same command line is no row."""
    runs = tmp_path / "runs"
    (tmp_path / "ep.py").write_text(EPOCHS_JOB)
    env = {**clean_env, "RUNTEL_DIR": str(runs)}
    for epochs, password in (("1", "hunter2-secret"), ("100", "swordfish-secret"), ("100", "other-secret")):
        subprocess.run([PY, "ep.py", "--epochs", epochs, "--password", password], cwd=tmp_path, env=env, check=True,
                       timeout=60)
    a, b, c = _run_ids(runs)

    def diff(*args: str) -> str:
        out = subprocess.run([PY, "-m", "runtel", "diff", *args], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60, check=True).stdout
        assert "secret" not in out, out
        return out

    result = json.loads(diff(a, b, "--json"))
    assert result["differences"] == [{"section": "argv", "key": "argv", "kind": "changed",
                                      "a": ["ep.py", "--epochs", "1", "--password", "[REDACTED]"],
                                      "b": ["ep.py", "--epochs", "100", "--password", "[REDACTED]"]}]
    table = diff(a, b)
    assert "no differences" not in table and "argv" in table
    assert '"--epochs", "1",' in table and '"--epochs", "100",' in table
    assert json.loads(diff(b, c, "--json"))["differences"] == []  # only the redacted password differs
    assert "no differences in config, command line," in diff(b, c)
