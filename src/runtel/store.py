"""The run folder on disk: ids, paths, the atomic run record, and tolerant readers.

Layout of ``<RUNTEL_DIR>/<run-id>/``: ``run.json`` (the readable record, replaced atomically),
``spans.jsonl`` and ``metrics.jsonl`` (OTLP/JSON lines, appended while the run goes), and the optional
``git.diff`` and ``reproduce.sh``. Readers accept a torn last line (a killed process) and folders
written by newer versions (unknown keys are kept, never rejected).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runtel.errors import RunFolderError, RunNotFound
from runtel.exporters.otlp_json import attributes_from_otlp

__all__ = (
    "RECORD_SCHEMA",
    "RecordFile",
    "SpanRecord",
    "atomic_write_json",
    "write_new_file",
    "effective_status",
    "iter_jsonl",
    "list_runs",
    "new_run_id",
    "read_record",
    "read_spans",
    "resolve_run",
)

RECORD_SCHEMA = "runtel.run/1"
RECORD_FILE = "run.json"
SPANS_FILE = "spans.jsonl"
METRICS_FILE = "metrics.jsonl"

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def new_run_id(name: str, now: datetime | None = None) -> str:
    """A unique, start-time-sortable, readable id such as ``20261123T193012Z-train-3f2a9c``."""
    now = now or datetime.now(timezone.utc)
    slug = _SLUG.sub("-", name).strip("-.")[:40] or "run"
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{slug}-{os.urandom(3).hex()}"


_section_cache: list[Any] = [None, ""]
#: a top-level value whose compact JSON is longer than this is indented over several lines instead
_ONE_LINE: int = 100


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False, default=str)


_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=str)
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)


def _compact(value: Any) -> str:
    """``_encoder.encode(value)``, calling CPython's C encoder directly (the wrapper's checks cost ~1 us a value).

    A fresh markers dict each call keeps the circular-reference check correct across threads. Any
    ``TypeError`` (a mapping key JSON cannot hold, or a future interpreter's different signature) is left
    to the public encoder, which raises or encodes exactly as before.
    """
    if _c_make_encoder is not None:
        try:
            return "".join(_c_make_encoder({}, str, _quote, None, ": ", ", ", False, False, False)(value, 0))
        except TypeError:
            pass
    return _encoder.encode(value)


_quote = json.encoder.encode_basestring  # C; the same output as the encoder above for a str
_isfinite = math.isfinite


def _scalar_text(value: Any) -> str:
    """JSON of one value; strings, numbers, booleans and None without the encoder's per-call overhead."""
    kind = type(value)
    if kind is str:
        return _quote(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and _isfinite(value):
        return float.__repr__(value)  # what the encoder writes for a finite float
    return _compact(value)


def _key_text(key: Any) -> str:
    """A mapping key as JSON writes it: strings as they are, True/None/1.5 as "true"/"null"/"1.5"."""
    if isinstance(key, str):
        return _quote(key)
    if key is None or isinstance(key, (bool, int, float)):
        return _quote(_compact(key))
    return _quote(str(key))


def _value_text(value: Any) -> str:
    """One top-level value of a record: compact when short, else one line per key of a long mapping.

    Everything goes through the C encoder; the pure-Python indenting one is kept for the environment
    section, which is encoded once per process.
    """
    text = _scalar_text(value)
    if len(text) > _ONE_LINE and isinstance(value, dict) and value:
        inner = ",\n".join(f"    {_key_text(k)}: {_scalar_text(v)}" for k, v in value.items())
        text = "{\n" + inner + "\n  }"
    return text


def record_text(data: Mapping[str, Any]) -> str:
    """JSON of a run record: one line per top-level key unless its value is long, then indented.

    Python's indenting encoder is pure Python (about ten times slower than the compact C one), so short
    values are written compactly and only long ones indented. The environment section (package
    inventory, machine, env vars) is the bulk of a record and the same object for every run of a
    process; its text is encoded once and reused.
    """
    parts = []
    for key, value in data.items():
        if key == "environment" and isinstance(value, dict) and value:
            if _section_cache[0] is not value:
                _section_cache[0], _section_cache[1] = value, _dumps(value).replace("\n", "\n  ")
            text = _section_cache[1]
        else:
            text = _value_text(value)
        parts.append(f"  {_key_text(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}" if parts else "{}"


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_new_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Create ``path`` (which must not exist) with ``text``: one open, one write, one close."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        _write_fd(fd, text.encode())
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over ``path``.

    Readers never see a half-written record; the temporary name is unique per process and thread, so
    concurrent writers (a run and its forked workers) cannot collide.
    """
    body = (record_text(data) + "\n").encode()
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_fd(fd, body)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class RecordFile:
    """A run's ``run.json``: created once with a single write, then rewritten in place.

    Creating a file is the expensive part of writing a small record on a journaling file system
    (0.03-0.3 ms here, and renaming over an existing file on ext4 also starts writeback of the new
    one), while overwriting a few kilobytes in place costs microseconds. So the first write creates
    the file and later ones overwrite it with one ``pwrite`` from offset 0, padding a shorter text with
    spaces (valid JSON) instead of truncating. Writes of one process are serialised; a reader can
    meet an empty or torn text only for the duration of one system call, and :func:`read_record`
    re-reads in that case. A forked child writing its parent's record uses :func:`atomic_write_json`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._size = 0
        self._pid = 0
        self._lock = threading.Lock()

    def write(self, data: Mapping[str, Any]) -> None:
        """Write ``data`` as the whole record."""
        text = record_text(data)
        with self._lock:
            if self._size and self._pid != os.getpid():
                atomic_write_json(self.path, data)
                return
            body = (text + "\n").encode()
            flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if self._size == 0 else 0)
            try:
                fd = os.open(self.path, flags, 0o644)
            except (FileExistsError, FileNotFoundError):  # someone else's file, or the record was removed
                atomic_write_json(self.path, data)
                self._size, self._pid = len(body), os.getpid()
                return
            try:
                # Pad to the file's present size, not the size this writer left: another process (a forked
                # worker) may have replaced the file with a longer text meanwhile.
                size = os.fstat(fd).st_size if self._size else 0
                if len(body) < size:
                    body = body[:-1] + b" " * (size - len(body)) + b"\n"
                view, offset = memoryview(body), 0
                while offset < len(body):
                    offset += os.pwrite(fd, view[offset:], offset)
            finally:
                os.close(fd)
            self._size, self._pid = len(body), os.getpid()


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Parsed lines of a JSON Lines file; a torn or corrupt line is skipped, a missing file is empty."""
    try:
        f = path.open("r", encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RunFolderError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value


_TORN_RETRIES = 5


def read_record(run_dir: Path) -> dict[str, Any]:
    """The run record of a folder.

    Raises:
        RunFolderError: ``run.json`` is missing, unreadable or not a JSON object.
    """
    path = run_dir / RECORD_FILE
    for attempt in range(_TORN_RETRIES + 1):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            break
        except FileNotFoundError as exc:
            raise RunFolderError(f"{run_dir} is not a run folder (no {RECORD_FILE})") from exc
        except ValueError as exc:
            if attempt < _TORN_RETRIES:  # met a RecordFile write half-way (see there): read again
                time.sleep(0.002)
                continue
            raise RunFolderError(f"cannot read {path}: {exc}") from exc
        except OSError as exc:
            raise RunFolderError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} does not hold a run record")
    data.setdefault("dir", str(run_dir))
    return data


def effective_status(record: Mapping[str, Any]) -> str:
    """The recorded status, except that a "running" run whose process is gone is reported as "interrupted".

    A killed process cannot update its record; comparing the recorded pid, its start time and host
    with the live system tells a finished-by-kill run from a live one.
    """
    status = str(record.get("status", "unknown"))
    if status != "running":
        return status
    proc = record.get("process") or {}
    pid, host = proc.get("pid"), proc.get("host")
    import socket

    if not isinstance(pid, int) or (host and host != socket.gethostname()):
        return status
    try:
        import psutil

        p = psutil.Process(pid)
        created = proc.get("create_time")
        if isinstance(created, (int, float)) and abs(p.create_time() - created) > 1.0:
            return "interrupted"
        if p.status() == psutil.STATUS_ZOMBIE:
            return "interrupted"
        return "running"
    except Exception:
        return "interrupted"


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Records of every run under ``root``, newest first; unreadable folders are skipped."""
    runs = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RunFolderError(f"cannot list {root}: {exc.strerror or exc}") from exc
    for entry in entries:
        if entry.is_dir() and os.path.exists(os.path.join(entry.path, RECORD_FILE)):
            try:
                runs.append(read_record(Path(entry.path)))
            except RunFolderError:
                continue
    runs.sort(key=lambda r: (str(r.get("start_time_unix_nano", "")).zfill(20), str(r.get("id", ""))), reverse=True)
    return runs


def resolve_run(ref: str, root: Path) -> Path:
    """Find a run folder from an id, a unique id prefix, a path, or ``latest``.

    Raises:
        RunNotFound: nothing (or more than one run) matches.
    """
    candidate = Path(ref)
    if (candidate / RECORD_FILE).is_file():
        return candidate
    if ref == "latest":
        runs = list_runs(root)
        if not runs:
            raise RunNotFound(f"no runs in {root}")
        # Child runs (nested, or started by `runtel run`) are shown inside their parent: the latest
        # run is the newest one whose parent is not recorded in the same folder.
        ids = {r.get("id") for r in runs}
        top = [r for r in runs if (r.get("parent") or {}).get("run_id") not in ids]
        return Path((top or runs)[0]["dir"])
    if (root / ref / RECORD_FILE).is_file():
        return root / ref
    try:
        names = sorted(p.name for p in root.iterdir() if (p / RECORD_FILE).is_file())
    except OSError:
        names = []
    matches = [n for n in names if n.startswith(ref)] or [n for n in names if ref in n]
    if len(matches) == 1:
        return root / matches[0]
    if not matches:
        raise RunNotFound(f"no run matches {ref!r} in {root}")
    raise RunNotFound(f"{ref!r} is ambiguous in {root}: {', '.join(matches[:5])}{' …' if len(matches) > 5 else ''}")


@dataclass
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
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]

    @property
    def duration_s(self) -> float:
        """Wall-clock duration in seconds."""
        return max(0, self.end_ns - self.start_ns) / 1e9


def read_spans(run_dir: Path) -> list[SpanRecord]:
    """Every span of a run folder, in start order, de-duplicated by span id."""
    seen: dict[str, SpanRecord] = {}
    for request in iter_jsonl(run_dir / SPANS_FILE):
        for rs in request.get("resourceSpans", ()):
            for ss in rs.get("scopeSpans", ()):
                for s in ss.get("spans", ()):
                    try:
                        record = SpanRecord(
                            trace_id=s["traceId"],
                            span_id=s["spanId"],
                            parent_span_id=s.get("parentSpanId") or None,
                            name=s.get("name", ""),
                            start_ns=int(s.get("startTimeUnixNano", 0)),
                            end_ns=int(s.get("endTimeUnixNano", 0)),
                            attributes=attributes_from_otlp(s.get("attributes")),
                            status_code=int((s.get("status") or {}).get("code", 0)),
                            status_message=(s.get("status") or {}).get("message", ""),
                            events=[
                                {"name": e.get("name", ""), "time_ns": int(e.get("timeUnixNano", 0)),
                                 "attributes": attributes_from_otlp(e.get("attributes"))}
                                for e in s.get("events", ())
                            ],
                            links=[
                                {"trace_id": link.get("traceId"), "span_id": link.get("spanId"),
                                 "attributes": attributes_from_otlp(link.get("attributes"))}
                                for link in s.get("links", ())
                            ],
                        )
                    except (KeyError, TypeError, ValueError):
                        continue
                    seen[record.span_id] = record
    return sorted(seen.values(), key=lambda r: (r.start_ns, r.end_ns))
