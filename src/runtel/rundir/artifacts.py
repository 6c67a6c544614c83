"""Content hashes of files and directories, and the artifact index that links runs to the files they made.

Hashing streams files in 1 MiB chunks (multi-GB files never sit in memory). Above
:data:`PARTIAL_HASH_LIMIT` bytes only the first, middle and last 4 MiB plus the size are hashed
(``hash_kind = "partial"``); a directory is hashed as a manifest of its files.

The artifact index ``<runs root>/.runtel-artifacts.jsonl`` is append-only (one JSON line per
artifact, written with one ``write`` on an ``O_APPEND`` descriptor, so concurrent runs never corrupt
it). Run folders the index does not know (copied in, written elsewhere) are scanned once on a miss and
marked as scanned. The recording side (:mod:`runtel.recording.lineage`) appends; lookups serve
``use_artifact``, ``add_source`` and the read side.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from runtel._guard import guard
from runtel.errors import RunFolderError
from runtel.rundir.schema import iso_from_ns
from runtel.rundir.writer import file_mode, open_run_file

if TYPE_CHECKING:
    from runtel.rundir.schema import ArtifactEntry, RunRecord

__all__ = (
    "HASH_CHUNK_SIZE",
    "INDEX_FILE",
    "PARTIAL_BLOCK_SIZE",
    "PARTIAL_HASH_LIMIT",
    "find_artifacts",
    "hash_path",
    "index_artifact",
    "now_iso",
    "rebuild_index",
)


HASH_CHUNK_SIZE: Final = 1 << 20
"""Files are read and hashed in chunks of this many bytes (1 MiB)."""


PARTIAL_HASH_LIMIT: Final = 1 << 30
"""Files larger than this (1 GiB) get a partial hash (first/middle/last block + size), ``hash_kind="partial"``."""


PARTIAL_BLOCK_SIZE: Final = 4 << 20
"""Size of each of the three blocks of a partial hash (4 MiB)."""


INDEX_FILE: Final = ".runtel-artifacts.jsonl"
"""Append-only artifact index in the runs root: one line per artifact (hash, run id, name, path)."""


_INDEX_VERSION: Final = 1


_RUN_ID_IN_LINE: Final = re.compile(r'"run_id":\s*"([^"\\]+)"')


def now_iso() -> str:
    """Now as the ISO-8601 UTC text artifact and source entries carry (microseconds, ``Z``)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _hash_file(path: Path, size: int, partial_limit: int) -> tuple[str, str]:
    """(hex digest, hash kind) of one file: streamed sha256, or a partial hash above ``partial_limit``."""
    import hashlib  # here: importing it loads OpenSSL (~4 ms); only runs that hash artifacts need it

    h = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        if size > partial_limit:
            h.update(f"runtel-partial-v1:{size}:".encode())
            block = PARTIAL_BLOCK_SIZE
            for offset in (0, max(0, size // 2 - block // 2), max(0, size - block)):
                f.seek(offset)
                remaining = block
                while remaining > 0:
                    chunk = f.read(min(HASH_CHUNK_SIZE, remaining))
                    if not chunk:
                        break
                    h.update(chunk)
                    remaining -= len(chunk)
            return h.hexdigest(), "partial"
        buf = bytearray(HASH_CHUNK_SIZE)
        view = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest(), "sha256"


def _walk_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def hash_path(path: str | os.PathLike[str], *, partial_limit: int = PARTIAL_HASH_LIMIT) -> dict[str, Any]:
    """Content hash, size and kind of a file or directory.

    Files: streamed sha256 (``hash_kind="sha256"``), or above ``partial_limit`` bytes a hash of the
    first/middle/last 4 MiB and the size (``"partial"``: fast, but blind to edits elsewhere in the file).
    Directories: sha256 of a manifest of sorted relative paths and each file's hash (``"manifest"``),
    with ``files`` and total ``size``.

    Example:
        >>> from runtel.rundir.artifacts import hash_path
        >>> hash_path("model.pt")["hash"]  # doctest: +SKIP
        '9f2c…'

    Raises:
        OSError: the path cannot be read (callers that record artifacts catch it).
    """
    p = Path(path)
    st = p.stat()
    if p.is_dir():
        import hashlib  # deferred: hashlib loads OpenSSL, only for hashing (~3 ms)

        manifest = hashlib.sha256()
        manifest.update(b"runtel-manifest-v1\n")
        files = 0
        total = 0
        partial = False
        for file in _walk_files(p):
            try:
                fst = file.stat()
            except OSError:  # a dangling symlink: part of the tree, not of its content
                continue
            if not file.is_file():
                continue
            digest, kind = _hash_file(file, fst.st_size, partial_limit)
            partial |= kind == "partial"
            rel = file.relative_to(p).as_posix()
            manifest.update(f"{rel}\0{fst.st_size}\0{digest}\n".encode("utf-8", "surrogateescape"))
            files += 1
            total += fst.st_size
        out: dict[str, Any] = {"hash": manifest.hexdigest(), "hash_kind": "manifest", "kind": "directory",
                               "size": total, "files": files}
        if partial:
            out["partial_files"] = True
        out["mtime"] = iso_from_ns(st.st_mtime_ns)
        return out
    if not p.is_file():  # a FIFO or device would block or never end
        raise OSError(f"{p} is not a regular file or directory")
    digest, kind = _hash_file(p, st.st_size, partial_limit)
    return {"hash": digest, "hash_kind": kind, "kind": "file", "size": st.st_size, "mtime": iso_from_ns(st.st_mtime_ns)}


def _append_index(root: Path, entry: Mapping[str, Any]) -> None:
    """Append one JSON line with a single write on an O_APPEND descriptor (safe with concurrent writers)."""
    line = (json.dumps({"v": _INDEX_VERSION, **entry}, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    fd = open_run_file(root / INDEX_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, file_mode(), owned=True)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _read_index(root: Path, digest: str | None) -> tuple[list[dict[str, Any]], set[str], bool]:
    """(entries matching ``digest``, run ids the index knows, whether the index exists)."""
    from runtel.errors import RunFolderError  # here, as in _scan_unknown: the write side imports this module
    from runtel.rundir.reader import iter_lines  # deferred: runtel.rundir.reader (~7 ms)

    matches: list[dict[str, Any]] = []
    known: set[str] = set()
    path = root / INDEX_FILE
    if not os.path.lexists(path):
        return matches, known, False
    try:  # in bounded memory: the index is read by `runtel lineage` and must survive a hostile copy
        for raw in iter_lines(path):
            line = raw.decode("utf-8", "replace")
            m = _RUN_ID_IN_LINE.search(line)
            if m is not None:
                known.add(m.group(1))
            if digest is not None and digest in line:
                try:
                    entry = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(entry, dict) and entry.get("hash") == digest:
                    matches.append(entry)
    except RunFolderError:
        return matches, known, False
    return matches, known, True


def index_artifact(root: Path, run_id: str, artifact: Mapping[str, Any]) -> None:
    """Add a run's artifact to the runs root's artifact index (one appended line; raises ``OSError``)."""
    _append_index(root, _index_entry(run_id, artifact))


def _index_entry(run_id: str, artifact: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "hash": artifact.get("hash"),
        "hash_kind": artifact.get("hash_kind"),
        "run_id": run_id,
        "name": artifact.get("name"),
        "path": artifact.get("path"),
        "size": artifact.get("size"),
    }


def record_artifacts(record: RunRecord) -> list[ArtifactEntry]:
    """A record's artifacts as a list, each with its ``name`` (the key it is filed under when it lacks one)."""
    out: list[ArtifactEntry] = []
    for name, artifact in (record.get("artifacts") or {}).items():
        entry = artifact.copy()
        entry.setdefault("name", name)
        out.append(entry)
    return out


def _scan_unknown(root: Path, known: set[str], digest: str | None, write: bool) -> list[dict[str, Any]]:
    """Read run.json of run folders the index does not know; index finished ones; return hash matches."""
    from runtel.rundir.reader import read_record  # deferred: runtel.rundir.reader (~7 ms)

    matches: list[dict[str, Any]] = []
    try:
        entries = [e for e in os.scandir(root) if e.is_dir() and e.name not in known]
    except OSError:
        return matches
    for entry in sorted(entries, key=lambda e: e.name):
        if not os.path.isfile(os.path.join(entry.path, "run.json")):
            continue
        try:
            record = read_record(Path(entry.path))
        except RunFolderError:
            continue
        run_id = str(record.get("id") or entry.name)
        items = [_index_entry(run_id, a) for a in record_artifacts(record) if a.get("hash")]
        matches.extend(i for i in items if digest is not None and i["hash"] == digest)
        if write and record.get("status") != "running":
            # A finished run adds no more artifacts: index it once, then never read its run.json again.
            with guard("artifact-index", f"update the artifact index in {root}"):
                for item in items:
                    _append_index(root, item)
                _append_index(root, {"run_id": run_id, "scanned": True, "artifacts": len(items)})
    return matches


def find_artifacts(root: str | os.PathLike[str], digest: str) -> list[dict[str, Any]]:
    """Index entries (``hash``, ``run_id``, ``name``, ``path``, ``size``) of artifacts with this hash under ``root``.

    Uses the append-only index; run folders it does not know are scanned once (and then indexed).
    Entries whose run folder is gone are dropped. Oldest first.

    Example:
        >>> from runtel.rundir.artifacts import find_artifacts, hash_path
        >>> find_artifacts("runs", hash_path("model.pt")["hash"])  # doctest: +SKIP
        [{'hash': '9f2c…', 'run_id': '20261123T193012Z-train-3f2a9c', 'name': 'model', ...}]
    """
    base = Path(root)
    matches, known, exists = _read_index(base, digest)
    if not matches or not exists:
        matches.extend(_scan_unknown(base, known, digest, write=base.is_dir()))
    seen: set[tuple[Any, ...]] = set()
    out: list[dict[str, Any]] = []
    for m in matches:
        key = (m.get("run_id"), m.get("name"), m.get("path"))
        if key in seen or not (base / str(m.get("run_id")) / "run.json").is_file():
            continue
        seen.add(key)
        m.pop("v", None)
        out.append(m)
    out.sort(key=lambda m: str(m.get("run_id")))
    return out


def rebuild_index(root: str | os.PathLike[str]) -> int:
    """Rewrite the artifact index of ``root`` from the run folders; returns the number of artifacts.

    Example:
        >>> from runtel.rundir.artifacts import rebuild_index
        >>> rebuild_index("runs")  # doctest: +SKIP
        42
    """
    base = Path(root)
    try:
        (base / INDEX_FILE).unlink()
    except FileNotFoundError:
        pass
    _scan_unknown(base, set(), None, write=True)
    count = 0
    try:
        with (base / INDEX_FILE).open(encoding="utf-8") as f:
            count = sum(1 for line in f if '"hash"' in line)
    except FileNotFoundError:
        pass
    return count
