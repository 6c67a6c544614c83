"""What ran, where, with what: the environment facts of a run, at the telemetry level the user chose.

:func:`collect_environment` assembles the probes of this package into an :class:`Environment`: OTel
Resource attributes, run-span attributes, JSON sections for run.json and the uncommitted git diff.
Every probe is wrapped so that a failure drops its fields (logged once) instead of raising, and every
expensive fact (host, packages, git) is cached per process, so starting a second run costs well under
a millisecond. What each level records is documented in ``docs/privacy.md``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from runtel import semconv
from runtel.environment import cluster, git, host, packages, process, worktree
from runtel.redaction import Redactor

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

__all__ = ("LEVELS", "Environment", "clear_caches", "collect_environment")

_logger = logging.getLogger("runtel.environment")

LEVELS: Final = ("full", "minimal", "off")

_T = TypeVar("_T")
#: (inputs, result) of the last collection: a process's runs nearly always share argv, cwd and settings
_last: list[Any] = [None, None]
_logged: set[str] = set()
_logged_lock = threading.Lock()


class Environment:
    """Environment facts of one run, split by destination.

    Attributes:
        resource: OTel Resource attributes (``host.*``, ``os.*``, ``process.*``, ``container.id``, ``k8s.*``).
        span: Run-span attributes (``vcs.*``, ``runtel.git.dirty``, ``runtel.packages.*``, ``runtel.slurm.*``,
            ``runtel.rank.*``, ``runtel.python.env``).
        record: JSON sections for run.json (``process``, ``host``, ``machine``, ``cluster``, ``git``,
            ``packages``, ``packages_summary``, ``env``, ``python``).
        git_diff: ``git diff HEAD`` of the script's repository when dirty (level ``full`` only), else ``None``.

    A plain slotted class, not a dataclass: this module is imported by a process's first run, and
    generating a dataclass's methods there cost ~1 ms.
    """

    __slots__ = ("git_diff", "record", "resource", "span")

    def __init__(self, resource: dict[str, AttributeValue] | None = None, span: dict[str, AttributeValue] | None = None,
                 record: dict[str, Any] | None = None, git_diff: str | None = None) -> None:
        self.resource: dict[str, AttributeValue] = {} if resource is None else resource
        self.span: dict[str, AttributeValue] = {} if span is None else span
        self.record: dict[str, Any] = {} if record is None else record
        self.git_diff = git_diff

    def _fields(self) -> tuple[Any, ...]:
        return self.resource, self.span, self.record, self.git_diff

    def __eq__(self, other: object) -> bool:
        return self._fields() == other._fields() if isinstance(other, Environment) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable contents, like the dataclass it replaces

    def __repr__(self) -> str:
        return (f"Environment(resource={self.resource!r}, span={self.span!r}, record={self.record!r}, "
                f"git_diff={self.git_diff!r})")


def _log_once(key: str, message: str, *args: object) -> None:
    with _logged_lock:
        if key in _logged:
            return
        _logged.add(key)
    _logger.warning(message, *args, exc_info=True)


def _safely(name: str, probe: Callable[[], _T], default: _T) -> _T:
    """Run one probe; on failure log once and return ``default`` so the others still report."""
    try:
        return probe()
    except Exception as exc:
        _log_once(name, "runtel could not collect %s (%s); recording the run without it", name, type(exc).__name__)
        return default


def clear_caches() -> None:
    """Forget every per-process cache (host, process, packages, git, container); for tests."""
    host.clear_cache()
    process.clear_cache()
    packages.clear_cache()
    git.clear_cache()
    cluster.clear_cache()
    _last[:] = [None, None]


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and value != "" and value != {}:
        target[key] = value


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _minimize_path(value: str, root: str | None) -> str:
    """Absolute paths inside the project become relative to its root; any other absolute path its basename."""
    if not value.startswith(("/", "~")):
        return value
    if root is not None and value.startswith("/"):
        normal = os.path.normpath(value)
        if _inside(normal, root):
            return os.path.relpath(normal, root)
    return os.path.basename(value.rstrip("/")) or value[:1]


def _minimize_argv(argv: Sequence[str], root: str | None) -> list[str]:
    out: list[str] = []
    for arg in argv:
        if arg.startswith("-") and "=" in arg:
            name, _, value = arg.partition("=")
            out.append(f"{name}={_minimize_path(value, root)}")
        else:
            out.append(_minimize_path(arg, root))
    return out


def _vcs_span(info: git.GitInfo | None, *, full: bool) -> dict[str, AttributeValue]:
    span: dict[str, AttributeValue] = {}
    if info is None:
        return span
    url = info.url if full else git.public_url(info.url)
    if url:
        span[semconv.VCS_REPOSITORY_URL_FULL] = url
    if info.commit:
        span[semconv.VCS_REF_HEAD_REVISION] = info.commit
    if info.branch and not info.detached:
        span[semconv.VCS_REF_HEAD_NAME] = info.branch
        span[semconv.VCS_REF_HEAD_TYPE] = "branch"
    if info.dirty is not None:
        span[semconv.GIT_DIRTY] = info.dirty
    return span


def _moved_git(info: git.GitInfo, moved: worktree.Relocation | None) -> git.GitInfo:
    return info if moved is None else info._replace(toplevel=moved.path(info.toplevel))


def collect_environment(
    *,
    level: str,
    env: Mapping[str, str],
    argv: Sequence[str],
    cwd: str,
    script_path: str | None,
    redactor: Redactor,
    git_diff_max_bytes: int,
    gpus: Sequence[Mapping[str, Any]] = (),
) -> Environment:
    """Collect the environment of a run at telemetry ``level`` (``full``, ``minimal`` or ``off``); never raises.

    Args:
        level: How much to record (docs/privacy.md); an unknown level is treated as ``minimal``.
        env: The environment variables to inspect (the caller passes ``os.environ``; tests a dict).
        argv: The command line (``sys.argv``); recorded redacted.
        cwd: Working directory of the run.
        script_path: The file being run (its git repository is "the project"), or ``None``.
        redactor: Removes credentials from everything recorded.
        git_diff_max_bytes: Cap on the saved ``git diff HEAD``.
        gpus: GPU inventory dicts from the GPU backend, recorded under ``machine.gpus``.

    Example:
        >>> from runtel.redaction import Redactor
        >>> e = collect_environment(level="off", env={}, argv=[], cwd=".", script_path=None,
        ...                         redactor=Redactor(), git_diff_max_bytes=1024)
        >>> e.record, e.git_diff
        ({}, None)
    """
    if level == "off":
        return Environment()
    # Every probe is cached per process already; reusing the assembled result as well makes a warm run's
    # capture a tuple comparison. The variables are part of the key by content (a caller may pass
    # os.environ and change it); the pid is too, because a forked child is a different process.
    key = (level, os.getpid(), tuple(env.items()), tuple(argv), cwd, script_path, redactor.patterns,
           git_diff_max_bytes, tuple(tuple(sorted(g.items())) for g in gpus))
    if _last[0] is not None and _last[0] == key:
        return _last[1]  # type: ignore[no-any-return]
    try:
        result = _collect(
            full=level == "full",
            env=env,
            argv=argv,
            cwd=cwd,
            script_path=script_path,
            redactor=redactor,
            git_diff_max_bytes=git_diff_max_bytes,
            gpus=gpus,
        )
    except Exception:  # belt and braces: each probe is already guarded
        _log_once("environment", "runtel could not collect the run environment")
        return Environment()
    _last[:] = [key, result]
    return result


def _collect(
    *,
    full: bool,
    env: Mapping[str, str],
    argv: Sequence[str],
    cwd: str,
    script_path: str | None,
    redactor: Redactor,
    git_diff_max_bytes: int,
    gpus: Sequence[Mapping[str, Any]],
) -> Environment:
    cwd = os.path.abspath(cwd)
    proc = _safely("process facts", process.process_facts, None)

    # --- git: the script's repository is "the project"; the cwd's only when it is another one ---
    script_git: git.GitInfo | None = None
    if script_path:
        script_abs = os.path.normpath(os.path.join(cwd, script_path))
        script_git = _safely("git state", lambda: git.git_info(script_abs, env=env, redactor=redactor), None)
    cwd_git = _safely("git state", lambda: git.git_info(cwd, env=env, redactor=redactor), None)
    if script_git is not None and cwd_git is not None and cwd_git.toplevel == script_git.toplevel:
        cwd_git = None
    primary = script_git or cwd_git
    project_root = primary.toplevel if primary is not None else None

    inventory = _safely("package inventory", packages.inventory, None)
    slurm: dict[str, Any] = _safely("SLURM variables", lambda: cluster.slurm_info(env), {})
    rank: dict[str, Any] = _safely("rank variables", lambda: cluster.rank_info(env), {})

    redacted_argv: list[str] = _safely("argv", lambda: redactor.redact_argv(argv), [])
    resource: dict[str, Any] = {}
    span: dict[str, Any] = {}
    record: dict[str, Any] = {}

    span.update(_vcs_span(primary, full=full))
    if inventory is not None:
        span[semconv.PACKAGES_COUNT] = inventory.count
        span[semconv.PACKAGES_HASH] = inventory.hash
    # a `runtel reproduce` re-run in a temporary worktree records the repository it stands for
    moved = worktree.relocation(env)
    git_record: dict[str, Any] = {}
    if script_git is not None:
        git_record["script"] = _moved_git(script_git, moved).to_record(include_paths=full)
    if cwd_git is not None:
        git_record["cwd"] = _moved_git(cwd_git, moved).to_record(include_paths=full)
    _put(record, "git", git_record)
    if inventory is not None:
        record["packages_summary"] = {"count": inventory.count, "hash": inventory.hash}

    if not full:
        shown_argv = _minimize_argv(redacted_argv, project_root)
        resource[semconv.OS_TYPE] = host.os_type_name(sys.platform)
        if proc is not None:
            resource[semconv.PROCESS_PID] = proc.pid
            _put(resource, semconv.PROCESS_CREATION_TIME, proc.creation_time)
            resource[semconv.PROCESS_RUNTIME_NAME] = proc.runtime_name
            resource[semconv.PROCESS_RUNTIME_VERSION] = proc.runtime_version
            record["python"] = {"implementation": proc.runtime_name, "version": proc.runtime_version}
        resource[semconv.PROCESS_COMMAND_ARGS] = shown_argv
        process_record: dict[str, Any] = {"argv": shown_argv}
        if project_root is not None and _inside(cwd, project_root):
            process_record["cwd"] = os.path.relpath(cwd, project_root)
        record["process"] = process_record
        rank_attributes = cluster.span_attributes({}, rank)
        span.update(rank_attributes)
        if rank:
            record["cluster"] = {"rank": rank}
        return Environment(resource=resource, span=span, record=record, git_diff=None)

    # --- level "full" ---
    facts = _safely("host facts", host.host_facts, None)
    k8s: dict[str, str] = _safely("Kubernetes variables", lambda: cluster.kubernetes_info(env), {})
    container = _safely("container id", cluster.container_id, None)
    pyenv: dict[str, Any] = _safely("Python environment", lambda: process.python_env(env), {})
    captured_env: dict[str, str] = _safely("environment variables", lambda: process.capture_env(env, redactor), {})

    if facts is not None:
        _put(resource, semconv.HOST_NAME, facts.name)
        _put(resource, semconv.HOST_ARCH, facts.arch)
        _put(resource, semconv.HOST_ID, facts.machine_id)
        _put(resource, semconv.HOST_CPU_MODEL_NAME, facts.cpu.get("model"))
        _put(resource, semconv.HOST_CPU_VENDOR_ID, facts.cpu.get("vendor"))
        _put(resource, semconv.OS_TYPE, facts.os_type)
        _put(resource, semconv.OS_NAME, facts.os_name)
        _put(resource, semconv.OS_DESCRIPTION, facts.os_description)
        _put(resource, semconv.OS_VERSION, facts.os_version)
        host_record: dict[str, Any] = {}
        _put(host_record, "name", facts.name)
        _put(host_record, "id", facts.machine_id)
        _put(host_record, "arch", facts.arch)
        host_record["os"] = {
            k: v
            for k, v in (
                ("type", facts.os_type),
                ("name", facts.os_name),
                ("version", facts.os_version),
                ("description", facts.os_description),
            )
            if v is not None
        }
        _put(host_record, "boot_time", facts.boot_time)
        record["host"] = host_record
        record["machine"] = {"cpu": dict(facts.cpu), "memory": dict(facts.memory), "gpus": [dict(g) for g in gpus]}
    else:
        record["machine"] = {"gpus": [dict(g) for g in gpus]}

    if moved is not None:
        redacted_argv, cwd = moved.argv(redacted_argv), moved.path(cwd)
    process_record = {"argv": redacted_argv, "cwd": cwd}
    if proc is not None:
        resource[semconv.PROCESS_PID] = proc.pid
        resource[semconv.PROCESS_PARENT_PID] = proc.parent_pid
        _put(resource, semconv.PROCESS_CREATION_TIME, proc.creation_time)
        _put(resource, semconv.PROCESS_EXECUTABLE_PATH, proc.executable_path)
        _put(resource, semconv.PROCESS_EXECUTABLE_NAME, proc.executable_name)
        _put(resource, semconv.PROCESS_OWNER, proc.owner)
        resource[semconv.PROCESS_RUNTIME_NAME] = proc.runtime_name
        resource[semconv.PROCESS_RUNTIME_VERSION] = proc.runtime_version
        resource[semconv.PROCESS_RUNTIME_DESCRIPTION] = proc.runtime_description
        process_record.update({"pid": proc.pid, "parent_pid": proc.parent_pid})
        _put(process_record, "creation_time", proc.creation_time)
        _put(process_record, "executable", proc.executable_path)
        _put(process_record, "owner", proc.owner)
        python_record: dict[str, Any] = {
            "implementation": proc.runtime_name,
            "version": proc.runtime_version,
            "description": proc.runtime_description,
            "executable": proc.executable_path,
            "prefix": proc.prefix,
        }
        _put(python_record, "env", pyenv)
        record["python"] = python_record
    resource[semconv.PROCESS_WORKING_DIRECTORY] = cwd
    resource[semconv.PROCESS_COMMAND_ARGS] = redacted_argv
    record["process"] = process_record

    _put(resource, semconv.CONTAINER_ID, container)
    _put(resource, semconv.K8S_POD_NAME, k8s.get("pod_name"))
    _put(resource, semconv.K8S_NAMESPACE_NAME, k8s.get("namespace_name"))
    _put(resource, semconv.K8S_NODE_NAME, k8s.get("node_name"))

    span.update(cluster.span_attributes(slurm, rank))
    _put(span, semconv.PYTHON_ENV, pyenv.get("name"))
    cluster_record: dict[str, Any] = {}
    _put(cluster_record, "slurm", slurm)
    _put(cluster_record, "rank", rank)
    _put(cluster_record, "kubernetes", k8s)
    _put(cluster_record, "container_id", container)
    _put(record, "cluster", cluster_record)

    if inventory is not None:
        record["packages"] = dict(inventory.packages)
    record["env"] = captured_env

    diff = None
    if primary is not None and primary.dirty:
        diff = _safely(
            "git diff",
            lambda: git.git_diff(primary, env=env, redactor=redactor, max_bytes=git_diff_max_bytes),
            None,
        )
    return Environment(resource=resource, span=span, record=record, git_diff=diff)
