"""Reading run folders: run records, effective status, run lookup by id/prefix/path/``latest``, spans.

Every reader of the CLI, the notebook loader and the queries goes through here, and one bad folder
must not break any of them:

* ``run.json`` is read up to :data:`MAX_RECORD_BYTES`, parsed (deep nesting, binary garbage and
  ``NaN`` included: non-finite numbers read as null) and checked against
  :func:`runtel.rundir.schema.validate_record`; values of the wrong type are dropped and named in the
  record's ``problems``, and such a run's effective status is ``corrupt``. A run.json that cannot be
  read at all raises :class:`RunFolderError` from :func:`read_record`; :func:`list_runs` lists it as a
  ``corrupt`` stub with the reason, so the other runs are listed as usual.
* ``spans.jsonl`` and ``metrics.jsonl`` (with their rotated segments, in order: see
  :func:`runtel.rundir.schema.span_segments`) are read in chunks of :data:`READ_CHUNK_BYTES`; a line
  longer than :data:`MAX_LINE_BYTES` is skipped without being held in memory, and skipped lines are
  counted in a :class:`LineStats`, as are JSON objects that are not OTLP/JSON requests (see
  :func:`otlp_groups`) and spans that are not OTLP/JSON spans. An unterminated last line of the live
  (last) segment is a run still writing (or one killed mid-write): it is skipped quietly; one that ends
  an older segment is counted.
* Spans and metric lines are streamed (:func:`iter_spans`, :func:`iter_span_batches`,
  :func:`iter_metric_lines`): memory stays bounded by one line whatever the run's size. Only
  :func:`read_spans` holds every span (sorted and de-duplicated), for callers that need the list.

Readers accept a torn run.json met mid-rewrite (read again), and folders written by newer versions
(unknown keys are kept, never rejected).
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, cast

from runtel.errors import RunFolderError, RunNotFound
from runtel.rundir.journal import recover_spans
from runtel.rundir.otlp_json import attributes_from_otlp, json_objects
from runtel.rundir.schema import (
    METRICS_FILE,
    RECORD_FILE,
    SPANS_FILE,
    STATUS_CORRUPT,
    Environment,
    GitInfo,
    ResourceUsage,
    RunRecord,
    metric_segments,
    span_segments,
    validate_record,
)

__all__ = (
    "UNENDED",
    "loss_notes",
    "run_span_ref",
    "MAX_LINE_BYTES",
    "MAX_RECORD_BYTES",
    "METRIC_KEYS",
    "SPAN_KEYS",
    "LineStats",
    "SpanRecord",
    "SpanRow",
    "decode_attributes",
    "effective_status",
    "environment",
    "git_info",
    "iter_jsonl",
    "iter_jsonl_sized",
    "iter_lines",
    "iter_metric_lines",
    "iter_segments_sized",
    "iter_span_batches",
    "iter_span_dicts",
    "iter_span_rows",
    "iter_spans",
    "list_runs",
    "otlp_groups",
    "read_record",
    "read_record_or_corrupt",
    "parent_run_id",
    "read_spans",
    "resolve_run",
    "resource_usage",
)

MAX_LINE_BYTES: Final = 16 << 20
"""Longest span/metric line read (16 MiB); writers cut export batches near 3 MiB, so longer is not theirs."""

MAX_RECORD_BYTES: Final = 64 << 20
"""Largest run.json read (64 MiB); writers' records are kilobytes to a few MiB."""

READ_CHUNK_BYTES: Final = 1 << 20
"""JSON Lines files are read this many bytes at a time (memory stays under MAX_LINE_BYTES + one chunk)."""



