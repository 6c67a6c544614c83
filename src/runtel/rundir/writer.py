"""Writing the run folder: run ids, run.json (replaced whole, never torn), side files, JSON Lines.

The layout and the record's keys are in ``schema``; reading is ``reader``'s job. The encoder here
writes run.json in a fixed, readable layout (short sections on one line, long ones indented), and
the telemetry files are appended a whole batch of lines per ``write()`` (see :class:`LineFile`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runtel._guard import log_once
from runtel._internals import compact_json, json_string
from runtel.rundir.schema import METRICS_FILE, SPANS_FILE, segment_number, segment_path, segments

__all__ = (
    "LineFile",
    "RecordWriter",
    "RunSinks",
    "atomic_write_json",
    "new_run_id",
    "record_text",
    "write_new_file",
)

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def new_run_id(name: str, now: datetime | None = None) -> str:
    """A unique, start-time-sortable, readable id such as ``20261123T193012Z-train-3f2a9c``.

    Unique within the process (ids handed out in the same second are remembered and a taken suffix is
    drawn again); across processes the caller's ``mkdir`` of the folder settles it.
    """
    now = now or datetime.now(timezone.utc)
    slug = _SLUG.sub("-", name).strip("-.")[:40] or "run"
    prefix = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{slug}-"
    with _issued_lock:
        if _issued[0] != prefix[:16]:
            _issued[0], _issued[1] = prefix[:16], set()
        taken: set[str] = _issued[1]
        while True:
            run_id = prefix + os.urandom(3).hex()
            if run_id not in taken:
                taken.add(run_id)
                return run_id


#: the second (``YYYYmmddTHHMMSSZ``) the ids in the set were issued in
_issued: list[Any] = ["", set()]
_issued_lock = threading.Lock()


def _reset_issued_lock() -> None:
    global _issued_lock
    _issued_lock = threading.Lock()  # a forked child: the parent's may have been held


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_issued_lock)


_section_cache: list[Any] = [None, ""]


#: a top-level value whose compact JSON is longer than this is indented over several lines instead
_ONE_LINE: int = 100


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False, default=str)


_isfinite = math.isfinite


def _scalar_text(value: Any) -> str:
    """JSON of one value; strings, numbers, booleans and None without the encoder's per-call overhead."""
    kind = type(value)
    if kind is str:
        return json_string(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and _isfinite(value):
        return float.__repr__(value)  # what the encoder writes for a finite float
    return compact_json(value)


def _key_text(key: Any) -> str:
    """A mapping key as JSON writes it: strings as they are, True/None/1.5 as "true"/"null"/"1.5"."""
    if isinstance(key, str):
        return json_string(key)
    if key is None or isinstance(key, (bool, int, float)):
        return json_string(compact_json(key))
    return json_string(str(key))


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


#: never follow a symlink planted in a run folder (0 where the platform has no such flag)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: (file mode, folder mode) of what runtel creates: private unless the run directory is shared
_MODES = [0o600, 0o700]


def set_shared(group_readable: bool) -> None:
    """Group-readable run folders and files (``shared_run_dir``) instead of private ones."""
    _MODES[:] = [0o640, 0o750] if group_readable else [0o600, 0o700]


def file_mode(executable: bool = False) -> int:
    """The mode new run files get (whatever the umask: it is set with fchmod after creation)."""
    return _MODES[1] if executable else _MODES[0]  # executable: the folder's mode (rwx for whoever may read)


def dir_mode() -> int:
    """The mode new run folders get."""
    return _MODES[1]


def open_run_file(path: Path | str, flags: int, mode: int, *, owned: bool = False) -> int:
    """``os.open`` refusing symlinks, then the exact mode (the umask cannot widen or narrow it).

    With ``owned``, a file that another user owns is refused (``PermissionError``) unless the run
    directory is shared: a file planted by someone else in a shared place is not appended to.
    """
    fd = os.open(path, flags | _NOFOLLOW, mode)
    if owned and _MODES[0] == 0o600 and hasattr(os, "getuid"):
        uid = os.fstat(fd).st_uid
        if uid != os.getuid():
            os.close(fd)
            raise PermissionError(f"{path} is owned by uid {uid}, not by this user (RUNTEL_SHARED_RUN_DIR=true allows it)")
    if flags & os.O_CREAT:
        try:
            os.fchmod(fd, mode)
        except OSError:
            pass  # a file system without modes (some network mounts): the open's own mode stands
    return fd


def write_new_file(path: Path, text: str, mode: int | None = None) -> None:
    """Create ``path`` (which must not exist) with ``text``: one open, one write, one close; all or nothing."""
    fd = open_run_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, file_mode() if mode is None else mode)
    try:
        _write_fd(fd, text.encode())
    except BaseException:  # a partial file (a full disk) is worse than none: nothing was there before
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    os.close(fd)


