"""Reading run folders: run records, effective status, run lookup by id/prefix/path/``latest``, spans.

Every reader of the CLI, the notebook loader and the queries goes through here. Readers accept a
torn last line (a killed process), a run.json met mid-rewrite (read again), and folders written by
newer versions (unknown keys are kept, never rejected).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtel.errors import RunFolderError, RunNotFound
from runtel.rundir.otlp_json import attributes_from_otlp
from runtel.rundir.schema import RECORD_FILE, SPANS_FILE

__all__ = (
    "SpanRecord",
    "effective_status",
    "iter_jsonl",
    "list_runs",
    "read_record",
    "read_spans",
    "resolve_run",
)


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Parsed lines of a JSON Lines file; a torn or corrupt line is skipped, a missing file is empty."""
    try:
        f = path.open("r", encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RunFolderError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value


_TORN_RETRIES = 5


def read_record(run_dir: Path) -> dict[str, Any]:
    """The run record of a folder.

    Raises:
        RunFolderError: ``run.json`` is missing, unreadable or not a JSON object.
    """
    path = run_dir / RECORD_FILE
    for attempt in range(_TORN_RETRIES + 1):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            break
        except FileNotFoundError as exc:
            raise RunFolderError(f"{run_dir} is not a run folder (no {RECORD_FILE})") from exc
        except ValueError as exc:
            if attempt < _TORN_RETRIES:  # met a RecordWriter write half-way (see there): read again
                time.sleep(0.002)
                continue
            raise RunFolderError(f"cannot read {path}: {exc}") from exc
        except OSError as exc:
            raise RunFolderError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} does not hold a run record")
    data.setdefault("dir", str(run_dir))
    return data


def effective_status(record: Mapping[str, Any]) -> str:
    """The recorded status, except that a "running" run whose process is gone is reported as "interrupted".

    A killed process cannot update its record; comparing the recorded pid, its start time and host
    with the live system tells a finished-by-kill run from a live one.
    """
    status = str(record.get("status", "unknown"))
    if status != "running":
        return status
    proc = record.get("process") or {}
    pid, host = proc.get("pid"), proc.get("host")
    import socket

    if not isinstance(pid, int) or (host and host != socket.gethostname()):
        return status
    try:
        import psutil

        p = psutil.Process(pid)
        created = proc.get("create_time")
        if isinstance(created, (int, float)) and abs(p.create_time() - created) > 1.0:
            return "interrupted"
        if p.status() == psutil.STATUS_ZOMBIE:
            return "interrupted"
        return "running"
    except Exception:
        return "interrupted"


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Records of every run under ``root``, newest first; unreadable folders are skipped."""
    runs = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RunFolderError(f"cannot list {root}: {exc.strerror or exc}") from exc
    for entry in entries:
        if entry.is_dir() and os.path.exists(os.path.join(entry.path, RECORD_FILE)):
            try:
                runs.append(read_record(Path(entry.path)))
            except RunFolderError:
                continue
    runs.sort(key=lambda r: (str(r.get("start_time_unix_nano", "")).zfill(20), str(r.get("id", ""))), reverse=True)
    return runs


def resolve_run(ref: str, root: Path) -> Path:
    """Find a run folder from an id, a unique id prefix, a path, or ``latest``.

    Raises:
        RunNotFound: nothing (or more than one run) matches.
    """
    candidate = Path(ref)
    if (candidate / RECORD_FILE).is_file():
        return candidate
    if ref == "latest":
        runs = list_runs(root)
        if not runs:
            raise RunNotFound(f"no runs in {root}")
        # Child runs (nested, or started by `runtel run`) are shown inside their parent: the latest
        # run is the newest one whose parent is not recorded in the same folder.
        ids = {r.get("id") for r in runs}
        top = [r for r in runs if (r.get("parent") or {}).get("run_id") not in ids]
        return Path((top or runs)[0]["dir"])
    if (root / ref / RECORD_FILE).is_file():
        return root / ref
    try:
        names = sorted(p.name for p in root.iterdir() if (p / RECORD_FILE).is_file())
    except OSError:
        names = []
    matches = [n for n in names if n.startswith(ref)] or [n for n in names if ref in n]
    if len(matches) == 1:
        return root / matches[0]
    if not matches:
        raise RunNotFound(f"no run matches {ref!r} in {root}")
    raise RunNotFound(f"{ref!r} is ambiguous in {root}: {', '.join(matches[:5])}{' …' if len(matches) > 5 else ''}")


@dataclass
class SpanRecord:
    """One span read back from spans.jsonl, with decoded attributes."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]

    @property
    def duration_s(self) -> float:
        """Wall-clock duration in seconds."""
        return max(0, self.end_ns - self.start_ns) / 1e9


def read_spans(run_dir: Path) -> list[SpanRecord]:
    """Every span of a run folder, in start order, de-duplicated by span id."""
    seen: dict[str, SpanRecord] = {}
    for request in iter_jsonl(run_dir / SPANS_FILE):
        for rs in request.get("resourceSpans", ()):
            for ss in rs.get("scopeSpans", ()):
                for s in ss.get("spans", ()):
                    try:
                        record = SpanRecord(
                            trace_id=s["traceId"],
                            span_id=s["spanId"],
                            parent_span_id=s.get("parentSpanId") or None,
                            name=s.get("name", ""),
                            start_ns=int(s.get("startTimeUnixNano", 0)),
                            end_ns=int(s.get("endTimeUnixNano", 0)),
                            attributes=attributes_from_otlp(s.get("attributes")),
                            status_code=int((s.get("status") or {}).get("code", 0)),
                            status_message=(s.get("status") or {}).get("message", ""),
                            events=[
                                {"name": e.get("name", ""), "time_ns": int(e.get("timeUnixNano", 0)),
                                 "attributes": attributes_from_otlp(e.get("attributes"))}
                                for e in s.get("events", ())
                            ],
                            links=[
                                {"trace_id": link.get("traceId"), "span_id": link.get("spanId"),
                                 "attributes": attributes_from_otlp(link.get("attributes"))}
                                for link in s.get("links", ())
                            ],
                        )
                    except (KeyError, TypeError, ValueError):
                        continue
                    seen[record.span_id] = record
    return sorted(seen.values(), key=lambda r: (r.start_ns, r.end_ns))
