"""A three-process pipeline (prepare -> train -> evaluate) passing files; lineage rebuilt from the last file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPTS = {
    "prepare.py": """
        import runtel
        from pathlib import Path
        with runtel.run_span():
            runtel.use_artifact("raw.csv", name="raw")
            rows = Path("raw.csv").read_text().splitlines()
            Path("data.csv").write_text("\\n".join(r.upper() for r in rows))
            runtel.current_run().add_artifact("dataset", "data.csv", {"rows": len(rows)})
    """,
    "train.py": """
        import runtel
        from pathlib import Path
        with runtel.run_span():
            producer = runtel.use_artifact("data.csv")
            assert producer is not None and producer["name"] == "dataset", producer
            Path("model.bin").write_bytes(Path("data.csv").read_bytes()[::-1])
            runtel.current_run().add_artifact("model", "model.bin")
    """,
    "evaluate.py": """
        import json, runtel
        from pathlib import Path
        with runtel.run_span():
            runtel.use_artifact("model.bin")
            Path("metrics.json").write_text(json.dumps({"acc": 0.9}))
            runtel.current_run().add_artifact("metrics", "metrics.json")
    """,
}


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=cwd,
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_lineage_of_the_final_file_reaches_back_to_prepare(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel lineage metrics.json` shows evaluate <- train <- prepare <- raw.csv with artifact names and commits."""
    work = tmp_path / "work"
    work.mkdir()
    for name, source in SCRIPTS.items():
        (work / name).write_text(textwrap.dedent(source))
    (work / "raw.csv").write_text("a,b\n1,2\n")
    (work / ".gitignore").write_text("runs/\n*.csv\n*.bin\n*.json\n")
    _git(work, "init", "-q")
    _git(work, "add", ".")
    _git(work, "commit", "-q", "-m", "pipeline")
    commit = _git(work, "rev-parse", "HEAD")
    env = {**clean_env, "RUNTEL_DIR": str(work / "runs")}
    for step in ("prepare", "train", "evaluate"):
        done = subprocess.run([sys.executable, "-m", "runtel", "run", "--name", step, "-q", "--", sys.executable,
                               f"{step}.py"], cwd=work, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    out = subprocess.run([sys.executable, "-m", "runtel", "lineage", "metrics.json", "--json"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    nodes, edges = data["lineage"]["nodes"], data["lineage"]["edges"]
    assert data["file"]["artifact_name"] == "metrics"
    by_name = {n["name"]: n for n in nodes.values() if n["kind"] == "run"}
    assert data["run"] == by_name["evaluate"]["id"]
    chain = {(nodes[e["parent"]].get("name"), nodes[e["child"]]["name"], e["artifact_name"]) for e in edges}
    assert chain == {("train", "evaluate", "model"), ("prepare", "train", "dataset"), ("raw.csv", "prepare", "raw")}
    assert all(by_name[s]["commit"] == commit for s in ("prepare", "train", "evaluate"))
    enclosing = data["enclosing_runs"]
    wrappers = {enclosing[n["parent_run_id"]]["name"] for n in by_name.values()}
    assert wrappers == {"prepare", "train", "evaluate"}  # each script run sits inside its `runtel run` wrapper
    raw = next(n for n in nodes.values() if n["kind"] == "file")
    assert raw["path"] == str(work / "raw.csv") and raw["hash"]

    tree = subprocess.run([sys.executable, "-m", "runtel", "lineage", "metrics.json"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=60)
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    order = [next(i for i, line in enumerate(lines) if marker in line)
             for marker in ("file ", "produced as metrics by run evaluate", "← model run train",
                            "← dataset run prepare", "← raw input file")]
    assert order == sorted(order), tree.stdout
    assert f"commit {commit[:12]}" in tree.stdout

    missing = subprocess.run([sys.executable, "-m", "runtel", "lineage", "raw.csv"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "no recorded run" in missing.stderr
