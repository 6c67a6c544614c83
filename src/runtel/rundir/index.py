"""The index of runs: a SQLite file beside the run folders, so ``ls``, ``latest``, prefix lookup, child runs
and the artifact-hash lookup need not parse every run.json.

``<root>/.runtel-index.sqlite`` (WAL mode, private like the other files) holds one row per run folder
with what listing and lookups need (id, name, recorded status, start, duration, parent, tags, results,
problems, the process that wrote it), plus the runs' artifacts (by content hash) and sources. The
folders stay the source of truth; the index is a cache that can be deleted at any time:

* **Writers** (:func:`note_record`, called by the recording side's ``Run`` after each run.json write:
  at the start, at most once a second while the run goes, at the end) upsert the run's
  row in one short transaction. Many processes and ranks write at once: WAL lets readers go on, a busy
  writer waits at most :data:`WRITE_BUSY_MS`, and any failure is logged once and skipped (a reader
  repairs the row) — the user's program never sees it.
* **Readers** (:func:`open_index`) first bring the index up to date cheaply: one ``os.scandir`` of the
  root (names only) finds folders the index lacks (copied in, written while the index was locked or
  by an older runtel: their run.json is read and indexed) and rows whose folder is gone (dropped);
  rows still ``running``, or corrupt, have their run.json's (inode, size, mtime) compared and are
  re-read when it changed. A finished run's record is not rewritten, so its row is trusted. A missing
  index is built from the folders; a corrupt one (not a database, malformed) is deleted and rebuilt,
  with one warning. When the index cannot be used at all (a read-only folder, a locked or failing
  disk) readers get None and fall back to scanning every run.json, as before the index existed.

The status stored is the *recorded* one; readers compute the effective status (``interrupted`` for a
killed run, ``corrupt`` for a record with problems) from the stored process and problems, exactly as
:func:`runtel.rundir.reader.effective_status` does for a full record.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    "consumers",
    "descendants",
    "find_artifacts",
    "list_summaries",
    "note_record",
    "open_index",
    "rebuild",
    "resolve_run",
)

_logger = logging.getLogger("runtel.index")
_T = TypeVar("_T")

INDEX_FILE: Final = ".runtel-index.sqlite"
"""The index file in the runs root (with SQLite's ``-wal`` and ``-shm`` beside it while in use)."""

SCHEMA_VERSION: Final = 1
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
CREATE INDEX IF NOT EXISTS runs_order ON runs(start_key, id);
CREATE INDEX IF NOT EXISTS runs_id ON runs(id);
CREATE INDEX IF NOT EXISTS runs_parent ON runs(parent);
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
#: the columns a listing reads (everything but the file key)
_LIST: Final = "dir, id, name, status, start_time, start_ns, duration_s, parent, tags, results, problems, process, unreadable"


class IndexUnavailable(Exception):
    """The index cannot be used now (read-only folder, locked, failing disk): scan the folders instead."""


def enabled() -> bool:
    """False under ``RUNTEL_RUN_INDEX=false`` (read here, not from the settings: commands have none)."""
    return os.environ.get("RUNTEL_RUN_INDEX", "").strip().lower() not in ("0", "false", "no", "off")


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
    conn.execute("DELETE FROM artifacts WHERE dir = ?", (dir_name,))
    conn.execute("DELETE FROM sources WHERE dir = ?", (dir_name,))
    arts, srcs = _lineage_rows(dir_name, record)
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
    return isinstance(exc, sqlite3.DatabaseError) and (code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or code is None)


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
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    for table in ("runs", "artifacts", "sources"):
                        conn.execute(f"DROP TABLE IF EXISTS {table}")
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL: fsync at checkpoints only; the index is rebuildable
    except BaseException:
        conn.close()
        raise
    return conn


def _remove_index(root: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(root / (INDEX_FILE + suffix))
        except FileNotFoundError:
            pass


# --- the write side -------------------------------------------------------------------------------------


class _Writers:
    """One connection per runs root per process (a forked child opens its own: SQLite forbids sharing)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.conns: dict[str, sqlite3.Connection | None] = {}
        self.abandoned: list[Any] = []  # a forked parent's connections: never used nor closed in the child

    def get(self, root: Path) -> sqlite3.Connection | None:
        if self.pid != os.getpid():
            self.abandoned.append(self.conns)
            self.conns, self.pid, self.lock = {}, os.getpid(), threading.Lock()
        key = str(root)
        if key not in self.conns:
            self.conns[key] = None  # a root whose index cannot be opened is not retried for every write
            self.conns[key] = _connect(root, WRITE_BUSY_MS)
        return self.conns[key]


_writers = _Writers()


def note_record(run_dir: Path, data: Mapping[str, Any]) -> None:
    """Upsert the index row of a run whose run.json was just written with ``data``; never raises.

    A failure (locked past :data:`WRITE_BUSY_MS`, read-only, full disk, a corrupt index) is logged once;
    the next reader finds the row missing or out of date and repairs it from the folder.
    """
    root = run_dir.parent
    if not enabled():
        return
    with guard("run-index", f"update the run index in {root}"):
        try:
            file_key = _file_key(os.path.join(run_dir, RECORD_FILE))
            with _writers.lock:
                conn = _writers.get(root)
                if conn is None:
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
    """Close this process's index connections (at exit and in tests)."""
    with _writers.lock:
        if _writers.pid != os.getpid():
            return
        conns, _writers.conns = _writers.conns, {}
    for conn in conns.values():
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a cache at exit: nothing left to report to
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

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def refresh(self) -> int:
        """Bring the index in line with the folders; returns how many rows were added, re-read or dropped."""
        names = _scan_names(self.root)
        indexed = dict(self.conn.execute("SELECT dir, file_key FROM runs WHERE "
                                         "status IS NOT 'running' AND problems IS NULL AND unreadable = 0"))
        check = dict(self.conn.execute("SELECT dir, file_key FROM runs WHERE "
                                       "NOT (status IS NOT 'running' AND problems IS NULL AND unreadable = 0)"))
        gone = [n for n in (*indexed, *check) if n not in names]
        changed: list[tuple[str, RunRecord, str]] = []
        for name in names:
            if name in indexed:
                continue
            old = check.get(name)
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
    def _records(self, where: str = "", params: Sequence[Any] = (), order: str = "DESC",
                 limit: int | None = None) -> list[RunRecord]:
        sql = f"SELECT {_LIST} FROM runs {where} ORDER BY start_key {order}, id {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._record(row) for row in self.conn.execute(sql, params)]

    def _record(self, row: Sequence[Any]) -> RunRecord:
        """A summary record: the keys of run.json that listing and filters read, as read_record gives them."""
        name, run_id, run_name, status, start_time, start_ns, duration, parent, tags, results, problems, process, bad = row
        record: dict[str, Any] = {"id": run_id, "dir": str(self.root / name)}
        if bad:
            record["problems"] = json.loads(problems) if problems else []
            record["unreadable"] = True
            return record  # type: ignore[return-value]
        for key, value in (("name", run_name), ("status", status), ("start_time", start_time),
                           ("start_time_unix_nano", start_ns), ("duration_s", duration)):
            if value is not None:
                record[key] = value
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

    def runs(self) -> list[RunRecord]:
        """Summary records of every run, newest first, unreadable ones last (as ``reader.list_runs``)."""
        return self._records()

    def descendants(self, run_id: str) -> list[RunRecord]:
        """Summary records of the runs nested (transitively) under ``run_id``, newest first."""
        rows = self.conn.execute(
            f"WITH RECURSIVE d(id) AS (SELECT ? UNION SELECT runs.id FROM runs JOIN d ON runs.parent = d.id) "
            f"SELECT {_LIST} FROM runs WHERE parent IN (SELECT id FROM d) "
            f"ORDER BY start_key DESC, id DESC", (run_id,))
        return [self._record(row) for row in rows]

    def latest(self) -> str | None:
        """Folder name of the newest readable run whose parent is not a readable run of this root."""
        row = self.conn.execute(
            "SELECT dir FROM runs WHERE unreadable = 0 AND (parent IS NULL OR parent NOT IN "
            "(SELECT id FROM runs WHERE unreadable = 0)) ORDER BY start_key DESC, id DESC LIMIT 1").fetchone()
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


def open_index(root: str | os.PathLike[str], *, refresh: bool = True) -> RunIndex | None:
    """The index of ``root``, brought up to date; None when it cannot be used (then scan the folders).

    A corrupt index is deleted and rebuilt from the folders, with one warning.
    """
    base = Path(root)
    if not enabled() or not base.is_dir():
        return None
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
                log_once(f"index-corrupt:{base}", "runtel: the run index %s was corrupt (%s); rebuilt from the run "
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
    index = open_index(base)
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
        _logger.debug("run index of %s not used: %s", root, exc)
        return None
    finally:
        index.close()


def list_summaries(root: str | os.PathLike[str]) -> list[RunRecord]:
    """Every run under ``root``, newest first, as summary records: the keys ``ls`` and its filters read
    (id, dir, name, status, start_time, start_time_unix_nano, duration_s, parent, tags, results, problems,
    unreadable, and process while running). Without a usable index: :func:`runtel.rundir.reader.list_runs`.
    """
    base = Path(root)
    found = _query(base, RunIndex.runs)
    if found is not None:
        return found
    from runtel.rundir.reader import list_runs  # deferred: runtel.rundir.reader (~4 ms), the fallback only

    return list_runs(base)


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