def atomic_write_json(path: Path, data: Mapping[str, Any], *, text: str | None = None) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over ``path``.

    Readers never see a half-written record, and a failed write (``ENOSPC``) leaves the old file as
    it was; the temporary name is unique per process and thread, so concurrent writers (a run and its
    forked workers) cannot collide. ``text`` is ``data`` already encoded by :func:`record_text`.
    """
    body = (text if text is not None else record_text(data) + "\n").encode()
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        fd = open_run_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, file_mode())
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


def _is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def report_write_error(path: Path, exc: OSError, what: str) -> None:
    """One clear line on stderr per kind of failure: disk full (once per process), else once per file."""
    if _is_disk_full(exc):
        log_once("disk-full", "runtel: no space left on the disk holding %s; run.json keeps its last complete "
                 "record and telemetry lines are dropped (and counted) until space returns; your program goes on",
                 path.parent)
    else:
        log_once(f"write:{path}", "runtel could not write %s: %s (the run goes on without %s)", path,
                 exc.strerror or exc, what)


class RecordWriter:
    """A run's ``run.json``: every write leaves either the previous complete record or the new one.

    The first write creates the file with one ``O_EXCL`` write (a failed one is removed again: no record
    before, none after); later writes go to a temporary file that is renamed over it, so a crash,
    ``ENOSPC`` or a short write at any byte never leaves a torn or truncated record (an in-place
    rewrite did: a longer final record crossing a page on a full disk became invalid JSON and the run
    vanished from ``ls``). No fsync: this guards against the process and the disk, not power loss.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._created = False
        self._lock = threading.Lock()
        self.failed = False  # the last write did not land: the file holds an older record (or none)

    def write(self, data: Mapping[str, Any]) -> bool:
        """Write ``data`` as the whole record; False (reported once) if it could not be written."""
        text = record_text(data) + "\n"
        with self._lock:
            try:
                if self._created:
                    atomic_write_json(self.path, data, text=text)
                else:
                    try:
                        write_new_file(self.path, text)
                    except FileExistsError:  # someone else's file (a forked worker's parent): replace it whole
                        atomic_write_json(self.path, data, text=text)
                    self._created = True
            except OSError as exc:
                self.failed = True
                report_write_error(self.path, exc, "an up-to-date run record")
                return False
            self.failed = False
            return True


