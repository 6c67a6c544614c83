"""A run's artifacts, metadata and sources: the methods of :class:`runtel.Run` that record lineage.

A run records the files it wrote (:meth:`LineageMixin.add_artifact`) with a content hash, and the
inputs it read (:meth:`LineageMixin.add_source`, :func:`use_artifact`). Because an input is looked up
by content hash among the artifacts of recorded runs, "trained on the output of run X" is captured
without anyone passing run ids around. Hashing and the artifact index beside the run folders are the
run-folder format's (:mod:`runtel.rundir.artifacts`); :mod:`runtel.query.tracker` reads the result
back as a graph. Nothing here raises into user code: a missing file is recorded with an ``"error"``
and logged once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from opentelemetry.trace import SpanContext, TraceFlags

from runtel import _context, _sdk, semconv
from runtel._guard import guard, log_once
from runtel.errors import RuntelError
from runtel.recording.safety import safe_str
from runtel.rundir.artifacts import PARTIAL_HASH_LIMIT, find_artifacts, hash_path, index_artifact, now_iso

if TYPE_CHECKING:
    from opentelemetry import trace

    from runtel.backends.base import TrackerFanout
    from runtel.config import Settings
    from runtel.recording.run import Run
    from runtel.redaction import Redactor
    from runtel.rundir.schema import ArtifactEntry, RunRecord

__all__ = (
    "ARTIFACT_EVENT",
    "METADATA_PREFIX",
    "SOURCE_EVENT",
    "LineageMixin",
    "use_artifact",
)


_logger = logging.getLogger("runtel.lineage")


# Names of what lineage adds to spans (semconv.py holds no lineage names yet).
ARTIFACT_EVENT: Final = semconv.ARTIFACT_EVENT


SOURCE_EVENT: Final = semconv.SOURCE_EVENT


METADATA_PREFIX: Final = semconv.METADATA_PREFIX


_ARTIFACT_ATTR: Final = semconv.ARTIFACT_PREFIX


_SOURCE_ATTR: Final = semconv.SOURCE_PREFIX


def _root_of(run: LineageMixin | None) -> Path:
    """The runs root: the current run's RUNTEL_DIR root, else the configured one."""
    if run is not None and run.dir is not None:
        return Path(run.dir).parent.resolve()

    return Path(_sdk.settings().dir).resolve()


class LineageMixin:
    """Methods of :class:`runtel.Run` that record artifacts, metadata and sources."""

    if TYPE_CHECKING:
        id: str
        name: str
        dir: Path | None
        trace_id: str
        span_id: str
        record: RunRecord
        _settings: Settings | None
        _redactor: Redactor | None
        _trackers: TrackerFanout | None

        @property
        def enabled(self) -> bool: ...

        @property
        def span(self) -> trace.Span: ...

        def _write_record(self) -> None: ...

        def convert(self, values: Any, *, prefix: str) -> tuple[dict[str, Any], Any]: ...

    # --- helpers ----------------------------------------------------------------------------------
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
        artifact: dict[str, Any] = {"name": safe_str(name)}
        with guard("add-artifact", "record an artifact"):
            abspath = os.path.abspath(os.fspath(path))
            artifact["path"] = abspath
            try:
                artifact.update(hash_path(abspath, partial_limit=partial_limit))
                artifact["algorithm"] = "sha256"
            except OSError as exc:
                artifact["error"] = f"{type(exc).__name__}: {exc.strerror or exc}"
                log_once(f"artifact-missing:{abspath}", "runtel could not hash artifact %r at %s (%s); recorded "
                         "without a hash", artifact["name"], abspath, exc.strerror or exc, level=logging.WARNING)
            artifact["time"] = now_iso()
            if metadata:
                artifact["metadata"] = self.convert(metadata, prefix="")[1]
            if not self.enabled:
                return artifact
            self.record.setdefault("artifacts", {})[artifact["name"]] = cast("ArtifactEntry", artifact)
            attrs: dict[str, Any] = {
                _ARTIFACT_ATTR + "name": artifact["name"],
                _ARTIFACT_ATTR + "path": self._safe_text(abspath),
            }
            for key in ("hash", "hash_kind", "size", "files", "error"):
                if artifact.get(key) is not None:
                    attrs[_ARTIFACT_ATTR + key] = artifact[key]
            self.span.add_event(ARTIFACT_EVENT, attributes=attrs)
            self._write_record()
            if self._trackers is not None:
                self._trackers.call("add_artifact", self.id, artifact["name"], abspath, artifact.get("metadata"),
                                    entry=dict(artifact))
            if self.dir is not None and artifact.get("hash"):
                with guard("artifact-index", "update the artifact index"):
                    index_artifact(_root_of(self), self.id, artifact)
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
            span_attributes, values = self.convert(metadata, prefix=METADATA_PREFIX)
            self.span.set_attributes(span_attributes)
            self.record.setdefault("metadata", {}).update(values)
            if self._trackers is not None and isinstance(values, dict):
                self._trackers.call("add_metadata", self.id, **values)
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
                self.record_source(entry)
        return entry

    def _source_entry(self, source: str | os.PathLike[str] | Run, artifact_name: str | None) -> dict[str, Any]:
        root = _root_of(self)
        entry: dict[str, Any] = {"time": now_iso()}
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

    def record_source(self, entry: dict[str, Any]) -> None:
        """Add a source entry (deduplicated) to run.json and the span: a link to a run, or an event."""
        sources = cast("list[dict[str, Any]]", self.record.setdefault("sources", []))
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
            ctx = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True,
                              trace_flags=TraceFlags(TraceFlags.SAMPLED))
            span.add_link(ctx, attributes=attrs)
        else:
            self.span.add_event(SOURCE_EVENT, attributes=attrs)
        if self._trackers is not None:
            source_id = str(entry.get("run_id") or entry.get("path") or "")
            self._trackers.call("add_source", self.id, source_id, entry.get("artifact_name"), entry=dict(entry))
        self._write_record()


def _run_ids(root: Path, run_id: str) -> dict[str, str]:
    """trace_id/span_id of a recorded run under ``root`` (empty if it is not there)."""
    from runtel.rundir.reader import read_record, resolve_run  # deferred: runtel.rundir.reader (~2 ms)

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
    entry: dict[str, Any] = {"time": now_iso(), "kind": "file", "path": abspath, "artifact_name": artifact_name}
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
    result: dict[str, Any] | None = None
    with guard("use-artifact", "look up an input artifact"):
        run = _context.current_run()
        root = _root_of(run)
        entry, result = _file_source(root, os.path.abspath(os.fspath(path)), name, run.id if run else None)
        if run is not None and run.enabled:
            run.record_source(entry)
    return result
