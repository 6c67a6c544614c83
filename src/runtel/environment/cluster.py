"""Where in a cluster a run executed: SLURM job, distributed rank, Kubernetes pod, container.

Schedulers and launchers announce themselves through environment variables, which the caller passes
in (a dict in tests). Only the container id and the Kubernetes namespace file come from the file
system, and those are read once per process.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any, Final

from runtel import semconv

__all__ = (
    "clear_cache",
    "container_id",
    "kubernetes_info",
    "parse_container_id",
    "rank_info",
    "slurm_info",
    "span_attributes",
)

# record key -> SLURM variable
_SLURM_VARS: Final = (
    ("job_id", "SLURM_JOB_ID"),
    ("job_name", "SLURM_JOB_NAME"),
    ("array_job_id", "SLURM_ARRAY_JOB_ID"),
    ("array_task_id", "SLURM_ARRAY_TASK_ID"),
    ("node_list", "SLURM_JOB_NODELIST"),
    ("partition", "SLURM_JOB_PARTITION"),
    ("ntasks", "SLURM_NTASKS"),
    ("nnodes", "SLURM_JOB_NUM_NODES"),
    ("cpus_per_task", "SLURM_CPUS_PER_TASK"),
    ("proc_id", "SLURM_PROCID"),
    ("local_id", "SLURM_LOCALID"),
    ("node_id", "SLURM_NODEID"),
    ("step_id", "SLURM_STEP_ID"),
    ("account", "SLURM_JOB_ACCOUNT"),
    ("qos", "SLURM_JOB_QOS"),
)
# Older SLURM versions use the short names.
_SLURM_FALLBACKS: Final[Mapping[str, tuple[str, ...]]] = {
    "job_id": ("SLURM_JOBID",),
    "node_list": ("SLURM_NODELIST",),
    "partition": ("SLURM_PARTITION",),
    "nnodes": ("SLURM_NNODES",),
    "ntasks": ("SLURM_NPROCS",),
}
_SLURM_INTS: Final = frozenset({"ntasks", "nnodes", "cpus_per_task", "proc_id", "local_id", "node_id"})

# (source, rank var, local rank vars, world size var), first source with a rank wins.
_RANK_SOURCES: Final = (
    ("torch", "RANK", ("LOCAL_RANK",), "WORLD_SIZE"),
    ("ompi", "OMPI_COMM_WORLD_RANK", ("OMPI_COMM_WORLD_LOCAL_RANK",), "OMPI_COMM_WORLD_SIZE"),
    ("pmi", "PMI_RANK", ("MPI_LOCALRANKID", "PMI_LOCAL_RANK"), "PMI_SIZE"),
)

_CONTAINER_ID_RE: Final = re.compile(r"([0-9a-f]{64})")
_MOUNTINFO_ID_RE: Final = re.compile(r"containers/([0-9a-f]{64})/")
_K8S_NAMESPACE_FILE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

_lock = threading.Lock()
_container: tuple[str | None] | None = None
_k8s_namespace_file: tuple[str | None] | None = None


def _int_or_str(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


def slurm_info(env: Mapping[str, str]) -> dict[str, Any]:
    """The SLURM job this process belongs to, ``{}`` outside SLURM (ints where SLURM gives numbers)."""
    info: dict[str, Any] = {}
    for key, var in _SLURM_VARS:
        value = env.get(var)
        if value is None:
            value = next((env[alt] for alt in _SLURM_FALLBACKS.get(key, ()) if alt in env), None)
        if value is None or value == "":
            continue
        info[key] = _int_or_str(value) if key in _SLURM_INTS else value
    return info


def rank_info(env: Mapping[str, str]) -> dict[str, Any]:
    """Distributed rank / local rank / world size from torchrun, Open MPI or PMI variables (``{}`` if none)."""
    for source, rank_var, local_vars, size_var in _RANK_SOURCES:
        if rank_var not in env:
            continue
        info: dict[str, Any] = {"source": source, "rank": _int_or_str(env[rank_var])}
        local = next((env[v] for v in local_vars if v in env), None)
        if local is not None:
            info["local_rank"] = _int_or_str(local)
        if size_var in env:
            info["world_size"] = _int_or_str(env[size_var])
        return info
    if "LOCAL_RANK" in env:  # some launchers (deepspeed single node) set only LOCAL_RANK
        info = {"source": "torch", "local_rank": _int_or_str(env["LOCAL_RANK"])}
        if "WORLD_SIZE" in env:
            info["world_size"] = _int_or_str(env["WORLD_SIZE"])
        return info
    return {}


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(1 << 20)
    except OSError:
        return None


def parse_container_id(cgroup: str | None, mountinfo: str | None) -> str | None:
    """Container id from /proc/self/cgroup (v1, systemd scopes) or, for cgroup v2, /proc/self/mountinfo."""
    for line in (cgroup or "").splitlines():
        path = line.rpartition(":")[2]
        match = _CONTAINER_ID_RE.search(path.rpartition("/")[2]) or _CONTAINER_ID_RE.search(path)
        if match:
            return match.group(1)
    for line in (mountinfo or "").splitlines():
        match = _MOUNTINFO_ID_RE.search(line)
        if match and ("hostname" in line or "resolv.conf" in line or "hosts" in line):
            return match.group(1)
    return None


def container_id() -> str | None:
    """This process's container id (Docker, containerd, CRI-O, Podman), cached per process."""
    global _container
    with _lock:
        if _container is None:
            _container = (parse_container_id(_read("/proc/self/cgroup"), _read("/proc/self/mountinfo")),)
        return _container[0]


