"""``runtel reproduce RUN [--check] [--in DIR]``: re-run a recorded run from its recorded code state.

The re-run happens in a clean ``git worktree`` at the recorded commit with the recorded git.diff
applied (the user's checkout is never touched), in the same directory relative to the repository,
with the recorded environment variables (redacted ones left out and named), the recorded seed
pinned through ``RUNTEL_SEED`` and the recorded command line. The re-run is recorded next to the
original run. A different Python version or package set is reported after the re-run (from the
re-run's own record). ``--check`` then compares the artifacts by content hash, and the recorded
results (run.json ``results``) by value: one verdict each (identical / differs / missing), exit
code 0 only when all are identical.

reproduce.sh stays as the fallback that needs no runtel: the same worktree, diff, variables and
seed, without the check (and it keeps its worktree).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runtel.cli import problem, render, run_root
from runtel.environment.worktree import OF_ENV, TOPLEVEL_ENV, WORKTREE_ENV
from runtel.errors import RuntelError
from runtel.query.diff import compare_artifacts, compare_results, diff_records
from runtel.redaction import REDACTED
from runtel.rundir.index import resolve_run
from runtel.rundir.reader import environment, git_info, read_record
from runtel.rundir.reproduce import SEED_ENV
from runtel.rundir.schema import GIT_DIFF_FILE, RECORD_FILE, RunRecord

__all__ = ("register",)

_TRUNCATED_MARK = "# runtel: diff truncated at "
_NOTEBOOK_LAUNCHERS = ("ipykernel_launcher.py", "ipykernel_launcher", "ipykernel")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``reproduce`` sub-command."""
    p = sub.add_parser(
        "reproduce",
        help="re-run a run from its recorded commit, diff, environment and seed; --check compares artifacts",
        description="Re-run RUN in a clean git worktree at the recorded commit with the recorded git.diff "
        "applied, the recorded environment variables (minus redacted ones), the recorded seed "
        "(RUNTEL_SEED) and the recorded command line. The re-run is recorded next to RUN. Warns when the "
        "Python version or packages differ. With --check, compares every recorded artifact's content hash "
        "(and every recorded result's value) with the re-run's: identical / differs / missing; exit code 0 "
        "only when all are identical. RUN "
        "is a run id, a unique prefix, a path to a run folder, or 'latest'.",
    )
    p.add_argument("run", metavar="RUN", help="the run to reproduce")
    p.add_argument("--check", action="store_true", help="compare the re-run's artifacts (and results) with the recorded ones")
    p.add_argument("--in", dest="into", metavar="DIR",
                   help="create the worktree in DIR and keep it (default: a temporary directory, removed)")
    p.add_argument("--dir", help="run folder root (default: $RUNTEL_DIR or ./runs)")
    p.add_argument("--json", action="store_true",
                   help="print the outcome (and with --check the verdicts) as JSON; the re-run's own stdout then goes "
                   "to stderr")
    p.set_defaults(handler=_cmd_reproduce)


def _say(text: str) -> None:
    sys.stderr.write(f"runtel: {text}\n")