@dataclass
class LineStats:
    """What reading one JSON Lines file met: lines parsed, and lines skipped by reason."""

    path: str = ""
    lines: int = 0
    oversized: int = 0
    unreadable: int = 0
    not_otlp: int = 0
    """JSON objects that are not OTLP/JSON requests in whole or in part (a list that is not a list, an entry that
    is not an object): see :func:`otlp_groups`."""
    bad_records: int = 0
    bad_metrics: int = 0
    bad_attributes: int = 0
    incomplete_tail: bool = False
    error: str | None = None

    def problems(self) -> list[str]:
        """One line per kind of skipped data (an unterminated last line is not one: a writer may be on it)."""
        name = os.path.basename(self.path) or "file"
        out = []
        if self.error:
            out.append(f"{name}: {self.error}")
        if self.oversized:
            out.append(f"{name}: {self.oversized} line(s) longer than {MAX_LINE_BYTES >> 20} MiB skipped")
        if self.unreadable:
            out.append(f"{name}: {self.unreadable} line(s) that are not a JSON object skipped")
        if self.not_otlp:
            out.append(f"{name}: {self.not_otlp} line(s) that are not OTLP/JSON skipped (in whole or in part)")
        if self.bad_records:
            out.append(f"{name}: {self.bad_records} malformed span(s) skipped")
        if self.bad_metrics:
            out.append(f"{name}: {self.bad_metrics} malformed metric(s) skipped")
        if self.bad_attributes:
            out.append(f"{name}: {self.bad_attributes} malformed attribute(s) skipped")
        return out


def _regular_or_raise(path: Path) -> bool:
    """False if ``path`` is missing; raises if it is something other than a regular file (a FIFO would block)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise RunFolderError(f"cannot read {path}: not a regular file")
    return True


def _raw_lines(f: IO[bytes], stats: LineStats, max_line: int) -> Iterator[bytes]:
    """Complete lines of ``f``, read in chunks into one buffer; an over-long line is dropped as it streams past.

    ``readinto`` one reused buffer: a fresh 1 MiB ``bytes`` per read costs a page fault per 4 KiB,
    which made reading a 2 GB file three times slower.
    """
    chunk = bytearray(READ_CHUNK_BYTES)
    view = memoryview(chunk)
    pending = bytearray()
    skipping = False
    while True:
        n = f.readinto(chunk)  # type: ignore[attr-defined]
        if not n:
            break
        start = 0
        while True:
            nl = chunk.find(b"\n", start, n)
            if nl < 0:
                if not skipping:
                    pending += view[start:n]
                    if len(pending) > max_line:
                        skipping = True
                        pending = bytearray()
                break
            if skipping:
                stats.oversized += 1
                skipping = False
            elif len(pending) + nl - start > max_line:
                stats.oversized += 1
                pending = bytearray()
            elif pending:
                pending += view[start:nl]
                yield bytes(pending)
                pending = bytearray()
            else:
                yield bytes(view[start:nl])
            start = nl + 1
    if skipping:
        stats.oversized += 1
    elif pending.strip():
        stats.incomplete_tail = True
        yield bytes(pending)


def _loads(raw: bytes | str) -> Any:
    """json.loads that reads NaN/Infinity as null and turns deep nesting into ValueError."""
    try:
        return json.loads(raw, parse_constant=lambda _name: None)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def iter_lines(path: Path, stats: LineStats | None = None, max_line: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines of a file (without the newline) in bounded memory; longer ones are skipped and counted.

    A missing file is empty; an unterminated last line comes last, with ``stats.incomplete_tail`` set.

    Raises:
        RunFolderError: the file exists but cannot be read, or is not a regular file.
    """
    stats = stats if stats is not None else LineStats()
    stats.path = str(path)
    if not _regular_or_raise(path):
        return
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RunFolderError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with f:
        try:
            yield from _raw_lines(f, stats, max_line)
        except OSError as exc:
            raise RunFolderError(f"cannot read {path}: {exc.strerror or exc}") from exc


def iter_jsonl_sized(path: Path, stats: LineStats | None = None,
                     max_line: int = MAX_LINE_BYTES, *, live: bool = True) -> Iterator[tuple[dict[str, Any], int]]:
    """Parsed lines of a JSON Lines file with their sizes in bytes; bad lines are skipped and counted.

    A missing file is empty. An unterminated last line that is not JSON is skipped quietly if the file
    is ``live`` (a writer may be on it), else counted as unreadable.

    Raises:
        RunFolderError: the file exists but cannot be read, or is not a regular file.
    """
    stats = stats if stats is not None else LineStats()
    stats.incomplete_tail = False
    for raw in iter_lines(path, stats, max_line):
        tail = stats.incomplete_tail and live
        raw = raw.strip()
        if not raw:
            continue
        try:
            value = _loads(raw)
        except ValueError:
            if not tail:  # a torn last line is a writer at work, not bad data
                stats.unreadable += 1
            continue
        if isinstance(value, dict):
            stats.lines += 1
            yield value, len(raw) + 1
        else:
            stats.unreadable += 1


