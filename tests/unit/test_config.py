"""Settings resolve as explicit argument > environment variable > default, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtel.config import PARAMS, resolve_settings, settings_table
from runtel.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    """With an empty environment every setting takes its documented default."""
    s = resolve_settings({})
    assert s.dir == Path("runs")
    assert s.exporters == ("json",)
    assert s.sample_interval == 1.0 and s.metric_interval == 10.0
    assert s.telemetry == "full" and not s.disabled
    assert s.attribute_max_length == 4096


def test_env_beats_default_and_argument_beats_env() -> None:
    """RUNTEL_* variables override defaults; explicit arguments override variables."""
    env = {"RUNTEL_DIR": "/data/runs", "RUNTEL_SAMPLE_INTERVAL": "0.25", "RUNTEL_TELEMETRY": "minimal"}
    s = resolve_settings(env)
    assert s.dir == Path("/data/runs") and s.sample_interval == 0.25 and s.telemetry == "minimal"
    s2 = resolve_settings(env, dir="/elsewhere", sample_interval=2.0)
    assert s2.dir == Path("/elsewhere") and s2.sample_interval == 2.0 and s2.telemetry == "minimal"


def test_otlp_opt_in_rules() -> None:
    """OTLP is on only by explicit opt-in; an endpoint alone is not an opt-in."""
    assert not resolve_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}).otlp_enabled
    assert resolve_settings({"RUNTEL_EXPORTERS": "json,otlp"}).otlp_enabled
    assert resolve_settings({"OTEL_TRACES_EXPORTER": "otlp"}).otlp_enabled
    assert resolve_settings({"OTEL_METRICS_EXPORTER": "console,otlp"}).otlp_enabled
    assert not resolve_settings({"OTEL_TRACES_EXPORTER": "none"}).otlp_enabled
    assert resolve_settings({}, exporters=["json", "otlp"]).otlp_enabled
    assert not resolve_settings({"RUNTEL_EXPORTERS": "otlp"}).json_enabled


def test_sdk_disabled_only_for_true() -> None:
    """OTEL_SDK_DISABLED accepts true/false spellings."""
    assert resolve_settings({"OTEL_SDK_DISABLED": "true"}).disabled
    assert resolve_settings({"OTEL_SDK_DISABLED": "TRUE "}).disabled
    assert not resolve_settings({"OTEL_SDK_DISABLED": "false"}).disabled


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"RUNTEL_SAMPLE_INTERVAL": "0.01"}, "RUNTEL_SAMPLE_INTERVAL"),
        ({"RUNTEL_SAMPLE_INTERVAL": "fast"}, "RUNTEL_SAMPLE_INTERVAL"),
        ({"RUNTEL_EXPORTERS": "json,zipkin"}, "zipkin"),
        ({"RUNTEL_TELEMETRY": "everything"}, "RUNTEL_TELEMETRY"),
        ({"RUNTEL_GPU": "tpu"}, "RUNTEL_GPU"),
        ({"OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], fragment: str) -> None:
    """An unusable environment value raises ConfigError naming the variable."""
    with pytest.raises(ConfigError, match=fragment):
        resolve_settings(env)


def test_unknown_argument_rejected() -> None:
    """An unknown setting name is a ConfigError, not silently ignored."""
    with pytest.raises(ConfigError, match="bogus"):
        resolve_settings({}, bogus=1)


def test_argument_validation() -> None:
    """Explicit arguments are validated like their variables."""
    with pytest.raises(ConfigError):
        resolve_settings({}, sample_interval=0.001)
    with pytest.raises(ConfigError):
        resolve_settings({}, exporters=["json", "kafka"])


def test_configuration_doc_matches_params() -> None:
    """docs/configuration.md contains the table generated from PARAMS, so docs and code agree."""
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert settings_table() in doc
    for param in PARAMS.values():
        for var in param.env:
            assert f"`{var}`" in doc
