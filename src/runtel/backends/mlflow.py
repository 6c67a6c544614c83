"""The ``mlflow`` tracker backend: each runtel run becomes an MLflow run, with its trace linked to it.

Selected with ``RUNTEL_TRACKER=runfolder,mlflow`` and ``MLFLOW_TRACKING_URI=http://host:5000`` (or
``RUNTEL_TRACKER_MLFLOW_CONFIG``). It speaks the tracking server's REST API (``/api/2.0/mlflow/...``,
``/api/2.0/mlflow-artifacts/...``) and its OTLP endpoint (``/v1/traces``, MLflow >= 3.6) with urllib:
the mlflow package (hundreds of MB, ~1 s to import) is neither needed nor imported.

What goes where (docs/backends.md has the table): config → params (flattened ``a.b``), tags and
``mlflow.runName`` → tags, metadata → tags ``runtel.metadata.<key>``, ``set_result`` numbers →
metrics, ``run.log`` series → metrics with their step and time, artifacts → uploaded under
``<artifact name>/``, sources → tags ``runtel.source.<n>``, status → the run's status, and the run's
spans → one MLflow trace linked to the run (``x-mlflow-run-id``). The run is created at run start
(one request; the run.json ``trackers.mlflow`` names it); series points are sent 1000 at a time,
everything else at run end.
"""

from __future__ import annotations

import base64
import json
import math
import os
import queue
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from runtel._version import __version__
from runtel.backends.base import TrackerWriter
from runtel.errors import ConfigError, RunFolderError, RuntelError
from runtel.rundir.otlp_lines import batches, request_class, signal_lines
from runtel.rundir.reader import LineStats, read_record
from runtel.rundir.schema import SPANS_FILE

__all__ = ("MLflowError", "MLflowTracker", "flatten_params")

#: MLflow's limits (mlflow/utils/validation.py): per log-batch request, and per key and value
MAX_METRICS_PER_BATCH: Final = 1000
MAX_PARAMS_TAGS_PER_BATCH: Final = 100
MAX_KEY_LENGTH: Final = 250
MAX_PARAM_LENGTH: Final = 6000
MAX_TAG_LENGTH: Final = 8000
#: artifact files larger than this are not uploaded (a 40 GB checkpoint at run end would hold the exit);
#: they are named in the tag ``runtel.artifacts_not_uploaded`` and counted in run.json
UPLOAD_MAX_BYTES: Final = 1 << 30
#: full metric batches waiting for the sender thread; past that, points are dropped and counted (a server
#: slower than the training loop must not grow the job's memory without bound: 100 batches ~ 20 MB)
MAX_PENDING_BATCHES: Final = 100
#: OTLP request size the trace is cut into (MLflow parses each request in memory)
TRACE_BATCH_BYTES: Final = 4 << 20
USER_AGENT: Final = f"runtel/{__version__} (mlflow tracker)"

_STATUS: Final = {"ok": "FINISHED", "error": "FAILED", "interrupted": "KILLED"}
_KEY_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. /")


class MLflowError(Exception):
    """The tracking server refused a request or could not be reached (the message says which)."""


def _key(name: str) -> str:
    """An MLflow key: its allowed characters (others become ``_``), at most 250 characters."""
    return "".join(c if c in _KEY_CHARS else "_" for c in name)[:MAX_KEY_LENGTH] or "_"


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 14] + "…[truncated]"


def flatten_params(config: Any, prefix: str = "") -> dict[str, str]:
    """A config as MLflow params: nested mappings flattened to ``a.b.c``, other values as text.

    Example:
        >>> flatten_params({"optim": {"lr": 0.1, "betas": [0.9, 0.99]}, "epochs": 3})
        {'optim.lr': '0.1', 'optim.betas': '[0.9, 0.99]', 'epochs': '3'}
    """
    out: dict[str, str] = {}
    if isinstance(config, Mapping) and config:
        for k, v in config.items():
            out.update(flatten_params(v, f"{prefix}{k}."))
    elif prefix:
        out[_key(prefix[:-1])] = _param(config)
    elif config is not None:
        out["config"] = _param(config)
    return out


def _param(value: Any) -> str:
    """A param value as MLflow's client writes it (``str()`` of scalars), containers as JSON."""
    if value is None or isinstance(value, (bool, int, float)):
        return str(value)
    return _text(value, MAX_PARAM_LENGTH)


def _metric_value(number: float) -> float | str:
    """A metric value for MLflow's JSON API: NaN and infinities (a diverged loss) as proto3 JSON spells them."""
    if math.isfinite(number):
        return number
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")


