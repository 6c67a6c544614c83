"""Secrets planted everywhere never reach the run folder or the OTLP receiver; telemetry levels hold."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import Receiver  # type: ignore[import-not-found]

PY = sys.executable

SECRETS = {
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "github": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "flag": "flag-value-s3cr3t",
    "env": "env-value-s3cr3t",
    "config": "config-value-s3cr3t",
    "remote": "remote-tok-s3cr3t",
    "header": "header-value-s3cr3t",
}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"})


def _job(repo: Path) -> Path:
    script = repo / "job.py"
    script.write_text(textwrap.dedent(f"""
        import runtel, sys
        config = {{"db": {{"password": {SECRETS["config"]!r}, "host": "db.local"}}, "note": {SECRETS["aws"]!r}}}
        with runtel.run_span("secret-job", config=config, api_key={SECRETS["github"]!r}) as run:
            with runtel.block("auth", token={SECRETS["jwt"]!r}, user="ana"):
                pass
            run.set_attributes(cookie="session=abc", endpoint="https://u:{SECRETS["remote"]}@example.com/x")
        print(run.dir)
    """))
    _git(repo, "init", "-q")
    _git(repo, "remote", "add", "origin", f"https://user:{SECRETS['remote']}@github.com/acme/repo.git")
    _git(repo, "add", "job.py")
    _git(repo, "commit", "-qm", "init")
    (repo / "job.py").write_text(script.read_text() + f"\n# dirty edit {SECRETS['aws']}\n")  # a dirty diff
    return script


def _all_text(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_planted_secrets_never_reach_run_folder_or_receiver(tmp_path: Path, clean_env: dict[str, str],
                                                            receiver: Receiver) -> None:
    """Secrets in env, argv, config, attributes, git remote and OTLP headers appear nowhere in what is written or sent."""
    repo = tmp_path / "repo"
    repo.mkdir()
    script = _job(repo)
    env = {
        **clean_env,
        "RUNTEL_DIR": str(tmp_path / "runs"),
        "RUNTEL_EXPORTERS": "json,otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint("http/protobuf"),
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {SECRETS['header']}",
        "MY_SERVICE_TOKEN": SECRETS["env"],
        "CUDA_VISIBLE_DEVICES": "",
        "AWS_ACCESS_KEY_ID": SECRETS["aws"],
    }
    argv = [PY, "-m", "runtel", "run", "--name", "wrapper", "--", PY, str(script),
            "--password", SECRETS["flag"], f"--api-key={SECRETS['flag']}", SECRETS["github"]]
    proc = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    runs = tmp_path / "runs"
    records = [json.loads(p.read_text()) for p in runs.glob("*/run.json")]
    assert {r["name"] for r in records} == {"wrapper", "secret-job"}
    written = _all_text(runs) + proc.stdout + proc.stderr
    job = next(r for r in records if r["name"] == "secret-job")
    assert (runs / job["id"] / "git.diff").exists(), "the dirty diff should be saved (redacted)"
    assert "[REDACTED]" in written
    assert receiver.wait_for(lambda: any(s.name == "auth" for s in receiver.spans({job["trace_id"]}))), \
        "the run should have been exported"
    time.sleep(0.5)
    sent = receiver.text()
    for name, secret in SECRETS.items():
        assert secret not in written, f"{name} secret leaked into the run folder or output"
        assert secret not in sent, f"{name} secret leaked to the OTLP receiver"
    assert job["config"]["db"] == {"password": "[REDACTED]", "host": "db.local"}


@pytest.mark.parametrize("level", ["full", "minimal", "off"])
def test_telemetry_levels(level: str, tmp_path: Path, clean_env: dict[str, str]) -> None:
    """full records everything; minimal drops user/host/env/inventory; off keeps only timing and status."""
    import getpass
    import socket

    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs"), "RUNTEL_TELEMETRY": level}
    code = "import runtel\nwith runtel.run_span('lvl', config={'lr': 0.1}):\n    pass\n"
    proc = subprocess.run([PY, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (folder,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    record = json.loads((folder / "run.json").read_text())
    everything = _all_text(folder)
    assert record["status"] == "ok" and record["duration_s"] is not None
    host, user = socket.gethostname(), getpass.getuser()
    if level == "full":
        assert record["config"] == {"lr": 0.1}
        assert record["environment"]["packages"]
        assert host in everything
        assert (folder / "reproduce.sh").exists()
    elif level == "minimal":
        assert record["config"] == {"lr": 0.1}
        assert "packages" not in record["environment"] or not record["environment"]["packages"]
        assert f'"{host}"' not in everything and f'"{user}"' not in everything
        assert "env" not in record["environment"]
        assert not (folder / "reproduce.sh").exists()
    else:
        assert record["config"] is None and "environment" not in record
        assert f'"{host}"' not in everything
        spans = [s for line in (folder / "spans.jsonl").read_text().splitlines()
                 for rs in json.loads(line)["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
        keys = {a["key"] for s in spans for a in s.get("attributes", [])}
        assert not any(k.startswith(("config.", "vcs.", "host.", "process.")) for k in keys), keys
