"""Re-send recorded runs to an OTLP endpoint, keeping their trace ids, span ids, timestamps and attributes.

A run recorded offline (the default) can be looked at later in Jaeger or Grafana: every line of
``spans.jsonl`` / ``metrics.jsonl`` is already an OTLP/JSON ``Export*ServiceRequest``. For ``http/json``
lines are merged and POSTed as they are; for ``http/protobuf`` and ``grpc`` they are parsed into the
protobuf messages (after turning the hex ids into the base64 that proto3 JSON uses for bytes).
Requests are batched to stay under a few MiB. Sending a run twice is harmless: backends de-duplicate
spans by id, and the metric points carry their original timestamps.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from runtel.errors import RunFolderError
from runtel.exporters.otlp import PostError, classify, post, redact_url, resolve_config
from runtel.rundir.journal import recover_spans
from runtel.rundir.reader import LineStats, iter_jsonl_sized, read_record_or_corrupt
from runtel.rundir.schema import METRICS_FILE, SPANS_FILE

__all__ = ("ExportResult", "export_runs", "ids_to_base64")

#: requests are cut before they grow past this many bytes of JSON (collectors accept 4 MiB gRPC by default)
MAX_REQUEST_BYTES: Final = 3 * 1024 * 1024
_ID_KEYS: Final = ("traceId", "spanId", "parentSpanId")
_ROOT_KEY: Final = {"traces": "resourceSpans", "metrics": "resourceMetrics"}


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
    """Lines of the run's files that could not be read and were not sent (one entry per kind)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``runtel export --json``)."""
        return asdict(self)


# --- OTLP/JSON → proto3 JSON --------------------------------------------------------------------------------


def _hex_to_b64(value: object) -> object:
    if not isinstance(value, str) or not value:
        return value
    try:
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    except ValueError:
        return value  # not hex: leave it for the protobuf parser to reject


def ids_to_base64(message: Any) -> Any:
    """A copy of an OTLP/JSON message with hex trace/span ids turned into base64 (proto3 JSON bytes).

    OTLP/JSON deviates from the proto3 JSON mapping only in the ids; after this, the message parses with
    ``google.protobuf.json_format.ParseDict`` into the ``Export*ServiceRequest`` protobuf.
    """
    if isinstance(message, dict):
        return {k: (_hex_to_b64(v) if k in _ID_KEYS else ids_to_base64(v)) for k, v in message.items()}
    if isinstance(message, list):
        return [ids_to_base64(v) for v in message]
    return message


def _request_class(signal: str) -> Any:
    if signal == "traces":
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # deferred: the OTLP protobuf classes, only for export (~12 ms)
            ExportTraceServiceRequest,  # deferred: the OTLP protobuf classes, only for export (~13 ms)
        )

        return ExportTraceServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (  # deferred: the OTLP protobuf classes, only for export (~12 ms)
        ExportMetricsServiceRequest,  # deferred: the OTLP protobuf classes, only for export (~13 ms)
    )

    return ExportMetricsServiceRequest


def to_protobuf(message: Mapping[str, Any], signal: str) -> Any:
    """The protobuf ``Export*ServiceRequest`` for an OTLP/JSON message (unknown fields ignored, as OTLP says)."""
    from google.protobuf.json_format import ParseDict  # type: ignore[import-untyped]

    return ParseDict(ids_to_base64(dict(message)), _request_class(signal)(), ignore_unknown_fields=True)


# --- reading and batching -------------------------------------------------------------------------------------


def _batches(lines: Iterable[tuple[dict[str, Any], int]], root: str, limit: int) -> Iterator[tuple[dict[str, Any], int]]:
    """Merge lines into requests of at most ``limit`` bytes (a larger single line goes alone)."""
    items: list[Any] = []
    size = 0
    for message, n in lines:
        if items and size + n > limit:
            yield {root: items}, size
            items, size = [], 0
        items.extend(message.get(root) or ())
        size += n
    if items:
        yield {root: items}, size


