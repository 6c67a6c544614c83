"""Artifacts, metadata and sources of a run, and the content-hash index that links runs to files.

A run records the files it wrote (:meth:`LineageMixin.add_artifact`) with a content hash, and the
inputs it read (:meth:`LineageMixin.add_source`, :func:`use_artifact`). Because an input is looked up
by content hash among the artifacts of recorded runs, "trained on the output of run X" is captured
without anyone passing run ids around. :mod:`runtel.tracker` reads the result back as a graph.

Hashing streams files in 1 MiB chunks (multi-GB files never sit in memory). Above
:data:`PARTIAL_HASH_LIMIT` bytes only the first, middle and last 4 MiB plus the size are hashed
(``hash_kind = "partial"``); a directory is hashed as a manifest of its files.

The artifact index ``<runs root>/.runtel-artifacts.jsonl`` is append-only (one JSON line per
artifact, written with one ``write`` on an ``O_APPEND`` descriptor, so concurrent runs never corrupt
it). Run folders the index does not know (copied in, written elsewhere) are scanned once on a miss and
marked as scanned.

Nothing here raises into user code: a missing file is recorded with an ``"error"`` and logged once.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from runtel import semconv
from runtel._guard import guard, log_once

if TYPE_CHECKING:
    from opentelemetry import trace

    from runtel.config import Settings
    from runtel.redaction import Redactor
    from runtel.runs import Run

__all__ = (
    "ARTIFACT_EVENT",
    "HASH_CHUNK_SIZE",
    "INDEX_FILE",
    "METADATA_PREFIX",
    "PARTIAL_BLOCK_SIZE",
    "PARTIAL_HASH_LIMIT",
    "SOURCE_EVENT",
    "LineageMixin",
    "find_artifacts",
    "hash_path",
    "rebuild_index",
    "use_artifact",
)

_logger = logging.getLogger("runtel.lineage")

HASH_CHUNK_SIZE: Final = 1 << 20
"""Files are read and hashed in chunks of this many bytes (1 MiB)."""

PARTIAL_HASH_LIMIT: Final = 1 << 30
"""Files larger than this (1 GiB) get a partial hash (first/middle/last block + size), ``hash_kind="partial"``."""

PARTIAL_BLOCK_SIZE: Final = 4 << 20
"""Size of each of the three blocks of a partial hash (4 MiB)."""

INDEX_FILE: Final = ".runtel-artifacts.jsonl"
"""Append-only artifact index in the runs root: one line per artifact (hash, run id, name, path)."""

# Names of what lineage adds to spans (semconv.py holds no lineage names yet).
ARTIFACT_EVENT: Final = semconv.ARTIFACT_EVENT
SOURCE_EVENT: Final = semconv.SOURCE_EVENT
METADATA_PREFIX: Final = semconv.METADATA_PREFIX
_ARTIFACT_ATTR: Final = semconv.ARTIFACT_PREFIX
_SOURCE_ATTR: Final = semconv.SOURCE_PREFIX

_INDEX_VERSION: Final = 1
_RUN_ID_IN_LINE: Final = re.compile(r'"run_id":\s*"([^"\\]+)"')


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _iso_from_ns(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# --- hashing ----------------------------------------------------------------------------------------


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
        >>> from runtel.lineage import hash_path
        >>> hash_path("model.pt")["hash"]  # doctest: +SKIP
        '9f2c…'

    Raises:
        OSError: the path cannot be read (callers that record artifacts catch it).
    """
    p = Path(path)
    st = p.stat()
    if p.is_dir():
        import hashlib

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
        out["mtime"] = _iso_from_ns(st.st_mtime_ns)
        return out
    if not p.is_file():  # a FIFO or device would block or never end
        raise OSError(f"{p} is not a regular file or directory")
    digest, kind = _hash_file(p, st.st_size, partial_limit)
    return {"hash": digest, "hash_kind": kind, "kind": "file", "size": st.st_size, "mtime": _iso_from_ns(st.st_mtime_ns)}


# --- the artifact index -----------------------------------------------------------------------------


