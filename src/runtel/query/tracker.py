"""Query recorded runs: metadata, artifacts, sources and the lineage graph between runs.

Modelled on torchx's ``TrackerBase``, with the parts torchx left empty filled in: ``lineage()`` walks
sources upstream and consumers downstream transitively, and ``children()`` works without any
"descendants" bookkeeping (it is derived from the children's own sources).

:class:`Tracker` is a thin facade over a :class:`TrackerBackend` chosen by name (argument, else
``RUNTEL_TRACKER``, else ``folder``). ``RUNTEL_TRACKER`` is a comma list (``runfolder,mlflow``): a run
writes to every backend in it (:mod:`runtel.backends.base`), and queries go to the first one that
answers queries (a :class:`TrackerBackend`; write-only backends such as ``mlflow`` are skipped here).
Backends are classes or factories registered as entry points in the ``runtel.trackers`` group
(``folder``/``runfolder`` = ``runtel.query.tracker:FolderTracker`` and ``mlflow`` ship with runtel), or
a ``module:attribute`` spec. A backend is called as ``factory(root, config)`` where ``config`` is the
optional string in ``RUNTEL_TRACKER_<NAME>_CONFIG`` (a database URL, say).

Example:
    >>> from runtel import Tracker
    >>> t = Tracker("runs")  # doctest: +SKIP
    >>> [t.metadata(r) for r in t.run_ids(name="train", status="ok")]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runtel.backends import base as _backends
from runtel.backends.base import TrackerWriter
from runtel.errors import ConfigError, RunNotFound
from runtel.rundir.schema import ArtifactEntry, RunRecord, SourceEntry

__all__ = (
    "FolderTracker",
    "Lineage",
    "LineageEdge",
    "LineageNode",
    "Tracker",
    "TrackerArtifact",
    "TrackerBackend",
    "TrackerSource",
    "load_backend",
    "match_record",
)

_logger = logging.getLogger("runtel.tracker")

ENTRY_POINT_GROUP = _backends.ENTRY_POINT_GROUP
TRACKER_ENV = _backends.TRACKER_ENV
DEFAULT_BACKEND = _backends.DEFAULT_BACKEND


# --- data ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackerArtifact:
    """A file or directory a run produced (``hash`` is None when it could not be read)."""

    name: str
    path: str
    hash: str | None = None
    hash_kind: str | None = None
    size: int | None = None
    metadata: Mapping[str, Any] | None = None
    run_id: str | None = None
    record: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_record(cls, run_id: str | None, record: ArtifactEntry | Mapping[str, Any]) -> TrackerArtifact:
        """Build from a run.json ``artifacts`` entry (or an artifact index line)."""
        size = record.get("size")
        return cls(
            name=str(record.get("name", "")),
            path=str(record.get("path", "")),
            hash=record.get("hash") if isinstance(record.get("hash"), str) else None,
            hash_kind=record.get("hash_kind") if isinstance(record.get("hash_kind"), str) else None,
            size=size if isinstance(size, int) else None,
            metadata=record.get("metadata") if isinstance(record.get("metadata"), Mapping) else None,
            run_id=run_id,
            record=dict(record),
        )


@dataclass(frozen=True)
class TrackerSource:
    """Something a run was made from: a recorded run (``kind="run"``), a file, or an external id."""

    source_run_id: str | None
    artifact_name: str | None
    kind: str = "run"
    path: str | None = None
    hash: str | None = None

    @classmethod
    def from_record(cls, record: SourceEntry) -> TrackerSource:
        """Build from a run.json ``sources`` entry."""
        return cls(
            source_run_id=record.get("run_id") or None,
            artifact_name=record.get("artifact_name") or None,
            kind=str(record.get("kind") or "run"),
            path=record.get("path") or None,
            hash=record.get("hash") or None,
        )


@dataclass(frozen=True)
class LineageNode:
    """A run (``kind="run"``) or an input no recorded run produced (``kind="file"`` / ``"external"``)."""

    id: str
    kind: str = "run"
    name: str | None = None
    status: str | None = None
    commit: str | None = None
    start_time: str | None = None
    parent_run_id: str | None = None
    path: str | None = None
    hash: str | None = None


@dataclass(frozen=True)
class LineageEdge:
    """``parent`` (a run or input) fed ``child`` (a run), through the artifact ``artifact_name``."""

    parent: str
    child: str
    artifact_name: str | None = None
    path: str | None = None


@dataclass
class Lineage:
    """The lineage graph around one run: everything upstream (its inputs, transitively) and downstream.

    Example:
        >>> lin = Tracker("runs").lineage(run_id)  # doctest: +SKIP
        >>> [lin.nodes[p].name for p in lin.ancestors()]  # doctest: +SKIP
        ['train', 'prepare']
    """

    root: str
    nodes: dict[str, LineageNode] = field(default_factory=dict)
    edges: list[LineageEdge] = field(default_factory=list)

    def parents(self, node_id: str | None = None) -> list[LineageEdge]:
        """Edges into ``node_id`` (default: the root): what it was made from."""
        target = self.root if node_id is None else node_id
        return [e for e in self.edges if e.child == target]

    def children(self, node_id: str | None = None) -> list[LineageEdge]:
        """Edges out of ``node_id`` (default: the root): who used what it made."""
        target = self.root if node_id is None else node_id
        return [e for e in self.edges if e.parent == target]

    def ancestors(self, node_id: str | None = None) -> list[str]:
        """Every node upstream of ``node_id``, nearest first (breadth-first)."""
        return self._walk(self.root if node_id is None else node_id, up=True)

    def descendants(self, node_id: str | None = None) -> list[str]:
        """Every node downstream of ``node_id``, nearest first."""
        return self._walk(self.root if node_id is None else node_id, up=False)

    def _walk(self, start: str, *, up: bool) -> list[str]:
        seen, order, queue = {start}, [], [start]
        while queue:
            current = queue.pop(0)
            for e in self.edges:
                a, b = (e.child, e.parent) if up else (e.parent, e.child)
                if a == current and b not in seen:
                    seen.add(b)
                    order.append(b)
                    queue.append(b)
        return order

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``runtel lineage --json``)."""
        return {
            "root": self.root,
            "nodes": {k: asdict(v) for k, v in self.nodes.items()},
            "edges": [asdict(e) for e in self.edges],
        }


