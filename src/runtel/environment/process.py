"""The process that ran: ids, start time, executable, owner, Python runtime and environment, env vars.

Process facts are cached per pid (a forked child recomputes them). Environment variables are never read
from ``os.environ`` here: the caller passes the mapping, and only an allowlist is recorded, each value
through the :class:`~runtel.redaction.Redactor`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import pwd
import re
import sys
import threading
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from runtel.environment.host import boot_timestamp
from runtel.redaction import REDACTED, Redactor

__all__ = (
    "ENV_NAMES",
    "ENV_PREFIXES",
    "ProcessFacts",
    "capture_env",
    "clear_cache",
    "process_facts",
    "python_env",
    "runtime_version",
)

_logger = logging.getLogger("runtel.environment")

# Environment variables recorded at level "full" (docs/privacy.md lists the same): exact names ...
ENV_NAMES: Final = frozenset(
    {
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "GROUP_RANK",
        "NODE_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "VIRTUAL_ENV",
        "CONDA_DEFAULT_ENV",
        "CONDA_PREFIX",
        "PYENV_VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONHASHSEED",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "HOSTNAME",
        "WANDB_MODE",
        "NVIDIA_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "XLA_FLAGS",
        "JAX_PLATFORMS",
    }
)
# ... and prefixes.
ENV_PREFIXES: Final = (
    "CUDA_",
    "SLURM_",
    "OMPI_",
    "PMI_",
    "KUBERNETES_",
    "TORCH",
    "PYTORCH_",
    "NCCL_",
    "HF_",
    "RUNTEL_",
    "OTEL_",
)
# Values never recorded, whatever they look like (they hold auth headers by definition).
_ALWAYS_REDACTED: Final = re.compile(r"OTEL_EXPORTER_OTLP(?:_[A-Z]+)?_HEADERS\Z")
_GENERIC_VENV_NAMES: Final = frozenset({".venv", "venv", "env", ".env", "virtualenv"})

_lock = threading.Lock()
_cached: ProcessFacts | None = None


class ProcessFacts(NamedTuple):
    """Per-process facts; ``None`` = could not be determined."""

    pid: int
    parent_pid: int
    creation_time: str | None
    executable_path: str | None
    executable_name: str | None
    owner: str | None
    runtime_name: str
    runtime_version: str
    runtime_description: str
    prefix: str
    base_prefix: str


def runtime_version() -> str:
    """Dotted ``sys.implementation.version`` without ``final``/0 (semconv ``process.runtime.version``)."""
    v = sys.implementation.version
    text = f"{v.major}.{v.minor}.{v.micro}"
    if v.releaselevel != "final":
        text += f"{v.releaselevel[0] if v.releaselevel != 'candidate' else 'rc'}{v.serial}"
    return text


def _creation_time(pid: int) -> str | None:
    """Process start from /proc (clock ticks since boot + btime); psutil elsewhere."""
    timestamp: float | None = None
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:  # the codec already loaded
            stat = fh.read()
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[19])  # field 22 of proc(5), counted after "pid (comm) "

        boot = boot_timestamp()
        if boot is not None:
            timestamp = boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        timestamp = None
    if timestamp is None:
        try:
            import psutil  # deferred: psutil (~8 ms)

            timestamp = float(psutil.Process(pid).create_time())
        except Exception:
            return None
    return _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc).isoformat()


def _owner() -> str | None:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, OSError):
        return None


def _compute(pid: int) -> ProcessFacts:
    executable = sys.executable or None
    return ProcessFacts(
        pid=pid,
        parent_pid=os.getppid(),
        creation_time=_creation_time(pid),
        executable_path=executable,
        executable_name=os.path.basename(executable) if executable else None,
        owner=_owner(),
        runtime_name=sys.implementation.name,
        runtime_version=runtime_version(),
        runtime_description=sys.version,
        prefix=sys.prefix,
        base_prefix=getattr(sys, "base_prefix", sys.prefix),
    )


def process_facts() -> ProcessFacts:
    """Facts of the current process, cached until the pid changes (fork)."""
    global _cached
    pid = os.getpid()
    with _lock:
        if _cached is None or _cached.pid != pid:
            _cached = _compute(pid)
        return _cached


def clear_cache() -> None:
    """Forget the cached facts (tests)."""
    global _cached
    with _lock:
        _cached = None


def python_env(env: Mapping[str, str], prefix: str | None = None, base_prefix: str | None = None) -> dict[str, Any]:
    """Which Python environment runs: ``{"type": "venv"|"conda"|"system", "name": ..., "path": ...}``.

    Decided from the interpreter's own prefix (what actually runs), with the conda variables only used
    to name the conda environment.
    """
    prefix = prefix if prefix is not None else sys.prefix
    base_prefix = base_prefix if base_prefix is not None else getattr(sys, "base_prefix", sys.prefix)
    if prefix != base_prefix:
        name = os.path.basename(prefix.rstrip(os.sep))
        if name in _GENERIC_VENV_NAMES:  # ".venv" alone says nothing; "project/.venv" does
            name = f"{os.path.basename(os.path.dirname(prefix.rstrip(os.sep)))}/{name}"
        return {"type": "venv", "name": name, "path": prefix}
    if os.path.isdir(os.path.join(prefix, "conda-meta")):
        conda_prefix = env.get("CONDA_PREFIX")
        same = bool(conda_prefix) and os.path.realpath(conda_prefix or "") == os.path.realpath(prefix)
        conda_name = env.get("CONDA_DEFAULT_ENV") if same else None
        return {"type": "conda", "name": conda_name or os.path.basename(prefix.rstrip(os.sep)), "path": prefix}
    return {"type": "system", "name": None, "path": prefix}


def capture_env(env: Mapping[str, str], redactor: Redactor) -> dict[str, str]:
    """The allowlisted variables of ``env`` (:data:`ENV_NAMES`, :data:`ENV_PREFIXES`), redacted, sorted."""
    captured: dict[str, str] = {}
    for name in sorted(env):
        if name not in ENV_NAMES and not name.startswith(ENV_PREFIXES):
            continue
        value = env[name]
        if _ALWAYS_REDACTED.match(name) or redactor.is_secret_key(name):
            captured[name] = REDACTED
        else:
            captured[name] = redactor.redact_text(str(value))
    return captured
