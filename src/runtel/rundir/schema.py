"""The run folder's format: file names, the schema version, and the shape of run.json as types.

Layout of ``<RUNTEL_DIR>/<run-id>/``:

* ``run.json`` — the readable :class:`RunRecord`, rewritten in place while the run goes (see
  ``writer.RecordWriter``);
* ``spans.jsonl`` and ``metrics.jsonl`` — OTLP/JSON lines (``otlp_json``), appended while the run goes;
* ``git.diff`` and ``reproduce.sh`` — optional side files.

This module is the only place the record's keys are defined. Every writer builds a ``RunRecord`` and
every reader returns one. Readers accept folders written by newer versions: unknown keys are kept,
never rejected, so the TypedDicts are ``total=False`` and a reader must treat any key as possibly absent.
``RECORD_SCHEMA`` changes only when a key changes meaning; adding keys keeps the version.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypedDict

__all__ = (
    "METRICS_FILE",
    "RECORD_FILE",
    "RECORD_SCHEMA",
    "SPANS_FILE",
    "STATUSES",
    "STATUS_ERROR",
    "STATUS_INTERRUPTED",
    "STATUS_OK",
    "STATUS_RUNNING",
    "ArtifactEntry",
    "ErrorInfo",
    "ParentRef",
    "ProcessInfo",
    "RunRecord",
    "SourceEntry",
    "Status",
)

RECORD_SCHEMA: Final = "runtel.run/1"
RECORD_FILE: Final = "run.json"
SPANS_FILE: Final = "spans.jsonl"
METRICS_FILE: Final = "metrics.jsonl"
GIT_DIFF_FILE: Final = "git.diff"
REPRODUCE_FILE: Final = "reproduce.sh"

Status = Literal["running", "ok", "error", "interrupted"]
STATUS_RUNNING: Final = "running"
STATUS_OK: Final = "ok"
STATUS_ERROR: Final = "error"
STATUS_INTERRUPTED: Final = "interrupted"
STATUSES: Final = (STATUS_RUNNING, STATUS_OK, STATUS_ERROR, STATUS_INTERRUPTED)


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


class SourceEntry(TypedDict, total=False):
    """What the run was made from (``Run.add_source``): a run, a file, or something external."""

    kind: str
    run_id: str | None
    trace_id: str
    span_id: str
    artifact_name: str | None
    path: str
    hash: str
    time: str
    error: str


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
    argv: list[str] | None
    process: ProcessInfo
    environment: dict[str, Any]
    resource_usage: dict[str, Any]
    error: ErrorInfo
    artifacts: dict[str, ArtifactEntry]
    sources: list[SourceEntry]
    disks: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    output_dir: str
    git_diff_file: str
    reproduce: str
    # written by `runtel run` about the wrapped command
    exit_code: int
    signal: str
    command_rusage: dict[str, Any]
    # added by readers, never written
    dir: str