def iter_jsonl(path: Path, stats: LineStats | None = None) -> Iterator[dict[str, Any]]:
    """Parsed lines of a JSON Lines file; see :func:`iter_jsonl_sized`."""
    for value, _size in iter_jsonl_sized(path, stats):
        yield value


def iter_segments_sized(paths: list[Path], stats: LineStats | None = None,
                        max_line: int = MAX_LINE_BYTES) -> Iterator[tuple[dict[str, Any], int]]:
    """:func:`iter_jsonl_sized` over the segments of one rotated file, oldest first, as one stream.

    Only the last segment is live; ``stats`` counts for all of them and names the first (the base file).

    Raises:
        RunFolderError: a segment exists but cannot be read, or is not a regular file.
    """
    stats = stats if stats is not None else LineStats()
    for i, path in enumerate(paths):
        yield from iter_jsonl_sized(path, stats, max_line, live=i == len(paths) - 1)
    if paths:
        stats.path = str(paths[0])


def iter_metric_lines(run_dir: Path, stats: LineStats | None = None) -> Iterator[dict[str, Any]]:
    """Each OTLP/JSON ``ExportMetricsServiceRequest`` line of a run, across its segments, in bounded memory.

    Any valid OTLP/JSON metrics line is accepted (several data points per metric, points of several
    timestamps); interpreting them is the caller's.

    Raises:
        RunFolderError: a segment exists but cannot be read, or is not a regular file.
    """
    stats = stats if stats is not None else LineStats()
    stats.path = str(run_dir / METRICS_FILE)
    for value, _size in iter_segments_sized(metric_segments(run_dir), stats):
        yield value


_TORN_RETRIES = 5


def _read_record_bytes(path: Path, run_dir: Path) -> bytes:
    try:
        if not _regular_or_raise(path):
            raise RunFolderError(f"{run_dir} is not a run folder (no {RECORD_FILE})")
        with path.open("rb") as f:
            data = f.read(MAX_RECORD_BYTES + 1)
    except FileNotFoundError as exc:
        raise RunFolderError(f"{run_dir} is not a run folder (no {RECORD_FILE})") from exc
    except OSError as exc:
        if isinstance(exc, RunFolderError):
            raise
        raise RunFolderError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_RECORD_BYTES:
        raise RunFolderError(f"cannot read {path}: larger than {MAX_RECORD_BYTES >> 20} MiB, not a run record")
    return data


def read_record(run_dir: Path) -> RunRecord:
    """The run record of a folder, checked against the schema (see the module docstring).

    Adds the reader keys ``dir`` and, if values were dropped, ``problems``; a record without a valid
    ``id`` is named by its folder.

    Raises:
        RunFolderError: ``run.json`` is missing, unreadable, too large, not JSON or not a JSON object.
    """
    path = run_dir / RECORD_FILE
    for attempt in range(_TORN_RETRIES + 1):
        raw = _read_record_bytes(path, run_dir)
        try:
            data = _loads(raw.decode("utf-8"))
            break
        except ValueError as exc:  # UnicodeDecodeError too: a rewrite can be met mid-character
            if attempt < _TORN_RETRIES and "nested too deeply" not in str(exc):
                time.sleep(0.002)  # met a RecordWriter write half-way (see there): read again
                continue
            reason = "binary data, not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
            raise RunFolderError(f"cannot read {path}: {reason}") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"cannot read {path}: not a run record (a JSON {type(data).__name__}, not an object)")
    record, problems = validate_record(data)
    record["dir"] = str(run_dir)
    record.setdefault("id", run_dir.name)
    if problems:
        record["problems"] = problems
    return record


def read_record_or_corrupt(run_dir: Path) -> RunRecord:
    """:func:`read_record`, or for a run.json that cannot be read a stub: id, dir, ``problems`` and ``unreadable``."""
    try:
        return read_record(run_dir)
    except RunFolderError as exc:
        return {"id": run_dir.name, "dir": str(run_dir), "problems": [str(exc)], "unreadable": True}


