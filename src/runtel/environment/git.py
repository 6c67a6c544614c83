"""Which code ran: commit, branch, dirty flag, remote URL and the uncommitted diff, from the ``git`` CLI.

The CLI is used (no GitPython import, no libgit2) with a 2 s timeout per call and as few calls as
possible: the repository root is found by looking for ``.git`` in Python, then ``git status
--porcelain=v2 --branch`` (commit, branch, dirty in one call) and ``git config --get-regexp`` (remotes)
run in parallel; ``git diff HEAD`` only runs for dirty repositories whose diff is wanted. Results are
cached per process, keyed by git executable and repository root. Nothing here raises: failures come
back as :attr:`GitInfo.error`. Remote URLs lose their credentials through the Redactor.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from runtel.redaction import Redactor

__all__ = ("GitInfo", "clear_cache", "find_toplevel", "git_diff", "git_info", "prefetch", "public_url")

#: the shared, read-only default of mapping fields (a NamedTuple cannot have per-instance factories)
_EMPTY: Mapping[Any, Any] = MappingProxyType({})

_logger = logging.getLogger("runtel.environment")

TIMEOUT_S: Final = 2.0
# The user's GIT_DIR etc. would point git at another repository than the one we looked up.
_DROPPED_ENV: Final = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_CEILING_DIRECTORIES", "GIT_NAMESPACE")
_FIXED_ENV: Final[Mapping[str, str]] = {
    "GIT_OPTIONAL_LOCKS": "0",  # status must not take index.lock: other processes may be committing
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
    "GIT_PAGER": "cat",
}

_lock = threading.Lock()
_which_cache: dict[str, str | None] = {}
_toplevel_cache: dict[str, str | None] = {}
_info_cache: dict[tuple[str, str], _RawGit] = {}
# queries started by prefetch(), collected by git_info(): (processes, deadline)
_pending: dict[tuple[str, str], tuple[list[subprocess.Popen[bytes] | str], float]] = {}
_diff_cache: dict[tuple[str, str], tuple[bytes, int] | None] = {}
# (git, toplevel, max_bytes, redactor patterns) -> final text: redacting a large diff again on every run costs ms
_capped_cache: dict[tuple[str, str, int, tuple[str, ...]], str] = {}


class _RawGit(NamedTuple):
    """Unredacted result of the git calls, cached (redaction depends on the caller's Redactor)."""

    commit: str | None = None
    branch: str | None = None
    upstream: str | None = None
    detached: bool = False
    no_commits: bool = False
    dirty: bool | None = None
    remotes: Mapping[str, str] = _EMPTY
    error: str | None = None


class GitInfo(NamedTuple):
    """Git state of one repository; fields are ``None`` when unknown and ``error`` says why."""

    toplevel: str
    commit: str | None = None
    branch: str | None = None
    upstream: str | None = None
    detached: bool = False
    no_commits: bool = False
    dirty: bool | None = None
    remotes: Mapping[str, str] = _EMPTY  # credentials removed
    url: str | None = None  # preferred remote ("origin", else the first), credentials and ".git" removed
    error: str | None = None

    def to_record(self, *, include_paths: bool = True) -> dict[str, Any]:
        """JSON section for run.json; ``include_paths=False`` drops local paths (telemetry ``minimal``)."""
        record: dict[str, Any] = {}
        if include_paths:
            record["toplevel"] = self.toplevel
        if self.commit is not None:
            record["commit"] = self.commit
        if self.branch is not None:
            record["branch"] = self.branch
        if self.upstream is not None and include_paths:
            record["upstream"] = self.upstream
        if self.detached:
            record["detached"] = True
        if self.no_commits:
            record["no_commits"] = True
        if self.dirty is not None:
            record["dirty"] = self.dirty
        if include_paths:
            if self.remotes:
                record["remotes"] = dict(self.remotes)
            if self.url is not None:
                record["url"] = self.url
        else:
            url = public_url(self.url)
            if url is not None:
                record["url"] = url
        if self.error is not None:
            record["error"] = self.error
        return record


def public_url(url: str | None) -> str | None:
    """``url`` unless it is a local path (``/srv/repo``, ``file://``, ``../x``), which reveals the file system."""
    if not url:
        return None
    if url.startswith(("/", ".", "~", "file:")) or (len(url) > 1 and url[1] == ":"):
        return None
    return url


def _which_git(env: Mapping[str, str]) -> str | None:
    path = env.get("PATH", os.defpath)
    with _lock:
        if path in _which_cache:
            return _which_cache[path]
    found = _find_executable("git", path)
    with _lock:
        _which_cache[path] = found
    return found


def _find_executable(name: str, path: str) -> str | None:
    """``shutil.which`` for one name on POSIX and Windows (importing shutil costs ~2 ms); empty entries are skipped."""
    names = [name + ext for ext in os.environ.get("PATHEXT", ".EXE").split(os.pathsep)] if os.name == "nt" else [name]
    for directory in path.split(os.pathsep):
        if not directory:
            continue
        for candidate_name in names:
            candidate = os.path.join(directory, candidate_name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return None


def find_toplevel(start: str) -> str | None:
    """The working-tree root containing ``start`` (a file or directory), by looking for ``.git``; no subprocess."""
    directory = os.path.abspath(start)
    if not os.path.isdir(directory):
        directory = os.path.dirname(directory)
    with _lock:
        if directory in _toplevel_cache:
            return _toplevel_cache[directory]
    current = directory
    found: str | None = None
    while True:
        if os.path.exists(os.path.join(current, ".git")):  # a directory, or a file in worktrees/submodules
            found = current
            break
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    with _lock:
        _toplevel_cache[directory] = found
    return found


def _git_env(env: Mapping[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in env.items() if k not in _DROPPED_ENV}
    clean.update(_FIXED_ENV)
    return clean


def _spawn(commands: Sequence[Sequence[str]], *, cwd: str, env: Mapping[str, str]) -> list[subprocess.Popen[bytes] | str]:
    """Start commands without waiting; an entry is the process or the text of the error that prevented it."""
    started: list[subprocess.Popen[bytes] | str] = []
    for command in commands:
        try:
            started.append(
                subprocess.Popen(
                    list(command),
                    cwd=cwd,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        except OSError as exc:
            started.append(f"{type(exc).__name__}: {exc}")
    return started


def _collect(
    started: Sequence[subprocess.Popen[bytes] | str], deadline: float, timeout: float
) -> list[tuple[int, bytes, bytes] | str]:
    """Wait for started commands until ``deadline``; each result is ``(returncode, stdout, stderr)`` or an error."""
    results: list[tuple[int, bytes, bytes] | str] = []
    for proc in started:
        if isinstance(proc, str):
            results.append(proc)
            continue
        try:
            out, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            results.append((proc.returncode, out, err))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            results.append(f"git timed out after {timeout:g} s")
    return results


def _run_parallel(
    commands: Sequence[Sequence[str]], *, cwd: str, env: Mapping[str, str], timeout: float
) -> list[tuple[int, bytes, bytes] | str]:
    """Run commands concurrently; each result is ``(returncode, stdout, stderr)`` or an error text."""
    return _collect(_spawn(commands, cwd=cwd, env=env), time.monotonic() + timeout, timeout)


def _first_line(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else ""


def _parse_status(out: str) -> _RawGit:
    commit: str | None = None
    branch: str | None = None
    upstream: str | None = None
    detached = no_commits = dirty = False
    for line in out.splitlines():
        if line.startswith("# branch.oid "):
            oid = line[len("# branch.oid ") :].strip()
            if oid == "(initial)":
                no_commits = True
            else:
                commit = oid
        elif line.startswith("# branch.head "):
            head = line[len("# branch.head ") :].strip()
            if head == "(detached)":
                detached = True
            else:
                branch = head
        elif line.startswith("# branch.upstream "):
            upstream = line[len("# branch.upstream ") :].strip()
        elif line and not line.startswith("#"):
            dirty = True
    return _RawGit(
        commit=commit,
        branch=branch,
        upstream=upstream,
        detached=detached,
        no_commits=no_commits,
        dirty=dirty,
    )


def _parse_remotes(out: str) -> dict[str, str]:
    remotes: dict[str, str] = {}
    for line in out.splitlines():
        key, _, url = line.partition(" ")
        if key.startswith("remote.") and key.endswith(".url") and url:
            remotes.setdefault(key[len("remote.") : -len(".url")], url.strip())
    return remotes


def _start_query(git: str, toplevel: str, env: Mapping[str, str]) -> list[subprocess.Popen[bytes] | str]:
    return _spawn(
        [
            [git, "--no-optional-locks", "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            [git, "config", "--get-regexp", r"^remote\..*\.url$"],
        ],
        cwd=toplevel,
        env=_git_env(env),
    )


def _query(git: str, toplevel: str, env: Mapping[str, str], timeout: float) -> _RawGit:
    return _parse_query(_collect(_start_query(git, toplevel, env), time.monotonic() + timeout, timeout))


def prefetch(paths: Sequence[str], *, env: Mapping[str, str], timeout: float = TIMEOUT_S) -> None:
    """Start the git queries for the repositories holding ``paths`` now, without waiting; never raises.

    A process's first run imports the OTel SDK and runtel's modules (tens of milliseconds of Python);
    started first, git runs on another core meanwhile and :func:`git_info` only collects its output.
    """
    try:
        git = _which_git(env)
        if git is None:
            return
        for path in paths:
            toplevel = find_toplevel(path)
            if toplevel is None:
                continue
            key = (git, toplevel)
            with _lock:
                if key in _info_cache or key in _pending:
                    continue
                _pending[key] = (_start_query(git, toplevel, env), time.monotonic() + timeout)
    except Exception as exc:  # git_info() will simply query again
        _logger.debug("git prefetch failed: %r", exc)


def _parse_query(results: Sequence[tuple[int, bytes, bytes] | str]) -> _RawGit:
    status, config = results
    if isinstance(status, str):
        return _RawGit(error=status)
    code, out, err = status
    if code != 0:
        return _RawGit(error=f"git status failed: {_first_line(err) or f'exit code {code}'}")
    raw = _parse_status(out.decode("utf-8", "replace"))
    remotes: dict[str, str] = {}
    # config exits 1 when no remote is configured: not an error
    if not isinstance(config, str) and config[0] == 0:
        remotes = _parse_remotes(config[1].decode("utf-8", "replace"))
    return _RawGit(
        commit=raw.commit,
        branch=raw.branch,
        upstream=raw.upstream,
        detached=raw.detached,
        no_commits=raw.no_commits,
        dirty=raw.dirty,
        remotes=remotes,
    )


def _strip_dot_git(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len(".git")] if url.endswith(".git") else url


def git_info(path: str, *, env: Mapping[str, str], redactor: Redactor, timeout: float = TIMEOUT_S) -> GitInfo | None:
    """Git state of the repository containing ``path``; ``None`` when ``path`` is in no repository.

    Never raises; a missing ``git`` executable (looked up on ``env["PATH"]``), a timeout or a git error
    is reported in :attr:`GitInfo.error`.
    """
    try:
        toplevel = find_toplevel(path)
        if toplevel is None:
            return None
        git = _which_git(env)
        if git is None:
            return GitInfo(toplevel=toplevel, error="git executable not found on PATH")
        key = (git, toplevel)
        with _lock:
            raw = _info_cache.get(key)
        if raw is None:
            with _lock:
                pending = _pending.pop(key, None)
            if pending is not None:
                raw = _parse_query(_collect(pending[0], pending[1], timeout))
            else:
                raw = _query(git, toplevel, env, timeout)
            with _lock:
                _info_cache[key] = raw
        remotes = {name: redactor.redact_url(url) for name, url in raw.remotes.items()}
        preferred = remotes.get("origin") or next(iter(remotes.values()), None)
        return GitInfo(
            toplevel=toplevel,
            commit=raw.commit,
            branch=raw.branch,
            upstream=raw.upstream,
            detached=raw.detached,
            no_commits=raw.no_commits,
            dirty=raw.dirty,
            remotes=remotes,
            url=_strip_dot_git(preferred) if preferred else None,
            error=raw.error,
        )
    except Exception as exc:  # a bug here must not cost the run its record
        _logger.debug("git lookup failed for %s", path, exc_info=True)
        return GitInfo(toplevel=os.path.abspath(path), error=f"{type(exc).__name__}: {exc}")


def git_diff(
    info: GitInfo,
    *,
    env: Mapping[str, str],
    redactor: Redactor,
    max_bytes: int,
    timeout: float = TIMEOUT_S,
) -> str | None:
    """``git diff HEAD`` of a dirty repository, credentials redacted, cut to ``max_bytes``; else ``None``.

    A cut diff ends with the line ``# runtel: diff truncated at N bytes of M``. Redacting can make
    ``git apply`` reject a hunk that contained a credential; that is the intended trade.
    """
    if not info.dirty or info.no_commits or info.commit is None or info.error is not None:
        return None
    try:
        git = _which_git(env)
        if git is None:
            return None
        key = (git, info.toplevel)
        with _lock:
            known = key in _diff_cache
            cached = _diff_cache.get(key)
        if not known:
            (result,) = _run_parallel(
                [[git, "--no-optional-locks", "diff", "--no-ext-diff", "--no-color", "--no-textconv", "HEAD"]],
                cwd=info.toplevel,
                env=_git_env(env),
                timeout=timeout,
            )
            if isinstance(result, str) or result[0] != 0:
                _logger.debug("git diff failed in %s: %s", info.toplevel, result if isinstance(result, str) else "")
                cached = None
            else:
                cached = (result[1], len(result[1]))
            with _lock:
                _diff_cache[key] = cached
        if cached is None:
            return None
        capped_key = (git, info.toplevel, max_bytes, redactor.patterns)
        with _lock:
            text = _capped_cache.get(capped_key)
        if text is None:
            text = _cap(cached[0], cached[1], max_bytes, redactor)
            with _lock:
                _capped_cache[capped_key] = text
        return text
    except Exception:
        _logger.debug("git diff failed", exc_info=True)
        return None


def _cap(data: bytes, total: int, max_bytes: int, redactor: Redactor) -> str:
    """Redact, then cut at a line boundary within ``max_bytes`` and mark the cut."""
    # Redact a little more than will be kept, so a secret straddling the cut is still recognised.
    head = data[: max_bytes + 65536] if len(data) > max_bytes + 65536 else data
    text = redactor.redact_text(head.decode("utf-8", "replace"))
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes and len(head) == len(data):
        return text
    cut = encoded[:max_bytes]
    newline = cut.rfind(b"\n")
    if newline >= 0:
        cut = cut[: newline + 1]
    kept = cut.decode("utf-8", "ignore")
    if kept and not kept.endswith("\n"):
        kept += "\n"
    return f"{kept}# runtel: diff truncated at {len(cut)} bytes of {total}\n"


def clear_cache() -> None:
    """Forget every cached lookup (tests; after ``git commit`` inside a long-lived process)."""
    with _lock:
        _which_cache.clear()
        _toplevel_cache.clear()
        _info_cache.clear()
        _diff_cache.clear()
        _capped_cache.clear()
        pending = list(_pending.values())
        _pending.clear()
    for started, deadline in pending:  # reap prefetched queries nobody collected
        _collect(started, deadline, TIMEOUT_S)
