"""The index of runs: a SQLite file beside the run folders, so ``ls``, ``latest``, prefix lookup, child runs
and the artifact-hash lookup need not parse every run.json.

``<root>/.runtel-index.sqlite`` (WAL mode, private like the other files) holds one row per run folder
with what listing and lookups need (id, name, recorded status, start, duration, parent, tags, results,
problems, the process that wrote it), plus the runs' artifacts (by content hash) and sources. The
folders stay the source of truth; the index is a cache that can be deleted at any time:

* **Writers** (:func:`note_record`, called by the recording side's ``Run`` after each run.json write)
  upsert the run's row when its final record is written, in one short transaction (a running run's
  row is added by the first reader that finds its folder, and re-read until it ends). Many processes
  and ranks write at once: WAL lets readers go on, a busy writer waits at most :data:`WRITE_BUSY_MS`,
  and any failure is logged once and skipped (a reader repairs the row) — the user's program never
  sees it.
* **Readers** (:func:`open_index`) first bring the index up to date cheaply: one ``os.scandir`` of the
  root (names only) finds folders the index lacks (copied in, written while the index was locked or
  by an older runtel: their run.json is read and indexed) and rows whose folder is gone (dropped);
  rows still ``running``, or corrupt, have their run.json's (inode, size, mtime) compared and are
  re-read when it changed. A finished run's record is not rewritten, so its row is trusted. A missing
  index is built from the folders; a corrupt one (not a database, malformed) is deleted and rebuilt,
  with one warning. When the index cannot be used at all (a read-only folder, a locked or failing
  disk, ``RUNTEL_RUN_INDEX=false``, a network file system such as NFS or Lustre where SQLite's WAL is
  unsafe across hosts) readers get None and fall back to scanning every run.json, as before.

The status stored is the *recorded* one; readers compute the effective status (``interrupted`` for a
killed run, ``corrupt`` for a record with problems) from the stored process and problems, exactly as
:func:`runtel.rundir.reader.effective_status` does for a full record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from runtel._guard import guard, log_once
from runtel._internals import compact_json
from runtel.errors import RunFolderError, RunNotFound
from runtel.rundir.schema import RECORD_FILE, RunRecord
from runtel.rundir.writer import file_mode, open_run_file

if TYPE_CHECKING:
    import sqlite3

__all__ = (
    "INDEX_FILE",
    "RunIndex",
    "close_writers",
    "complete_summaries",
    "consumers",
    "descendants",
    "find_artifacts",
    "list_matching",
    "list_summaries",
    "newest_trees",
    "note_record",
    "open_index",
    "rebuild",
    "resolve_run",
    "session",
)

_logger = logging.getLogger("runtel.index")
_T = TypeVar("_T")

INDEX_FILE: Final = ".runtel-index.sqlite"
"""The index file in the runs root (with SQLite's ``-wal`` and ``-shm`` beside it while in use)."""

SCHEMA_VERSION: Final = 5
"""``PRAGMA user_version`` of the tables below; another version is rebuilt (older) or left alone (newer)."""

WRITE_BUSY_MS: Final = 2000
"""How long a run's start or end waits for another writer's transaction before skipping its update."""

READ_BUSY_MS: Final = 10000
"""How long a reader waits for writers (the CLI may wait; a run may not)."""

_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS runs (
    dir TEXT PRIMARY KEY,           -- the folder's name under the root
    id TEXT NOT NULL,
    name TEXT,
    status TEXT,                    -- as recorded (readers derive interrupted / corrupt)
    start_key TEXT NOT NULL,        -- start_time_unix_nano zero-padded: list_runs' order
    start_time TEXT,
    start_ns TEXT,
    duration_s REAL,
    parent TEXT,                    -- the enclosing run's id
    tags TEXT,                      -- JSON, NULL when none
    results TEXT,                   -- JSON, NULL when none
    problems TEXT,                  -- JSON list of what a reader dropped, NULL when none
    process TEXT,                   -- JSON {pid, host, create_time} of the writer, for running rows
    unreadable INTEGER NOT NULL DEFAULT 0,
    file_key TEXT NOT NULL          -- run.json's inode:size:mtime_ns when indexed
);
-- Few and partial indexes: each one a run's row touches is another page written per commit. The
-- primary key's index doubles as the narrow list of folder names the refresh reads, runs_order lets
-- the newest rows (ls, latest) be read without sorting them all.
CREATE INDEX IF NOT EXISTS runs_order ON runs(start_key, id);
CREATE INDEX IF NOT EXISTS runs_id ON runs(id);
CREATE INDEX IF NOT EXISTS runs_parent ON runs(parent) WHERE parent IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_unsettled ON runs(dir) WHERE status IS 'running' OR problems IS NOT NULL OR unreadable != 0;
CREATE TABLE IF NOT EXISTS artifacts (
    dir TEXT NOT NULL, run_id TEXT, name TEXT, path TEXT, hash TEXT, hash_kind TEXT, size INTEGER
);
CREATE INDEX IF NOT EXISTS artifacts_hash ON artifacts(hash);
CREATE INDEX IF NOT EXISTS artifacts_dir ON artifacts(dir);
CREATE TABLE IF NOT EXISTS sources (dir TEXT NOT NULL, run_id TEXT, source_run_id TEXT);
CREATE INDEX IF NOT EXISTS sources_source ON sources(source_run_id);
CREATE INDEX IF NOT EXISTS sources_dir ON sources(dir);
"""

_COLUMNS: Final = ("dir", "id", "name", "status", "start_key", "start_time", "start_ns", "duration_s", "parent",
                   "tags", "results", "problems", "process", "unreadable", "file_key")
_UPSERT: Final = (f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * len(_COLUMNS))})")
#: tag keys written into a JSON path as they are
_SIMPLE_KEY: Final = re.compile(r"[A-Za-z0-9_.:/-]+")
#: rows a reader re-checks against run.json (a finished, clean run's record is not rewritten)
_UNSETTLED: Final = "status IS 'running' OR problems IS NOT NULL OR unreadable != 0"
#: the columns a listing reads (everything but the file key)
_LIST: Final = "dir, id, name, status, start_time, start_ns, duration_s, parent, tags, results, problems, process, unreadable"


class IndexUnavailable(Exception):
    """The index cannot be used now (read-only folder, locked, failing disk): scan the folders instead."""


def enabled() -> bool:
    """False under ``RUNTEL_RUN_INDEX=false`` (read here, not from the settings: commands have none)."""
    return os.environ.get("RUNTEL_RUN_INDEX", "").strip().lower() not in ("0", "false", "no", "off")


#: file systems shared between hosts: SQLite's WAL needs shared memory all writers see, which they lack
NETWORK_FILE_SYSTEMS: Final = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "9p", "afs",
    "pvfs2", "orangefs", "gfs2", "ocfs2", "panfs", "wekafs", "fuse.sshfs", "fuse.ceph", "fuse.glusterfs",
    "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs",
})
_fs_types: dict[str, str] = {}


def file_system_type(path: Path) -> str:
    """The type of the file system holding ``path`` (Linux /proc/self/mounts; ``""`` where unknown)."""
    key = str(path)
    if key not in _fs_types:
        found, best = "", -1
        try:
            real = os.path.realpath(path)
            with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) < 3:
                        continue
                    mount = parts[1].replace("\\040", " ")
                    inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                    if inside and len(mount) > best:
                        found, best = parts[2], len(mount)
        except OSError:
            pass
        _fs_types[key] = found
    return _fs_types[key]


def _usable_here(root: Path) -> bool:
    """Whether an index may live in ``root``: enabled, and on a file system local to this host."""
    return enabled() and file_system_type(root) not in NETWORK_FILE_SYSTEMS


def _file_key(path: str) -> str:
    """run.json's identity as of now: a rewrite (a rename of a new file) changes the inode, size or mtime."""
    st = os.stat(path)
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _json_or_none(value: Any) -> str | None:
    if value is None or value == {} or value == []:
        return None
    try:
        return compact_json(value)
    except (TypeError, ValueError):
        return None


def _row(dir_name: str, record: Mapping[str, Any], file_key: str) -> tuple[Any, ...]:
    """The ``runs`` row of a record (written or read back)."""
    parent = record.get("parent")
    parent_id = parent.get("run_id") if isinstance(parent, Mapping) else None
    start_ns = record.get("start_time_unix_nano")
    proc = record.get("process")
    process = None
    if isinstance(proc, Mapping) and record.get("status") == "running":  # only a running row needs its writer
        process = _json_or_none({k: proc[k] for k in ("pid", "host", "create_time") if k in proc})
    duration = record.get("duration_s")
    return (
        dir_name,
        str(record.get("id") or dir_name),
        record.get("name") if isinstance(record.get("name"), str) else None,
        record.get("status") if isinstance(record.get("status"), str) else None,
        str(start_ns if start_ns is not None else "").zfill(20),
        record.get("start_time") if isinstance(record.get("start_time"), str) else None,
        str(start_ns) if start_ns is not None else None,
        duration if isinstance(duration, (int, float)) and not isinstance(duration, bool) else None,
        parent_id if isinstance(parent_id, str) else None,
        _json_or_none(record.get("tags")),
        _json_or_none(record.get("results")),
        _json_or_none(record.get("problems")),
        process,
        1 if record.get("unreadable") else 0,
        file_key,
    )


def _lineage_rows(dir_name: str, record: Mapping[str, Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(artifacts rows, sources rows) of a record."""
    run_id = str(record.get("id") or dir_name)
    arts: list[tuple[Any, ...]] = []
    artifacts = record.get("artifacts")
    if isinstance(artifacts, Mapping):
        for key, art in artifacts.items():
            if isinstance(art, Mapping) and isinstance(art.get("hash"), str):
                size = art.get("size")
                arts.append((dir_name, run_id, str(art.get("name") or key), str(art.get("path") or ""), art["hash"],
                             art.get("hash_kind") if isinstance(art.get("hash_kind"), str) else None,
                             size if isinstance(size, int) and not isinstance(size, bool) else None))
    srcs: list[tuple[Any, ...]] = []
    sources = record.get("sources")
    if isinstance(sources, list):
        for src in sources:
            if isinstance(src, Mapping) and isinstance(src.get("run_id"), str) and src["run_id"]:
                srcs.append((dir_name, run_id, src["run_id"]))
    return arts, srcs


def _store(conn: sqlite3.Connection, dir_name: str, record: Mapping[str, Any], file_key: str) -> None:
    """Replace a run's rows (inside the caller's transaction)."""
    conn.execute(_UPSERT, _row(dir_name, record, file_key))
    arts, srcs = _lineage_rows(dir_name, record)
    if not arts and not srcs:
        return  # nothing to replace: a record never loses artifacts or sources it had earlier
    conn.execute("DELETE FROM artifacts WHERE dir = ?", (dir_name,))
    conn.execute("DELETE FROM sources WHERE dir = ?", (dir_name,))
    if arts:
        conn.executemany("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?)", arts)
    if srcs:
        conn.executemany("INSERT INTO sources VALUES (?, ?, ?)", srcs)


def _drop(conn: sqlite3.Connection, names: Iterable[str]) -> None:
    rows = [(n,) for n in names]
    for table in ("runs", "artifacts", "sources"):
        conn.executemany(f"DELETE FROM {table} WHERE dir = ?", rows)


def _is_corruption(exc: BaseException) -> bool:
    import sqlite3  # deferred: sqlite3 (~3 ms), only once an index is used

    if isinstance(exc, sqlite3.OperationalError):
        return False  # locked, read-only, I/O: the file may be fine
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or (type(exc) is sqlite3.DatabaseError and code is None)


def _create_private(path: Path) -> None:
    """Create the index file with the run files' mode (SQLite gives -wal/-shm the same); never via a symlink."""
    fd = open_run_file(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode(), owned=True)
    os.close(fd)


def _connect(root: Path, busy_ms: int) -> sqlite3.Connection:
    """A connection to ``root``'s index, created and migrated as needed.

    Raises:
        sqlite3.Error, OSError: cannot be opened (corruption included: callers tell it apart).
    """
    import sqlite3  # deferred: sqlite3 (~3 ms), only once an index is used

    path = root / INDEX_FILE
    if os.path.islink(path):
        raise PermissionError(f"{path} is a symbolic link: not opened")
    if not os.path.lexists(path):
        _create_private(path)
    conn = sqlite3.connect(str(path), timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            if version > SCHEMA_VERSION:
                raise IndexUnavailable(f"{path} was written by a newer runtel (schema {version})")
            _while_locked(lambda: _migrate(conn), busy_ms, sqlite3.OperationalError)
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL: fsync at checkpoints only; the index is rebuildable
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    """Switch a new (or older) index to WAL and create the current schema, in one immediate transaction."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            for table in ("runs", "artifacts", "sources"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            schema = "\n".join(line.split("--")[0] for line in _SCHEMA.splitlines())
            for statement in schema.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _while_locked(step: Callable[[], None], busy_ms: int, error: type[Exception]) -> None:
    """Run ``step``, again while SQLite answers "locked"/"busy", for up to ``busy_ms``.

    Switching to WAL needs the database to itself, and SQLite returns SQLITE_BUSY at once there rather
    than waiting in its busy handler: processes that create the index together (a pool's workers ending
    their first runs) failed with "database is locked" while the other was still creating it.
    """
    deadline = time.monotonic() + busy_ms / 1000
    pause = 0.005
    while True:
        try:
            step()
            return
        except error as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _remove_index(root: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(root / (INDEX_FILE + suffix))
        except FileNotFoundError:
            pass


# --- the write side -------------------------------------------------------------------------------------


class _Writers:
    """This process's writing connections, one per runs root (SQLite forbids sharing one across a fork).

    At most :attr:`MAX_OPEN` stay open (a process writing into many roots does not pile up descriptors);
    a connection whose file was deleted or replaced (``runtel index --rebuild``) is reopened; a root
    whose index could not be opened is tried again after :attr:`RETRY_S`, not at every run's end.
    """

    MAX_OPEN: Final = 8
    RETRY_S: Final = 30.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conns: OrderedDict[str, tuple[sqlite3.Connection, int]] = OrderedDict()
        self.failed: dict[str, float] = {}
        self.abandoned: list[Any] = []  # a forked parent's connections: never used nor closed in the child

    def after_fork(self) -> None:
        """In a forked child: a fresh lock, and none of the parent's connections."""
        self.lock = threading.Lock()
        self.abandoned.append(self.conns)
        self.conns, self.failed = OrderedDict(), {}

    def get(self, root: Path) -> sqlite3.Connection | None:
        """The open connection to ``root``'s index (call with :attr:`lock` held); None while backing off.

        Raises:
            sqlite3.Error, OSError, IndexUnavailable: it cannot be opened now.
        """
        key = str(root)
        path = os.path.join(key, INDEX_FILE)
        found = self.conns.get(key)
        if found is not None:
            conn, ino = found
            try:
                same = os.stat(path).st_ino == ino
            except OSError:
                same = False
            if same:
                self.conns.move_to_end(key)
                return conn
            del self.conns[key]
            conn.close()
        failed_at = self.failed.get(key)
        if failed_at is not None and time.monotonic() - failed_at < self.RETRY_S:
            return None
        try:
            conn = _connect(root, WRITE_BUSY_MS)
        except BaseException:
            self.failed[key] = time.monotonic()
            raise
        try:
            ino = os.stat(path).st_ino
        except OSError:
            conn.close()
            self.failed[key] = time.monotonic()
            raise
        self.failed.pop(key, None)
        self.conns[key] = (conn, ino)
        while len(self.conns) > self.MAX_OPEN:
            _, (old, _) = self.conns.popitem(last=False)
            old.close()
        return conn


_writers = _Writers()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_writers.after_fork)


def note_record(run_dir: Path, data: Mapping[str, Any]) -> None:
    """Upsert the index row of a run whose final run.json was just written with ``data``; never raises.

    Only the final record is indexed: the start (and the updates while the run goes) would double the
    index's cost per run (+0.15 ms of a 0.4 ms warm run on tmpfs), and readers find a running run's
    folder anyway (a name the index lacks) and index it then.

    A failure (locked past :data:`WRITE_BUSY_MS`, read-only, full disk, a corrupt index) is logged once;
    the next reader finds the row missing or out of date and repairs it from the folder.
    """
    root = run_dir.parent
    if data.get("status") == "running" or not _usable_here(root):
        return  # a running run's row is added by the first reader that meets its folder (see the module doc)
    with guard("run-index", f"update the run index in {root}"):
        try:
            file_key = _file_key(os.path.join(run_dir, RECORD_FILE))
            with _writers.lock:
                conn = _writers.get(root)
                if conn is None:
                    return
                arts, srcs = _lineage_rows(run_dir.name, data)
                if not arts and not srcs:  # one statement: its own transaction (half the cost of three)
                    conn.execute(_UPSERT, _row(run_dir.name, data, file_key))
                    return
                conn.execute("BEGIN IMMEDIATE")
                try:
                    _store(conn, run_dir.name, data, file_key)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except Exception as exc:
            if not _expected_failure(exc):
                raise
            log_once(f"run-index:{root}", "runtel could not update the run index %s: %s (runtel ls reads the run "
                     "folders instead; the index is repaired when it can be written)", root / INDEX_FILE, exc)


def _expected_failure(exc: BaseException) -> bool:
    """A failure of the world (disk, locks, permissions, another version), not of this code."""
    import sqlite3  # deferred: sqlite3 (~3 ms), only once an index is used

    return isinstance(exc, (OSError, IndexUnavailable, sqlite3.OperationalError, sqlite3.DatabaseError))


def close_writers() -> None:
    """Close this process's index connections (before a rebuild, and in tests)."""
    with _writers.lock:
        conns, _writers.conns = _writers.conns, OrderedDict()
        _writers.failed.clear()
    for conn, _ in conns.values():
        try:
            conn.close()
        except Exception:  # closing a cache: nothing left to report to
            pass


# --- the read side --------------------------------------------------------------------------------------


def _scan_names(root: Path) -> set[str]:
    """Names of the sub-folders of ``root`` (directory entry types only: no stat per folder)."""
    out = set()
    with os.scandir(root) as it:
        for entry in it:
            try:
                if entry.is_dir():
                    out.add(entry.name)
            except OSError:
                continue
    return out


def _read_folder(root: Path, name: str) -> tuple[RunRecord, str] | None:
    """(record, file key) of a folder, or None if it holds no run.json."""
    from runtel.rundir.reader import read_record_or_corrupt  # deferred: runtel.rundir.reader (~4 ms), read side only

    path = os.path.join(root, name, RECORD_FILE)
    try:
        key = _file_key(path)  # before reading: a rewrite after this is seen by the next reader
    except FileNotFoundError:
        if not os.path.lexists(path):
            return None
        key = "dangling"
    except OSError:
        key = "unstatable"
    return read_record_or_corrupt(root / name), key


class RunIndex:
    """An up-to-date view of one root's index (see :func:`open_index`)."""

    def __init__(self, root: Path, conn: sqlite3.Connection) -> None:
        self.root = root
        self.conn = conn
        self.shared = False  # owned by a session(): closed at its end

    def close(self) -> None:
        """Close the connection (unless a :func:`session` owns it)."""
        if not self.shared:
            self.conn.close()

    def refresh(self) -> int:
        """Bring the index in line with the folders; returns how many rows were added, re-read or dropped."""
        names = _scan_names(self.root)
        indexed = {row[0] for row in self.conn.execute("SELECT dir FROM runs")}
        unsettled = dict(self.conn.execute(f"SELECT dir, file_key FROM runs WHERE {_UNSETTLED}"))
        gone = list(indexed - names)
        changed: list[tuple[str, RunRecord, str]] = []
        for name in sorted((names - indexed) | (unsettled.keys() & names)):
            old = unsettled.get(name)
            if old is not None:
                try:
                    if _file_key(os.path.join(self.root, name, RECORD_FILE)) == old:
                        continue
                except OSError:
                    pass
            found = _read_folder(self.root, name)
            if found is None:
                if old is not None:
                    gone.append(name)
                continue
            changed.append((name, *found))
        if gone or changed:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                _drop(self.conn, gone)
                for name, record, key in changed:
                    _store(self.conn, name, record, key)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return len(gone) + len(changed)

    # --- queries ------------------------------------------------------------------------------------
    def _select(self, tags: bool = True, results: bool = True) -> str:
        return _LIST.replace("tags", "tags" if tags else "NULL").replace("results", "results" if results else "NULL")

    def _record(self, row: Sequence[Any], prefix: str) -> RunRecord:
        """A summary record: the keys of run.json that listing and filters read, as read_record gives them."""
        name, run_id, run_name, status, start_time, start_ns, duration, parent, tags, results, problems, process, bad = row
        record: dict[str, Any] = {"id": run_id, "dir": prefix + name}
        if bad:
            record["problems"] = json.loads(problems) if problems else []
            record["unreadable"] = True
            return record  # type: ignore[return-value]
        if run_name is not None:
            record["name"] = run_name
        if status is not None:
            record["status"] = status
        if start_time is not None:
            record["start_time"] = start_time
        if start_ns is not None:
            record["start_time_unix_nano"] = start_ns
        if duration is not None:
            record["duration_s"] = duration
        if parent is not None:
            record["parent"] = {"run_id": parent}
        if tags:
            record["tags"] = json.loads(tags)
        if results:
            record["results"] = json.loads(results)
        if problems:
            record["problems"] = json.loads(problems)
        if process:
            record["process"] = json.loads(process)
        return record  # type: ignore[return-value]

    def _prefix(self) -> str:
        """``str(root / name)`` is this plus the name (joined once, not once per run)."""
        return str(self.root / "_")[:-1]

    def runs(self, *, tags: bool = True, results: bool = True) -> list[RunRecord]:
        """Summary records of every run, newest first (as ``reader.list_runs``); without ``tags`` /
        ``results`` those keys are left out (decoding them for 10,000 rows is most of the cost)."""
        prefix = self._prefix()
        sql = f"SELECT {self._select(tags, results)} FROM runs ORDER BY start_key DESC, id DESC"
        return [self._record(row, prefix) for row in self.conn.execute(sql)]

    def newest_trees(self, limit: int, worker_suffix: str) -> tuple[list[tuple[int, RunRecord]], int, int] | None:
        """The first ``limit`` rows of ``ls``'s tree order over the runs not named ``*<worker_suffix>``:
        (rows as (depth, record), rows left out, worker runs hidden). Reads only the rows shown.

        The order is ``runtel.cli.show``'s: top-level runs (no parent among the listed runs) newest first,
        each followed by its children, oldest first, recursively. None when parent links form a cycle
        (the caller then orders the full listing).
        """
        prefix = self._prefix()
        not_worker = "(name IS NULL OR substr(name, -?) != ?)"
        wp = (len(worker_suffix), worker_suffix)
        listed = int(self.conn.execute(f"SELECT count(*) FROM runs WHERE {not_worker}", wp).fetchone()[0])
        total = self.count()
        tops = self.conn.execute(
            f"SELECT {_LIST} FROM runs r WHERE {not_worker} AND (parent IS NULL OR parent = id OR NOT EXISTS "
            f"(SELECT 1 FROM runs p WHERE p.id = r.parent AND {not_worker.replace('name', 'p.name')})) "
            f"ORDER BY start_key DESC, id DESC LIMIT ?", (*wp, *wp, limit)).fetchall()
        out: list[tuple[int, RunRecord]] = []
        seen: set[str] = set()
        for top in tops:
            stack: list[tuple[int, Sequence[Any]]] = [(0, top)]
            while stack and len(out) < limit:
                depth, row = stack.pop()
                if row[0] in seen:
                    return None  # one id in two folders: let the full listing decide
                seen.add(row[0])
                record = self._record(row, prefix)
                out.append((depth, record))
                kids = self.conn.execute(
                    f"SELECT {_LIST} FROM runs WHERE parent = ? AND id != ? AND {not_worker} "
                    f"ORDER BY start_key DESC, id DESC", (row[1], row[1], *wp)).fetchall()
                stack.extend((depth + 1, k) for k in kids)  # newest pushed first: popped oldest first
            if len(out) >= limit:
                break
        if len(out) < min(limit, listed):
            return None  # runs on a cycle of parent links: only the full listing places them
        return out, listed - len(out), total - listed

    def matching(self, *, name: str | None = None, tags: Mapping[str, str] | None = None, status: str | None = None,
                 since_ns: int | None = None, parent: str | None = None, with_tags: bool = True,
                 with_results: bool = True) -> list[RunRecord]:
        """Summary records (newest first) of a **superset** of the runs ``ls``'s filters keep: the caller
        applies the exact filters to these few instead of to every run. ``parent`` is a run id."""
        where: list[str] = []
        params: list[Any] = []
        if name is not None and "[" not in name:  # GLOB is fnmatchcase for * and ?; classes may differ
            where.append("(name GLOB ? OR name IS NULL)")
            params.append(name)
        for key, value in (tags or {}).items():
            if _SIMPLE_KEY.fullmatch(key):
                where.append("json_extract(tags, ?) = ?")
                params += [f'$."{key}"', value]
        if status == "corrupt":
            where.append("problems IS NOT NULL")
        elif status in ("running", "interrupted"):
            where.append("status = 'running' AND problems IS NULL")
        elif status is not None:
            where.append("status = ? AND problems IS NULL")
            params.append(status)
        if since_ns is not None:
            where.append("start_key >= ?")
            params.append(str(max(0, since_ns - 10_000_000)).zfill(20))  # 10 ms of slack: the exact test follows
        if parent is not None:
            where.append("parent = ?")
            params.append(parent)
        sql = (f"SELECT {self._select(with_tags, with_results)} FROM runs "
               f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY start_key DESC, id DESC")
        prefix = self._prefix()
        return [self._record(row, prefix) for row in self.conn.execute(sql, params)]

    def run_ids_for(self, ref: str) -> list[str]:
        """``[ref]`` if a run has that id, else the ids starting with it."""
        if self.conn.execute("SELECT 1 FROM runs WHERE id = ? LIMIT 1", (ref,)).fetchone():
            return [ref]
        rows = self.conn.execute("SELECT DISTINCT id FROM runs WHERE id >= ? AND substr(id, 1, ?) = ? LIMIT 2",
                                 (ref, len(ref), ref))
        return [r[0] for r in rows]

    def complete(self, records: Sequence[RunRecord]) -> None:
        """Add the tags and results :meth:`runs` left out to these records (the few a listing shows)."""
        by_dir = {os.path.basename(str(r.get("dir"))): r for r in records if not r.get("unreadable")}
        names = list(by_dir)
        for start in range(0, len(names), 500):  # SQLite caps the parameters of one statement
            chunk = names[start:start + 500]
            rows = self.conn.execute(f"SELECT dir, tags, results FROM runs WHERE dir IN ({', '.join('?' * len(chunk))})",
                                     chunk)
            for name, tags, results in rows:
                record = by_dir[name]
                if tags:
                    record["tags"] = json.loads(tags)
                if results:
                    record["results"] = json.loads(results)

    def descendants(self, run_id: str) -> list[RunRecord]:
        """Summary records of the runs nested (transitively) under ``run_id``, newest first."""
        rows = self.conn.execute(
            f"WITH RECURSIVE d(id) AS (SELECT ? UNION SELECT runs.id FROM runs JOIN d ON runs.parent = d.id) "
            f"SELECT {_LIST} FROM runs WHERE parent IN (SELECT id FROM d) "
            f"ORDER BY start_key DESC, id DESC", (run_id,))
        prefix = self._prefix()
        return [self._record(row, prefix) for row in rows]

    def latest(self) -> str | None:
        """Folder name of the newest readable run whose parent is not a readable run of this root."""
        row = self.conn.execute(
            "SELECT dir FROM runs r WHERE unreadable = 0 AND (parent IS NULL OR NOT EXISTS "
            "(SELECT 1 FROM runs p WHERE p.id = r.parent AND p.unreadable = 0)) "
            "ORDER BY start_key DESC, id DESC LIMIT 1").fetchone()
        if row is None:
            row = self.conn.execute("SELECT dir FROM runs WHERE unreadable = 0 "
                                    "ORDER BY start_key DESC, id DESC LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def names(self) -> list[str]:
        """Every indexed folder name, sorted."""
        return [r[0] for r in self.conn.execute("SELECT dir FROM runs ORDER BY dir")]

    def names_with_prefix(self, prefix: str) -> list[str]:
        """Folder names starting with ``prefix``, sorted (a range scan of the primary key)."""
        rows = self.conn.execute("SELECT dir FROM runs WHERE dir >= ? AND substr(dir, 1, ?) = ? ORDER BY dir",
                                 (prefix, len(prefix), prefix))
        return [r[0] for r in rows]

    def artifacts(self, digest: str) -> list[dict[str, Any]]:
        """Artifact entries with this content hash (as ``artifacts.find_artifacts`` gives them), by run id."""
        rows = self.conn.execute("SELECT run_id, name, path, hash, hash_kind, size FROM artifacts WHERE hash = ? "
                                 "ORDER BY run_id", (digest,))
        out: list[dict[str, Any]] = []
        seen: set[tuple[Any, ...]] = set()
        for run_id, name, path, hash_, kind, size in rows:
            if (run_id, name, path) in seen:
                continue
            seen.add((run_id, name, path))
            out.append({"hash": hash_, "hash_kind": kind, "run_id": run_id, "name": name, "path": path, "size": size})
        return out

    def consumers(self) -> dict[str, list[str]]:
        """Source run id -> ids of the runs that name it as a source, oldest first."""
        out: dict[str, list[str]] = {}
        rows = self.conn.execute("SELECT s.source_run_id, s.run_id FROM sources s JOIN runs r ON r.dir = s.dir "
                                 "ORDER BY r.start_key ASC, r.id ASC")
        for source, run_id in rows:
            out.setdefault(source, []).append(run_id)
        return out

    def count(self) -> int:
        """Rows in the index."""
        return int(self.conn.execute("SELECT count(*) FROM runs").fetchone()[0])


_sessions: list[dict[str, RunIndex | None]] = []


@contextlib.contextmanager
def session() -> Iterator[None]:
    """Within it, each root's index is opened and brought up to date once: one command's lookups
    (resolve ``latest``, then its child runs; a file's producer, then its lineage) share one refresh."""
    cache: dict[str, RunIndex | None] = {}
    _sessions.append(cache)
    try:
        yield
    finally:
        _sessions.remove(cache)
        for index in cache.values():
            if index is not None:
                index.shared = False
                index.close()


def open_index(root: str | os.PathLike[str], *, refresh: bool = True) -> RunIndex | None:
    """The index of ``root``, brought up to date; None when it cannot be used (then scan the folders).

    A corrupt index is deleted and rebuilt from the folders, with one warning. Inside :func:`session`
    the same open index is returned for a root (its ``close`` waits for the session's end).
    """
    base = Path(root)
    if _sessions and refresh:
        cache = _sessions[-1]
        if str(base) not in cache:
            found = _open_index(base, refresh=True)
            if found is not None:
                found.shared = True
            cache[str(base)] = found
        return cache[str(base)]
    return _open_index(base, refresh=refresh)


def _has_runs(base: Path) -> bool:
    """Whether ``base`` holds at least one run folder (a reader creates no index in a folder of none)."""
    try:
        with os.scandir(base) as it:
            return any(e.is_dir() and os.path.lexists(os.path.join(e.path, RECORD_FILE)) for e in it)
    except OSError:
        return False


def _open_index(base: Path, *, refresh: bool, create: bool = False) -> RunIndex | None:
    if not base.is_dir() or not _usable_here(base):
        return None
    if not create and not os.path.lexists(base / INDEX_FILE) and not _has_runs(base):
        return None  # `runtel ls --dir SOMEWHERE` leaves no file behind where there are no runs
    for attempt in (1, 2):
        conn = None
        try:
            conn = _connect(base, READ_BUSY_MS)
            index = RunIndex(base, conn)
            if refresh:
                index.refresh()
            return index
        except Exception as exc:
            if conn is not None:
                conn.close()
            if attempt == 1 and _is_corruption(exc):
                log_once(f"index-corrupt:{base}", "the run index %s was corrupt (%s); rebuilt from the run "
                         "folders", base / INDEX_FILE, exc)
                try:
                    _remove_index(base)
                except OSError:
                    return None
                continue
            if not _expected_failure(exc):
                raise
            _logger.debug("run index of %s not used: %s", base, exc)
            return None
    return None


def rebuild(root: str | os.PathLike[str]) -> int:
    """Delete ``root``'s index and build it again from the folders; returns the number of runs indexed.

    Raises:
        RunFolderError: the index cannot be written here.
    """
    base = Path(root)
    close_writers()
    try:
        _remove_index(base)
    except OSError as exc:
        raise RunFolderError(f"cannot remove {base / INDEX_FILE}: {exc.strerror or exc}") from exc
    index = _open_index(base, refresh=True, create=True)
    if index is None:
        raise RunFolderError(f"cannot write a run index in {base}")
    try:
        return index.count()
    finally:
        index.close()



# --- what the read side calls: the index when it can be used, else a scan of the folders ----------------


def _query(root: Path, query: Callable[[RunIndex], _T]) -> _T | None:
    """``query`` on the up-to-date index of ``root``; None when the index cannot be used."""
    index = open_index(root)
    if index is None:
        return None
    try:
        return query(index)
    except Exception as exc:
        if not _expected_failure(exc):
            raise
        if _is_corruption(exc):  # met past the refresh: delete it, so that the next command rebuilds it
            log_once(f"index-corrupt:{root}", "the run index %s is corrupt (%s); this command read the "
                     "run folders, the next one rebuilds it", root / INDEX_FILE, exc)
            for cache in _sessions:
                if cache.get(str(root)) is index:
                    cache[str(root)] = None  # the rest of the command reads the folders
            index.shared = False
            index.close()
            with contextlib.suppress(OSError):
                _remove_index(root)
        _logger.debug("run index of %s not used: %s", root, exc)
        return None
    finally:
        index.close()


def list_summaries(root: str | os.PathLike[str], *, tags: bool = True, results: bool = True) -> list[RunRecord]:
    """Every run under ``root``, newest first, as summary records: the keys ``ls`` and its filters read
    (id, dir, name, status, start_time, start_time_unix_nano, duration_s, parent, tags, results, problems,
    unreadable, and process while running). Without a usable index: :func:`runtel.rundir.reader.list_runs`.

    ``tags=False`` / ``results=False`` leave those keys out where the index answers (see
    :func:`complete_summaries`); the full scan always has them.
    """
    base = Path(root)
    found = _query(base, lambda index: index.runs(tags=tags, results=results))
    if found is not None:
        return found
    from runtel.rundir.reader import list_runs  # deferred: runtel.rundir.reader (~4 ms), the fallback only

    return list_runs(base)


def newest_trees(root: str | os.PathLike[str], limit: int,
                 worker_suffix: str) -> tuple[list[tuple[int, RunRecord]], int, int] | None:
    """:meth:`RunIndex.newest_trees` of ``root``; None without a usable index."""
    return _query(Path(root), lambda index: index.newest_trees(limit, worker_suffix))


def list_matching(root: str | os.PathLike[str], *, name: str | None = None, tags: Mapping[str, str] | None = None,
                  status: str | None = None, since_ns: int | None = None, parent_ref: str | None = None,
                  with_tags: bool = True, with_results: bool = True) -> tuple[list[RunRecord], int, str | None] | None:
    """(a superset of the runs ``ls``'s filters keep, every run's count, the parent's id) through the
    index: :meth:`RunIndex.matching`, with ``parent_ref`` (an id or a unique prefix) resolved first.
    None without a usable index, or when ``parent_ref`` names no run or several (the full listing says so).
    """
    def query(index: RunIndex) -> tuple[list[RunRecord], int, str | None] | None:
        parent = None
        if parent_ref is not None:
            ids = index.run_ids_for(parent_ref)
            if len(ids) != 1:
                return None
            parent = ids[0]
        found = index.matching(name=name, tags=tags, status=status, since_ns=since_ns, parent=parent,
                               with_tags=with_tags, with_results=with_results)
        return found, index.count(), parent

    return _query(Path(root), query)


def complete_summaries(root: str | os.PathLike[str], records: Sequence[RunRecord]) -> None:
    """Add the tags and results :func:`list_summaries` left out to ``records`` (no-op without an index)."""
    index = open_index(root, refresh=False) if records else None
    if index is None:
        return
    try:
        index.complete(records)
    except Exception as exc:
        if not _expected_failure(exc):
            raise
        _logger.debug("run index of %s not used: %s", root, exc)
    finally:
        index.close()


def descendants(root: str | os.PathLike[str], run_id: str) -> list[RunRecord] | None:
    """Summary records of the runs nested under ``run_id`` (children, their children...), newest first;
    None without a usable index."""
    return _query(Path(root), lambda index: index.descendants(run_id))


def consumers(root: str | os.PathLike[str]) -> dict[str, list[str]] | None:
    """Source run id -> runs that name it as a source (oldest first); None without a usable index."""
    return _query(Path(root), RunIndex.consumers)


def find_artifacts(root: str | os.PathLike[str], digest: str) -> list[dict[str, Any]] | None:
    """Artifacts with this content hash in the runs' records, by run id; None without a usable index."""
    return _query(Path(root), lambda index: index.artifacts(digest))


def resolve_run(ref: str, root: str | os.PathLike[str]) -> Path:
    """:func:`runtel.rundir.reader.resolve_run` (id, unique prefix, path or ``latest``) through the index.

    Raises:
        RunNotFound: nothing (or more than one run) matches.
    """
    from runtel.rundir.reader import resolve_run as scan  # deferred: runtel.rundir.reader (~4 ms), the fallback

    base = Path(root)
    candidate = Path(ref)
    if ref != "latest" and (_is_run_folder(candidate) or _is_run_folder(base / ref)):
        return scan(ref, base)  # a path or an exact name: no listing needed

    def lookup(index: RunIndex) -> Path:
        if ref == "latest":
            name = index.latest()
            if name is None:
                raise RunNotFound(f"no runs in {base}")
            return base / name
        matches = index.names_with_prefix(ref) or [n for n in index.names() if ref in n]
        if len(matches) == 1:
            return base / matches[0]
        if not matches:
            raise RunNotFound(f"no run matches {ref!r} in {base}")
        raise RunNotFound(f"{ref!r} is ambiguous in {base}: {', '.join(matches[:5])}{' …' if len(matches) > 5 else ''}")

    found = _query(base, lookup)
    return found if found is not None else scan(ref, base)


def _is_run_folder(path: Path) -> bool:
    try:
        return os.path.lexists(path / RECORD_FILE) and path.is_dir()
    except (OSError, ValueError):  # a name too long, or with a NUL byte
        return False