def effective_status(record: Mapping[str, Any]) -> str:
    """The recorded status, except: ``corrupt`` for a record with ``problems``, and "interrupted" for a
    "running" run whose process is gone.

    A killed process cannot update its record; comparing the recorded pid, its start time and host
    with the live system tells a finished-by-kill run from a live one.
    """
    if record.get("problems"):
        return STATUS_CORRUPT
    status = str(record.get("status", "unknown"))
    if status != "running":
        return status
    proc = record.get("process")
    proc = proc if isinstance(proc, Mapping) else {}
    pid, host = proc.get("pid"), proc.get("host")
    import socket  # deferred: socket (~3 ms)

    if not isinstance(pid, int) or (host and host != socket.gethostname()):
        return status
    try:
        import psutil  # deferred: psutil (~13 ms)

        p = psutil.Process(pid)
        created = proc.get("create_time")
        if isinstance(created, (int, float)) and abs(p.create_time() - created) > 1.0:
            return "interrupted"
        if p.status() == psutil.STATUS_ZOMBIE:
            return "interrupted"
        return "running"
    except Exception:
        return "interrupted"


#: the status message of a stand-in for a run span that never ended (its process was killed)
UNENDED = "did not end: its process was gone before the run closed"


def run_span_ref(record: Mapping[str, Any]) -> tuple[str, str, str | None, str, int] | None:
    """``(span_id, trace_id, parent_span_id, name, start_ns)`` of a run's own span, from its record.

    For readers that draw a stand-in when the run span never reached spans.jsonl (the process was killed
    before the run ended): a row of the run index holds only part of the record, so the full record is read
    then. None when the record does not say.
    """
    if not record.get("span_id") and record.get("dir"):
        try:
            record = read_record(Path(str(record["dir"])))
        except RunFolderError:
            return None
    span_id = record.get("span_id")
    if not isinstance(span_id, str) or not span_id:
        return None
    parent = record.get("parent")
    parent_span = parent.get("span_id") if isinstance(parent, Mapping) else None
    try:
        start = int(record.get("start_time_unix_nano") or 0)
    except (TypeError, ValueError):
        start = 0
    return (span_id, str(record.get("trace_id") or ""), parent_span if isinstance(parent_span, str) else None,
            str(record.get("name") or "run"), start)


def loss_notes(record: Mapping[str, Any]) -> list[str]:
    """One sentence per kind of telemetry the run could not record (its ``telemetry_losses``), for readers to show."""
    lost = record.get("telemetry_losses")
    if not isinstance(lost, Mapping):
        return []
    notes = []
    for kind, file in (("spans_lines", "spans.jsonl"), ("metrics_lines", "metrics.jsonl")):
        count = lost.get(kind)
        if isinstance(count, int) and count > 0:
            notes.append(f"{count} line(s) of {file} were lost while recording (the disk was full or failing)")
    otlp = lost.get("otlp")
    if isinstance(otlp, Mapping):
        for where, counts in otlp.items():
            if isinstance(counts, Mapping):
                told = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items() if isinstance(v, int) and v)
                if told:
                    notes.append(f"OTLP export to {where} lost {told} (the run folder has them: `runtel export`)")
    return notes


def resource_usage(record: RunRecord) -> ResourceUsage:
    """``record["resource_usage"]`` as its type (:func:`read_record` checked it), ``{}`` if absent.

    The record's own key is typed ``dict`` because the writers build it as one.
    """
    return cast("ResourceUsage", record.get("resource_usage") or {})


def environment(record: RunRecord) -> Environment:
    """``record["environment"]`` as its type (the keys readers use; checked by :func:`read_record`)."""
    return cast("Environment", record.get("environment") or {})


def git_info(record: RunRecord) -> GitInfo:
    """The git state of the run's script, else of its working directory; ``{}`` if neither was recorded."""
    git = environment(record).get("git") or {}
    return git.get("script") or git.get("cwd") or {}


def parent_run_id(record: RunRecord) -> str | None:
    """The enclosing run's id, if the record names one."""
    parent = record.get("parent")
    return parent.get("run_id") if parent else None


def list_runs(root: Path) -> list[RunRecord]:
    """Records of every run under ``root``, newest first.

    A folder whose run.json cannot be read is listed as a stub (see :func:`read_record_or_corrupt`),
    last: a bad folder is reported, never hidden and never in the way of the others.
    """
    runs = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RunFolderError(f"cannot list {root}: {exc.strerror or exc}") from exc
    for entry in entries:
        try:
            if not entry.is_dir() or not os.path.lexists(os.path.join(entry.path, RECORD_FILE)):
                continue
        except OSError:
            continue
        runs.append(read_record_or_corrupt(Path(entry.path)))
    runs.sort(key=lambda r: (str(r.get("start_time_unix_nano", "")).zfill(20), str(r.get("id", ""))), reverse=True)
    return runs