# --- backends -----------------------------------------------------------------------------------------


def _parse_time(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=timezone.utc)
    dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _commit(record: RunRecord) -> str | None:
    from runtel.rundir.reader import git_info  # deferred: runtel.rundir.reader (~4 ms)

    return git_info(record).get("commit") or None


def _tags_filter(tag: str | Mapping[str, Any] | Iterable[str]) -> dict[str, str]:
    if isinstance(tag, Mapping):
        return {str(k): str(v) for k, v in tag.items()}
    items = [tag] if isinstance(tag, str) else list(tag)
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        out[key] = value if sep else "true"
    return out


def match_record(record: RunRecord, **filters: Any) -> bool:
    """Whether a run record passes :meth:`TrackerBackend.run_ids` filters (for backends to reuse).

    Filters: ``name``, ``status`` (the effective status: a dead "running" run is "interrupted"),
    ``tag`` ("k=v", a list of them, or a dict; all must match), ``since``/``until`` (datetime or ISO
    string, on the start time), ``parent`` (the enclosing run's id).

    Raises:
        ConfigError: an unknown filter name.
    """
    from runtel.rundir.reader import effective_status, parent_run_id  # deferred: runtel.rundir.reader (~4 ms)

    unknown = set(filters) - {"name", "status", "tag", "tags", "since", "until", "parent"}
    if unknown:
        raise ConfigError(f"unknown run filter(s): {', '.join(sorted(unknown))}")
    if filters.get("name") is not None and record.get("name") != filters["name"]:
        return False
    if filters.get("status") is not None and effective_status(record) != filters["status"]:
        return False
    tag = filters.get("tag", filters.get("tags"))
    if tag:
        have = record.get("tags") or {}
        if any(have.get(k) != v for k, v in _tags_filter(tag).items()):
            return False
    if filters.get("parent") is not None and parent_run_id(record) != filters["parent"]:
        return False
    since, until = _parse_time(filters.get("since")), _parse_time(filters.get("until"))
    if since is not None or until is not None:
        try:
            started = datetime.fromtimestamp(int(record.get("start_time_unix_nano") or 0) / 1e9, timezone.utc)
        except (TypeError, ValueError):
            return False
        if (since is not None and started < since) or (until is not None and started > until):
            return False
    return True


