"""Writing the run folder: run ids, run.json (created once, then rewritten in place), side files, JSON Lines.

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
from runtel.rundir.schema import METRICS_FILE, SPANS_FILE

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
    """Create ``path`` (which must not exist) with ``text``: one open, one write, one close."""
    fd = open_run_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, file_mode() if mode is None else mode)
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


class RecordWriter:
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
                fd = open_run_file(self.path, flags, file_mode())
            except OSError as exc:  # someone else's file, the record was removed, or it became a symlink
                if not isinstance(exc, (FileExistsError, FileNotFoundError)) and exc.errno != errno.ELOOP:
                    raise
                # (a symlink is replaced by the rename, never followed)
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


class LineFile:
    """An append-only JSON Lines file written with one ``write()`` per line batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()
        self.lines = 0

    def write(self, data: bytes) -> bool:
        """Append ``data`` (whole lines); return False (and log once) if the file cannot be written."""
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = open_run_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, file_mode())
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                self.lines += data.count(b"\n")
                return True
            except OSError as exc:
                log_once(f"write:{self.path}", "runtel could not write %s: %s (the run goes on without it)",
                         self.path, exc)
                return False

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's may have been held mid-write)."""
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the descriptor; a later write reopens it."""
        with self._lock:
            if self._fd is not None:
                try:
                    os.close(self._fd)
                finally:
                    self._fd = None


class RunSinks:
    """The open runs' files, looked up by run id from the exporter threads."""

    def __init__(self) -> None:
        self._spans: dict[str, LineFile] = {}
        self._metrics: dict[str, LineFile] = {}
        self._lock = threading.Lock()

    def open(self, run_id: str, run_dir: Path) -> None:
        """Start routing the run's spans and metrics to files in ``run_dir``."""
        with self._lock:
            self._spans[run_id] = LineFile(run_dir / SPANS_FILE)
            self._metrics[run_id] = LineFile(run_dir / METRICS_FILE)

    def close(self, run_id: str) -> None:
        """Stop routing to the run (after its final flush) and close its files."""
        with self._lock:
            files = [self._spans.pop(run_id, None), self._metrics.pop(run_id, None)]
        for f in files:
            if f is not None:
                f.close()

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