def _is_run_folder(path: Path) -> bool:
    """Whether ``path`` holds a run.json (of any kind: reading it says what is wrong with it)."""
    try:
        return os.path.lexists(path / RECORD_FILE) and path.is_dir()
    except (OSError, ValueError):  # a name too long, or with a NUL byte
        return False


def resolve_run(ref: str, root: Path) -> Path:
    """Find a run folder from an id, a unique id prefix, a path, or ``latest``.

    ``latest`` is the newest readable top-level run.

    Raises:
        RunNotFound: nothing (or more than one run) matches.
    """
    candidate = Path(ref)
    if _is_run_folder(candidate):
        return candidate
    if ref == "latest":
        runs = [r for r in list_runs(root) if not r.get("unreadable")]
        if not runs:
            raise RunNotFound(f"no runs in {root}")
        # Child runs (nested, or started by `runtel run`) are shown inside their parent: the latest
        # run is the newest one whose parent is not recorded in the same folder.
        ids = {r.get("id") for r in runs}
        top = [r for r in runs if parent_run_id(r) not in ids]
        return Path((top or runs)[0]["dir"])
    if _is_run_folder(root / ref):
        return root / ref
    try:
        names = sorted(p.name for p in root.iterdir() if _is_run_folder(p))
    except OSError:
        names = []
    matches = [n for n in names if n.startswith(ref)] or [n for n in names if ref in n]
    if len(matches) == 1:
        return root / matches[0]
    if not matches:
        raise RunNotFound(f"no run matches {ref!r} in {root}")
    raise RunNotFound(f"{ref!r} is ambiguous in {root}: {', '.join(matches[:5])}{' …' if len(matches) > 5 else ''}")


