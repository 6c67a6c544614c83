"""OTEL_METRICS_EXPORTER and OTEL_EXPORTER_PROMETHEUS_HOST/_PORT as runtel reads them (exporters/prometheus.py)."""

from __future__ import annotations

import logging

import pytest

from runtel._guard import reset_log_once
from runtel.config import resolve_settings
from runtel.exporters.prometheus import prometheus_address


@pytest.mark.parametrize(("raw", "names"), [
    ("", None), ("prometheus", ("prometheus",)), (" OTLP , Prometheus ", ("otlp", "prometheus")), ("none", ("none",)),
])
def test_metrics_exporter_is_a_comma_list(raw: str, names: tuple[str, ...] | None) -> None:
    assert resolve_settings(env={"OTEL_METRICS_EXPORTER": raw}).metrics_exporter == names


def test_address_defaults_to_the_specs_localhost_9464() -> None:
    assert prometheus_address({}) == ("localhost", 9464)
    assert prometheus_address({"OTEL_EXPORTER_PROMETHEUS_HOST": "0.0.0.0", "OTEL_EXPORTER_PROMETHEUS_PORT": "9100"}) \
        == ("0.0.0.0", 9100)


def test_an_unusable_port_falls_back_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    reset_log_once()
    with caplog.at_level(logging.WARNING, logger="runtel"):
        assert prometheus_address({"OTEL_EXPORTER_PROMETHEUS_PORT": "http"}) == ("localhost", 9464)
        assert prometheus_address({"OTEL_EXPORTER_PROMETHEUS_PORT": "70000"}) == ("localhost", 9464)
    assert sum("OTEL_EXPORTER_PROMETHEUS_PORT" in r.getMessage() for r in caplog.records) == 1