def kubernetes_info(env: Mapping[str, str]) -> dict[str, str]:
    """Pod, namespace and node names from the usual downward-API variables (``{}`` outside Kubernetes)."""
    global _k8s_namespace_file
    in_k8s = "KUBERNETES_SERVICE_HOST" in env
    info: dict[str, str] = {}
    pod = env.get("POD_NAME") or env.get("K8S_POD_NAME") or (env.get("HOSTNAME") if in_k8s else None)
    namespace = env.get("POD_NAMESPACE") or env.get("K8S_NAMESPACE") or env.get("K8S_NAMESPACE_NAME")
    node = env.get("NODE_NAME") or env.get("K8S_NODE_NAME") or env.get("KUBE_NODE_NAME")
    if not namespace and in_k8s:
        with _lock:
            if _k8s_namespace_file is None:
                text = _read(_K8S_NAMESPACE_FILE)
                _k8s_namespace_file = (text.strip() if text and text.strip() else None,)
            namespace = _k8s_namespace_file[0]
    if pod:
        info["pod_name"] = pod
    if namespace:
        info["namespace_name"] = namespace
    if node:
        info["node_name"] = node
    return info


def span_attributes(slurm: Mapping[str, Any], rank: Mapping[str, Any]) -> dict[str, Any]:
    """``runtel.slurm.*`` and ``runtel.rank.*`` span attributes from :func:`slurm_info` / :func:`rank_info`."""
    attributes: dict[str, Any] = {}
    for key, attribute in (
        ("job_id", semconv.SLURM_JOB_ID),
        ("job_name", semconv.SLURM_JOB_NAME),
        ("array_job_id", semconv.SLURM_ARRAY_JOB_ID),
        ("array_task_id", semconv.SLURM_ARRAY_TASK_ID),
        ("node_list", semconv.SLURM_NODE_LIST),
        ("partition", semconv.SLURM_PARTITION),
        ("ntasks", semconv.SLURM_NTASKS),
        ("proc_id", semconv.SLURM_PROC_ID),
    ):
        if key in slurm:
            attributes[attribute] = slurm[key]
    for key, attribute in (
        ("rank", semconv.RANK_GLOBAL),
        ("local_rank", semconv.RANK_LOCAL),
        ("world_size", semconv.RANK_WORLD_SIZE),
        ("source", semconv.RANK_SOURCE),
    ):
        if key in rank:
            attributes[attribute] = rank[key]
    return attributes


def clear_cache() -> None:
    """Forget the container id and namespace file contents (tests)."""
    global _container, _k8s_namespace_file
    with _lock:
        _container = None
        _k8s_namespace_file = None