@dataclass(repr=False)
class SpanRecord:
    """One span read back from spans.jsonl, with decoded attributes."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    events: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        """Wall-clock duration in seconds."""
        return max(0, self.end_ns - self.start_ns) / 1e9

    def __repr__(self) -> str:  # one line: the attributes (often ~40 usage keys) are one attribute away
        status = {0: "unset", 1: "ok", 2: "error"}.get(self.status_code, str(self.status_code))
        return (f"SpanRecord({self.name!r}, {self.duration_s * 1000:.3f} ms, {len(self.attributes)} attributes, "
                f"status {status}, span_id={self.span_id!r})")


#: how an OTLP/JSON request line nests its items: (resource list, scope list, item list) of each signal
SPAN_KEYS: Final = ("resourceSpans", "scopeSpans", "spans")
METRIC_KEYS: Final = ("resourceMetrics", "scopeMetrics", "metrics")


def otlp_groups(request: Mapping[str, Any], keys: tuple[str, str, str],
                stats: LineStats) -> Iterator[tuple[dict[str, Any], dict[str, Any], list[Any]]]:
    """(resource entry, scope entry, its list of items) of one parsed request line, in order.

    ``keys`` is :data:`SPAN_KEYS` or :data:`METRIC_KEYS`. A list that is absent or null is empty (as in
    proto3 JSON); one that is not a list, and an entry of the resource or scope list that is not an object,
    is skipped, and the line is counted once in ``stats.not_otlp``. The items themselves are not checked.
    """
    top, scope_key, item_key = keys
    seen_bad = False

    def bad() -> None:
        nonlocal seen_bad
        if not seen_bad:
            seen_bad = True
            stats.not_otlp += 1

    resources = request.get(top)
    if resources is None:
        return
    if not isinstance(resources, list):
        bad()
        return
    for rs in resources:
        scopes = rs.get(scope_key) if isinstance(rs, dict) else ()
        if not isinstance(scopes, list):
            if scopes is not None:
                bad()
            continue
        for ss in scopes:
            items = ss.get(item_key) if isinstance(ss, dict) else ()
            if not isinstance(items, list):
                if items is not None:
                    bad()
                continue
            yield rs, ss, items


def _attrs(value: object, stats: LineStats) -> dict[str, Any]:
    """Decoded OTLP attributes; an entry that is not a string key with an OTLP value is skipped and counted."""
    if not isinstance(value, list):
        return {}
    if all(kv.__class__ is dict and kv.get("key").__class__ is str for kv in value):
        try:  # the common case in one call; any entry that fails sends the list the careful way below
            return attributes_from_otlp(value)
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
            pass
    out: dict[str, Any] = {}
    for kv in value:
        try:
            if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
                raise TypeError("not a KeyValue")
            out.update(attributes_from_otlp([kv]))
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
            stats.bad_attributes += 1
    return out


def decode_attributes(value: object, stats: LineStats | None = None) -> dict[str, Any]:
    """Decoded OTLP attributes of a raw span or :data:`SpanRow` (malformed entries skipped and counted)."""
    stats = stats if stats is not None else LineStats()
    if value is not None and not isinstance(value, list):  # a SpanRow's attributes, not parsed yet (msgspec.Raw)
        try:
            value = _loads(bytes(value))  # type: ignore[call-overload]
        except (TypeError, ValueError):
            stats.bad_attributes += 1
            return {}
    return _attrs(value, stats)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _span(s: dict[str, Any], stats: LineStats) -> SpanRecord:
    status = s.get("status")
    status = status if isinstance(status, dict) else {}
    parent = s.get("parentSpanId")
    name = s.get("name", "")
    return SpanRecord(
        trace_id=_text(s["traceId"]),
        span_id=_text(s["spanId"]),
        parent_span_id=parent if isinstance(parent, str) and parent else None,
        name=name if isinstance(name, str) else str(name),
        start_ns=int(s.get("startTimeUnixNano", 0)),
        end_ns=int(s.get("endTimeUnixNano", 0)),
        attributes=_attrs(s.get("attributes"), stats),
        status_code=int(status.get("code", 0)),
        status_message=str(status.get("message", "")),
        events=[{"name": str(e.get("name", "")), "time_ns": int(e.get("timeUnixNano", 0)),
                 "attributes": _attrs(e.get("attributes"), stats)} for e in json_objects(s.get("events"))],
        links=[{"trace_id": link.get("traceId"), "span_id": link.get("spanId"),
                "attributes": _attrs(link.get("attributes"), stats)} for link in json_objects(s.get("links"))],
    )


def iter_span_batches(run_dir: Path, stats: LineStats | None = None) -> Iterator[tuple[dict[str, Any], list[Any]]]:
    """(resource, raw OTLP span objects) per ``scopeSpans`` of a run, in file order, across its segments.

    The spans are the parsed JSON as written (not yet checked: see :func:`span_from_otlp`). A spans
    file that cannot be read at all (a directory, no permission) ends the stream with ``stats.error`` set.
    """
    stats = stats if stats is not None else LineStats()
    stats.path = str(run_dir / SPANS_FILE)
    try:
        for request, _size in iter_segments_sized(span_segments(run_dir), stats):
            for rs, _ss, spans in otlp_groups(request, SPAN_KEYS, stats):
                resource = rs.get("resource")
                yield resource if isinstance(resource, dict) else {}, spans
    except RunFolderError as exc:
        stats.error = str(exc)


def iter_span_dicts(run_dir: Path, stats: LineStats | None = None) -> Iterator[dict[str, Any]]:
    """The raw OTLP/JSON span objects of a run, in file order (see :func:`iter_span_batches`); an entry that is not
    an object is counted as a malformed span."""
    stats = stats if stats is not None else LineStats()
    for _resource, spans in iter_span_batches(run_dir, stats):
        for s in spans:
            if isinstance(s, dict):
                yield s
            else:
                stats.bad_records += 1


def span_from_otlp(s: dict[str, Any], stats: LineStats) -> SpanRecord | None:
    """A checked :class:`SpanRecord` of one raw span, or None (counted in ``stats``) if it is malformed."""
    try:
        return _span(s, stats)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
        stats.bad_records += 1
        return None


def iter_spans(run_dir: Path, stats: LineStats | None = None) -> Iterator[SpanRecord]:
    """Every span of a run folder in file order (roughly end order), in bounded memory; not de-duplicated.

    Lines and spans that are not OTLP/JSON are skipped and counted in ``stats``.
    """
    recover_spans(run_dir)  # spans a killed process left in its journal join spans.jsonl first
    stats = stats if stats is not None else LineStats()
    for s in iter_span_dicts(run_dir, stats):
        record = span_from_otlp(s, stats)
        if record is not None:
            yield record


SpanRow = tuple[str, str, str, str, int, int, int, str, Any]
"""What tree-shaped readers need of a span: (span id, trace id, parent span id or "", name, start ns,
end ns, status code, status message, attributes not decoded yet: see :func:`decode_attributes`)."""

_fast: list[Any] = []


def _span_decoder() -> Any:
    """(decode, its error type) of msgspec's typed spans-line decoder, or None without msgspec."""
    if not _fast:
        try:
            from runtel.rundir import _fastspans  # deferred: msgspec (~16 ms), needed only to read spans
        except ImportError:
            _fast.append(None)
        else:
            _fast.append((_fastspans.decoder.decode, _fastspans.DecodeError))
    return _fast[0]