class TrackerBackend(TrackerWriter, ABC):
    """Where run records are read from. Implement four methods; the rest derive from them.

    A database-backed tracker implements :meth:`run_ids`, :meth:`record`, :meth:`children` and
    :meth:`find_artifacts`, registers itself under the ``runtel.trackers`` entry-point group and is
    selected with ``Tracker(backend="name")`` or ``RUNTEL_TRACKER=name`` (see docs/lineage.md). To be
    filled while runs record, it also overrides the write methods of
    :class:`~runtel.backends.base.TrackerWriter` (by default they do nothing).
    """

    @abstractmethod
    def run_ids(self, **filters: Any) -> list[str]:
        """Ids of recorded runs, newest first, passing the filters of :func:`match_record`."""

    @abstractmethod
    def record(self, run_id: str) -> RunRecord:
        """The run record (run.json) of ``run_id`` (an id, unique prefix, or ``latest``).

        A run whose run.json cannot be read is a record with ``problems`` (status ``corrupt``), not an error.

        Raises:
            RunNotFound: no such run.
        """

    @abstractmethod
    def children(self, run_id: str) -> list[str]:
        """Ids of runs that list ``run_id`` as a source (they used what it made)."""

    @abstractmethod
    def find_artifacts(self, digest: str) -> list[TrackerArtifact]:
        """Artifacts whose content hash is ``digest``, oldest first."""

    # --- derived ----------------------------------------------------------------------------------
    def metadata(self, run_id: str) -> dict[str, Any]:
        """Metadata added with ``Run.add_metadata``."""
        return dict(self.record(run_id).get("metadata") or {})

    def artifacts(self, run_id: str) -> dict[str, TrackerArtifact]:
        """Artifacts by name, added with ``Run.add_artifact``."""
        from runtel.rundir.artifacts import record_artifacts  # deferred: runtel.rundir.artifacts (~2 ms)

        record = self.record(run_id)
        rid = str(record.get("id") or run_id)
        return {str(a.get("name")): TrackerArtifact.from_record(rid, a) for a in record_artifacts(record)}

    def sources(self, run_id: str, artifact_name: str | None = None) -> list[TrackerSource]:
        """What the run was made from (optionally only through ``artifact_name``)."""
        items = [TrackerSource.from_record(s) for s in self.record(run_id).get("sources") or []]
        return [s for s in items if artifact_name is None or s.artifact_name == artifact_name]

    def find_producer(self, path: str | os.PathLike[str]) -> TrackerArtifact | None:
        """The latest recorded artifact with the same content as the file or directory at ``path``."""
        from runtel.rundir.artifacts import hash_path  # deferred: runtel.rundir.artifacts (~2 ms)

        found = self.find_artifacts(hash_path(path)["hash"])
        return found[-1] if found else None

    def _node(self, run_id: str) -> LineageNode:
        from runtel.rundir.reader import effective_status, parent_run_id  # deferred: runtel.rundir.reader (~4 ms)

        try:
            record = self.record(run_id)
        except RunNotFound:
            return LineageNode(id=run_id, kind="external")
        return LineageNode(
            id=str(record.get("id") or run_id),
            name=record.get("name"),
            status=effective_status(record),
            commit=_commit(record),
            start_time=record.get("start_time"),
            parent_run_id=parent_run_id(record),
        )

    def lineage(self, run_id: str) -> Lineage:
        """Parents (sources) and children (consumers) of ``run_id``, transitively, as one graph."""
        root = str(self.record(run_id).get("id") or run_id)
        graph = Lineage(root=root)
        graph.nodes[root] = self._node(root)
        seen_edges: set[tuple[str, str, str | None, str | None]] = set()

        def add_edge(edge: LineageEdge) -> None:
            key = (edge.parent, edge.child, edge.artifact_name, edge.path)
            if key not in seen_edges:
                seen_edges.add(key)
                graph.edges.append(edge)

        queue = [root]
        done: set[str] = set()
        while queue:  # upstream
            current = queue.pop(0)
            if current in done or graph.nodes[current].kind != "run":
                continue
            done.add(current)
            for src in self.sources(current):
                if src.kind == "run" and src.source_run_id:
                    node = graph.nodes.get(src.source_run_id) or self._node(src.source_run_id)
                else:
                    ident = src.path or src.source_run_id or "?"
                    node = LineageNode(id=ident, kind=src.kind if src.kind != "run" else "external",
                                       name=os.path.basename(src.path) if src.path else src.source_run_id,
                                       path=src.path, hash=src.hash)
                graph.nodes.setdefault(node.id, node)
                add_edge(LineageEdge(node.id, current, src.artifact_name, src.path))
                queue.append(node.id)
        queue, done = [root], set()
        while queue:  # downstream
            current = queue.pop(0)
            if current in done:
                continue
            done.add(current)
            for child in self.children(current):
                graph.nodes.setdefault(child, self._node(child))
                for src in self.sources(child):
                    if src.source_run_id == current:
                        add_edge(LineageEdge(current, child, src.artifact_name, src.path))
                queue.append(child)
        return graph