def _append_index(root: Path, entry: Mapping[str, Any]) -> None:
    """Append one JSON line with a single write on an O_APPEND descriptor (safe with concurrent writers)."""
    line = (json.dumps({"v": _INDEX_VERSION, **entry}, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    fd = os.open(root / INDEX_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _read_index(root: Path, digest: str | None) -> tuple[list[dict[str, Any]], set[str], bool]:
    """(entries matching ``digest``, run ids the index knows, whether the index exists)."""
    matches: list[dict[str, Any]] = []
    known: set[str] = set()
    try:
        f = (root / INDEX_FILE).open("r", encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return matches, known, False
    with f:
        for line in f:
            m = _RUN_ID_IN_LINE.search(line)
            if m is not None:
                known.add(m.group(1))
            if digest is not None and digest in line:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("hash") == digest:
                    matches.append(entry)
    return matches, known, True


def _index_entry(run_id: str, artifact: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "hash": artifact.get("hash"),
        "hash_kind": artifact.get("hash_kind"),
        "run_id": run_id,
        "name": artifact.get("name"),
        "path": artifact.get("path"),
        "size": artifact.get("size"),
    }


def _record_artifacts(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    arts = record.get("artifacts")
    if isinstance(arts, Mapping):
        return [dict(a, name=a.get("name", n)) for n, a in arts.items() if isinstance(a, Mapping)]
    if isinstance(arts, list):
        return [dict(a) for a in arts if isinstance(a, Mapping)]
    return []


def _scan_unknown(root: Path, known: set[str], digest: str | None, write: bool) -> list[dict[str, Any]]:
    """Read run.json of run folders the index does not know; index finished ones; return hash matches."""
    from runtel.errors import RunFolderError
    from runtel.store import read_record

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
        items = [_index_entry(run_id, a) for a in _record_artifacts(record) if a.get("hash")]
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
        >>> from runtel.lineage import find_artifacts, hash_path
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
        >>> from runtel.lineage import rebuild_index
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


# --- the run side -----------------------------------------------------------------------------------


def _root_of(run: LineageMixin | None) -> Path:
    """The runs root: the current run's RUNTEL_DIR root, else the configured one."""
    if run is not None and run.dir is not None:
        return Path(run.dir).parent.resolve()
    from runtel import _sdk

    return Path(_sdk.settings().dir).resolve()


class LineageMixin:
    """Methods of :class:`runtel.Run` that record artifacts, metadata and sources."""

    if TYPE_CHECKING:
        id: str
        name: str
        dir: Path | None
        trace_id: str
        span_id: str
        record: dict[str, Any]
        _settings: Settings | None
        _redactor: Redactor | None

        @property
        def enabled(self) -> bool: ...

        @property
        def span(self) -> trace.Span: ...

        def _write_record(self) -> None: ...

        def _redact(self, mapping: Mapping[str, Any]) -> dict[str, Any]: ...

    # --- helpers ----------------------------------------------------------------------------------
    def _limits(self) -> tuple[int, int]:
        s = self._settings
        return (s.record_max_bytes, s.attribute_max_length) if s is not None else (1_048_576, 4096)

    def _safe_text(self, text: str) -> str:
        return self._redactor.redact_text(text) if self._redactor is not None else text

    # --- artifacts --------------------------------------------------------------------------------
    def add_artifact(
        self,
        name: str,
        path: str | os.PathLike[str],
        metadata: Mapping[str, Any] | None = None,
        *,
        partial_limit: int = PARTIAL_HASH_LIMIT,
    ) -> dict[str, Any]:
        """Record a file or directory this run produced, with its content hash, so later runs can find it.

        Returns the artifact record (``name``, absolute ``path``, ``hash``, ``hash_kind``, ``size``,
        ``mtime``, ``kind``, ``metadata``; ``error`` instead of a hash if the path cannot be read). Files
        above ``partial_limit`` bytes (default 1 GiB) get a partial hash; directories a manifest hash.
        It becomes a ``runtel.artifact`` event on the run span, an entry of run.json ``artifacts``
        and a line of the artifact index. Never raises.

        Example:
            >>> with runtel.run_span("train") as run:  # doctest: +SKIP
            ...     torch.save(model.state_dict(), "model.pt")
            ...     run.add_artifact("model", "model.pt", {"epochs": 3})
        """
        artifact: dict[str, Any] = {"name": str(name)}
        with guard("add-artifact", "record an artifact"):
            abspath = os.path.abspath(os.fspath(path))
            artifact["path"] = abspath
            try:
                artifact.update(hash_path(abspath, partial_limit=partial_limit))
                artifact["algorithm"] = "sha256"
            except OSError as exc:
                artifact["error"] = f"{type(exc).__name__}: {exc.strerror or exc}"
                log_once(f"artifact-missing:{abspath}", "runtel could not hash artifact %r at %s (%s); recorded "
                         "without a hash", str(name), abspath, exc.strerror or exc, level=logging.WARNING)
            artifact["time"] = _now_iso()
            if metadata:
                from runtel._safe import to_jsonable

                max_str, _ = self._limits()
                artifact["metadata"] = to_jsonable(self._redact(metadata), max_str=max_str)
            if not self.enabled:
                return artifact
            self.record.setdefault("artifacts", {})[artifact["name"]] = artifact
            attrs: dict[str, Any] = {
                _ARTIFACT_ATTR + "name": artifact["name"],
                _ARTIFACT_ATTR + "path": self._safe_text(abspath),
            }
            for key in ("hash", "hash_kind", "size", "files", "error"):
                if artifact.get(key) is not None:
                    attrs[_ARTIFACT_ATTR + key] = artifact[key]
            self.span.add_event(ARTIFACT_EVENT, attributes=attrs)
            self._write_record()
            if self.dir is not None and artifact.get("hash"):
                with guard("artifact-index", "update the artifact index"):
                    _append_index(_root_of(self), _index_entry(self.id, artifact))
        return artifact

    # --- metadata ---------------------------------------------------------------------------------
    def add_metadata(self, **metadata: Any) -> None:
        """Attach arbitrary metadata (converted and redacted like the config) to run.json and the span.

        Keys land in run.json ``metadata`` and as span attributes ``runtel.metadata.<key>``.

        Example:
            >>> with runtel.run_span("train") as run:  # doctest: +SKIP
            ...     run.add_metadata(dataset="cifar10", split={"train": 0.8, "val": 0.2})
        """
        if not self.enabled or not metadata:
            return
        with guard("add-metadata", "record metadata"):
            from runtel._safe import to_attributes, to_jsonable

            max_str, max_len = self._limits()
            redacted = self._redact(metadata)
            self.span.set_attributes(to_attributes(redacted, prefix=METADATA_PREFIX, max_length=max_len))
            self.record.setdefault("metadata", {}).update(to_jsonable(redacted, max_str=max_str))
            self._write_record()

    # --- sources ----------------------------------------------------------------------------------
    def add_source(self, source: str | os.PathLike[str] | Run, artifact_name: str | None = None) -> dict[str, Any]:
        """Link this run to what it was made from: an upstream run (id or Run) or an input file/directory.

        A run source becomes an OTel span link (its trace id and span id) on the run span; a path is
        hashed and, if a recorded run produced that content, linked to that run (``artifact_name``
        defaults to the producer's artifact name); otherwise it is recorded as a plain input with its
        hash. Everything lands in run.json ``sources``. Returns the source record; never raises.

        Example:
            >>> with runtel.run_span("finetune") as run:  # doctest: +SKIP
            ...     run.add_source("20261123T193012Z-train-3f2a9c", artifact_name="model")
            ...     run.add_source("data/train.csv")
        """
        entry: dict[str, Any] = {}
        with guard("add-source", "record a source"):
            entry = self._source_entry(source, artifact_name)
            if self.enabled:
                self._attach_source(entry)
        return entry

    def _source_entry(self, source: str | os.PathLike[str] | Run, artifact_name: str | None) -> dict[str, Any]:
        root = _root_of(self)
        entry: dict[str, Any] = {"time": _now_iso()}
        if isinstance(source, LineageMixin):
            entry.update(kind="run", run_id=source.id, artifact_name=artifact_name,
                         trace_id=source.trace_id, span_id=source.span_id)
            return entry
        text = os.fspath(source)
        if os.path.exists(text):
            return _file_source(root, os.path.abspath(text), artifact_name, self.id)[0]
        ids = _run_ids(root, text)
        if ids:
            entry.update(kind="run", artifact_name=artifact_name, **ids)
        elif os.sep in text or "." in os.path.basename(text):
            # Looks like a path that does not exist (yet): record the input, say what went wrong.
            entry.update(kind="file", path=os.path.abspath(text), artifact_name=artifact_name,
                         error="FileNotFoundError: no such file or directory")
            log_once(f"input-missing:{text}", "runtel: source %s does not exist; recorded without a hash", text)
        else:  # not a recorded run here: an experiment id, a URL, a ticket ...
            entry.update(kind="external", run_id=text, artifact_name=artifact_name)
        return entry

    def _attach_source(self, entry: dict[str, Any]) -> None:
        sources: list[dict[str, Any]] = self.record.setdefault("sources", [])
        key = (entry.get("kind"), entry.get("run_id"), entry.get("artifact_name"), entry.get("path"))
        if any((s.get("kind"), s.get("run_id"), s.get("artifact_name"), s.get("path")) == key for s in sources):
            return
        if entry.get("path"):
            entry["path"] = self._safe_text(str(entry["path"]))
        sources.append(entry)
        attrs: dict[str, Any] = {_SOURCE_ATTR + "kind": str(entry.get("kind"))}
        for key_name in ("run_id", "artifact_name", "path", "hash"):
            if entry.get(key_name):
                attrs[_SOURCE_ATTR + key_name] = str(entry[key_name])
        trace_id, span_id = entry.get("trace_id"), entry.get("span_id")
        span: Any = self.span
        if trace_id and span_id and callable(getattr(span, "add_link", None)):
            from opentelemetry.trace import SpanContext, TraceFlags

            ctx = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True,
                              trace_flags=TraceFlags(TraceFlags.SAMPLED))
            span.add_link(ctx, attributes=attrs)
        else:
            self.span.add_event(SOURCE_EVENT, attributes=attrs)
        self._write_record()


def _run_ids(root: Path, run_id: str) -> dict[str, str]:
    """trace_id/span_id of a recorded run under ``root`` (empty if it is not there)."""
    from runtel.errors import RuntelError
    from runtel.store import read_record, resolve_run

    try:
        record = read_record(resolve_run(run_id, root)) if run_id else {}
    except (RuntelError, OSError):
        return {}
    out = {"run_id": str(record.get("id") or run_id)}
    for key in ("trace_id", "span_id"):
        if isinstance(record.get(key), str):
            out[key] = record[key]
    return out


def _file_source(
    root: Path, abspath: str, artifact_name: str | None, own_run_id: str | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(source entry, producer index entry or None) for an input path: hash it, find the run that wrote it."""
    entry: dict[str, Any] = {"time": _now_iso(), "kind": "file", "path": abspath, "artifact_name": artifact_name}
    try:
        info = hash_path(abspath)
    except OSError as exc:
        log_once(f"input-missing:{abspath}", "runtel could not hash input %s (%s)", abspath, exc.strerror or exc)
        entry["error"] = f"{type(exc).__name__}: {exc.strerror or exc}"
        return entry, None
    entry.update(hash=info["hash"], hash_kind=info["hash_kind"], size=info["size"])
    producers = [p for p in find_artifacts(root, info["hash"]) if p.get("run_id") != own_run_id]
    if not producers:
        return entry, None
    producer = producers[-1]  # the latest run that wrote this content
    entry.update(kind="run", run_id=producer["run_id"], artifact_name=artifact_name or producer.get("name"),
                 produced_path=producer.get("path"))
    entry.update(_run_ids(root, str(producer["run_id"])))
    return entry, dict(producer)


def use_artifact(path: str | os.PathLike[str], *, name: str | None = None) -> dict[str, Any] | None:
    """Declare an input file: find the recorded run that produced it and add it as a source of the current run.

    The file is hashed and looked up among the artifacts of runs in the current run's runs root (or
    ``RUNTEL_DIR``). Found: the current run gets a source (and span link) to the producer, named
    ``name`` or the producer's artifact name. Not found: the file is recorded as a plain input with
    its hash. Returns the producer's artifact entry (``run_id``, ``name``, ``path``, ``hash``, ...) or
    None if no recorded run produced this content. Works without an open run (lookup only). Never raises.

    Example:
        >>> with runtel.run_span("evaluate"):  # doctest: +SKIP
        ...     producer = runtel.use_artifact("model.pt")
        ...     producer["run_id"] if producer else "unknown origin"
    """
    from runtel.runs import current_run

    result: dict[str, Any] | None = None
    with guard("use-artifact", "look up an input artifact"):
        run = current_run()
        root = _root_of(run)
        entry, result = _file_source(root, os.path.abspath(os.fspath(path)), name, run.id if run else None)
        if run is not None and run.enabled:
            run._attach_source(entry)
    return result
