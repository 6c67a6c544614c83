"""The write path of tracker backends, and their loading (``RUNTEL_TRACKER=runfolder,mlflow``).

Modelled on torchx's ``TORCHX_TRACKERS``: a comma list of backend names, each an entry point of the
``runtel.trackers`` group (or a ``module:attribute`` spec), each built as ``factory(root, config)`` with
``config`` from ``RUNTEL_TRACKER_<NAME>_CONFIG``. While a run is open, everything it adds
(metadata, artifacts, sources, results, series) is handed to every backend by :class:`TrackerFanout`,
which is the only caller of a backend: a backend that raises is logged once and counted in run.json
``trackers.<name>``, and the other backends and the user's run go on.

``folder`` (alias ``runfolder``) names the run folders: the run writes those itself, so it is not
built here; the read side (:mod:`runtel.query.tracker`) serves queries from it. This module sits
below the recording side so a run can drive its backends without importing the read side.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from runtel._guard import log_once
from runtel.errors import ConfigError

__all__ = (
    "DEFAULT_BACKEND",
    "ENTRY_POINT_GROUP",
    "FOLDER_NAMES",
    "TRACKER_ENV",
    "TrackerFanout",
    "TrackerWriter",
    "config_env_name",
    "entry_points",
    "load_factory",
    "parse_names",
    "writers_for",
)

_logger = logging.getLogger("runtel.tracker")

ENTRY_POINT_GROUP: Final = "runtel.trackers"
TRACKER_ENV: Final = "RUNTEL_TRACKER"
DEFAULT_BACKEND: Final = "folder"
#: names of the run-folder backend (torchx-style ``runfolder`` and runtel's historical ``folder``)
FOLDER_NAMES: Final = frozenset({"folder", "runfolder"})


def parse_names(raw: str | Sequence[str] | None) -> tuple[str, ...]:
    """Backend names from ``"runfolder,mlflow"`` (or a sequence); ``("folder",)`` when empty."""
    items = raw.split(",") if isinstance(raw, str) else list(raw or ())
    names = tuple(dict.fromkeys(n.strip() for n in items if n and n.strip()))
    return names or (DEFAULT_BACKEND,)


def config_env_name(name: str) -> str:
    """``RUNTEL_TRACKER_<NAME>_CONFIG``: the configuration string of backend ``name``."""
    return f"RUNTEL_TRACKER_{name.upper().replace('-', '_')}_CONFIG"


_scanned: dict[str, dict[str, Callable[[], Any]]] = {}


def entry_points(group: str = ENTRY_POINT_GROUP) -> dict[str, Callable[[], Any]]:
    """Entry-point name → loader for ``group`` (scanned once per process: a scan is ~17 ms, runs are many)."""
    found = _scanned.get(group)
    if found is None:
        from importlib.metadata import entry_points as _eps  # deferred: importlib.metadata (~17 ms)

        found = _scanned[group] = {ep.name: ep.load for ep in _eps(group=group)}
    return dict(found)


def load_factory(name: str, builtins: Mapping[str, Callable[..., Any]],
                 loaders: Callable[[], Mapping[str, Callable[[], Any]]] | None = None) -> Callable[..., Any]:
    """The factory registered as ``name`` (``builtins`` first, then entry points, then ``module:attribute``).

    Raises:
        ConfigError: nothing of that name can be loaded, or it is not callable.
    """
    if name in builtins:
        return builtins[name]
    found = loaders() if loaders is not None else entry_points()  # looked up now: tests replace entry_points
    loader = found.get(name)
    if loader is not None:
        factory: Any = loader()
    elif ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot load tracker backend {name!r}: {exc}") from exc
    else:
        known = ", ".join(sorted({*builtins, *found}))
        raise ConfigError(f"no tracker backend {name!r} (known: {known}; or give module:attribute)")
    if not callable(factory):
        raise ConfigError(f"tracker backend {name!r} is not callable")
    return factory  # type: ignore[no-any-return]


class TrackerWriter:
    """What a backend receives while a run records; every method is optional (the default does nothing).

    The names and arguments follow torchx's ``TrackerBase`` (``add_metadata``, ``add_artifact``,
    ``add_source``) plus runtel's results API. Values arrive already converted and redacted (the same
    JSON values run.json gets). A method may raise: :class:`TrackerFanout` logs it once and counts it.
    ``start_run`` and ``end_run`` may return a small JSON-able mapping (the backend's id for the run, a
    URL) that run.json keeps under ``trackers.<name>``.
    """

    def start_run(self, run_id: str, record: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The run opened; ``record`` is its run.json so far (name, tags, config, environment)."""
        return None

    def add_metadata(self, run_id: str, **metadata: Any) -> None:
        """``Run.add_metadata``."""

    def add_artifact(self, run_id: str, name: str, path: str, metadata: Mapping[str, Any] | None = None,
                     *, entry: Mapping[str, Any] | None = None) -> None:
        """``Run.add_artifact``; ``entry`` is the full artifact record (hash, size, ...)."""

    def add_source(self, run_id: str, source_id: str, artifact_name: str | None = None,
                   *, entry: Mapping[str, Any] | None = None) -> None:
        """``Run.add_source``/``use_artifact``: ``source_id`` is a run id, a path or an external id."""

    def set_result(self, run_id: str, **values: Any) -> None:
        """``Run.set_result``: final results."""

    def log(self, run_id: str, step: int, values: Mapping[str, float], time_ns: int) -> None:
        """``Run.log``: one point per named series at ``step``."""

    def end_run(self, run_id: str, record: Mapping[str, Any], run_dir: Path | None) -> Mapping[str, Any] | None:
        """The run ended: ``record`` is its final run.json; ``run_dir`` holds its spans (None without a folder)."""
        return None