class FolderTracker(TrackerBackend):
    """The run-folder backend: reads ``<root>/<run-id>/run.json`` and the artifact index of ``root``."""

    def __init__(self, root: str | os.PathLike[str] | None = None, config: str | None = None) -> None:
        if root is None:
            from runtel import _sdk  # deferred: the composition root (~60 ms), only for the default root

            root = _sdk.settings().dir
        self.root = Path(root)
        self.config = config

    def __repr__(self) -> str:
        return f"FolderTracker({str(self.root)!r})"

    def _all(self) -> list[RunRecord]:
        """Summary records (the run index's, or every run.json's when there is none)."""
        from runtel.rundir.index import list_summaries  # deferred: runtel.rundir.index (~5 ms)

        return list_summaries(self.root)

    def run_ids(self, **filters: Any) -> list[str]:
        """Ids of the runs under the root, newest first, passing the filters of :func:`match_record`."""
        return [str(r.get("id")) for r in self._all() if match_record(r, **filters)]

    def record(self, run_id: str) -> RunRecord:
        """run.json of a run (id, unique prefix, path or ``latest``); a stub with ``problems`` if unreadable."""
        from runtel.rundir.index import resolve_run  # deferred: runtel.rundir.index (~5 ms)
        from runtel.rundir.reader import read_record_or_corrupt  # deferred: runtel.rundir.reader (~4 ms)

        return read_record_or_corrupt(resolve_run(run_id, self.root))

    def children(self, run_id: str) -> list[str]:
        """Runs whose sources name ``run_id``, oldest first."""
        from runtel.rundir.index import consumers  # deferred: runtel.rundir.index (~5 ms)

        found = consumers(self.root)
        if found is not None:
            return list(dict.fromkeys(found.get(run_id, [])))
        from runtel.rundir.reader import list_runs  # deferred: runtel.rundir.reader (~4 ms), without an index

        out = []
        for r in reversed(list_runs(self.root)):
            if any(s.get("run_id") == run_id for s in r.get("sources") or []):
                out.append(str(r.get("id")))
        return out

    def find_artifacts(self, digest: str) -> list[TrackerArtifact]:
        """Artifacts with this content hash (artifact index, with a scan of unindexed run folders)."""
        from runtel.rundir import index  # deferred: runtel.rundir.index (~5 ms)
        from runtel.rundir.artifacts import find_artifacts  # deferred: runtel.rundir.artifacts (~2 ms)

        found = index.find_artifacts(self.root, digest) or find_artifacts(self.root, digest)
        return [TrackerArtifact.from_record(str(e.get("run_id")), e) for e in found]

    def lineage(self, run_id: str) -> Lineage:
        """As :meth:`TrackerBackend.lineage`: the run index's source links and the records on the way,
        else every run.json read once."""
        from runtel.rundir import index  # deferred: runtel.rundir.index (~5 ms)
        from runtel.rundir.reader import list_runs  # deferred: runtel.rundir.reader (~4 ms)

        found = index.consumers(self.root)
        if found is not None:
            return _Cached(self, {}, found).lineage(run_id)
        records = list_runs(self.root)
        by_id = {str(r.get("id")): r for r in records}
        consumers: dict[str, list[str]] = {}
        for r in reversed(records):
            for s in r.get("sources") or []:
                source_run = s.get("run_id")
                if source_run:
                    consumers.setdefault(source_run, []).append(str(r.get("id")))
        cached = _Cached(self, by_id, consumers)
        return cached.lineage(run_id)


class _Cached(TrackerBackend):
    """A backend view over records already in memory (one lineage query)."""

    def __init__(self, base: FolderTracker, by_id: dict[str, RunRecord], consumers: dict[str, list[str]]) -> None:
        self._base, self._by_id, self._consumers = base, by_id, consumers

    def run_ids(self, **filters: Any) -> list[str]:
        return self._base.run_ids(**filters)

    def record(self, run_id: str) -> RunRecord:
        found = self._by_id.get(run_id)
        if found is None:  # read once per query: a lineage walk asks for each record several times
            found = self._by_id[run_id] = self._base.record(run_id)
        return found

    def children(self, run_id: str) -> list[str]:
        return list(dict.fromkeys(self._consumers.get(run_id, [])))

    def find_artifacts(self, digest: str) -> list[TrackerArtifact]:
        return self._base.find_artifacts(digest)