def _count(message: Mapping[str, Any], signal: str) -> int:
    if signal == "traces":
        return sum(len(ss.get("spans") or ()) for rs in message.get("resourceSpans", ())
                   for ss in rs.get("scopeSpans") or ())
    total = 0
    for rm in message.get("resourceMetrics", ()):
        for sm in rm.get("scopeMetrics") or ():
            for metric in sm.get("metrics") or ():
                for kind in ("sum", "gauge", "histogram", "exponentialHistogram", "summary"):
                    if kind in metric:
                        total += len(metric[kind].get("dataPoints") or ())
    return total


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

    def send(self, request: dict[str, Any]) -> None:
        """Send one request.

        Raises:
            PostError: the endpoint refused or failed the request (reason is short and secret-free).
        """
        protocol = self.config.protocol
        if protocol == "http/json":
            body = json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode()
            post(self.config.endpoint, body, "application/json", self.headers, self.timeout)
        elif protocol == "http/protobuf":
            body = to_protobuf(request, self.signal).SerializeToString()
            post(self.config.endpoint, body, "application/x-protobuf", self.headers, self.timeout)
        else:
            self._send_grpc(to_protobuf(request, self.signal))

    def _send_grpc(self, message: Any) -> None:
        import grpc  # type: ignore[import-untyped]

        if self._stub is None:
            parts = urlsplit(self.config.endpoint)
            target = parts.netloc or parts.path
            insecure = self.config.insecure if self.config.insecure is not None else parts.scheme != "https"
            if insecure:
                self._channel = grpc.insecure_channel(target)
            else:
                self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
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
            details = exc.details() if hasattr(exc, "details") else ""
            raise PostError(classify(f"StatusCode.{name} {details}", tuple(self.headers.values()))) from None

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
) -> list[ExportResult]:
    """Send each run folder's spans and metrics to an OTLP endpoint; one result per run, never raising for a run.

    Unset arguments come from the ``OTEL_EXPORTER_OTLP_*`` variables of ``env`` (``os.environ`` by default),
    like the SDK exporters: protocol ``http/protobuf``, endpoint ``http://localhost:4318`` (HTTP) or
    ``http://localhost:4317`` (gRPC), timeout in seconds.

    Example::

        from runtel.query.replay import export_runs
        results = export_runs(["runs/20261123T193012Z-train-3f2a9c"], endpoint="http://localhost:4318")
        assert all(r.ok for r in results)

    Raises:
        ConfigError: the protocol or timeout is not usable.
    """
    source = dict(os.environ if env is None else env)
    if endpoint:
        source["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        source.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
        source.pop("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", None)
    senders = {s: _Sender(source, s, protocol, timeout, headers) for s in ("traces", "metrics")}
    results: list[ExportResult] = []
    try:
        for entry in run_dirs:
            run_dir = Path(entry)
            counts = {"traces": 0, "metrics": 0}
            requests = sent_bytes = 0
            error: str | None = None
            skipped: list[str] = []
            try:
                recover_spans(run_dir)  # spans a killed process left in its journal (rundir/journal.py)
                for signal, filename in (("traces", SPANS_FILE), ("metrics", METRICS_FILE)):
                    sender = senders[signal]
                    stats = LineStats()
                    lines = iter_jsonl_sized(run_dir / filename, stats)
                    for request, size in _batches(lines, _ROOT_KEY[signal], max_request_bytes):
                        try:
                            sender.send(request)
                        except PostError as exc:
                            raise PostError(f"{signal} to {sender.display}: {exc.reason}") from None
                        counts[signal] += _count(request, signal)
                        requests += 1
                        sent_bytes += size
                        if progress is not None:
                            progress(size)
                    skipped += stats.problems()
            except (PostError, RunFolderError) as exc:
                error = str(exc)
            except Exception as exc:  # a malformed line must not stop the other runs
                error = f"{type(exc).__name__}: {exc}"
            results.append(ExportResult(
                run_dir=str(run_dir), run_id=_run_id(run_dir), ok=error is None, spans=counts["traces"],
                metric_points=counts["metrics"], requests=requests, bytes=sent_bytes, error=error, skipped=skipped,
            ))
    finally:
        for sender in senders.values():
            sender.close()
    return results


def total_bytes(run_dirs: Iterable[str | os.PathLike[str]]) -> int:
    """Bytes of telemetry the runs hold (for a progress bar)."""
    total = 0
    for entry in run_dirs:
        for name in (SPANS_FILE, METRICS_FILE):
            try:
                total += (Path(entry) / name).stat().st_size
            except OSError:
                pass
    return total
