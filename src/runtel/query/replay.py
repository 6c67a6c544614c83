"""Re-send recorded runs to an OTLP endpoint, keeping their trace ids, span ids, timestamps and attributes.

A run recorded offline (the default) can be looked at later in Jaeger or Grafana: every line of
``spans.jsonl`` / ``metrics.jsonl`` is already an OTLP/JSON ``Export*ServiceRequest``. For ``http/json``
lines are merged and POSTed as they are; for ``http/protobuf`` and ``grpc`` each line is parsed into the
protobuf message (after turning the hex ids into the base64 that proto3 JSON uses for bytes), and a
request merges those. Requests are batched to stay under a few MiB. Sending a run twice is harmless:
backends de-duplicate spans by id, and the metric points carry their original timestamps.

One bad line never costs the others: a line that is not OTLP/JSON (see
:func:`runtel.rundir.reader.otlp_groups`) is skipped, and so is a span or metric that does not parse
into its protobuf message or has trace/span ids of the wrong length (the line's other items are sent);
each kind is counted once in :attr:`ExportResult.skipped`. For ``http/json`` the lines are checked that
way only when the endpoint refuses a batch with a 4xx: the batch is sent again without what failed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from runtel.errors import ConfigError, RunFolderError
from runtel.exporters.otlp import (
    USER_AGENT,
    PostError,
    classify,
    judge,
    post,
    redact_url,
    resolve_config,
    server_reason,
)
from runtel.rundir.journal import recover_spans
from runtel.rundir.otlp_lines import (
    KEYS,
    Line,
    batches,
    checked,
    ids_to_base64,
    request_class,
    signal_lines,
    to_protobuf,
)
from runtel.rundir.reader import LineStats, read_record_or_corrupt
from runtel.rundir.schema import METRICS_FILE, SPANS_FILE, segments

__all__ = ("SIGNALS", "ExportResult", "default_signals", "export_runs", "ids_to_base64", "to_protobuf")

SIGNALS: Final = ("traces", "metrics")
#: rejection reasons kept per run and signal (the counts are complete)
_MAX_REJECTIONS: Final = 5

#: requests are cut before they grow past this many bytes of JSON (collectors accept 4 MiB gRPC by default)
MAX_REQUEST_BYTES: Final = 3 * 1024 * 1024


@dataclass(frozen=True)
class ExportResult:
    """What happened to one run: sent or not, how much, and why not."""

    run_dir: str
    run_id: str
    ok: bool
    spans: int = 0
    metric_points: int = 0
    requests: int = 0
    bytes: int = 0
    error: str | None = None
    skipped: list[str] = field(default_factory=list)
    """Lines, spans and metrics of the run's files that could not be read or converted and were not sent (one
    entry per kind and file)."""
    not_accepted: list[str] = field(default_factory=list)
    """Signals the endpoint does not take at all ("metrics not accepted by ...: HTTP 404"): noted, not an error."""
    rejected_spans: int = 0
    rejected_points: int = 0
    rejections: list[str] = field(default_factory=list)
    """Why the endpoint refused batches (4xx with the server's reason, bounded); those batches were not sent."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``runtel export --json``)."""
        return asdict(self)


# --- senders --------------------------------------------------------------------------------------------------


class _Sender:
    """Sends one signal's requests over the chosen protocol."""

    def __init__(self, env: Mapping[str, str], signal: str, protocol: str | None, timeout: float | None,
                 headers: Mapping[str, str] | None) -> None:
        self.config = resolve_config(env, signal, protocol=protocol)
        self.signal = signal
        self.timeout = timeout if timeout is not None else self.config.timeout
        self.headers = {**self.config.headers, **{k.lower(): v for k, v in (headers or {}).items()}}
        self._stub: Any = None
        self._channel: Any = None
        #: set when the endpoint answered that it does not take this signal: no more requests for it
        self.not_accepted: str | None = None

    @property
    def checks(self) -> bool:
        """Whether lines are converted to protobuf (and so checked) before they are sent."""
        return self.config.protocol != "http/json"

    def send(self, lines: Sequence[Line]) -> None:
        """Send one request of these lines (checked ones for a protobuf protocol: see :attr:`checks`).

        Raises:
            PostError: the endpoint refused or failed the request (reason is short and secret-free).
        """
        protocol = self.config.protocol
        if protocol == "http/json":
            top = KEYS[self.signal][0]
            request = {top: [rs for line in lines for rs in line.message[top]]}
            body = json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode()
            post(self.config.endpoint, body, "application/json", self.headers, self.timeout, self.config.compression)
            return
        message = request_class(self.signal)()
        for line in lines:
            message.MergeFrom(line.proto)  # repeated fields append: the lines' resources one after the other
        if protocol == "http/protobuf":
            post(self.config.endpoint, message.SerializeToString(), "application/x-protobuf", self.headers,
                 self.timeout, self.config.compression)
        else:
            self._send_grpc(message)

    def _send_grpc(self, message: Any) -> None:
        import grpc  # type: ignore[import-untyped]

        if self._stub is None:
            parts = urlsplit(self.config.endpoint)
            target = parts.netloc or parts.path
            insecure = self.config.insecure if self.config.insecure is not None else parts.scheme != "https"
            options = [("grpc.primary_user_agent", self.headers.get("user-agent", USER_AGENT))]
            compression = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}.get(
                self.config.compression or "", grpc.Compression.NoCompression)
            if insecure:
                self._channel = grpc.insecure_channel(target, options=options, compression=compression)
            else:
                self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options,
                                                    compression=compression)
            if self.signal == "traces":
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (  # deferred: the OTLP protobuf classes, only for export (~33 ms)
                    TraceServiceStub,  # deferred: the OTLP protobuf classes, only for export (~37 ms)
                )

                self._stub = TraceServiceStub(self._channel)  # type: ignore[no-untyped-call]
            else:
                from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import (  # deferred: the OTLP protobuf classes, only for export (~34 ms)
                    MetricsServiceStub,  # deferred: the OTLP protobuf classes, only for export (~38 ms)
                )

                self._stub = MetricsServiceStub(self._channel)  # type: ignore[no-untyped-call]
        try:
            self._stub.Export(message, metadata=tuple(self.headers.items()), timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            name = getattr(code, "name", "RpcError")
            details = (exc.details() if hasattr(exc, "details") else "") or ""
            secrets = tuple(self.headers.values())
            raise PostError(classify(f"StatusCode.{name} {details}", secrets),
                            detail=server_reason(details.encode(), secrets=secrets), grpc_code=name) from None

    def close(self) -> None:
        """Close the gRPC channel, if any."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    @property
    def display(self) -> str:
        """Endpoint for messages (no credentials)."""
        return redact_url(self.config.endpoint)


def _run_id(run_dir: Path) -> str:
    return str(read_record_or_corrupt(run_dir).get("id") or run_dir.name)


def default_signals(env: Mapping[str, str]) -> tuple[str, ...]:
    """The signals ``runtel export`` sends by default: those whose ``OTEL_{TRACES,METRICS}_EXPORTER`` is unset or
    names ``otlp`` (so ``OTEL_TRACES_EXPORTER=none`` replays metrics only, as a live run would send them)."""
    chosen = []
    for signal in SIGNALS:
        raw = env.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower()
        if not raw or "otlp" in [part.strip() for part in raw.split(",")]:
            chosen.append(signal)
    return tuple(chosen)


@dataclass
class _RunTally:
    counts: dict[str, int] = field(default_factory=lambda: {"traces": 0, "metrics": 0})
    rejected: dict[str, int] = field(default_factory=lambda: {"traces": 0, "metrics": 0})
    requests: int = 0
    sent_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    not_accepted: list[str] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)


def _deliver(batch: list[Line], sender: _Sender, tally: _RunTally, stats: LineStats,
             progress: Callable[[int], None] | None) -> bool:
    """Send one batch and count the outcome; False when this signal is to stop (an error, or not accepted).

    A batch of unchecked (``http/json``) lines that the endpoint rejects is checked, and sent again without
    what does not convert, if that was anything.
    """
    signal = sender.signal
    items = sum(line.items for line in batch)
    size = sum(line.size for line in batch)
    try:
        sender.send(batch)
    except PostError as exc:
        failure = judge(exc.reason, exc.status, exc.detail, tuple(sender.headers.values()), exc.grpc_code)
        if failure.kind == "not-accepted":
            sender.not_accepted = f"{signal} not accepted by {sender.display}: {failure.text}"
            tally.not_accepted.append(sender.not_accepted)
            return False
        if failure.kind == "rejected":  # this batch only: the next one may well be fine
            if any(line.proto is None for line in batch):
                kept = [c for line in batch if (c := checked(line, signal, stats)) is not None]
                if sum(line.items for line in kept) < items:  # malformed items: the rest is sent again
                    return _deliver(kept, sender, tally, stats, progress) if kept else True
            tally.rejected[signal] += items
            if len(tally.rejections) < _MAX_REJECTIONS:
                kind = "spans" if signal == "traces" else "metric points"
                tally.rejections.append(f"{sender.display} rejected {items} {kind}: {failure.text}")
            return True
        tally.errors.append(f"{signal} to {sender.display}: {exc.reason}")
        return False
    tally.counts[signal] += items
    tally.requests += 1
    tally.sent_bytes += size
    if progress is not None:
        progress(size)
    return True


def _send_signal(run_dir: Path, sender: _Sender, tally: _RunTally, max_request_bytes: int,
                 progress: Callable[[int], None] | None) -> None:
    """Send one run's file of one signal; a failure of this signal never stops the other one."""
    if sender.not_accepted is not None:
        tally.not_accepted.append(sender.not_accepted)
        return
    stats = LineStats()
    try:
        for batch in batches(signal_lines(run_dir, sender.signal, stats, check=sender.checks), max_request_bytes):
            if not _deliver(batch, sender, tally, stats, progress):
                return
    finally:
        tally.skipped += stats.problems()


def export_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    signals: Sequence[str] | None = None,
    compression: str | None = None,
) -> list[ExportResult]:
    """Send each run folder's spans and metrics to an OTLP endpoint; one result per run, never raising for a run.

    Unset arguments come from the ``OTEL_EXPORTER_OTLP_*`` variables of ``env`` (``os.environ`` by default),
    like the SDK exporters: protocol ``http/protobuf``, endpoint ``http://localhost:4318`` (HTTP) or
    ``http://localhost:4317`` (gRPC), timeout in seconds, per-signal variables first. ``signals`` defaults to
    :func:`default_signals`. A signal the endpoint does not take (HTTP 404/405/501, gRPC UNIMPLEMENTED) is noted
    in ``not_accepted`` and not an error; a batch refused with another 4xx is counted in ``rejected_*`` with the
    server's reason, and the other batches are still sent; a run is ``ok`` when nothing else went wrong and no
    batch was rejected.

    Example::

        from runtel.query.replay import export_runs
        results = export_runs(["runs/20261123T193012Z-train-3f2a9c"], endpoint="http://localhost:4318")
        assert all(r.ok for r in results)

    Raises:
        ConfigError: the protocol, timeout or compression is not usable, or an unknown signal.
    """
    source = dict(os.environ if env is None else env)
    if endpoint:
        source["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        source.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
        source.pop("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", None)
    if compression:
        source["OTEL_EXPORTER_OTLP_COMPRESSION"] = compression
        source.pop("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", None)
        source.pop("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", None)
    chosen = tuple(signals) if signals is not None else default_signals(source)
    unknown = [s for s in chosen if s not in SIGNALS]
    if unknown:
        raise ConfigError(f"unknown signal(s) {', '.join(unknown)}; known: {', '.join(SIGNALS)}")
    senders = [_Sender(source, s, protocol, timeout, headers) for s in SIGNALS if s in chosen]
    results: list[ExportResult] = []
    try:
        for entry in run_dirs:
            run_dir = Path(entry)
            tally = _RunTally()
            recover_spans(run_dir)  # never raises; spans a killed process left in its journal (rundir/journal.py)
            for sender in senders:
                try:
                    _send_signal(run_dir, sender, tally, max_request_bytes, progress)
                except RunFolderError as exc:
                    tally.errors.append(str(exc))
                except Exception as exc:  # a malformed line must not stop the other signal or runs
                    tally.errors.append(f"{sender.signal}: {type(exc).__name__}: {exc}")
            rejected = tally.rejected["traces"] + tally.rejected["metrics"]
            error = "; ".join(tally.errors) or None
            if error is None and rejected:
                error = "; ".join(tally.rejections)
            results.append(ExportResult(
                run_dir=str(run_dir), run_id=_run_id(run_dir), ok=error is None, spans=tally.counts["traces"],
                metric_points=tally.counts["metrics"], requests=tally.requests, bytes=tally.sent_bytes, error=error,
                skipped=tally.skipped, not_accepted=tally.not_accepted, rejected_spans=tally.rejected["traces"],
                rejected_points=tally.rejected["metrics"], rejections=tally.rejections,
            ))
    finally:
        for sender in senders:
            sender.close()
    return results


def total_bytes(run_dirs: Iterable[str | os.PathLike[str]]) -> int:
    """Bytes of telemetry the runs hold (for a progress bar)."""
    total = 0
    for entry in run_dirs:
        for path in [*segments(Path(entry), SPANS_FILE), *segments(Path(entry), METRICS_FILE)]:
            try:
                total += path.stat().st_size
            except OSError:
                pass
    return total
