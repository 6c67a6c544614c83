"""The run folder's format: file names, the schema version, and the shape of run.json as types.

Layout of ``<RUNTEL_DIR>/<run-id>/``:

* ``run.json`` — the readable :class:`RunRecord`, replaced whole at each update while the run goes (see
  ``writer.RecordWriter``);
* ``spans.jsonl`` and ``metrics.jsonl`` — OTLP/JSON lines (``otlp_json``), appended while the run goes;
  a long-lived run's files rotate by size into segments ``spans.2.jsonl``, ``spans.3.jsonl``, … (never
  renamed: the highest number is the live one), listed in order by :func:`span_segments` /
  :func:`metric_segments`, the one way every reader finds them;
* ``git.diff`` and ``reproduce.sh`` — optional side files.

This module is the only place the record's keys are defined. Every writer builds a ``RunRecord`` and
every reader returns one. Readers accept folders written by newer versions: unknown keys are kept,
never rejected, so the TypedDicts are ``total=False`` and a reader must treat any key as possibly absent.
``RECORD_SCHEMA`` changes only when a key changes meaning; adding keys keeps the version.

:func:`validate_record` holds what a reader may rely on: every key listed here has the type given, or
is absent. A value of the wrong type is dropped (and named in the record's ``problems``); a few lossless
conversions are made silently (an int where a float is expected, an int where the nanosecond string is
expected, a list of artifacts instead of the name-keyed mapping). Inside ``resource_usage`` and
``environment`` only the parts readers use are typed (:class:`ResourceUsage`, :class:`Environment`) and
checked; the rest is kept as it is. Values nested deeper than
:data:`MAX_RECORD_DEPTH` are dropped too, so nothing that walks a record can recurse without bound.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, Literal, TypedDict, cast

__all__ = (
    "iso_from_ns",
    "METRICS_FILE",
    "RECORD_FILE",
    "RECORD_SCHEMA",
    "SPANS_FILE",
    "STATUSES",
    "MAX_RECORD_DEPTH",
    "STATUS_CORRUPT",
    "STATUS_ERROR",
    "STATUS_INTERRUPTED",
    "STATUS_OK",
    "STATUS_RUNNING",
    "ArtifactEntry",
    "Environment",
    "ErrorInfo",
    "GitInfo",
    "ParentRef",
    "ProcessInfo",
    "ResourceUsage",
    "Results",
    "RunRecord",
    "SeriesSummary",
    "SourceEntry",
    "Status",
    "metric_segments",
    "segment_number",
    "segment_path",
    "segments",
    "span_segments",
    "validate_record",
)


def iso_from_ns(ns: int) -> str:
    """A Unix time in nanoseconds as the ISO-8601 UTC text of the run folder (``start_time``, artifact times)."""
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")

RECORD_SCHEMA: Final = "runtel.run/1"
RECORD_FILE: Final = "run.json"
SPANS_FILE: Final = "spans.jsonl"
METRICS_FILE: Final = "metrics.jsonl"
GIT_DIFF_FILE: Final = "git.diff"
REPRODUCE_FILE: Final = "reproduce.sh"

_SEGMENT = re.compile(r"^(?P<stem>[A-Za-z0-9_-]+)(?:\.(?P<n>[1-9][0-9]{0,8}))?\.jsonl$")


def segment_path(run_dir: Path, base: str, number: int) -> Path:
    """Segment ``number`` of a rotated JSON Lines file: 1 is ``base`` itself (``spans.jsonl``), then ``spans.N.jsonl``."""
    if number <= 1:
        return run_dir / base
    stem = base[: -len(".jsonl")] if base.endswith(".jsonl") else base
    return run_dir / f"{stem}.{number}.jsonl"


def segment_number(path: Path | str, base: str) -> int | None:
    """The segment number of ``path`` if it is a segment of ``base`` (``spans.3.jsonl`` -> 3), else None."""
    match = _SEGMENT.match(os.path.basename(path))
    stem = base[: -len(".jsonl")] if base.endswith(".jsonl") else base
    if match is None or match.group("stem") != stem:
        return None
    n = match.group("n")
    if n is None:
        return 1
    return int(n) if n != "1" else None  # never written: spans.jsonl is segment 1


def segments(run_dir: Path, base: str) -> list[Path]:
    """The segments of a rotated JSON Lines file in ``run_dir``, oldest first (an empty list if none).

    Found by listing the folder, so a gap (a segment removed by hand) does not hide the later ones. An
    unreadable folder reads as the bare ``base`` path, whose reader then reports why.
    """
    try:
        names = os.listdir(run_dir)
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        return [run_dir / base]
    found = []
    for name in names:
        n = segment_number(name, base)
        if n is not None:
            found.append((n, name))
    found.sort()
    return [run_dir / name for _, name in found]


def span_segments(run_dir: Path) -> list[Path]:
    """``spans.jsonl`` and its rotated segments, oldest first."""
    return segments(run_dir, SPANS_FILE)


def metric_segments(run_dir: Path) -> list[Path]:
    """``metrics.jsonl`` and its rotated segments, oldest first."""
    return segments(run_dir, METRICS_FILE)

Status = Literal["running", "ok", "error", "interrupted"]
STATUS_RUNNING: Final = "running"
STATUS_OK: Final = "ok"
STATUS_ERROR: Final = "error"
STATUS_INTERRUPTED: Final = "interrupted"
STATUSES: Final = (STATUS_RUNNING, STATUS_OK, STATUS_ERROR, STATUS_INTERRUPTED)
STATUS_CORRUPT: Final = "corrupt"
"""What readers report for a run whose run.json cannot be read or had values of the wrong type (never written)."""

MAX_RECORD_DEPTH: Final = 100
"""Deepest nesting a reader accepts in run.json (writers nest config and metadata at most 32 levels)."""


class ParentRef(TypedDict, total=False):
    """The run or span this run is a child of (an enclosing run, or a parent process's TRACEPARENT)."""

    run_id: str | None
    trace_id: str
    span_id: str


class ProcessInfo(TypedDict, total=False):
    """The process that recorded the run; readers use pid + create_time to tell a dead run from a live one."""

    pid: int
    create_time: float
    host: str


class ErrorInfo(TypedDict, total=False):
    """Why a run ended with status ``error`` or ``interrupted``."""

    type: str
    message: str


class ArtifactEntry(TypedDict, total=False):
    """A file or directory the run produced (``Run.add_artifact``); also a line of the artifact index."""

    name: str
    path: str
    hash: str
    hash_kind: str
    algorithm: str
    size: int
    files: int
    mtime: str
    kind: str
    time: str
    metadata: dict[str, Any]
    error: str
    partial_files: bool


class SourceEntry(TypedDict, total=False):
    """What the run was made from (``Run.add_source``): a run, a file, or something external."""

    kind: str
    run_id: str | None
    trace_id: str
    span_id: str
    artifact_name: str | None
    path: str
    hash: str
    hash_kind: str
    size: int
    produced_path: str | None
    time: str
    error: str


class MemoryScope(TypedDict, total=False):
    """Peak memory of one process scope (``main``, ``descendants``, ``combined``)."""

    max_rss_bytes: int | None
    max_uss_bytes: int | None
    max_pss_bytes: int | None


class MaxRam(TypedDict, total=False):
    """``resource_usage.max_ram``: the system's, and each process scope's."""

    system_used_bytes: int | None
    system_capacity_bytes: int | None
    main: MemoryScope
    descendants: MemoryScope
    combined: MemoryScope


class MaxGpuRam(TypedDict, total=False):
    """``resource_usage.max_gpu_ram``."""

    system_used_bytes: int | None
    system_capacity_bytes: int | None
    tree_bytes: int | None


class CpuScope(TypedDict, total=False):
    """CPU use of one process scope, in cores (1.0 = one core busy)."""

    max_sum_fraction: float | None
    mean_sum_fraction: float | None


class CpuUtilization(TypedDict, total=False):
    """``resource_usage.cpu_utilization`` (the keys readers use; the record has more)."""

    system_core_count: int | None
    main: CpuScope
    descendants: CpuScope
    combined: CpuScope


class GpuUtilization(TypedDict, total=False):
    """``resource_usage.gpu_utilization``."""

    gpu_count: int | None
    max_fraction: float | None
    mean_fraction: float | None
    mean_power_watts: float | None


class ComputeTime(TypedDict, total=False):
    """``resource_usage.compute_time``."""

    wall_seconds: float | None
    cpu_seconds: float | None
    children_cpu_seconds: float | None  #: the part of cpu_seconds that is child processes (edge counters only)


class Energy(TypedDict, total=False):
    """``resource_usage.energy``."""

    total_joules: float | None
    estimated: bool | None
    domains: dict[str, Any]


class Emissions(TypedDict, total=False):
    """``resource_usage.emissions``."""

    grams_co2eq: float | None
    carbon_intensity_g_per_kwh: float | None


class ResourceUsage(TypedDict, total=False):
    """run.json ``resource_usage`` (written by ``runtel.sampling.summary.resource_usage_record``)."""

    samples: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    max_ram: MaxRam
    max_gpu_ram: MaxGpuRam
    cpu_utilization: CpuUtilization
    gpu_utilization: GpuUtilization
    compute_time: ComputeTime
    energy: Energy
    emissions: Emissions


class GitInfo(TypedDict, total=False):
    """One repository of ``environment.git`` (``script``: the script's, ``cwd``: the working directory's)."""

    commit: str
    branch: str | None
    dirty: bool


class GitSection(TypedDict, total=False):
    """``environment.git``."""

    script: GitInfo
    cwd: GitInfo


class Environment(TypedDict, total=False):
    """run.json ``environment`` (the keys readers use; the collectors write many more, kept as they are)."""

    git: GitSection


class SeriesSummary(TypedDict, total=False):
    """One series logged with ``Run.log``: its points are gauges in metrics.jsonl, this is their summary."""

    last: float
    min: float
    max: float
    count: int
    last_step: int


class Results(TypedDict, total=False):
    """What a run achieved: final values (``Run.set_result``) and series summaries (``Run.log``)."""

    final: dict[str, Any]
    series: dict[str, SeriesSummary]
    series_dropped: int  # series names logged past the per-run limit


class RunRecord(TypedDict, total=False):
    """run.json. Sections a run did not record are absent or ``None``."""

    schema: str
    id: str
    name: str
    status: str
    start_time: str
    start_time_unix_nano: str
    end_time: str | None
    end_time_unix_nano: str
    duration_s: float | None
    parent: ParentRef | None
    telemetry: str
    runtel_version: str
    trace_id: str
    span_id: str
    tags: dict[str, str]
    config: Any
    attributes: dict[str, Any]
    metadata: dict[str, Any]
    seed: int | None
    seed_libraries: list[str]  # the libraries the seed reached (one imported later was not seeded)
    argv: list[str] | None
    process: ProcessInfo
    environment: dict[str, Any]  # readers: reader.environment(record) is an Environment
    resource_usage: dict[str, Any]  # readers: reader.resource_usage(record) is a ResourceUsage
    #: how CPU and GPU energy are obtained, from the run's start (RAPL, or the CPU estimate: its assumptions and
    #: ``joules_per_cpu_second``, which readers apply to spans that carry only ``cpu.time``)
    energy_method: dict[str, Any]
    error: ErrorInfo
    artifacts: dict[str, ArtifactEntry]
    sources: list[SourceEntry]
    disks: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    output_dir: str
    #: the notebook a kernel session ran, when the kernel knew it (JPY_SESSION_NAME, VS Code)
    notebook: str
    git_diff_file: str
    reproduce: str
    #: the id of the run this one re-ran (``runtel reproduce``, reproduce.sh)
    reproduces: str
    # written by `runtel run` about the wrapped command
    exit_code: int
    signal: str
    command_rusage: dict[str, Any]
    # what the run achieved: Run.set_result / Run.log
    results: Results
    #: tracker backends besides the run folder (RUNTEL_TRACKER): per name, its ids for the run and errors
    trackers: dict[str, dict[str, Any]]
    #: telemetry of the run that could not be recorded: lines lost to a full or failing disk (``spans_lines``,
    #: ``metrics_lines``) and what OTLP export lost (``otlp``, per ``signal endpoint``; the run folder keeps it)
    telemetry_losses: dict[str, Any]
    # added by readers, never written
    dir: str
    problems: list[str]
    unreadable: bool


# --- validation ---------------------------------------------------------------------------------------

_DROP: Final = object()
_Check = Callable[[object], object]
"""A field check: the value to keep (possibly converted), or ``_DROP``."""


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str(v: object) -> object:
    return v if isinstance(v, str) else _DROP


def _opt_str(v: object) -> object:
    return v if v is None or isinstance(v, str) else _DROP


def _int(v: object) -> object:
    return v if _is_int(v) else _DROP


def _opt_int(v: object) -> object:
    return v if v is None or _is_int(v) else _DROP


def _bool(v: object) -> object:
    return v if isinstance(v, bool) else _DROP


def _num(v: object) -> object:
    if _is_int(v) or isinstance(v, float):
        f = float(cast("float", v))
        return f if math.isfinite(f) else _DROP
    return _DROP


def _opt_num(v: object) -> object:
    return None if v is None else _num(v)


def _nano(v: object) -> object:
    if _is_int(v):
        return str(v)
    return v if isinstance(v, str) and v.isdigit() else _DROP


def _opt_nano(v: object) -> object:
    return v if v is None else _nano(v)


def _dict(v: object) -> object:
    return v if isinstance(v, dict) else _DROP


def _any(v: object) -> object:
    return v


def _dict_list(v: object) -> object:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else _DROP


def _str_list(v: object) -> object:
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        return _DROP
    return v


def _str_map(v: object) -> object:
    return v if isinstance(v, dict) and all(isinstance(x, str) for x in v.values()) else _DROP


def _section(fields: Mapping[str, _Check], optional: bool = False) -> Callable[[object, str, list[str]], object]:
    """A check for a nested object: wrong-typed inner fields are dropped one by one."""

    def check(v: object, where: str, problems: list[str]) -> object:
        if v is None and optional:
            return None
        if not isinstance(v, dict):
            return _DROP
        return _check_fields(v, fields, where, problems)

    return check


_PARENT: Final[Mapping[str, _Check]] = {"run_id": _opt_str, "trace_id": _str, "span_id": _str}
_PROCESS: Final[Mapping[str, _Check]] = {"pid": _int, "create_time": _num, "host": _str}
_ERROR: Final[Mapping[str, _Check]] = {"type": _str, "message": _str}
_ARTIFACT: Final[Mapping[str, _Check]] = {
    "name": _str, "path": _str, "hash": _str, "hash_kind": _str, "algorithm": _str, "size": _int, "files": _int,
    "mtime": _str, "kind": _str, "time": _str, "metadata": _dict, "error": _str, "partial_files": _bool,
}
_SOURCE: Final[Mapping[str, _Check]] = {
    "kind": _str, "run_id": _opt_str, "trace_id": _str, "span_id": _str, "artifact_name": _opt_str, "path": _str,
    "hash": _str, "hash_kind": _str, "size": _int, "produced_path": _opt_str, "time": _str, "error": _str,
}

def _opt(check: _Check) -> _Check:
    return lambda v: None if v is None else check(v)


def _nested(fields: Mapping[str, object]) -> Callable[[object, str, list[str]], object]:
    """A check for an object whose values are field checks or nested objects (``_nested`` again)."""
    plain = {k: c for k, c in fields.items() if not isinstance(c, tuple)}
    inner = {k: c[0] for k, c in fields.items() if isinstance(c, tuple)}

    def check(v: object, where: str, problems: list[str]) -> object:
        if not isinstance(v, dict):
            return _DROP
        out: dict[str, Any] = {}
        for key, value in v.items():
            if key in inner:
                kept = inner[key](value, f"{where}{key}.", problems)
            else:
                c = cast("_Check | None", plain.get(key))
                kept = value if c is None else c(value)
            if kept is _DROP:
                problems.append(f"{where}{key}: {_type_name(value)} is not a valid value (dropped)")
                continue
            out[key] = kept
        return out

    return check


def _count(v: object) -> object:
    """An integer; a float with no fraction (another writer's 1e9) is read as one."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return _int(v)


_MEMORY: Final = {"max_rss_bytes": _opt(_count), "max_uss_bytes": _opt(_count), "max_pss_bytes": _opt(_count)}
_CPU_SCOPE: Final = {"max_sum_fraction": _opt_num, "mean_sum_fraction": _opt_num}
_SCOPES: Final = ("main", "descendants", "combined")
_RESOURCE_USAGE: Final = _nested({
    "samples": _int, "start_time_unix_nano": _opt(_count), "end_time_unix_nano": _opt(_count),
    "max_ram": (_nested({"system_used_bytes": _opt(_count), "system_capacity_bytes": _opt(_count),
                         **{s: (_nested(_MEMORY),) for s in _SCOPES}}),),
    "max_gpu_ram": (_nested({"system_used_bytes": _opt(_count), "system_capacity_bytes": _opt(_count),
                             "tree_bytes": _opt(_count)}),),
    "cpu_utilization": (_nested({"system_core_count": _opt(_count), **{s: (_nested(_CPU_SCOPE),) for s in _SCOPES}}),),
    "gpu_utilization": (_nested({"gpu_count": _opt(_count), "max_fraction": _opt_num, "mean_fraction": _opt_num,
                                 "mean_power_watts": _opt_num}),),
    "compute_time": (_nested({"wall_seconds": _opt_num, "cpu_seconds": _opt_num, "children_cpu_seconds": _opt_num}),),
    "energy": (_nested({"total_joules": _opt_num, "estimated": _opt(_bool), "domains": _dict}),),
    "emissions": (_nested({"grams_co2eq": _opt_num, "carbon_intensity_g_per_kwh": _opt_num}),),
})
_GIT_INFO: Final = {"commit": _str, "branch": _opt_str, "dirty": _bool}
_ENVIRONMENT: Final = _nested({"git": (_nested({"script": (_nested(_GIT_INFO),), "cwd": (_nested(_GIT_INFO),)}),)})

_SECTIONS: Final = {
    "parent": _section(_PARENT, optional=True),
    "process": _section(_PROCESS),
    "error": _section(_ERROR),
    "resource_usage": _RESOURCE_USAGE,
    "environment": _ENVIRONMENT,
    "results": _nested({"final": _dict, "series": _dict, "series_dropped": _int}),
}

_FIELDS: Final[Mapping[str, _Check]] = {
    "schema": _str, "id": _str, "name": _str, "status": _str, "start_time": _str,
    "start_time_unix_nano": _nano, "end_time": _opt_str, "end_time_unix_nano": _opt_nano,
    "duration_s": _opt_num, "telemetry": _str, "runtel_version": _str, "trace_id": _str, "span_id": _str,
    "tags": _str_map, "config": _any, "attributes": _dict, "metadata": _dict, "seed": _opt_int,
    "seed_libraries": _str_list, "argv": _str_list, "disks": _dict_list, "devices": _dict_list,
    "output_dir": _str, "notebook": _str, "git_diff_file": _str, "reproduce": _str, "reproduces": _str, "exit_code": _int, "signal": _str,
    "command_rusage": _dict, "trackers": _dict, "telemetry_losses": _dict, "energy_method": _dict,
}


def _type_name(v: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def _too_deep(value: object, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` levels (level by level, no recursion: safe on any input)."""
    level: list[Any] = [value] if isinstance(value, (dict, list)) else []
    depth = 0
    while level:
        if depth >= limit:
            return True
        below: list[Any] = []
        for v in level:
            below.extend(x for x in (v.values() if isinstance(v, dict) else v) if isinstance(x, (dict, list)))
        level, depth = below, depth + 1
    return False


def _check_fields(data: dict[str, Any], fields: Mapping[str, _Check], where: str, problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        check = fields.get(key)
        kept = value if check is None else check(value)
        if kept is _DROP:
            problems.append(f"{where}{key}: {_type_name(value)} is not a valid value (dropped)")
            continue
        out[key] = kept
    return out


def _artifacts(value: object, problems: list[str]) -> object:
    if isinstance(value, list):  # the artifact list of early records: keyed by name here
        value = {str(a.get("name", i)): a for i, a in enumerate(value) if isinstance(a, dict)}
    if not isinstance(value, dict):
        return _DROP
    out: dict[str, Any] = {}
    for name, entry in value.items():
        if not isinstance(entry, dict):
            problems.append(f"artifacts.{name}: {_type_name(entry)} is not an artifact (dropped)")
            continue
        out[name] = _check_fields(entry, _ARTIFACT, f"artifacts.{name}.", problems)
    return out


def _sources(value: object, problems: list[str]) -> object:
    if not isinstance(value, list):
        return _DROP
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            problems.append(f"sources[{i}]: {_type_name(entry)} is not a source (dropped)")
            continue
        out.append(_check_fields(entry, _SOURCE, f"sources[{i}].", problems))
    return out


def validate_record(data: Mapping[str, Any]) -> tuple[RunRecord, list[str]]:
    """``data`` (parsed run.json) with every listed key of the right type, and what was dropped, one line each.

    Unknown keys are kept (records of newer versions), but no value may nest deeper than
    :data:`MAX_RECORD_DEPTH`.
    """
    problems: list[str] = []
    out: dict[str, Any] = {}
    deep = _too_deep(data, MAX_RECORD_DEPTH + 1)  # one walk for the usual record; per key only if needed
    for key, value in data.items():
        if deep and _too_deep(value, MAX_RECORD_DEPTH):
            problems.append(f"{key}: nested deeper than {MAX_RECORD_DEPTH} levels (dropped)")
            continue
        if key == "artifacts":
            kept = _artifacts(value, problems)
        elif key == "sources":
            kept = _sources(value, problems)
        elif key in _SECTIONS:
            kept = _SECTIONS[key](value, f"{key}.", problems)
        elif key in ("dir", "problems", "unreadable"):  # reader keys: never taken from the file
            continue
        else:
            check = _FIELDS.get(key)
            kept = value if check is None else check(value)
        if kept is _DROP:
            problems.append(f"{key}: {_type_name(value)} is not a valid value (dropped)")
            continue
        out[key] = kept
    return cast("RunRecord", out), problems