def _row(s: object, stats: LineStats) -> SpanRow | None:
    """The SpanRow of one parsed span object, or None (counted) if it is malformed (as :func:`span_from_otlp`)."""
    if not isinstance(s, dict):
        stats.bad_records += 1
        return None
    try:
        status = s.get("status")
        status = status if isinstance(status, dict) else {}
        parent = s.get("parentSpanId")
        name = s.get("name", "")
        return (_text(s["spanId"]), _text(s["traceId"]), parent if isinstance(parent, str) else "",
                name if isinstance(name, str) else str(name), int(s.get("startTimeUnixNano", 0)),
                int(s.get("endTimeUnixNano", 0)), int(status.get("code", 0)), str(status.get("message", "")),
                s.get("attributes"))
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
        stats.bad_records += 1
        return None


def iter_span_rows(run_dir: Path, stats: LineStats | None = None) -> Iterator[SpanRow]:
    """Every span of a run as a :data:`SpanRow`, in file order, across segments, in bounded memory.

    With msgspec (a dependency) well-formed lines are parsed by its typed
    decoder; every other line is read, checked and counted exactly as :func:`iter_spans` does.
    """
    recover_spans(run_dir)  # spans a killed process left in its journal join spans.jsonl first
    stats = stats if stats is not None else LineStats()
    base = str(run_dir / SPANS_FILE)
    stats.path = base
    fast = _span_decoder()
    decode, fast_error = fast if fast is not None else (None, ValueError)
    paths = span_segments(run_dir)
    try:
        for i, path in enumerate(paths):
            live = i == len(paths) - 1
            stats.incomplete_tail = False
            for raw in iter_lines(path, stats):
                raw = raw.strip()
                if not raw:
                    continue
                if decode is not None:
                    try:
                        request = decode(raw)
                    except fast_error:
                        pass  # not the common shape (or not JSON): the checked way below says which
                    else:
                        stats.lines += 1
                        for rs in request.resource_spans:
                            for ss in rs.scope_spans:
                                for sp in ss.spans:
                                    st = sp.status
                                    yield (sp.span_id, sp.trace_id, sp.parent_span_id, sp.name, sp.start_time_unix_nano,
                                           sp.end_time_unix_nano, st.code if st else 0, st.message if st else "",
                                           sp.attributes)
                        continue
                tail = stats.incomplete_tail and live
                try:
                    value = _loads(raw)
                except ValueError:
                    if not tail:
                        stats.unreadable += 1
                    continue
                if not isinstance(value, dict):
                    stats.unreadable += 1
                    continue
                stats.lines += 1
                for _rs, _ss, spans in otlp_groups(value, SPAN_KEYS, stats):
                    for s in spans:
                        row = _row(s, stats)
                        if row is not None:
                            yield row
    except RunFolderError as exc:
        stats.error = str(exc)
    stats.path = base


def read_spans(run_dir: Path, stats: LineStats | None = None) -> list[SpanRecord]:
    """Every span of a run folder, in start order, de-duplicated by span id (all in memory: prefer
    :func:`iter_spans` for a large run).

    Lines and spans that are not OTLP/JSON are skipped and counted in ``stats``; a spans.jsonl that
    cannot be read at all (a directory, no permission) reads as no spans, with ``stats.error`` set.
    """
    seen: dict[str, SpanRecord] = {}
    for record in iter_spans(run_dir, stats):
        seen[record.span_id] = record
    return sorted(seen.values(), key=lambda r: (r.start_ns, r.end_ns))
