"""CLI conventions: ``--json`` on every command that prints, JSON errors, shell completion that really loads."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtel.cli import build_parser
from runtel.cli.completion import SHELLS, completion_script

PY = sys.executable
#: commands that print a script, not data: documented in docs/cli.md
NO_JSON = {"completion"}


def runtel_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "runtel", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_that_prints_takes_json() -> None:
    """run, ls, show, compare, diff, reproduce, info, export, report, lineage: each has --json."""
    commands = _commands()
    assert {"run", "ls", "show", "compare", "diff", "reproduce", "info", "export", "report", "lineage"} <= set(commands)
    for name, command in commands.items():
        options = {o for action in command._actions for o in action.option_strings}
        assert ("--json" in options) != (name in NO_JSON), name


def test_run_json_prints_only_the_summary_on_stdout(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel run --json`: stdout is one JSON object (the command's own stdout went to stderr), exit code kept."""
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    proc = runtel_cli(["run", "--json", "--name", "j", "--", PY, "-c", "print('from the job'); raise SystemExit(3)"],
                      env, tmp_path)
    assert proc.returncode == 3, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["name"] == "j" and summary["status"] == "error" and summary["exit_code"] == 3
    assert Path(summary["dir"]).is_dir() and summary["run"] in summary["dir"]
    assert "from the job" in proc.stderr
    bad = runtel_cli(["run", "--json", "--tag", "nokv", "--", "true"], env, tmp_path)
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"].startswith("--tag expects K=V")


def test_report_json(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel report --json` names the file it wrote and its size."""
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs"), "RUNTEL_SAMPLING": "false"}
    assert runtel_cli(["run", "--quiet", "--", "true"], env, tmp_path).returncode == 0
    proc = runtel_cli(["report", "latest", "-o", str(tmp_path / "r.html"), "--json"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["output"] == str(tmp_path / "r.html") and out["bytes"] == (tmp_path / "r.html").stat().st_size


def _bash_complete(script: Path, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` after sourcing the generated script (a real bash)."""
    line = " ".join(words)
    program = (f"source {script}\n"
               f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
               f"COMP_LINE={line!r}; COMP_POINT={len(line)}\n"
               "_shtab_runtel runtel\n"
               'printf "%s\\n" "${COMPREPLY[@]}"\n')
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    return [w for w in proc.stdout.split("\n") if w]


def test_bash_completion_loads_and_completes(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel completion bash` is a script a real bash sources; it completes sub-commands, options and choices."""
    proc = runtel_cli(["completion", "bash"], clean_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / "runtel.bash"
    script.write_text(proc.stdout)
    assert _bash_complete(script, "runtel", "ex") == ["export"]
    assert {"compare", "completion"} <= set(_bash_complete(script, "runtel", "comp"))
    assert "--signals" in _bash_complete(script, "runtel", "export", "--sig")
    assert _bash_complete(script, "runtel", "export", "--protocol", "http/") == ["http/protobuf", "http/json"]
    assert _bash_complete(script, "runtel", "completion", "") == list(SHELLS)


def _need(tool: str) -> str:
    """The path of a shell the test drives for real; missing: skip loudly, or fail under CI=true."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is missing under CI=true: `make system-tools` installs Debian's {tool} as root")
        pytest.skip(f"{tool} is not installed (`make system-tools` installs it as root): its completion is not loaded")
    return path


def test_fish_completion_completes(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A real fish sources `runtel completion fish` and completes sub-commands, options and choices."""
    fish = _need("fish")
    script = tmp_path / "runtel.fish"
    script.write_text(completion_script("fish"))

    def complete(line: str) -> list[str]:
        proc = subprocess.run([fish, "--no-config", "-c", f"source {script}; complete -C {line!r}"],
                              capture_output=True, text=True, timeout=30, env=clean_env)
        assert proc.returncode == 0, proc.stderr
        return [row.split("\t")[0] for row in proc.stdout.splitlines()]

    assert complete("runtel ex") == ["export"]
    assert "--signals" in complete("runtel export --sig")
    assert complete("runtel export --protocol ") == ["grpc", "http/protobuf", "http/json"]


def test_zsh_completion_registers(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A real zsh evals `runtel completion zsh` after compinit: runtel's completion function is registered."""
    zsh = _need("zsh")
    script = tmp_path / "_runtel"
    script.write_text(completion_script("zsh"))
    program = f'autoload -U compinit; compinit -u -D; eval "$(<{script})"; print -r -- "${{_comps[runtel]}}"'
    proc = subprocess.run([zsh, "-f", "-c", program], capture_output=True, text=True, timeout=30, env=clean_env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "_shtab_runtel", proc.stdout + proc.stderr


@pytest.mark.parametrize("shell", ["zsh", "fish", "tcsh"])
def test_other_shells_get_their_script(shell: str) -> None:
    """zsh, fish and tcsh scripts name every sub-command (shtab's own formats; loaded by those shells)."""
    script = completion_script(shell)
    marker = {"zsh": "#compdef runtel", "fish": "complete -c runtel", "tcsh": "complete runtel"}[shell]
    assert marker in script
    for name in _commands():
        assert name in script, (shell, name)


def test_help_and_version_do_not_import_shtab(clean_env: dict[str, str], tmp_path: Path) -> None:
    """Completion costs nothing until asked for: neither --help nor --version imports shtab."""
    code = ("import sys\nfrom runtel.cli import main\nfor argv in (['--version'], ['--help'], ['export', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('shtab' in sys.modules)")
    proc = subprocess.run([PY, "-c", code], env=clean_env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_reproduce_json_without_check(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel reproduce RUN --json`: stdout is the outcome as JSON; the re-run's own prints go to stderr."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "job.py").write_text("import runtel\nwith runtel.run_span('job'):\n    print('job says hi')\n")
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "job"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True,
                       capture_output=True)
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs"), "RUNTEL_SAMPLING": "false"}
    subprocess.run([PY, "job.py"], cwd=repo, env=env, check=True, timeout=60, capture_output=True)
    (folder,) = (d for d in (tmp_path / "runs").iterdir() if d.is_dir())
    proc = subprocess.run([PY, "-m", "runtel", "reproduce", folder.name, "--json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["run"] == folder.name and out["exit_code"] == 0 and out["rerun"] not in (None, folder.name)
    assert "job says hi" in proc.stderr
