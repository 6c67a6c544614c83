"""A Prometheus pull endpoint (``/metrics``) through the OTel ecosystem's own ``opentelemetry-exporter-prometheus``.

Opt in with the standard ``OTEL_METRICS_EXPORTER=prometheus`` (a comma list: ``otlp,prometheus`` does
both); the address comes from the standard ``OTEL_EXPORTER_PROMETHEUS_HOST`` / ``_PORT`` (spec
defaults ``localhost`` / ``9464``). This module starts the HTTP server and the exporter's
``PrometheusMetricReader``; the composition root builds the private SDK ``MeterProvider`` around that
reader and registers runtel's instruments on it (``_sdk/bridge.py``), so the exporter translates the semconv names itself, as the
Collector's Prometheus exporter does (``process.cpu.time`` in ``s`` → ``process_cpu_time_seconds_total``,
``runtel.run.id`` → label ``runtel_run_id``). The package is an optional extra (``runtel[prometheus]``):
without it the run goes on and one warning says what to install.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from runtel._guard import log_once

__all__ = ("PrometheusEndpoint", "prometheus_address", "start_endpoint")

_logger = logging.getLogger("runtel.prometheus")

#: the spec's defaults for OTEL_EXPORTER_PROMETHEUS_HOST / _PORT
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 9464


def prometheus_address(env: Mapping[str, str]) -> tuple[str, int]:
    """``(host, port)`` from ``OTEL_EXPORTER_PROMETHEUS_HOST`` / ``_PORT``; an unusable port falls back, with a warning."""
    host = env.get("OTEL_EXPORTER_PROMETHEUS_HOST", "").strip() or DEFAULT_HOST
    raw = env.get("OTEL_EXPORTER_PROMETHEUS_PORT", "").strip()
    port = DEFAULT_PORT
    if raw:
        try:
            port = int(raw)
            if not 0 <= port <= 65535:
                raise ValueError(raw)
        except ValueError:
            log_once("prometheus-port", "runtel ignores OTEL_EXPORTER_PROMETHEUS_PORT=%r (not a port number) and "
                     "serves on %d", raw, DEFAULT_PORT)
            port = DEFAULT_PORT
    return host, port


class PrometheusEndpoint:
    """The running endpoint: the ``PrometheusMetricReader`` a ``MeterProvider`` is built around, and the HTTP server.

    ``provider`` is set by whoever builds that provider (the runtime); :meth:`shutdown` shuts it down too.
    """

    def __init__(self, reader: Any, server: Any, host: str, port: int) -> None:
        self.reader = reader
        self.provider: Any = None
        self._server = server
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """Where Prometheus scrapes."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def shutdown(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self.provider is not None:
            self.provider.shutdown()
        else:
            self.reader.shutdown()


def start_endpoint(env: Mapping[str, str]) -> PrometheusEndpoint | None:
    """Serve ``/metrics`` from a new ``PrometheusMetricReader``; None (and one warning) if impossible.

    Missing package or a port in use never stops the run: the warning names the extra or the address.
    """
    try:
        # deferred: prometheus_client + the exporter + the metrics SDK (~60 ms), only with OTEL_METRICS_EXPORTER=prometheus
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, start_http_server  # deferred: loaded by the exporter above
    except ImportError as exc:
        log_once("prometheus-missing", "runtel: OTEL_METRICS_EXPORTER=prometheus needs the Prometheus exporter, which "
                 "is not installed (%s): pip install 'runtel[prometheus]'. The run goes on without a /metrics "
                 "endpoint.", exc)
        return None
    host, port = prometheus_address(env)
    registry = CollectorRegistry()  # its own: the application's default registry is left as it was
    reader = PrometheusMetricReader(registry=registry)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        reader.shutdown()
        log_once("prometheus-bind", "runtel could not serve Prometheus metrics on %s:%d (%s); set "
                 "OTEL_EXPORTER_PROMETHEUS_PORT to a free port. The run goes on without a /metrics endpoint.",
                 host, port, exc)
        return None
    bound = server.server_address[1] if port == 0 else port
    endpoint = PrometheusEndpoint(reader, server, host, int(bound))
    _logger.info("runtel serves Prometheus metrics at %s", endpoint.url)
    return endpoint