def _git(args: Sequence[str], cwd: Path | str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:  # no git on PATH, or ``cwd`` vanished since it was checked
        raise RuntelError(f"cannot run git {args[0]} in {cwd}: {exc.strerror or exc}") from exc


def _check_diff(run_dir: Path, record: RunRecord, dirty: bool) -> Path | None:
    """The git.diff to apply, or ``None`` for a clean tree; refuses a diff that cannot restore the state."""
    if not dirty:
        return None
    name = record.get("git_diff_file")
    path = run_dir / GIT_DIFF_FILE
    if not name or not path.is_file():
        raise RuntelError(f"run {record.get('id')}: the working tree was dirty but no git.diff was saved; "
                          "cannot restore its code state")
    text = path.read_text(errors="replace")
    if _TRUNCATED_MARK in text:
        raise RuntelError(f"run {record.get('id')}: git.diff was truncated when recorded "
                          "(RUNTEL_GIT_DIFF_MAX_BYTES); cannot restore its code state")
    if REDACTED in text:
        raise RuntelError(f"run {record.get('id')}: git.diff contains redacted credentials ({REDACTED}); "
                          "it cannot be applied")
    return path


def _recorded_argv(record: RunRecord) -> list[str]:
    """The recorded command line, or the one-line reason it cannot be re-run (checked before any worktree)."""
    argv = [str(a) for a in (record.get("argv") or [])]
    if not argv:
        raise RuntelError(f"run {record.get('id')}: no command line was recorded (telemetry below 'full'?)")
    if any(REDACTED in a for a in argv):
        raise RuntelError(f"run {record.get('id')}: the recorded command line contains redacted values")
    if Path(argv[0]).name in _NOTEBOOK_LAUNCHERS or "ipykernel" in argv[0]:
        raise RuntelError(f"run {record.get('id')}: a notebook kernel session cannot be re-run; "
                          "re-run the notebook itself")
    return argv


def _command(record: RunRecord, toplevel: str | None, worktree: Path | None) -> list[str]:
    """The command to run: paths in the repository mapped into the worktree, a script run by its interpreter."""
    argv = _recorded_argv(record)
    if toplevel and worktree is not None:
        prefix = toplevel.rstrip("/") + "/"
        argv = [str(worktree / a[len(prefix):]) if a.startswith(prefix) else a for a in argv]
    if argv[0].endswith(".py") or argv[0] in ("-m", "-c"):
        python = str(_mapping(environment(record).get("python")).get("executable") or "")
        if not python or not os.access(python, os.X_OK):
            if python:
                _say(f"warning: the recorded interpreter {python} is gone; using {sys.executable}")
            python = sys.executable
        argv = [python, *argv]
    return argv


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _child_env(record: RunRecord, root: Path, worktree: Path | None, toplevel: str | None) -> dict[str, str]:
    """The re-run's variables; the ``RUNTEL_REPRODUCE_*`` ones say what it re-runs and where (never the recorded ones)."""
    ours = (OF_ENV, WORKTREE_ENV, TOPLEVEL_ENV)
    env = {k: v for k, v in os.environ.items() if k not in ours}
    redacted = []
    for name, value in _mapping(environment(record).get("env")).items():
        if not isinstance(value, str) or name in ours:  # a re-run's record holds those of its own re-run
            continue
        if REDACTED in value:
            redacted.append(name)
            continue
        env[name] = value
    if redacted:
        _say(f"warning: not restored (redacted when recorded): {', '.join(sorted(redacted))}")
    env.pop(SEED_ENV, None)
    seed = record.get("seed")
    if isinstance(seed, int):
        env[SEED_ENV] = str(seed)
    env["RUNTEL_DIR"] = str(root)  # the re-run is recorded next to the original, where we look for it
    env[OF_ENV] = str(record.get("id") or "")
    if worktree is not None and toplevel is not None:  # the re-run records the repository, not the worktree
        env[WORKTREE_ENV], env[TOPLEVEL_ENV] = str(worktree), toplevel
    return env


def _run_folders(root: Path) -> set[str]:
    try:
        return {p.name for p in root.iterdir() if (p / RECORD_FILE).is_file()}
    except OSError:
        return set()


def _find_rerun(root: Path, before: set[str], record: RunRecord) -> RunRecord | None:
    """The re-run's record: a new folder under ``root`` with the recorded run's name (the top one first)."""
    found: list[RunRecord] = []
    for name in sorted(_run_folders(root) - before):
        try:
            new = read_record(root / name)
        except (RuntelError, OSError):
            continue
        if new.get("name") == record.get("name"):
            found.append(new)
    found.sort(key=lambda r: (bool(r.get("parent")) != bool(record.get("parent")), r.get("start_time_unix_nano") or 0))
    return found[0] if found else None


def _warn_environment(record: RunRecord, rerun: RunRecord) -> None:
    for d in diff_records(record, rerun):
        if d.section == "python":
            _say(f"warning: Python {d.key} differs: recorded {d.a!r}, re-run {d.b!r}")
    changed = [d for d in diff_records(record, rerun) if d.section == "packages"]
    if changed:
        parts = []
        for d in changed:
            if d.kind == "added":
                parts.append(f"+{d.key} {d.b}")
            elif d.kind == "removed":
                parts.append(f"-{d.key} {d.a}")
            else:
                parts.append(f"{d.key} {d.a} -> {d.b}")
        _say(f"warning: the package set differs from the record: {', '.join(parts)}")


def _prepare_worktree(record: RunRecord, run_dir: Path, into: str | None) -> tuple[Path | None, Path, str | None]:
    """(worktree or None, directory to run in, repository toplevel); the worktree has the diff applied."""
    git = git_info(record)
    commit, toplevel = git.get("commit"), str(_mapping(git).get("toplevel") or "") or None
    cwd = str(_mapping(environment(record).get("process")).get("cwd") or "")
    if not commit or not toplevel:
        if not cwd:
            raise RuntelError(f"run {record.get('id')}: neither a git commit nor a directory was recorded")
        _say(f"warning: no git commit recorded; re-running in {cwd} as it is now")
        return None, _existing(Path(cwd).absolute(), record, "directory"), None
    _existing(Path(toplevel), record, "repository")
    diff = _check_diff(run_dir, record, bool(git.get("dirty")))
    if into:
        worktree = Path(into).resolve()
        if worktree.exists() and any(worktree.iterdir()):
            raise RuntelError(f"--in {into}: not an empty directory")
    else:
        # resolved: the path the re-run sees as its cwd (tempfile may name /tmp through a symlink)
        worktree = Path(tempfile.mkdtemp(prefix="runtel-reproduce-")).resolve() / "worktree"
    added = _git(["worktree", "add", "--detach", str(worktree), commit], toplevel)
    if added.returncode != 0:
        raise RuntelError(f"git worktree add at {commit[:12]} failed: {' '.join(added.stderr.split())}")
    if diff is not None:
        applied = _git(["apply", "--whitespace=nowarn", str(diff)], worktree)
        if applied.returncode != 0:
            _remove_worktree(toplevel, worktree, keep=bool(into))
            raise RuntelError(f"git apply of the recorded git.diff failed: {' '.join(applied.stderr.split())}")
    rel = os.path.relpath(cwd, toplevel) if cwd else "."
    try:
        if rel.startswith(".."):
            _say(f"warning: the run started outside its repository ({cwd}); running there")
            return worktree, _existing(Path(cwd), record, "directory"), toplevel
        _say(f"worktree at {commit[:12]}{' + git.diff' if diff else ''}: {worktree}")
        if not (worktree / rel).is_dir():
            raise RuntelError(f"run {record.get('id')}: the directory {rel} it started in is not in commit "
                              f"{commit[:12]} (untracked?)")
        return worktree, worktree / rel, toplevel
    except RuntelError:
        _remove_worktree(toplevel, worktree, keep=bool(into))
        raise


def _existing(path: Path, record: RunRecord, what: str) -> Path:
    """``path`` if it is a directory; else the one-line error that the recorded ``what`` is gone."""
    if not path.is_dir():
        raise RuntelError(f"run {record.get('id')}: the recorded {what} {path} no longer exists")
    return path


def _remove_worktree(toplevel: str, worktree: Path, *, keep: bool) -> None:
    if keep:
        return
    _git(["worktree", "remove", "--force", str(worktree)], toplevel)
    shutil.rmtree(worktree.parent, ignore_errors=True)
    _say("removed the temporary worktree (and the re-run's files in it); --in DIR keeps it")


def _cmd_reproduce(args: argparse.Namespace) -> int:
    # absolute before anything runs in the worktree: a relative ./runs (the default) means the caller's cwd
    run_dir = Path(os.path.abspath(resolve_run(args.run, run_root(args))))
    record = read_record(run_dir)
    root = run_dir.parent
    _recorded_argv(record)
    worktree, cwd, toplevel = _prepare_worktree(record, run_dir, args.into)
    try:
        command = _command(record, toplevel, worktree)
        env = _child_env(record, root, worktree, toplevel)
        before = _run_folders(root)
        sys.stdout.flush()
        try:
            code = subprocess.run(command, cwd=cwd, env=env, check=False,
                                  stdout=sys.stderr.fileno() if args.json else None).returncode
        except OSError as exc:  # the interpreter or program of argv[0] is gone
            raise RuntelError(f"cannot start the re-run {command[0]}: {exc.strerror or exc}") from exc
        rerun = _find_rerun(root, before, record)
    finally:
        if worktree is not None and toplevel is not None:
            _remove_worktree(toplevel, worktree, keep=bool(args.into))
    if rerun is None:
        problem(f"the re-run of {record.get('id')} recorded no run named {record.get('name')!r} under {root}")
    else:
        _say(f"re-run recorded as {rerun.get('id')}")
        _warn_environment(record, rerun)
    if code != 0:
        _say(f"the re-run exited with code {code}")
    if not args.check:
        if args.json:
            render.print_json({"run": record.get("id"), "rerun": rerun.get("id") if rerun else None,
                               "exit_code": code})
        return code if code != 0 else (1 if rerun is None else 0)
    verdicts = compare_artifacts(record, rerun) + compare_results(record, rerun)
    if args.json:
        render.print_json({"run": record.get("id"), "rerun": rerun.get("id") if rerun else None, "exit_code": code,
                           "artifacts": [{"name": n, "verdict": v, "detail": d} for n, v, d in verdicts]})
    elif not verdicts:
        sys.stdout.write(f"run {record.get('id')} recorded no artifacts: nothing to check\n")
    else:
        from rich.markup import escape  # deferred: rich, only for terminal output (~13 ms)

        render.console().print(render.table(
            escape(f"artifacts of {record.get('id')} vs re-run {rerun.get('id') if rerun else '(none)'}"),
            ["artifact", "verdict", "detail"], [[escape(c) for c in row] for row in verdicts], title_justify="left"))
    ok = bool(verdicts) and all(v == "identical" for _n, v, _d in verdicts) and code == 0 and rerun is not None
    return 0 if ok else 1