class TrackerFanout:
    """Hands each call to every backend; a backend's failure is logged once, counted, and contained.

    A backend whose ``start_run`` failed gets nothing more for that run (its later calls are counted as
    ``dropped``): it has nowhere to write them. ``report()`` is what run.json keeps under ``trackers``.
    """

    def __init__(self, writers: Sequence[tuple[str, Any]], *, failed: Mapping[str, str] | None = None) -> None:
        self._writers = list(writers)
        self._lock = threading.Lock()
        self._info: dict[str, dict[str, Any]] = {name: {} for name, _ in self._writers}
        self._dead: set[str] = set()
        for name, message in (failed or {}).items():  # backends that could not even be built
            self._info[name] = {"errors": 1, "error": message}
            self._dead.add(name)

    def __bool__(self) -> bool:
        return bool(self._info)

    @property
    def names(self) -> list[str]:
        """Backend names, in the order of ``RUNTEL_TRACKER``."""
        return list(self._info)

    def call(self, method: str, *args: Any, **kwargs: Any) -> None:
        """``backend.<method>(*args, **kwargs)`` on every live backend; never raises."""
        for name, writer in self._writers:
            if name in self._dead:
                with self._lock:
                    self._info[name]["dropped"] = int(self._info[name].get("dropped", 0)) + 1
                continue
            fn = getattr(writer, method, None)
            if fn is None:
                continue
            try:
                got = fn(*args, **kwargs)
            except Exception as exc:  # any backend failure: contained here, whatever the strict setting
                self._failed(name, method, exc)
                continue
            if isinstance(got, Mapping) and method in ("start_run", "end_run"):
                with self._lock:
                    self._info[name].update({str(k): v for k, v in got.items()})

    def _failed(self, name: str, method: str, exc: Exception) -> None:
        with self._lock:
            info = self._info[name]
            info["errors"] = int(info.get("errors", 0)) + 1
            info.setdefault("error", f"{method}: {type(exc).__name__}: {exc}"[:2000])
            if method == "start_run":
                self._dead.add(name)
        log_once(f"tracker:{name}", "runtel: tracker backend %r failed in %s (%s: %s); the run and the other "
                 "backends go on (this and further failures of it are counted in run.json trackers.%s)", name,
                 method, type(exc).__name__, exc, name, level=logging.WARNING)

    def report(self) -> dict[str, dict[str, Any]]:
        """``{name: {what the backend returned, "errors": n, "error": first, "dropped": n}}``."""
        with self._lock:
            return {name: dict(info) for name, info in self._info.items()}


def writers_for(names: Sequence[str], root: Path, env: Mapping[str, str] | None = None,
                loaders: Callable[[], Mapping[str, Callable[[], Any]]] | None = None) -> TrackerFanout | None:
    """The backends of ``names`` a run writes to (the run folder aside), or None when there are none.

    A backend that cannot be loaded or built is not an error of the user's run: it is logged once and
    reported in run.json ``trackers.<name>`` with the reason.
    """
    wanted = [n for n in names if n not in FOLDER_NAMES]
    if not wanted:
        return None
    env = os.environ if env is None else env
    writers: list[tuple[str, Any]] = []
    failed: dict[str, str] = {}
    for name in wanted:
        try:
            factory = load_factory(name, {}, loaders)
            writers.append((name, factory(root, env.get(config_env_name(name)) or None)))
        except Exception as exc:  # an uninstalled or broken backend: reported, the run goes on
            failed[name] = f"load: {type(exc).__name__}: {exc}"[:2000]
            log_once(f"tracker-load:{name}", "runtel: tracker backend %r could not be set up (%s: %s); the run "
                     "goes on without it", name, type(exc).__name__, exc, level=logging.WARNING)
    return TrackerFanout(writers, failed=failed)