class _State:
    """One runtel run's MLflow run and what waits to be sent."""

    def __init__(self, run_id: str, experiment_id: str, artifact_uri: str) -> None:
        self.run_id, self.experiment_id, self.artifact_uri = run_id, experiment_id, artifact_uri
        self.lock = threading.Lock()
        self.metrics: list[dict[str, Any]] = []
        self.tags: dict[str, str] = {}
        self.artifacts: dict[str, Mapping[str, Any]] = {}
        self.sources: list[Mapping[str, Any]] = []
        self.sent_metrics = 0
        self.dropped_metrics = 0
        self.send_errors: list[str] = []
        self.outbox: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(MAX_PENDING_BATCHES)
        self.sender: threading.Thread | None = None


class MLflowTracker(TrackerWriter):
    """Writes runtel runs into an MLflow tracking server (see the module docstring for the mapping).

    Args:
        root: The runs root (where a parent run's run.json names its MLflow run, for nesting).
        config: The tracking server URL (default ``MLFLOW_TRACKING_URI``).
        env: Where ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_ID``/``MLFLOW_EXPERIMENT_NAME``,
            ``MLFLOW_TRACKING_TOKEN`` (or ``_USERNAME``/``_PASSWORD``) and ``MLFLOW_HTTP_REQUEST_TIMEOUT``
            are read (default ``os.environ``): MLflow's own variables, as its client reads them.

    Raises:
        ConfigError: no http(s) tracking server is configured.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, config: str | None = None, *,
                 env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        uri = (config or env.get("MLFLOW_TRACKING_URI") or "").strip()
        if not uri.startswith(("http://", "https://")):
            raise ConfigError("the mlflow tracker needs a tracking server: set MLFLOW_TRACKING_URI (or "
                              f"RUNTEL_TRACKER_MLFLOW_CONFIG) to http(s)://host:port, got {uri or 'nothing'!r}")
        self.uri = uri.rstrip("/")
        parts = urllib.parse.urlsplit(self.uri)
        self._shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # no userinfo in messages
        self.root = Path(root) if root is not None else None
        self.experiment_id = env.get("MLFLOW_EXPERIMENT_ID") or None
        self.experiment_name = env.get("MLFLOW_EXPERIMENT_NAME") or None
        # Per blocking socket operation (an upload that progresses is not cut). Shorter than MLflow's 120 s:
        # the run start waits for the first request.
        self.timeout = float(env.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or 10)
        self._down: str | None = None  # set when the server could not be reached: later requests fail at once
        self._headers = {"User-Agent": USER_AGENT}
        token = env.get("MLFLOW_TRACKING_TOKEN")
        user, password = env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD")
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif user and password:
            self._headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._runs: dict[str, _State] = {}

    def __repr__(self) -> str:
        return f"MLflowTracker({self._shown!r})"

    # --- HTTP --------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None, *,
                 content_type: str = "application/json", headers: Mapping[str, str] | None = None) -> bytes:
        if self._down is not None:
            raise MLflowError(f"{method} {path}: not sent, the server was unreachable earlier ({self._down})")
        request = urllib.request.Request(self.uri + path, data=body, method=method,
                                         headers={**self._headers, "Content-Type": content_type, **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            raise MLflowError(f"{method} {path}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:  # refused, timed out, reset: one wait, not one per request
            reason = getattr(exc, "reason", exc)
            self._down = f"{reason}"
            raise MLflowError(f"{method} {path}: {reason} ({self._shown})") from None

    def _api(self, method: str, endpoint: str, payload: Mapping[str, Any] | None = None,
             query: Mapping[str, str] | None = None) -> dict[str, Any]:
        path = "/api/2.0/mlflow/" + endpoint + ("?" + urllib.parse.urlencode(query) if query else "")
        body = json.dumps(payload).encode() if payload is not None else None
        raw = self._request(method, path, body)
        got = json.loads(raw) if raw.strip() else {}
        return got if isinstance(got, dict) else {}

    def _experiment(self) -> str:
        if self.experiment_id:
            return self.experiment_id
        name = self.experiment_name
        if not name:
            return "0"  # MLflow's "Default" experiment, as its client uses without MLFLOW_EXPERIMENT_*
        try:
            found = self._api("GET", "experiments/get-by-name", query={"experiment_name": name})
            self.experiment_id = str(found["experiment"]["experiment_id"])
        except MLflowError as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc):
                raise
            self.experiment_id = str(self._api("POST", "experiments/create", {"name": name})["experiment_id"])
        return self.experiment_id

    # --- the write path --------------------------------------------------------------------------
    def start_run(self, run_id: str, record: Mapping[str, Any]) -> Mapping[str, Any]:
        """Create the MLflow run (name, tags, params from the config); return its ids for run.json."""
        name = str(record.get("name") or run_id)
        experiment_id = self._experiment()
        tags = {"mlflow.runName": name, "mlflow.source.type": "LOCAL", "runtel.run.id": run_id}
        for key in ("trace_id", "span_id"):
            if record.get(key):
                tags[f"runtel.{key}"] = str(record[key])
        parent = record.get("parent") or {}
        if isinstance(parent, Mapping) and parent.get("run_id"):
            tags["runtel.parent_run_id"] = str(parent["run_id"])
            parent_mlflow = self._mlflow_run_of(str(parent["run_id"]))
            if parent_mlflow:
                tags["mlflow.parentRunId"] = parent_mlflow  # MLflow shows the child nested under it
        argv = record.get("argv") or []
        if argv:
            tags["mlflow.source.name"] = str(argv[0])
        git = ((record.get("environment") or {}).get("git") or {})
        commit = (git.get("script") or {}).get("commit") or (git.get("cwd") or {}).get("commit")
        if commit:
            tags["mlflow.source.git.commit"] = str(commit)
        for key, value in (record.get("tags") or {}).items():
            tags[_key(str(key))] = _text(value, MAX_TAG_LENGTH)
        start_ms = int(int(record.get("start_time_unix_nano") or time.time_ns()) // 1_000_000)
        created = self._api("POST", "runs/create", {
            "experiment_id": experiment_id, "run_name": name, "start_time": start_ms,
            "tags": [{"key": k, "value": _text(v, MAX_TAG_LENGTH)} for k, v in tags.items()],
        })
        info = created["run"]["info"]
        state = _State(str(info["run_id"]), experiment_id, str(info.get("artifact_uri") or ""))
        self._runs[run_id] = state
        params = flatten_params(record.get("config"))
        items = list(params.items())
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self._api("POST", "runs/log-batch", {"run_id": state.run_id, "params": [
                {"key": k, "value": v} for k, v in items[i:i + MAX_PARAMS_TAGS_PER_BATCH]]})
        return {"run_id": state.run_id, "experiment_id": experiment_id,
                "url": f"{self._shown}/#/experiments/{experiment_id}/runs/{state.run_id}"}

    def _mlflow_run_of(self, runtel_run_id: str) -> str | None:
        """The MLflow run of a runtel run: this process's, else what its run.json names (a parent process)."""
        state = self._runs.get(runtel_run_id)
        if state is not None:
            return state.run_id
        if self.root is None:
            return None
        try:
            record = read_record(self.root / runtel_run_id)
        except (RuntelError, OSError):
            return None
        found = ((record.get("trackers") or {}).get("mlflow") or {}).get("run_id")
        return str(found) if found else None

    def _state(self, run_id: str) -> _State:
        state = self._runs.get(run_id)
        if state is None:
            raise MLflowError(f"no MLflow run for runtel run {run_id} (start_run did not succeed)")
        return state

    def add_metadata(self, run_id: str, **metadata: Any) -> None:
        """Tags ``runtel.metadata.<key>`` (tags, unlike params, may change when metadata is added again)."""
        state = self._state(run_id)
        with state.lock:
            for key, value in metadata.items():
                state.tags[_key(f"runtel.metadata.{key}")] = _text(value, MAX_TAG_LENGTH)

    def set_result(self, run_id: str, **values: Any) -> None:
        """Numbers become metrics (step 0); other values tags ``runtel.result.<name>``."""
        state = self._state(run_id)
        now_ms = time.time_ns() // 1_000_000
        with state.lock:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    state.metrics.append({"key": _key(key), "value": value, "timestamp": now_ms, "step": 0})
                else:
                    state.tags[_key(f"runtel.result.{key}")] = _text(value, MAX_TAG_LENGTH)
        self._flush_metrics(state, full_only=True)

    def log(self, run_id: str, step: int, values: Mapping[str, float], time_ns: int) -> None:
        """One metric point per series at ``step``; each 1000 (MLflow's batch limit) go to a sender thread.

        A log-batch request of 1000 points took ~100 ms on a loaded machine's local server: sent from
        the training loop it made ``run.log`` 10x slower, so the loop only hands batches over.
        """
        state = self._state(run_id)
        ms = time_ns // 1_000_000
        with state.lock:
            for key, value in values.items():
                state.metrics.append({"key": _key(key), "value": _metric_value(float(value)), "timestamp": ms,
                                      "step": step})
        self._flush_metrics(state, full_only=True)

    def add_artifact(self, run_id: str, name: str, path: str, metadata: Mapping[str, Any] | None = None,
                     *, entry: Mapping[str, Any] | None = None) -> None:
        """Uploaded at run end (the file's final content), under ``<name>/``."""
        state = self._state(run_id)
        with state.lock:
            state.artifacts[name] = dict(entry or {"name": name, "path": path, "metadata": metadata})

    def add_source(self, run_id: str, source_id: str, artifact_name: str | None = None,
                   *, entry: Mapping[str, Any] | None = None) -> None:
        """A tag ``runtel.source.<n>`` per source: ``<kind>:<run id or path>``, artifact and hash."""
        state = self._state(run_id)
        with state.lock:
            state.sources.append(dict(entry or {"run_id": source_id, "artifact_name": artifact_name}))

    def end_run(self, run_id: str, record: Mapping[str, Any], run_dir: Path | None) -> Mapping[str, Any]:
        """Send what waits, upload artifacts, send the trace linked to the run, set the final status."""
        state = self._state(run_id)
        problems: list[str] = []
        with state.lock:
            for i, src in enumerate(state.sources):
                what = src.get("run_id") or src.get("path") or "?"
                text = f"{src.get('kind') or 'run'}:{what}"
                if src.get("artifact_name"):
                    text += f" artifact={src['artifact_name']}"
                if src.get("hash"):
                    text += f" hash={src['hash']}"
                state.tags[f"runtel.source.{i}"] = _text(text, MAX_TAG_LENGTH)
            artifacts = list(state.artifacts.values())
        uploaded, not_uploaded = self._upload_artifacts(state, artifacts, problems)
        if not_uploaded:
            state.tags["runtel.artifacts_not_uploaded"] = _text(", ".join(not_uploaded), MAX_TAG_LENGTH)
        try:
            self._flush_metrics(state, full_only=False)
        except MLflowError as exc:  # sent here when no sender thread was needed
            problems.append(f"metrics: {exc}")
        if state.sender is not None:
            state.outbox.put(None)  # after every batch: the sender stops when they are sent
            state.sender.join()  # bounded by the request timeout per request (and by _down after a failure)
        if state.send_errors:
            problems.append(f"{state.send_errors[0]} ({len(state.send_errors)} metric batches not sent)")
        if state.dropped_metrics:
            problems.append(f"{state.dropped_metrics} metric points dropped: the server took them slower than "
                            f"the run logged them ({MAX_PENDING_BATCHES} batches were waiting)")
        try:
            self._flush_tags(state)
        except MLflowError as exc:
            problems.append(f"tags: {exc}")
        spans = 0
        if run_dir is not None:
            try:
                spans = self._send_trace(state, run_dir, problems)
                if spans and record.get("trace_id"):
                    # The header links only traces whose root span is in the request; a run inside
                    # another run's trace (a script under `runtel run`) is linked by name.
                    self._api("POST", "traces/link-to-run",
                              {"trace_ids": [f"tr-{record['trace_id']}"], "run_id": state.run_id})
            except (MLflowError, RunFolderError) as exc:
                problems.append(f"trace: {exc}")
        end_ms = int(int(record.get("end_time_unix_nano") or time.time_ns()) // 1_000_000)
        try:
            self._api("POST", "runs/update", {"run_id": state.run_id, "end_time": end_ms,
                                              "status": _STATUS.get(str(record.get("status")), "FINISHED")})
        except MLflowError as exc:
            problems.append(f"status: {exc}")
        self._runs.pop(run_id, None)
        out: dict[str, Any] = {"metrics": state.sent_metrics, "artifacts": uploaded, "spans": spans}
        if not_uploaded:
            out["artifacts_not_uploaded"] = not_uploaded
        if problems:  # every step was tried; the first problem is usually the cause of the others
            raise MLflowError("; ".join(problems) + f" (sent: {out})")
        return out

    # --- sending -----------------------------------------------------------------------------------
    def _flush_metrics(self, state: _State, *, full_only: bool) -> None:
        """Full batches to the sender thread while the run goes on; at the end (``full_only=False``) the
        rest too, sent here when no sender was needed."""
        while True:
            with state.lock:
                if not state.metrics or (full_only and len(state.metrics) < MAX_METRICS_PER_BATCH):
                    return
                batch = state.metrics[:MAX_METRICS_PER_BATCH]
                del state.metrics[:MAX_METRICS_PER_BATCH]
                if state.sender is None and full_only:
                    state.sender = threading.Thread(target=self._sender, args=(state,), daemon=True,
                                                    name="runtel-mlflow-sender")
                    state.sender.start()
                sender = state.sender
            if sender is None:
                self._send_batch(state, batch)
                continue
            try:
                state.outbox.put(batch, block=not full_only)  # the end waits; the training loop never does
            except queue.Full:
                with state.lock:
                    state.dropped_metrics += len(batch)

    def _sender(self, state: _State) -> None:
        while (batch := state.outbox.get()) is not None:
            try:
                self._send_batch(state, batch)
            except MLflowError as exc:  # kept for end_run's report; the other batches still try
                state.send_errors.append(f"metrics: {exc}")
            except Exception as exc:  # a bug must not kill the thread and block the end's join
                state.send_errors.append(f"metrics: {type(exc).__name__}: {exc}")

    def _send_batch(self, state: _State, batch: list[dict[str, Any]]) -> None:
        self._api("POST", "runs/log-batch", {"run_id": state.run_id, "metrics": batch})
        state.sent_metrics += len(batch)

    def _flush_tags(self, state: _State) -> None:
        with state.lock:
            items = list(state.tags.items())
            state.tags.clear()
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self._api("POST", "runs/log-batch", {"run_id": state.run_id, "tags": [
                {"key": k, "value": v} for k, v in items[i:i + MAX_PARAMS_TAGS_PER_BATCH]]})

    def _upload_artifacts(self, state: _State, artifacts: list[Mapping[str, Any]],
                          problems: list[str]) -> tuple[int, list[str]]:
        uploaded, skipped = 0, []
        for entry in artifacts:
            name, path = str(entry.get("name") or "artifact"), Path(str(entry.get("path") or ""))
            for file, rel in _files(path):
                try:
                    size = file.stat().st_size
                    if size > UPLOAD_MAX_BYTES:
                        skipped.append(f"{name}/{rel} ({size} bytes)")
                        continue
                    self._upload(state, f"{_key(name)}/{rel}", file)
                    uploaded += 1
                except (OSError, MLflowError) as exc:
                    problems.append(f"artifact {name}/{rel}: {exc}")
        return uploaded, skipped

    def _upload(self, state: _State, artifact_path: str, file: Path) -> None:
        """PUT through the server's artifact proxy, or copy into a local artifact root.

        ``mlflow server`` proxies artifacts by default (``mlflow-artifacts:/`` URIs); a server started
        with ``--no-serve-artifacts`` and a local ``--default-artifact-root`` gives plain paths, which
        this process can write when it shares the file system. Object stores (``s3://`` ...) need
        MLflow's own client: those artifacts are reported as not sent.
        """
        uri = state.artifact_uri
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme == "mlflow-artifacts":
            quoted = urllib.parse.quote(f"{parsed.path.strip('/')}/{artifact_path}")
            self._request("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{quoted}", file.read_bytes(),
                          content_type="application/octet-stream")
        elif parsed.scheme in ("", "file"):
            target = Path(urllib.parse.unquote(parsed.path)) / artifact_path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
        else:
            raise MLflowError(f"artifact store {parsed.scheme}:// is written by MLflow's client only")

    def _send_trace(self, state: _State, run_dir: Path, problems: list[str]) -> int:
        """The run's spans as OTLP/protobuf requests to ``/v1/traces``, linked to the MLflow run.

        Read through runtel.rundir.otlp_lines, as ``runtel export`` reads them: a line or span that does not
        convert is skipped and named in ``problems``, and every other span is still sent.
        """
        headers = {"x-mlflow-experiment-id": state.experiment_id, "x-mlflow-run-id": state.run_id}
        stats = LineStats(str(run_dir / SPANS_FILE))
        sent = 0
        try:
            for batch in batches(signal_lines(run_dir, "traces", stats, check=True), TRACE_BATCH_BYTES):
                message = request_class("traces")()
                for line in batch:
                    message.MergeFrom(line.proto)  # repeated fields append: the lines' resources in order
                self._request("POST", "/v1/traces", message.SerializeToString(),
                              content_type="application/x-protobuf", headers=headers)
                sent += sum(line.items for line in batch)
        finally:
            problems.extend(f"trace: {text}, not sent" for text in stats.problems())
        return sent


def _files(path: Path) -> Iterator[tuple[Path, str]]:
    """(file, path relative to the artifact) for a file, or every file under a directory."""
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            yield file, file.relative_to(path).as_posix()
    else:
        yield path, path.name