class LineFile:
    """An append-only JSON Lines file written with one ``write()`` per line batch, line-atomic for readers.

    A write that fails part way (a full disk) leaves a fragment without a newline; the next batch then
    starts with a newline, so the fragment stays one torn line (which readers skip) and never swallows
    the lines after it. Lines lost that way are counted in ``dropped``.

    With ``rotate_bytes``, the file rotates by size: before each write the open segment's size is read
    with ``fstat`` and, once it has reached ``rotate_bytes``, the writer moves to the next segment
    (``spans.jsonl`` -> ``spans.2.jsonl`` -> ``spans.3.jsonl``; see :func:`runtel.rundir.schema.segments`).
    Nothing is renamed, and every writer of the run (forked workers sharing the folder) decides from the
    same size, so they converge on the same segment: the first creates the next one with ``O_EXCL``,
    the others open the one it created. A segment can so exceed the size by one batch per concurrent
    writer; a line is never split across segments (each batch is one ``O_APPEND`` write).
    """

    def __init__(self, path: Path, rotate_bytes: int | None = None) -> None:
        self.base = path
        self.path = path  # the segment written now (``base`` until the first rotation)
        self.rotate_bytes = rotate_bytes
        self._segment = 0  # number of the open segment; 0 before the first open
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._torn = False  # the file ends in a fragment: the next batch starts on a fresh line
        self.lines = 0
        self.dropped = 0
        self.rotations = 0

    def _open(self) -> int:
        """Open the newest existing segment (a writer joining a rotated run appends to the live one).

        A file that already ends in a fragment (a process cut off mid-write: a full disk, a kill) counts as
        torn, so this writer's first line starts on a fresh line instead of being glued to the fragment
        (a journal recovered after a full disk lost every span that way).
        """
        if self._segment == 0:
            existing = segments(self.base.parent, self.base.name) if self.rotate_bytes else []
            number = segment_number(existing[-1], self.base.name) if existing else None
            self._segment = number or 1
            self.path = segment_path(self.base.parent, self.base.name, self._segment)
        fd = open_run_file(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, file_mode())
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                self._torn = True
        except (OSError, AttributeError):  # no pread (Windows): as before
            pass
        return fd

    def _rotate_if_full(self, fd: int) -> int:
        """The descriptor to write to: ``fd``, or that of the first segment after it not yet full."""
        limit = self.rotate_bytes
        if not limit:
            return fd
        while os.fstat(fd).st_size >= limit:
            number = self._segment + 1
            path = segment_path(self.base.parent, self.base.name, number)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
            try:
                new = open_run_file(path, flags | os.O_CREAT | os.O_EXCL, file_mode())
            except FileExistsError:  # another writer of the run rotated first: join its segment
                new = open_run_file(path, flags, file_mode())
            os.close(fd)
            fd, self._fd, self._segment, self.path = new, new, number, path
            self._torn = False  # the fragment (if any) ends the previous segment
            self.rotations += 1
        return fd

    def full(self) -> bool:
        """Whether the next write starts a new segment (a writer whose lines build on earlier ones, like
        the metrics' changed-points-only lines, then writes a complete line so each segment reads on its own)."""
        if not self.rotate_bytes:
            return False
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = self._open()
                return os.fstat(self._fd).st_size >= self.rotate_bytes
            except OSError:
                return False

    def write(self, data: bytes) -> bool:
        """Append ``data`` (whole lines); return False (and report once) if it could not all be written."""
        with self._lock:
            written = 0
            try:
                if self._fd is None:
                    self._fd = self._open()
                fd = self._rotate_if_full(self._fd)
                if self._torn:
                    _write_fd(fd, b"\n")
                    self._torn = False
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    written += n
                    view = view[n:]
                self.lines += data.count(b"\n")
                return True
            except OSError as exc:
                complete = data.count(b"\n", 0, written)
                self.lines += complete
                self.dropped += data.count(b"\n") - complete
                if written and data[written - 1:written] != b"\n":
                    self._torn = True
                report_write_error(self.path, exc, "these lines")
                return False

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's may have been held mid-write)."""
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the descriptor; a later write reopens it (the newest segment)."""
        with self._lock:
            if self._fd is not None:
                try:
                    os.close(self._fd)
                finally:
                    self._fd = None
                    self._segment = 0


class RunSinks:
    """The open runs' files, looked up by run id from the exporter threads."""

    def __init__(self, rotate_bytes: int | None = None) -> None:
        self.rotate_bytes = rotate_bytes  # size at which a run's spans/metrics file moves to a new segment
        self._spans: dict[str, LineFile] = {}
        self._metrics: dict[str, LineFile] = {}
        self._lock = threading.Lock()

    def open(self, run_id: str, run_dir: Path) -> None:
        """Start routing the run's spans and metrics to files in ``run_dir``."""
        with self._lock:
            self._spans[run_id] = LineFile(run_dir / SPANS_FILE, self.rotate_bytes)
            self._metrics[run_id] = LineFile(run_dir / METRICS_FILE, self.rotate_bytes)

    def close(self, run_id: str) -> dict[str, int]:
        """Stop routing to the run (after its final flush) and close its files; the lines they lost, by kind.

        ``{"spans_lines": n, "metrics_lines": m}`` with only the kinds that lost any (a full or failing disk).
        """
        with self._lock:
            files = {"spans_lines": self._spans.pop(run_id, None), "metrics_lines": self._metrics.pop(run_id, None)}
        lost: dict[str, int] = {}
        for kind, f in files.items():
            if f is not None:
                f.close()
                if f.dropped:
                    lost[kind] = f.dropped
                    log_once(f"dropped:{f.path}", "runtel lost %d line(s) of %s (the disk was full or failing)",
                             f.dropped, f.path)
        return lost

    def spans(self, run_id: str) -> LineFile | None:
        """The spans file of an open run."""
        return self._spans.get(run_id)

    def metrics(self, run_id: str) -> LineFile | None:
        """The metrics file of an open run."""
        return self._metrics.get(run_id)

    def open_ids(self) -> list[str]:
        """Ids of the runs currently routed."""
        with self._lock:
            return list(self._metrics)

    def after_fork(self) -> None:
        """In a forked child: fresh locks here and in every open file."""
        self._lock = threading.Lock()
        for f in [*self._spans.values(), *self._metrics.values()]:
            f.after_fork()
