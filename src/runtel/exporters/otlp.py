"""Opt-in OTLP export (gRPC, HTTP/protobuf or HTTP/JSON) that can never hold the user's program hostage.

Nothing here runs unless the user opted in (``RUNTEL_EXPORTERS=json,otlp`` or ``OTEL_TRACES_EXPORTER=otlp``):
``_sdk`` imports this module and calls :func:`build_span_processor` / :func:`build_metric_exporter` only then,
and the SDK exporter modules (gRPC costs ~130 ms to import) are imported inside those functions.

Configuration comes from the standard variables, read from ``settings.env`` and passed to the SDK
exporters explicitly: ``OTEL_EXPORTER_OTLP_{TRACES_,METRICS_,}{PROTOCOL,ENDPOINT,HEADERS,TIMEOUT,
COMPRESSION,CERTIFICATE,CLIENT_KEY,CLIENT_CERTIFICATE,INSECURE}``. The protocol defaults to
``http/protobuf`` as the specification says. Like the Python SDK, ``OTEL_EXPORTER_OTLP_TIMEOUT`` is
parsed in **seconds** (the specification says milliseconds; opentelemetry-python#4044), and runtel caps
it at ``RUNTEL_EXPORT_TIMEOUT`` so one export attempt never outlasts the exit bound.

Each signal is selected on its own (``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``, see
``Settings.otlp_traces`` / ``otlp_metrics``) and has its own :class:`Health` per endpoint.

Failure policy: the OTLP path is a separate processor/reader next to the run folder's, so a collector
that is down, slow or refusing never touches the local files. Failures are sorted (:func:`judge`):

- the endpoint does not take the signal (HTTP 404/405/501, gRPC UNIMPLEMENTED: a trace-only backend):
  one note, and that signal is not sent there again; the other signal is unaffected;
- a batch refused for its content or credentials (another 4xx, gRPC INVALID_ARGUMENT...): that batch is
  dropped and counted, the first one is warned about with the server's reason (response body, bounded,
  escaped, redacted), later batches are still sent, no back-off;
- the address is down (refused, timeout, 429, 5xx): ONE warning (without header values), then back-off
  for every signal at that address: batches are dropped for OTLP (the run folder keeps them; ``runtel
  export`` can replay them later) and one probe is sent per cool-down, so flushes and shutdown stay fast.

The SDK's own per-attempt log lines are filtered while runtel's exporter is running (a
:class:`logging.Filter` on the SDK loggers, active only on the exporting thread, so the user's own
exporters still log). Compression (``OTEL_EXPORTER_OTLP_[<SIGNAL>_]COMPRESSION``) and the User-Agent
(:data:`USER_AGENT`) apply to every path: the SDK's gRPC and HTTP/protobuf exporters and runtel's own
HTTP sender (HTTP/JSON, ``runtel export``). What was lost is counted per signal (:func:`losses`).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import weakref
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricExportResult
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.version import __version__ as _SDK_VERSION

from runtel._guard import guard, log_once
from runtel._version import __version__
from runtel.errors import ConfigError
from runtel.redaction import Redactor

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricsData
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

    from runtel.config import Settings

__all__ = (
    "PROTOCOLS",
    "USER_AGENT",
    "ExportConfig",
    "Failure",
    "build_metric_exporter",
    "build_span_processor",
    "health_for",
    "judge",
    "losses",
    "post",
    "redact_url",
    "report_losses",
    "resolve_config",
    "server_reason",
)

_logger = logging.getLogger("runtel.otlp")

PROTOCOLS: Final = ("grpc", "http/protobuf", "http/json")
DEFAULT_PROTOCOL: Final = "http/protobuf"
DEFAULT_HTTP_ENDPOINT: Final = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT: Final = "http://localhost:4317"
#: the Python SDK's default OTLP timeout, in seconds
DEFAULT_TIMEOUT_S: Final = 10.0
_SIGNAL_PATH: Final = {"traces": "v1/traces", "metrics": "v1/metrics"}
#: first and longest pause after a failed export before the next attempt (batches in between are dropped)
_COOLDOWN_MIN_S: Final = 5.0
_COOLDOWN_MAX_S: Final = 60.0
#: loggers whose per-attempt failure lines are dropped while runtel's OTLP exporter runs on the same thread
_NOISY_LOGGERS: Final = (
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.exporter.http.transport._requests",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
    "urllib3.connectionpool",
)


# --- configuration (pure functions of an environment mapping) --------------------------------------------------


@dataclass(frozen=True)
class ExportConfig:
    """Where and how one signal is sent, resolved from the OTEL_EXPORTER_OTLP_* variables."""

    signal: str
    protocol: str
    endpoint: str  # full URL: http(s)://host:port/v1/<signal> for HTTP, http(s)://host:port for gRPC
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    timeout: float = DEFAULT_TIMEOUT_S
    compression: str | None = None
    certificate: str | None = None
    client_key: str | None = None
    client_certificate: str | None = None
    insecure: bool | None = None

    @property
    def display_endpoint(self) -> str:
        """The endpoint without credentials, query or signal path: safe for log messages."""
        return redact_url(self.endpoint, keep_path=False)


def _get(env: Mapping[str, str], signal: str, name: str) -> str | None:
    """A per-signal variable, else the general one (empty values count as unset)."""
    for var in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = env.get(var, "").strip()
        if value:
            return value
    return None


def parse_headers(raw: str | None) -> dict[str, str]:
    """``k=v,k2=v2`` (values URL-decoded, keys lower-cased) as the W3C baggage-like OTLP format says."""
    headers: dict[str, str] = {}
    for part in (raw or "").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            headers[unquote(key.strip()).lower()] = unquote(value.strip())
    return headers


def _parse_bool(raw: str | None) -> bool | None:
    return None if raw is None else raw.strip().lower() == "true"


def resolve_config(env: Mapping[str, str], signal: str, *, cap_timeout: float | None = None,
                   protocol: str | None = None) -> ExportConfig:
    """Resolve one signal's export settings from ``env`` the way the OTel specification describes.

    Raises:
        ConfigError: the protocol, the timeout or the compression is not usable.
    """
    proto = (protocol or _get(env, signal, "PROTOCOL") or DEFAULT_PROTOCOL).lower()
    if proto not in PROTOCOLS:
        raise ConfigError(f"OTLP protocol {proto!r} is not supported; use one of {', '.join(PROTOCOLS)}")
    signal_endpoint = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if proto == "grpc":
        endpoint = signal_endpoint or base or DEFAULT_GRPC_ENDPOINT
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
    elif signal_endpoint:
        endpoint = signal_endpoint  # used verbatim, as the specification says
    else:
        endpoint = f"{(base or DEFAULT_HTTP_ENDPOINT).rstrip('/')}/{_SIGNAL_PATH[signal]}"
    raw_timeout = _get(env, signal, "TIMEOUT")
    try:
        timeout = float(raw_timeout) if raw_timeout else DEFAULT_TIMEOUT_S  # seconds, like the Python SDK
    except ValueError as exc:
        raise ConfigError(f"OTEL_EXPORTER_OTLP_TIMEOUT={raw_timeout!r} is not a number of seconds") from exc
    if timeout <= 0:
        timeout = DEFAULT_TIMEOUT_S
    if cap_timeout is not None:
        timeout = min(timeout, cap_timeout)
    compression = _get(env, signal, "COMPRESSION")
    if compression and compression.lower() not in ("gzip", "deflate", "none"):
        raise ConfigError(f"OTLP compression {compression!r} is not supported (gzip, deflate, none)")
    return ExportConfig(
        signal=signal,
        protocol=proto,
        endpoint=endpoint,
        headers=parse_headers(_get(env, signal, "HEADERS")),
        timeout=timeout,
        compression=compression.lower() if compression else None,
        certificate=_get(env, signal, "CERTIFICATE"),
        client_key=_get(env, signal, "CLIENT_KEY"),
        client_certificate=_get(env, signal, "CLIENT_CERTIFICATE"),
        insecure=_parse_bool(_get(env, signal, "INSECURE")),
    )


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` without user-info, query and fragment (and without the path unless ``keep_path``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path if keep_path else "", "", ""))
    except ValueError:
        return "<unparseable endpoint>"


# --- plain HTTP POST (HTTP/JSON export and replay) -------------------------------------------------------------

#: runtel's product identifier prepended to the OTel exporter's own, as the OTLP exporter specification suggests
USER_AGENT: Final = f"runtel/{__version__} OTel-OTLP-Exporter-Python/{_SDK_VERSION}"
#: characters of a server's error answer kept for the one warning (after escaping and redaction)
MAX_REASON_CHARS: Final = 200
#: HTTP statuses that mean "this endpoint does not take this signal" (a trace-only backend answering /v1/metrics)
NOT_ACCEPTED_STATUSES: Final = frozenset({404, 405, 501})
#: 4xx statuses that are retryable (the specification's list; everything else 4xx rejects the batch itself)
_RETRYABLE_4XX: Final = frozenset({408, 429})
_REDACTOR: list[Redactor] = []


class PostError(Exception):
    """A POST to an OTLP/HTTP endpoint failed; ``reason`` is short and never holds header values.

    ``status`` is the HTTP status (None without an answer); ``detail`` the server's own explanation from the
    response body, bounded, escaped and redacted (empty when it gave none).
    """

    def __init__(self, reason: str, status: int | None = None, detail: str = "", grpc_code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.detail = detail
        self.grpc_code = grpc_code


def server_reason(body: bytes, content_type: str = "", secrets: Sequence[str] = ()) -> str:
    """The server's explanation in an error answer: a ``google.rpc.Status`` message (protobuf or JSON) or text.

    Bounded to :data:`MAX_REASON_CHARS`, control characters escaped, header values and anything that looks like a
    credential redacted: the text goes to a log line.
    """
    body = body[:4096]
    text = ""
    if "protobuf" in content_type:
        try:
            from google.rpc import status_pb2  # type: ignore[import-untyped]  # deferred: google.rpc protobuf, only to read an error answer (~2 ms)

            text = status_pb2.Status.FromString(body).message
        except Exception:  # not a Status message after all: fall back to the bytes
            text = ""
    if not text:
        raw = body.decode("utf-8", "replace")
        try:
            parsed = json.loads(raw)
            text = str(parsed.get("message") or raw) if isinstance(parsed, dict) else raw
        except ValueError:
            text = raw
    text = " ".join(text.split())
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    if not _REDACTOR:
        _REDACTOR.append(Redactor())
    text = _REDACTOR[0].redact_text(text)
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def compress(body: bytes, compression: str | None) -> tuple[bytes, str | None]:
    """``body`` compressed as ``OTEL_EXPORTER_OTLP_COMPRESSION`` says, and its Content-Encoding (None: as is).

    Raises:
        ConfigError: an unknown compression.
    """
    if not compression or compression == "none":
        return body, None
    if compression == "gzip":
        return gzip.compress(body, compresslevel=6), "gzip"
    if compression == "deflate":
        return zlib.compress(body), "deflate"
    raise ConfigError(f"OTLP compression {compression!r} is not supported (gzip, deflate, none)")


def post(url: str, body: bytes, content_type: str, headers: Mapping[str, str], timeout: float,
         compression: str | None = None) -> int:
    """POST one OTLP/HTTP request (compressed as asked, with runtel's User-Agent); return the HTTP status (2xx).

    Raises:
        PostError: connection failure, timeout, or a non-2xx answer (with the server's reason).
        ConfigError: an unknown compression.
    """
    data, encoding = compress(body, compression)
    request = urllib.request.Request(url, data=data, method="POST")
    for key, value in headers.items():
        request.add_header(key, value)
    if not any(key.lower() == "user-agent" for key in headers):
        request.add_header("User-Agent", USER_AGENT)
    request.add_header("Content-Type", content_type)
    if encoding:
        request.add_header("Content-Encoding", encoding)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        try:
            answer = exc.read(4096)
        except OSError:
            answer = b""
        detail = server_reason(answer, exc.headers.get("Content-Type", "") if exc.headers else "",
                               tuple(headers.values()))
        raise PostError(f"HTTP {exc.code}" + (f": {detail}" if detail else ""), exc.code, detail) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        inner = getattr(exc, "reason", exc)
        raise PostError(classify(f"{type(inner).__name__}: {inner}")) from None


# --- failure bookkeeping and log filtering ---------------------------------------------------------------------

_local = threading.local()


def classify(text: str, secrets: Sequence[str] = ()) -> str:
    """A short reason for a failed export (``ConnectionRefused``, ``Timeout``, ``HTTP 503``, ...)."""
    low = text.lower()
    if "refused" in low:
        return "ConnectionRefused"
    match = re.search(r"code: (\d{3})", text) or re.search(r"HTTP (\d{3})", text)
    if match:
        return f"HTTP {match.group(1)}"
    # Retryable answers come before the timeout: the SDK retries them until its deadline and then
    # reports the timeout, which would hide that the collector did answer (rate limit, overload).
    for phrase, status in (("too many requests", 429), ("service unavailable", 503)):
        if phrase in low:
            return f"HTTP {status} {phrase.title()}, retryable: the collector answered but refused the load"
    if "deadline_exceeded" in low or "timed out" in low or "timeout" in low:
        return "Timeout"
    if "name or service not known" in low or "nodename nor servname" in low or "getaddrinfo" in low:
        return "UnknownHost"
    match = re.search(r"StatusCode\.([A-Z_]+)", text)
    if match:
        return match.group(1)
    if "unavailable" in low:
        return "Unavailable"
    short = " ".join(text.split())[:120]
    for secret in secrets:
        if secret:
            short = short.replace(secret, "[REDACTED]")
    return short or "unknown error"


class _SdkNoiseFilter(logging.Filter):
    """Drops SDK log records emitted while runtel's OTLP exporter runs on this thread; keeps the last message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_local, "depth", 0):
            try:
                message = record.getMessage()
            except Exception:  # a broken record must not break export
                message = str(record.msg)
            messages = getattr(_local, "messages", None)
            if messages is not None and len(messages) < 20:
                messages.append(message)
            return False
        return True


_FILTER: Final = _SdkNoiseFilter()


def _install_log_filter() -> None:
    """Attach the filter to the SDK loggers that log every failed attempt (idempotent)."""
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class _Quiet:
    """Marks the current thread as 'inside runtel's OTLP exporter' so the filter drops SDK noise."""

    def __enter__(self) -> None:
        _local.depth = getattr(_local, "depth", 0) + 1
        _local.messages = []

    def __exit__(self, *exc: object) -> None:
        _local.depth -= 1


@dataclass(frozen=True)
class Failure:
    """What a failed export means: ``not-accepted`` (the endpoint does not take this signal), ``rejected`` (this
    batch was refused for its content or credentials: drop it, keep sending) or ``down`` (back off)."""

    kind: str
    text: str


_GRPC_REJECTING: Final = frozenset({"INVALID_ARGUMENT", "PERMISSION_DENIED", "UNAUTHENTICATED", "FAILED_PRECONDITION",
                                    "OUT_OF_RANGE", "ALREADY_EXISTS", "NOT_FOUND"})


def judge(reason: str | None, status: int | None = None, detail: str = "", secrets: Sequence[str] = (),
          grpc_code: str | None = None) -> Failure:
    """Sort a failed export into :class:`Failure` kinds from its HTTP status or gRPC code (parsed from ``reason``
    when not given: the SDK exporters only log them)."""
    text = reason or "unknown error"
    for secret in secrets:
        if secret:
            detail = detail.replace(secret, "[REDACTED]")
    if status is None:
        match = re.search(r"code: (\d{3})", text) or re.search(r"HTTP (\d{3})", text)
        status = int(match.group(1)) if match else None
    if grpc_code is None:
        grpc_match = re.search(r"StatusCode\.([A-Z_]+)", text)
        grpc_code = grpc_match.group(1) if grpc_match else None
        details = re.search(r"error details: (.*)", text)
        if details and not detail:
            detail = server_reason(details.group(1).encode(), secrets=secrets)
    if status in NOT_ACCEPTED_STATUSES or grpc_code == "UNIMPLEMENTED":
        if status is not None:
            return Failure("not-accepted", f"HTTP {status}")
        return Failure("not-accepted", "UNIMPLEMENTED" + (f": {detail}" if detail else ""))
    if status is not None and 400 <= status < 500 and status not in _RETRYABLE_4XX:
        return Failure("rejected", f"HTTP {status}" + (f": {detail}" if detail else ""))
    if grpc_code in _GRPC_REJECTING:
        return Failure("rejected", grpc_code + (f": {detail}" if detail else ""))
    return Failure("down", text)


class _Endpoint:
    """Back-off state of one collector address (scheme, host, port), shared by its signals: a collector found
    dead while flushing spans is not waited for again by the metrics flush right after it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.down_until = 0.0
        self.cooldown = _COOLDOWN_MIN_S

    def allow(self, deadline: float | None) -> bool:
        now = self._clock()
        if deadline is not None and now >= deadline:
            return False
        with self._lock:
            return now >= self.down_until

    def up(self) -> None:
        with self._lock:
            self.down_until = 0.0
            self.cooldown = _COOLDOWN_MIN_S

    def down(self) -> None:
        with self._lock:
            self.down_until = self._clock() + self.cooldown
            self.cooldown = min(self.cooldown * 2, _COOLDOWN_MAX_S)


class Health:
    """Success/failure state of one signal at one endpoint: one warning per kind of failure, counts of what was lost.

    A 4xx for one batch drops that batch (with the server's reason, once) and nothing else; an endpoint that does
    not take the signal at all (404/405/501, gRPC UNIMPLEMENTED) is noted once and not sent that signal again;
    only transport failures (refused, timeout, 5xx, 429) put the whole address into back-off.
    """

    def __init__(self, config: ExportConfig, clock: Callable[[], float] = time.monotonic,
                 endpoint: _Endpoint | None = None) -> None:
        self.config = config
        self.secrets: set[str] = {v for v in config.headers.values() if v}
        self._lock = threading.Lock()
        self.address = endpoint or _Endpoint(clock)
        self.accepted = True
        self.failures = 0
        #: batches dropped without an attempt (back-off or deadline)
        self.dropped_batches = 0
        #: batches (and their spans or points) the server refused with a 4xx
        self.rejected_batches = 0
        self.rejected_items = 0
        #: batches not sent because the endpoint does not take this signal
        self.unaccepted_batches = 0

    @property
    def down_until(self) -> float:
        """When the address leaves back-off (monotonic clock)."""
        return self.address.down_until

    def allow(self, deadline: float | None = None) -> bool:
        """Whether to attempt a send now (signal accepted, not in back-off, not past the caller's deadline)."""
        return self.accepted and self.address.allow(deadline)

    def succeeded(self) -> None:
        """The endpoint answered: leave back-off."""
        self.address.up()

    def failed(self, reason: str | None, status: int | None = None, detail: str = "", items: int = 0) -> Failure:
        """An export failed: sort it (see :func:`judge`), warn once for its kind, back off only if the address is down."""
        failure = judge(reason, status, detail, tuple(self.secrets))
        with self._lock:
            self.failures += 1
            if failure.kind == "rejected":
                self.rejected_batches += 1
                self.rejected_items += items
            elif failure.kind == "not-accepted":
                self.accepted = False
        signal, url = self.config.signal, redact_url(self.config.endpoint)  # with the path: which URL refused
        where = self.config.display_endpoint
        if failure.kind == "not-accepted":
            log_once(f"otlp-not-accepted:{signal}:{self.config.endpoint}",
                     "runtel: %s not accepted by %s (%s); runtel sends no more %s there (the run folder keeps them; "
                     "the other signal is unaffected)", signal, url, failure.text, signal)
            return failure
        if failure.kind == "rejected":
            log_once(f"otlp-rejected:{signal}:{self.config.endpoint}",
                     "runtel: %s rejected a batch of %d %s (%s); that batch is dropped for OTLP (the run folder keeps "
                     "it), later batches are still sent; further rejections are counted, not logged",
                     url, items, "spans" if signal == "traces" else "metric points", failure.text)
            return failure
        self.address.down()
        text = classify(reason or "unknown error", tuple(self.secrets))
        if text == "Timeout" and "max retries" in (reason or ""):
            # The HTTP exporter's last log line hides the cause (refused? rate-limited?): one short probe,
            # only for the single warning, finds it: a 0.25 s connect, then for HTTP an empty POST.
            text = _probe(self.config.endpoint) or _http_probe(self.config) or text
        log_once(
            f"otlp-export-failed:{where}",
            "runtel: OTLP export to %s failed (%s); telemetry continues locally in the run folder "
            "(replay it later with `runtel export`); further failures are not logged",
            where,
            text,
        )
        return failure

    def skipped(self) -> None:
        """A batch was dropped for OTLP without an attempt (back-off, deadline, or signal not accepted)."""
        with self._lock:
            if self.accepted:
                self.dropped_batches += 1
            else:
                self.unaccepted_batches += 1


def _probe(endpoint: str) -> str | None:
    """Why a TCP connection to ``endpoint`` fails (only called once, to explain the single warning)."""
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or "localhost"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((host, port), timeout=0.25):
            return None
    except ConnectionRefusedError:
        return "ConnectionRefused"
    except socket.gaierror:
        return "UnknownHost"
    except TimeoutError:
        return "Timeout"
    except (OSError, ValueError) as exc:
        return type(exc).__name__


def _http_probe(config: ExportConfig) -> str | None:
    """The answer of an HTTP endpoint that accepts connections: a status that explains the failure, or None."""
    if not config.protocol.startswith("http"):
        return None

    request = urllib.request.Request(config.endpoint, data=b"", method="POST",
                                     headers={"User-Agent": USER_AGENT, **config.headers,
                                              "Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(request, timeout=0.25):
            return None
    except urllib.error.HTTPError as exc:
        code = exc.code
    except (OSError, ValueError):
        return None  # no answer in time: the caller keeps "Timeout"
    phrase = {429: "Too Many Requests", 503: "Service Unavailable"}.get(code)
    return classify(phrase) if phrase else None


_healths_lock = threading.Lock()
_healths: dict[tuple[str, str], Health] = {}
_addresses: dict[str, _Endpoint] = {}


def health_for(config: ExportConfig) -> Health:
    """The process-wide health record of ``config``'s signal at its endpoint (back-off shared per address)."""
    key = (config.signal, config.endpoint)
    with _healths_lock:
        health = _healths.get(key)
        if health is None:
            address = _addresses.setdefault(config.display_endpoint, _Endpoint(time.monotonic))
            health = _healths[key] = Health(config, endpoint=address)
        else:
            health.secrets.update(v for v in config.headers.values() if v)
        return health


def losses() -> dict[str, dict[str, int]]:
    """What OTLP export lost in this process, per ``signal endpoint`` (the run folders keep all of it)."""
    with _healths_lock:
        return {
            f"{h.config.signal} {h.config.display_endpoint}": {
                "dropped_batches": h.dropped_batches, "rejected_batches": h.rejected_batches,
                "rejected_items": h.rejected_items, "not_accepted_batches": h.unaccepted_batches,
            }
            for h in _healths.values()
        }


def report_losses() -> None:
    """At exit: when an endpoint refused more than the one batch already warned about, say how much in all."""
    with _healths_lock:
        healths = list(_healths.values())
    for h in healths:
        if h.rejected_batches > 1:
            kind = "spans" if h.config.signal == "traces" else "metric points"
            _logger.warning("runtel: %s rejected %d batches in all (%d %s); the run folders keep them (`runtel export` "
                            "resends them)", redact_url(h.config.endpoint), h.rejected_batches, h.rejected_items, kind)


def _attempt(health: Health, send: Callable[[], bool], deadline: float | None = None, items: int = 0) -> bool:
    """Run one export attempt quietly and record its outcome."""
    if not health.allow(deadline):
        health.skipped()
        return False
    reason: str | None
    status: int | None = None
    detail = ""
    _local.answer = None
    with _Quiet():
        try:
            ok = send()
            reason = None if ok else " | ".join(getattr(_local, "messages", ()))
        except PostError as exc:
            ok, reason, status, detail = False, exc.reason, exc.status, exc.detail
        except Exception as exc:  # an SDK exporter bug must not reach the batch worker or the user
            ok, reason = False, f"{type(exc).__name__}: {exc}"
    if ok:
        health.succeeded()
    else:
        answer = getattr(_local, "answer", None)
        if answer is not None and status is None:  # what the SDK's HTTP exporter's session saw (see _session)
            status, detail = answer
        health.failed(reason, status, detail, items)
    return ok


# --- exporters ---------------------------------------------------------------------------------------------------


class QuietSpanExporter(SpanExporter):
    """Wraps an SDK span exporter: never raises, logs one warning, backs off after failures."""

    def __init__(self, inner: SpanExporter, health: Health) -> None:
        self.inner = inner
        self.health = health
        #: set by the processor while it flushes or shuts down: later batches are dropped, not sent
        self.deadline: float | None = None
        #: told the size of every batch the processor's worker hands over (its queue accounting)
        self.on_batch: Callable[[int], None] | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Send unless backing off; a failure is recorded, never raised."""
        if self.on_batch is not None:
            self.on_batch(len(spans))
        ok = _attempt(self.health, lambda: self.inner.export(spans) == SpanExportResult.SUCCESS, self.deadline,
                      len(spans))
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Close the inner exporter quietly."""
        with _Quiet():
            try:
                self.inner.shutdown()
            except Exception as exc:
                _logger.debug("OTLP span exporter shutdown failed: %r", exc)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """The inner exporters buffer nothing."""
        return True


def _points(metrics_data: MetricsData) -> int:
    """Data points in a collection (for the loss counts)."""
    try:
        return sum(len(getattr(metric.data, "data_points", ()) or ())
                   for rm in metrics_data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics)
    except (AttributeError, TypeError):  # an unexpected shape only costs the count
        return 0


class QuietMetricExporter(MetricExporter):
    """Wraps an SDK metric exporter like :class:`QuietSpanExporter`.

    ``temporality`` is the preference runtel resolved when it built the exporter (see
    :func:`temporality_preference`); ``RunMetrics`` reads it to send deltas or cumulative sums. It is kept
    here rather than read back from the SDK exporter, whose copy is private.
    """

    def __init__(self, inner: MetricExporter, health: Health, *, owns_inner: bool = True,
                 temporality: Mapping[type, AggregationTemporality] | None = None) -> None:
        self.temporality: dict[type, AggregationTemporality] = dict(temporality or {})
        super().__init__(preferred_temporality=self.temporality)
        self.inner = inner
        self.health = health
        self.owns_inner = owns_inner
        self.deadline: float | None = None

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        """Send unless backing off; a failure is recorded, never raised."""
        ok = _attempt(
            self.health,
            lambda: self.inner.export(metrics_data, timeout_millis=timeout_millis) == MetricExportResult.SUCCESS,
            self.deadline,
            _points(metrics_data),
        )
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """The inner exporters buffer nothing."""
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Close the inner exporter quietly (unless it is shared by every run of the process)."""
        if not self.owns_inner:
            return
        with _Quiet():
            try:
                self.inner.shutdown(timeout_millis=timeout_millis)
            except Exception as exc:
                _logger.debug("OTLP metric exporter shutdown failed: %r", exc)


class JsonHttpSpanExporter(SpanExporter):
    """OTLP/HTTP with JSON bodies (the Python SDK has no such exporter); one attempt per batch."""

    def __init__(self, config: ExportConfig) -> None:
        self.config = config

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Encode with runtel's OTLP/JSON encoder and POST; raises PostError on failure (caught by the wrapper)."""
        from runtel.rundir.otlp_json import spans_line  # deferred: runtel.rundir.otlp_json (~0.4 ms)

        post(self.config.endpoint, spans_line(spans), "application/json", self.config.headers,
             self.config.timeout, self.config.compression)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to close."""


class JsonHttpMetricExporter(MetricExporter):
    """OTLP/HTTP metrics with JSON bodies; cumulative temporality like the SDK's default."""

    def __init__(self, config: ExportConfig) -> None:
        super().__init__()
        self.config = config

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        """Encode and POST; raises PostError on failure (caught by the wrapper)."""
        from runtel.rundir.otlp_json import dumps_line, encode_metrics  # deferred: runtel.rundir.otlp_json (~0.4 ms)

        post(self.config.endpoint, dumps_line(encode_metrics(metrics_data)), "application/json", self.config.headers,
             min(self.config.timeout, timeout_millis / 1000), self.config.compression)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing buffered."""
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to close."""


def _grpc_kwargs(config: ExportConfig) -> dict[str, Any]:
    """Keyword arguments shared by the SDK's gRPC span and metric exporters."""
    import grpc  # type: ignore[import-untyped]

    insecure = config.insecure
    if insecure is None:
        insecure = config.endpoint.startswith("http://")
    kwargs: dict[str, Any] = {
        "endpoint": config.endpoint,
        "insecure": insecure,
        "headers": dict(config.headers),
        "timeout": config.timeout,
        # runtel's product identifier before the SDK's own User-Agent (grpc adds its own version after it)
        "channel_options": (("grpc.primary_user_agent", config.headers.get("user-agent", USER_AGENT)),),
    }
    if config.compression == "gzip":
        kwargs["compression"] = grpc.Compression.Gzip
    elif config.compression == "deflate":
        kwargs["compression"] = grpc.Compression.Deflate
    elif config.compression == "none":
        kwargs["compression"] = grpc.Compression.NoCompression
    if not insecure and config.certificate:
        def read(path: str | None) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()

        kwargs["credentials"] = grpc.ssl_channel_credentials(
            root_certificates=read(config.certificate),
            private_key=read(config.client_key),
            certificate_chain=read(config.client_certificate),
        )
    return kwargs


def _http_kwargs(config: ExportConfig) -> dict[str, Any]:
    """Keyword arguments shared by the SDK's HTTP/protobuf span and metric exporters."""
    from opentelemetry.exporter.otlp.proto.http import (  # deferred: the OTLP exporters, only with OTLP opted in (~0.5 ms)
        Compression,  # deferred: the OTLP exporters, only with OTLP opted in (~0.5 ms)
    )

    kwargs: dict[str, Any] = {
        "endpoint": config.endpoint,
        "headers": {"user-agent": USER_AGENT, **config.headers},
        "timeout": config.timeout,
        "session": _reason_keeping_session(),
        "certificate_file": config.certificate,
        "client_key_file": config.client_key,
        "client_certificate_file": config.client_certificate,
    }
    if config.compression:
        try:
            kwargs["compression"] = Compression(config.compression)
        except ValueError as exc:
            raise ConfigError(f"OTLP compression {config.compression!r} is not supported (gzip, deflate, none)") from exc
    return kwargs


_session_class: list[type] = []


def _reason_keeping_session() -> Any:
    """A ``requests.Session`` for the SDK's HTTP exporters that keeps the status and the server's reason (body) of
    an error answer for :func:`_attempt` (the SDK logs only the status phrase)."""
    if not _session_class:
        import requests  # deferred: requests, loaded by the SDK's HTTP exporter anyway (~0 ms more)

        class ReasonKeepingSession(requests.Session):
            def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
                response = super().request(method, url, *args, **kwargs)
                if response.status_code >= 400:
                    _local.answer = (response.status_code,
                                     server_reason(response.content or b"", response.headers.get("Content-Type", "")))
                return response

        _session_class.append(ReasonKeepingSession)
    return _session_class[0]()


def make_span_exporter(config: ExportConfig) -> SpanExporter:
    """The SDK (or runtel's JSON) span exporter for ``config``; imports only what that protocol needs."""
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # deferred: the OTLP exporters, only with OTLP opted in (~52 ms)
            OTLPSpanExporter as GrpcSpanExporter,  # deferred: the OTLP exporters, only with OTLP opted in (~59 ms)
        )

        return GrpcSpanExporter(**_grpc_kwargs(config))
    if config.protocol == "http/json":
        return JsonHttpSpanExporter(config)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # deferred: the OTLP exporters, only with OTLP opted in (~26 ms)
        OTLPSpanExporter as HttpSpanExporter,  # deferred: the OTLP exporters, only with OTLP opted in (~28 ms)
    )

    return HttpSpanExporter(**_http_kwargs(config))


def temporality_preference(env: Mapping[str, str], protocol: str) -> dict[type, AggregationTemporality]:
    """``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` resolved the way the SDK's OTLP exporters do.

    ``delta`` makes (observable) counters and histograms delta, ``lowmemory`` only the synchronous counters
    and histograms, anything else is cumulative (the SDK's own exporter warns about an unknown value).
    runtel's HTTP/JSON exporter has always sent cumulative sums, whatever the variable says.
    """
    cumulative, delta = AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA
    preference = env.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative").strip().lower()
    if protocol == "http/json":
        preference = "cumulative"
    deltas: tuple[type, ...] = {
        "delta": (Counter, Histogram, ObservableCounter),
        "lowmemory": (Counter, Histogram),
    }.get(preference, ())
    kinds = (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge)
    return {kind: delta if kind in deltas else cumulative for kind in kinds}


def make_metric_exporter(config: ExportConfig) -> MetricExporter:
    """The SDK (or runtel's JSON) metric exporter for ``config``."""
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # deferred: the OTLP exporters, only with OTLP opted in (~52 ms)
            OTLPMetricExporter as GrpcMetricExporter,  # deferred: the OTLP exporters, only with OTLP opted in (~58 ms)
        )

        return GrpcMetricExporter(**_grpc_kwargs(config))
    if config.protocol == "http/json":
        return JsonHttpMetricExporter(config)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # deferred: the OTLP exporters, only with OTLP opted in (~27 ms)
        OTLPMetricExporter as HttpMetricExporter,  # deferred: the OTLP exporters, only with OTLP opted in (~28 ms)
    )

    return HttpMetricExporter(**_http_kwargs(config))


# --- processor and reader ----------------------------------------------------------------------------------------


#: the OTel specification's defaults for OTEL_BSP_MAX_QUEUE_SIZE and OTEL_BSP_MAX_EXPORT_BATCH_SIZE
_DEFAULT_QUEUE: Final = 2048
_DEFAULT_BATCH: Final = 512


def _bsp_int(env: Mapping[str, str], name: str, default: int) -> int:
    """An ``OTEL_BSP_*`` integer; an unparsable one is reported once and replaced by the default, as the SDK does."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        log_once(f"bad-{name}", "runtel: %s=%r is not an integer; using %d", name, raw, default)
        return default


class OtlpSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor whose flush and shutdown are bounded and which counts the spans it drops.

    The SDK's queue, when full, drops a span with nothing but a log line. So this processor keeps its own
    count of the spans in that queue (an upper bound: +1 when a span is handed to it, -n when the worker
    passes a batch of n to the exporter) and refuses a span, counting it, when the count has reached the
    queue's size. The SDK's queue therefore never overflows, and every span lost for OTLP is counted
    (:attr:`dropped_spans`) and reported once. Like the Java and Go SDKs, the span refused is the new one.
    """

    def __init__(self, exporter: QuietSpanExporter, bound_s: float, *, max_queue_size: int = _DEFAULT_QUEUE,
                 max_export_batch_size: int = _DEFAULT_BATCH) -> None:
        super().__init__(exporter, max_queue_size=max_queue_size, max_export_batch_size=max_export_batch_size)
        self.quiet_exporter = exporter
        self.bound_s = bound_s
        self.max_queue_size = max_queue_size
        #: spans refused because the queue was full (the run folder still has them)
        self.dropped_spans = 0
        self._queued = 0  # at least the number of spans in the SDK's queue
        self._closed = False
        self._count_lock = threading.Lock()
        exporter.on_batch = self._taken
        if hasattr(os, "register_at_fork"):  # the SDK empties its queue in a forked child: so does the count
            ref = weakref.ref(self)

            def after_fork() -> None:
                processor = ref()
                if processor is not None:
                    processor._reset_after_fork()

            os.register_at_fork(after_in_child=after_fork)

    def _reset_after_fork(self) -> None:
        self._count_lock = threading.Lock()
        self._queued = 0

    def _taken(self, count: int) -> None:
        """The worker handed ``count`` queued spans to the exporter."""
        with self._count_lock:
            self._queued = max(0, self._queued - count)

    def on_end(self, span: ReadableSpan) -> None:
        """Queue the span if it fits; else count it and warn once."""
        if not (span.context and span.context.trace_flags.sampled) or self._closed:
            return  # what the SDK ignores is not counted; after shutdown nothing is exported
        with self._count_lock:
            full = self._queued >= self.max_queue_size
            if full:
                self.dropped_spans += 1
            else:
                self._queued += 1
        if full:
            log_once("otlp-queue-full", "runtel: the OTLP export queue is full; spans are dropped for OTLP only "
                     "(the run folder keeps them)")
            return
        super().on_end(span)

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        """Export what is queued, giving up after ``timeout_millis`` (the SDK ignores it, issue #4568)."""
        limit = self.bound_s if timeout_millis is None else min(self.bound_s, timeout_millis / 1000)
        self.quiet_exporter.deadline = time.monotonic() + limit
        try:
            return bool(super().force_flush(timeout_millis))
        finally:
            self.quiet_exporter.deadline = None

    def shutdown(self) -> None:
        """Stop the worker, sending what is queued within the bound, then close the exporter.

        Batches still queued at the deadline are dropped for OTLP without an attempt. The SDK's own
        shutdown waits up to 30 s for an export in flight, so it runs in a daemon thread waited for
        ``bound_s`` at most (inline where the interpreter no longer starts threads; the attempt in flight
        is then bounded by its own timeout).
        """
        self._closed = True
        self.quiet_exporter.deadline = time.monotonic() + self.bound_s
        if self.dropped_spans:
            _logger.debug("OTLP span export dropped %d spans: the queue was full", self.dropped_spans)
        worker = threading.Thread(target=self._stop, name="runtel-otlp-shutdown", daemon=True)
        try:
            worker.start()
        except RuntimeError:  # Python >= 3.12 at interpreter shutdown
            self._stop()
            return
        worker.join(self.bound_s)

    def _stop(self) -> None:
        with guard("otlp-span-shutdown", "shut down OTLP span export"):  # in the daemon thread: nothing to raise to
            super().shutdown()  # type: ignore[no-untyped-call]


def build_span_processor(settings: Settings) -> SpanProcessor:
    """The OTLP span processor for an opted-in runtime (a separate processor from the run folder's).

    Raises:
        ConfigError: the OTLP variables are not usable (``_sdk`` logs it once and goes on without OTLP).
    """
    config = resolve_config(settings.env, "traces", cap_timeout=settings.export_timeout)
    queue = _bsp_int(settings.env, "OTEL_BSP_MAX_QUEUE_SIZE", _DEFAULT_QUEUE)
    batch = _bsp_int(settings.env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _DEFAULT_BATCH)
    exporter = QuietSpanExporter(make_span_exporter(config), health_for(config))
    _install_log_filter()
    _logger.debug("OTLP span export to %s over %s", config.display_endpoint, config.protocol)
    return OtlpSpanProcessor(exporter, settings.export_timeout, max_queue_size=queue, max_export_batch_size=batch)


_shared_lock = threading.Lock()
_shared_metric_exporters: dict[tuple[str, str, float], tuple[MetricExporter, Health]] = {}


def build_metric_exporter(settings: Settings) -> MetricExporter:
    """An OTLP metric exporter for one run's reader; every run of the process shares the connection and health.

    Sharing means a collector found dead by one run is not retried (at the cost of a timeout) by every
    following run of a sweep, and one gRPC channel / HTTP session serves them all.

    Raises:
        ConfigError: the OTLP variables are not usable.
    """
    config = resolve_config(settings.env, "metrics", cap_timeout=settings.export_timeout)
    key = (config.protocol, config.endpoint, config.timeout)
    with _shared_lock:
        shared = _shared_metric_exporters.get(key)
        if shared is None:
            shared = _shared_metric_exporters[key] = (make_metric_exporter(config), health_for(config))
            _install_log_filter()
            _logger.debug("OTLP metric export to %s over %s", config.display_endpoint, config.protocol)
    return QuietMetricExporter(shared[0], shared[1], owns_inner=False,
                               temporality=temporality_preference(settings.env, config.protocol))
