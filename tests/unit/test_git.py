"""Git probe against real repositories in tmp_path: clean, dirty, detached, empty, remotes, failures."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtel import semconv
from runtel.environment import clear_caches, collect_environment
from runtel.environment import git as gitmod
from runtel.redaction import REDACTED, Redactor

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git CLI not installed")


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """Each test sees its repositories afresh (the probe caches per process)."""
    clear_caches()
    yield
    clear_caches()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A minimal environment: the real PATH, a private HOME so no user git config leaks in."""
    home = tmp_path / "home"
    home.mkdir()
    return {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"}


def _git(repo: Path, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def _repo(tmp_path: Path, env: dict[str, str], *, commit: bool = True) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, env, "init", "-q", "-b", "main")
    (repo / "train.py").write_text("print('hello')\n")
    if commit:
        _git(repo, env, "add", "train.py")
        _git(repo, env, "commit", "-q", "-m", "first")
    return repo


def test_clean_repo(tmp_path: Path, env: dict[str, str]) -> None:
    """A committed, clean repository reports its commit, its branch and dirty=False."""
    repo = _repo(tmp_path, env)
    info = gitmod.git_info(str(repo / "train.py"), env=env, redactor=Redactor())
    assert info is not None
    assert info.commit == _git(repo, env, "rev-parse", "HEAD")
    assert info.branch == "main"
    assert info.dirty is False and info.error is None and not info.detached
    assert info.toplevel == str(repo)


def test_dirty_repo_and_diff(tmp_path: Path, env: dict[str, str]) -> None:
    """An edited tracked file makes the repo dirty and shows up in the saved diff."""
    repo = _repo(tmp_path, env)
    (repo / "train.py").write_text("print('changed')\n")
    info = gitmod.git_info(str(repo), env=env, redactor=Redactor())
    assert info is not None and info.dirty is True
    diff = gitmod.git_diff(info, env=env, redactor=Redactor(), max_bytes=1 << 20)
    assert diff is not None
    assert "+print('changed')" in diff and "-print('hello')" in diff


def test_untracked_files_do_not_make_dirty(tmp_path: Path, env: dict[str, str]) -> None:
    """Only tracked changes count (they are what ``git diff HEAD`` can restore)."""
    repo = _repo(tmp_path, env)
    (repo / "notes.txt").write_text("scratch\n")
    info = gitmod.git_info(str(repo), env=env, redactor=Redactor())
    assert info is not None and info.dirty is False


def test_clean_repo_has_no_diff(tmp_path: Path, env: dict[str, str]) -> None:
    """No diff is produced for a clean repository."""
    repo = _repo(tmp_path, env)
    info = gitmod.git_info(str(repo), env=env, redactor=Redactor())
    assert info is not None
    assert gitmod.git_diff(info, env=env, redactor=Redactor(), max_bytes=1000) is None


def test_diff_is_truncated_with_marker(tmp_path: Path, env: dict[str, str]) -> None:
    """A diff larger than the cap is cut at a line boundary and ends with the marker line."""
    repo = _repo(tmp_path, env)
    (repo / "train.py").write_text("".join(f"line {i} of a long change\n" for i in range(2000)))
    info = gitmod.git_info(str(repo), env=env, redactor=Redactor())
    assert info is not None
    diff = gitmod.git_diff(info, env=env, redactor=Redactor(), max_bytes=1000)
    assert diff is not None
    *body, marker = diff.rstrip("\n").split("\n")
    match = re.fullmatch(r"# runtel: diff truncated at (\d+) bytes of (\d+)", marker)
    assert match is not None
    kept, total = int(match.group(1)), int(match.group(2))
    assert kept <= 1000 < total
    assert len(("\n".join(body) + "\n").encode()) == kept


def test_diff_is_redacted(tmp_path: Path, env: dict[str, str]) -> None:
    """A credential written into the working tree does not reach git.diff."""
    repo = _repo(tmp_path, env)
    (repo / "train.py").write_text("API_KEY = 'AKIAIOSFODNN7EXAMPLE'\npassword = 'hunter2'\n")
    info = gitmod.git_info(str(repo), env=env, redactor=Redactor())
    assert info is not None
    diff = gitmod.git_diff(info, env=env, redactor=Redactor(), max_bytes=1 << 20)
    assert diff is not None and REDACTED in diff
    assert "AKIAIOSFODNN7EXAMPLE" not in diff and "hunter2" not in diff


def test_detached_head(tmp_path: Path, env: dict[str, str]) -> None:
    """A detached HEAD has a commit but no branch; the span carries no ref name."""
    repo = _repo(tmp_path, env)
    sha = _git(repo, env, "rev-parse", "HEAD")
    _git(repo, env, "checkout", "-q", "--detach", "HEAD")
    info = gitmod.git_info(str(repo), env=env, redactor=Redactor())
    assert info is not None
    assert info.detached and info.branch is None and info.commit == sha
    assert info.to_record()["detached"] is True
    environment = collect_environment(
        level="full",
        env=env,
        argv=["train.py"],
        cwd=str(repo),
        script_path="train.py",
        redactor=Redactor(),
        git_diff_max_bytes=1000,
    )
    assert semconv.VCS_REF_HEAD_NAME not in environment.span
    assert semconv.VCS_REF_HEAD_TYPE not in environment.span
    assert environment.span[semconv.VCS_REF_HEAD_REVISION] == sha
    assert environment.record["git"]["script"]["detached"] is True


def test_repo_without_commits(tmp_path: Path, env: dict[str, str]) -> None:
    """A fresh ``git init`` reports no_commits, no commit, its branch name, and no error."""
    repo = _repo(tmp_path, env, commit=False)
    info = gitmod.git_info(str(repo), env=env, redactor=Redactor())
    assert info is not None
    assert info.no_commits and info.commit is None and info.error is None
    assert info.branch == "main"
    record = info.to_record()
    assert record["no_commits"] is True and "commit" not in record
    assert gitmod.git_diff(info, env=env, redactor=Redactor(), max_bytes=100) is None


def test_remote_credentials_are_stripped(tmp_path: Path, env: dict[str, str]) -> None:
    """A remote URL with user:password loses the credentials and the trailing .git."""
    repo = _repo(tmp_path, env)
    _git(repo, env, "remote", "add", "origin", "https://user:SECRET@host.example/org/repo.git")
    _git(repo, env, "remote", "add", "mirror", "git@github.com:org/repo.git")
    info = gitmod.git_info(str(repo), env=env, redactor=Redactor())
    assert info is not None
    assert info.url == f"https://{REDACTED}@host.example/org/repo"
    assert info.remotes["mirror"] == "git@github.com:org/repo.git"
    assert "SECRET" not in repr(info.to_record()) and "SECRET" not in repr(info)


def test_token_only_remote_is_stripped(tmp_path: Path, env: dict[str, str]) -> None:
    """A bare token as URL userinfo (https://TOKEN@github.com/...) is removed too."""
    repo = _repo(tmp_path, env)
    token = "ghp_" + "Z9" * 18
    _git(repo, env, "remote", "add", "origin", f"https://{token}@github.com/org/repo.git")
    info = gitmod.git_info(str(repo), env=env, redactor=Redactor())
    assert info is not None and info.url == f"https://{REDACTED}@github.com/org/repo"


def test_minimal_record_hides_local_paths(tmp_path: Path, env: dict[str, str]) -> None:
    """Without paths, the record keeps commit/branch/dirty and drops toplevel and local remotes."""
    repo = _repo(tmp_path, env)
    _git(repo, env, "remote", "add", "origin", str(tmp_path / "elsewhere.git"))
    info = gitmod.git_info(str(repo), env=env, redactor=Redactor())
    assert info is not None
    record = info.to_record(include_paths=False)
    assert set(record) == {"commit", "branch", "dirty"}
    assert str(tmp_path) not in repr(record)


def test_not_a_repository(tmp_path: Path, env: dict[str, str]) -> None:
    """Outside any repository the probe returns None."""
    plain = tmp_path / "plain"
    plain.mkdir()
    assert gitmod.git_info(str(plain), env=env, redactor=Redactor()) is None


def test_no_git_binary(tmp_path: Path, env: dict[str, str]) -> None:
    """With no git on PATH, the repository is still found and the error says why; nothing raises."""
    repo = _repo(tmp_path, env)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    no_git_env = {**env, "PATH": str(empty)}
    info = gitmod.git_info(str(repo), env=no_git_env, redactor=Redactor())
    assert info is not None and info.commit is None
    assert info.error is not None and "not found" in info.error
    environment = collect_environment(
        level="full",
        env=no_git_env,
        argv=["train.py"],
        cwd=str(repo),
        script_path="train.py",
        redactor=Redactor(),
        git_diff_max_bytes=1000,
    )
    assert semconv.VCS_REF_HEAD_REVISION not in environment.span
    assert "not found" in environment.record["git"]["script"]["error"]


def test_git_failure_is_reported(tmp_path: Path, env: dict[str, str]) -> None:
    """A broken .git (pointing nowhere) yields an error field, not an exception."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ".git").write_text("gitdir: /nonexistent/path\n")
    info = gitmod.git_info(str(broken), env=env, redactor=Redactor())
    assert info is not None and info.error is not None and info.commit is None


def test_git_timeout_is_reported(tmp_path: Path, env: dict[str, str]) -> None:
    """A hanging git is killed after the timeout and reported."""
    repo = _repo(tmp_path, env)
    bin_dir = tmp_path / "slow-bin"
    bin_dir.mkdir()
    fake = bin_dir / "git"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    info = gitmod.git_info(
        str(repo), env={**env, "PATH": str(bin_dir) + ":/bin:/usr/bin"}, redactor=Redactor(), timeout=0.3
    )
    assert info is not None and info.error is not None and "timed out" in info.error


def test_user_git_dir_is_ignored(tmp_path: Path, env: dict[str, str]) -> None:
    """A GIT_DIR in the passed environment does not redirect the probe to another repository."""
    repo = _repo(tmp_path, env)
    other = tmp_path / "other"
    other.mkdir()
    _git(other, env, "init", "-q")
    info = gitmod.git_info(str(repo), env={**env, "GIT_DIR": str(other / ".git")}, redactor=Redactor())
    assert info is not None and info.commit == _git(repo, env, "rev-parse", "HEAD")


def test_results_are_cached_per_repository(tmp_path: Path, env: dict[str, str]) -> None:
    """A second lookup reuses the first result until the caches are cleared."""
    repo = _repo(tmp_path, env)
    first = gitmod.git_info(str(repo), env=env, redactor=Redactor())
    (repo / "train.py").write_text("print('changed')\n")
    second = gitmod.git_info(str(repo / "train.py"), env=env, redactor=Redactor())
    assert first is not None and second is not None and second.dirty is False
    gitmod.clear_cache()
    third = gitmod.git_info(str(repo), env=env, redactor=Redactor())
    assert third is not None and third.dirty is True


def test_cwd_repo_recorded_when_different(tmp_path: Path, env: dict[str, str]) -> None:
    """Script and cwd in different repositories: both are recorded, the span describes the script's."""
    repo = _repo(tmp_path, env)
    other = tmp_path / "work"
    other.mkdir()
    _git(other, env, "init", "-q", "-b", "data")
    environment = collect_environment(
        level="full",
        env=env,
        argv=[str(repo / "train.py")],
        cwd=str(other),
        script_path=str(repo / "train.py"),
        redactor=Redactor(),
        git_diff_max_bytes=1000,
    )
    git_record = environment.record["git"]
    assert git_record["script"]["branch"] == "main"
    assert git_record["cwd"]["branch"] == "data" and git_record["cwd"]["no_commits"] is True
    assert environment.span[semconv.VCS_REF_HEAD_NAME] == "main"


def test_prefetched_query_is_collected(tmp_path: Path, env: dict[str, str]) -> None:
    """prefetch() starts git at once; git_info() reads that result: a commit made after the prefetched git
    finished is not seen (proving the answer came from the early query), and nothing stays pending."""
    repo = _repo(tmp_path, env)
    first_commit = _git(repo, env, "rev-parse", "HEAD")
    gitmod.prefetch([str(repo / "train.py"), str(repo)], env=env)  # one repository: one pending query
    assert len(gitmod._pending) == 1
    for procs, _ in gitmod._pending.values():
        for proc in procs:
            if isinstance(proc, subprocess.Popen):
                proc.wait(timeout=10)
    (repo / "train.py").write_text("print('second')\n")
    _git(repo, env, "commit", "-q", "-am", "second")
    info = gitmod.git_info(str(repo), env=env, redactor=Redactor())
    assert info is not None and info.error is None
    assert info.commit == first_commit != _git(repo, env, "rev-parse", "HEAD")
    assert gitmod._pending == {}


def test_prefetch_of_no_repository_or_no_git_starts_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    """Paths outside repositories, or no git on PATH: nothing is started and nothing raises."""
    plain = tmp_path / "plain"
    plain.mkdir()
    gitmod.prefetch([str(plain)], env=env)
    repo = _repo(tmp_path, env)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    gitmod.prefetch([str(repo)], env={**env, "PATH": str(empty)})
    assert gitmod._pending == {}


def test_clear_cache_reaps_uncollected_prefetches(tmp_path: Path, env: dict[str, str]) -> None:
    """A prefetch nobody collected is waited for by clear_cache(): no zombie git processes are left."""
    repo = _repo(tmp_path, env)
    gitmod.prefetch([str(repo)], env=env)
    started = [p for procs, _ in gitmod._pending.values() for p in procs if isinstance(p, subprocess.Popen)]
    assert started
    gitmod.clear_cache()
    assert gitmod._pending == {}
    assert all(p.returncode is not None for p in started)


def test_find_executable_needs_an_executable_file(tmp_path: Path) -> None:
    """The PATH lookup that replaced shutil.which: skips empty entries (no git from the cwd), directories
    and non-executable files, and returns the first executable match."""
    not_exec, exec_dir, a_dir = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (not_exec, exec_dir, a_dir):
        d.mkdir()
    (not_exec / "git").write_text("#!/bin/sh\n")
    (a_dir / "git").mkdir()
    real = exec_dir / "git"
    real.write_text("#!/bin/sh\n")
    real.chmod(0o755)
    path = os.pathsep.join(["", str(not_exec), str(a_dir), str(exec_dir)])
    assert gitmod._find_executable("git", path) == str(real)
    assert gitmod._find_executable("git", os.pathsep.join(["", str(not_exec)])) is None