# --- backend loading ----------------------------------------------------------------------------------


def _entry_points(group: str = ENTRY_POINT_GROUP) -> dict[str, Callable[[], Any]]:
    """Entry-point name → loader for ``group`` (tests replace this function)."""
    return _backends.entry_points(group)


def load_backend(name: str) -> Callable[..., TrackerBackend]:
    """The backend factory registered as ``name`` in ``runtel.trackers``, or a ``module:attribute`` spec.

    Example:
        >>> from runtel.query.tracker import load_backend
        >>> load_backend("folder")
        <class 'runtel.query.tracker.FolderTracker'>

    Raises:
        ConfigError: nothing of that name can be loaded.
    """
    builtins = dict.fromkeys(_backends.FOLDER_NAMES, FolderTracker)  # no entry-point scan needed
    return _backends.load_factory(name, builtins, lambda: _entry_points())


class Tracker:
    """Query recorded runs: ``run_ids``, ``metadata``, ``artifacts``, ``sources``, ``children``, ``lineage``.

    Args:
        dir: Runs root (default: ``RUNTEL_DIR`` or ``./runs``).
        backend: Backend name (entry point in ``runtel.trackers``) or ``module:attribute``, or a comma
            list of them (queries use the first that answers queries, else the run folders); default
            ``RUNTEL_TRACKER`` or ``folder``.
        config: Configuration string of the query backend (default ``RUNTEL_TRACKER_<NAME>_CONFIG``).

    Example:
        >>> import runtel
        >>> t = runtel.Tracker("runs")  # doctest: +SKIP
        >>> run = t.run_ids(name="evaluate", tag="dataset=cifar10", since="2026-01-01")[0]  # doctest: +SKIP
        >>> t.lineage(run).ancestors()  # doctest: +SKIP
    """

    def __init__(
        self, dir: str | os.PathLike[str] | None = None, *, backend: str | None = None, config: str | None = None
    ) -> None:
        names = _backends.parse_names(backend or os.environ.get(TRACKER_ENV))
        if dir is None:
            from runtel import _sdk  # deferred: the composition root (~60 ms), only for the default root

            dir = _sdk.settings().dir
        self.root = Path(dir)
        self.backend_names = names
        factories: list[tuple[str, Any]] = [(name, load_backend(name)) for name in names]  # a typo is an error
        for name, factory in factories:
            if isinstance(factory, type) and not issubclass(factory, TrackerBackend):
                continue  # a write-only backend (mlflow): runs write to it, queries cannot use it
            given = config if config is not None else os.environ.get(_backends.config_env_name(name)) or None
            self.backend_name = name
            self.backend: TrackerBackend = factory(self.root, given)
            break
        else:  # only write-only backends listed: the run folders are written anyway, so they answer
            self.backend_name = DEFAULT_BACKEND
            self.backend = FolderTracker(self.root, None)

    def __repr__(self) -> str:
        return f"Tracker({str(self.root)!r}, backend={self.backend_name!r})"

    def run_ids(self, **filters: Any) -> list[str]:
        """Run ids, newest first. Filters: ``name``, ``tag`` ("k=v" or dict), ``status``, ``since``, ``until``, ``parent``."""
        return self.backend.run_ids(**filters)

    def record(self, run_id: str) -> RunRecord:
        """The whole run record (status ``corrupt`` and ``problems`` if it could not be read or checked)."""
        return self.backend.record(run_id)

    def metadata(self, run_id: str) -> dict[str, Any]:
        """Metadata added with ``Run.add_metadata``."""
        return self.backend.metadata(run_id)

    def artifacts(self, run_id: str) -> dict[str, TrackerArtifact]:
        """Artifacts by name."""
        return self.backend.artifacts(run_id)

    def sources(self, run_id: str, artifact_name: str | None = None) -> list[TrackerSource]:
        """What the run was made from."""
        return self.backend.sources(run_id, artifact_name)

    def children(self, run_id: str) -> list[str]:
        """Runs that used what ``run_id`` made (nested and child-process runs: ``run_ids(parent=...)``)."""
        return self.backend.children(run_id)

    def lineage(self, run_id: str) -> Lineage:
        """Upstream and downstream graph around ``run_id``."""
        return self.backend.lineage(run_id)

    def find_producer(self, path: str | os.PathLike[str]) -> TrackerArtifact | None:
        """The recorded artifact with the same content as ``path`` (None if no run produced it)."""
        return self.backend.find_producer(path)
