"""Process-wide settings: one table of parameters, resolved argument > environment > default.

This is the only module that reads runtel's settings from the environment. ``docs/configuration.md``
is generated from :data:`PARAMS` (``python -m runtel.config``) and a test keeps the two equal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path, PurePath
from typing import Any, Final, NamedTuple

from runtel.errors import ConfigError

__all__ = ("PARAMS", "UNSET", "Param", "Settings", "resolve_settings")


class _Unset:
    """Marks an argument the caller did not give (``None`` may be a real value)."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset()

TELEMETRY_LEVELS: Final = ("full", "minimal", "off")
KNOWN_EXPORTERS: Final = ("json", "otlp", "none")
#: values of OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER that runtel acts on; any other standard value (``console``,
#: ``zipkin``, ...) is the application's own SDK's business and only means "not OTLP" to runtel
SIGNAL_EXPORTERS: Final = {"traces": ("otlp", "none"), "metrics": ("otlp", "prometheus", "none")}


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_exporters(raw: str) -> tuple[str, ...]:
    names = tuple(n.lower() for n in _parse_list(raw))
    unknown = [n for n in names if n not in KNOWN_EXPORTERS]
    if unknown:
        raise ValueError(f"unknown exporter(s) {', '.join(unknown)}; known: {', '.join(KNOWN_EXPORTERS)}")
    return names


def _parse_signal_exporters(raw: str) -> tuple[str, ...] | None:
    """``OTEL_{TRACES,METRICS}_EXPORTER``: a comma list, lower-cased; empty means unset (follow ``exporters``)."""
    names = tuple(n.lower() for n in _parse_list(raw))
    return names or None


def _parse_telemetry(raw: str) -> str:
    value = raw.strip().lower()
    if value not in TELEMETRY_LEVELS:
        raise ValueError(f"expected one of {', '.join(TELEMETRY_LEVELS)}, got {raw!r}")
    return value


def _positive_float(minimum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not value >= minimum:  # also rejects NaN
            raise ValueError(f"must be >= {minimum}, got {raw!r}")
        return value

    return parse


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {raw!r}")
    return value


def _optional_positive_int(raw: str) -> int | None:
    return None if raw.strip() == "" else _positive_int(raw)


def _optional_seed(raw: str) -> int | None:
    if raw.strip() == "":
        return None
    value = int(raw.strip(), 0)
    if value < 0:
        raise ValueError(f"must be a non-negative integer, got {raw!r}")
    return value


def _optional_positive_float(raw: str) -> float | None:
    return None if raw.strip() == "" else _positive_float(0.0)(raw)


class Param(NamedTuple):
    """One setting: where it can come from, its default, how to parse it, and what it means."""

    env: tuple[str, ...]
    default: Any
    parse: Callable[[str], Any]
    doc: str
    default_doc: str = ""


PARAMS: Final[dict[str, Param]] = {
    "dir": Param(("RUNTEL_DIR",), Path("runs"), Path, "Folder that holds one sub-folder per run.", "`./runs`"),
    "exporters": Param(
        ("RUNTEL_EXPORTERS",),
        ("json",),
        _parse_exporters,
        "Comma-separated sinks: `json` (the local run folder), `otlp` (opt-in network export), `none`. "
        "`OTEL_TRACES_EXPORTER=otlp` or `OTEL_METRICS_EXPORTER=otlp` also opts in to OTLP; "
        "`OTEL_EXPORTER_OTLP_ENDPOINT` alone does not.",
        "`json`",
    ),
    "traces_exporter": Param(
        ("OTEL_TRACES_EXPORTER",),
        None,
        _parse_signal_exporters,
        "Per-signal selector (OTel standard): `otlp` sends spans over OTLP, `none` does not (the run folder "
        "keeps them either way). Unset: spans follow `exporters`. `OTEL_TRACES_EXPORTER=none` with "
        "`OTEL_METRICS_EXPORTER=otlp` exports only metrics. `runtel export` honours it too.",
        "unset (follow `exporters`)",
    ),
    "metrics_exporter": Param(
        ("OTEL_METRICS_EXPORTER",),
        None,
        _parse_signal_exporters,
        "Per-signal selector for metrics: `otlp`, `none`, or `prometheus` (a pull endpoint; not OTLP). Unset: "
        "metrics follow `exporters`. `runtel export` honours it too.",
        "unset (follow `exporters`)",
    ),
    "service_name": Param(
        ("OTEL_SERVICE_NAME",),
        None,
        str,
        "`service.name` of the Resource. Without it runtel uses the first run's name.",
        "name of the first run",
    ),
    "disabled": Param(
        ("OTEL_SDK_DISABLED",),
        False,
        _parse_bool,
        "`true` turns runtel into a no-op: no spans, no metrics, no files.",
        "`false`",
    ),
    "telemetry": Param(
        ("RUNTEL_TELEMETRY",),
        "full",
        _parse_telemetry,
        "How much environment a run records: `full`, `minimal` or `off` (see docs/privacy.md).",
        "`full`",
    ),
    "attribute_max_length": Param(
        ("RUNTEL_ATTRIBUTE_MAX_LENGTH",),
        4096,
        _positive_int,
        "Longest string value put on a span attribute; longer values are cut and marked `…[truncated]`.",
        "`4096`",
    ),
    "record_max_bytes": Param(
        ("RUNTEL_RECORD_MAX_BYTES",),
        1_048_576,
        _positive_int,
        "Longest single string kept in run.json (config, metadata); longer ones are cut and marked.",
        "`1048576`",
    ),
    "sample_interval": Param(
        ("RUNTEL_SAMPLE_INTERVAL",),
        1.0,
        _positive_float(0.05),
        "Seconds between resource samples (CPU, RAM, GPU, energy); minimum 0.05.",
        "`1.0`",
    ),
    "memory_detail_interval": Param(
        ("RUNTEL_MEMORY_DETAIL_INTERVAL",),
        10.0,
        _positive_float(0.05),
        "Seconds between the more expensive USS/PSS reads of the process tree.",
        "`10.0`",
    ),
    "metric_interval": Param(
        ("RUNTEL_METRIC_INTERVAL",),
        10.0,
        _positive_float(0.05),
        "Seconds between metric exports to metrics.jsonl (and OTLP); a final export happens at run end. "
        "Each line restates the run's Resource (~2 KB), so a shorter interval costs bytes: 10 s keeps a busy "
        "process under 1 KB a second (OTel's own default is 60 s).",
        "`10.0`",
    ),
    "sampling": Param(
        ("RUNTEL_SAMPLING",),
        True,
        _parse_bool,
        "`false` turns the background resource sampler off (spans and records still work).",
        "`true`",
    ),
    "block_counters": Param(
        ("RUNTEL_BLOCK_COUNTERS",),
        True,
        _parse_bool,
        "`false` stops blocks and `@trace` calls reading CPU/energy counters at their edges (~3 attributes and "
        "~5-25 us a span, see docs/performance.md): they then carry only sampled usage, as before. Runs and "
        "`runtel.measure()` always read them.",
        "`true`",
    ),
    "propagate": Param(
        ("RUNTEL_PROPAGATE",),
        True,
        _parse_bool,
        "`false` stops runs from following the work: no context into threads and thread pools, no "
        "`TRACEPARENT`/`RUNTEL_PARENT_RUN_ID` in child processes' environment, no automatic worker runs "
        "(see docs/threads-and-processes.md). `inject_env`/`worker_context`/`init_worker` still work.",
        "`true`",
    ),
    "n_expected_cores": Param(
        ("RUNTEL_EXPECTED_CORES",),
        None,
        _optional_positive_int,
        "Cores the job is expected to use; denominator of the `hardware` CPU utilisation share.",
        "CPUs available to the process",
    ),
    "gpu_backend": Param(
        ("RUNTEL_GPU",),
        "auto",
        lambda raw: raw.strip().lower(),
        "GPU backend: `auto`, `nvml`, `amd` or `none`.",
        "`auto`",
    ),
    "gpu_uuids": Param(
        ("RUNTEL_GPU_UUIDS",),
        None,
        _parse_list,
        "Comma-separated GPU UUIDs to track (also restricted by `CUDA_VISIBLE_DEVICES`).",
        "all visible GPUs",
    ),
    "carbon_intensity": Param(
        ("RUNTEL_CARBON_INTENSITY",),
        475.0,
        _positive_float(0.0),
        "Grid carbon intensity in gCO2eq/kWh used to turn energy into emissions (no network look-up). "
        "The default is the IEA 2019 world average.",
        "`475.0`",
    ),
    "cpu_tdp": Param(
        ("RUNTEL_CPU_TDP",),
        None,
        _optional_positive_float,
        "TDP of one CPU package in watts for the energy estimate when RAPL is not readable (a busy thread is "
        "charged TDP / the package's threads, see docs/metrics.md).",
        "from the bundled table, else 85 W",
    ),
    "redact_patterns": Param(
        ("RUNTEL_REDACT_PATTERNS",),
        (),
        _parse_list,
        "Extra comma-separated regular expressions; keys or values matching one are redacted.",
        "none",
    ),
    "redact_allow": Param(
        ("RUNTEL_REDACT_ALLOW",),
        (),
        _parse_list,
        "Comma-separated regular expressions for keys that are never secret keys (their values are still "
        "scanned for credentials inside the text).",
        "none",
    ),
    "git_diff_max_bytes": Param(
        ("RUNTEL_GIT_DIFF_MAX_BYTES",),
        1_048_576,
        _positive_int,
        "Largest `git diff HEAD` saved as git.diff; a larger diff is cut and marked.",
        "`1048576`",
    ),
    "rotate_bytes": Param(
        ("RUNTEL_ROTATE_BYTES",),
        268_435_456,
        _positive_int,
        "Size in bytes at which a run's spans.jsonl / metrics.jsonl moves on to a new segment "
        "(`spans.2.jsonl`, `spans.3.jsonl`, …; nothing is renamed), so a long-lived service does not grow "
        "one file without bound. Every reader and `runtel export` follow the segments.",
        "`268435456` (256 MiB)",
    ),
    "export_timeout": Param(
        ("RUNTEL_EXPORT_TIMEOUT",),
        5.0,
        _positive_float(0.0),
        "Upper bound in seconds on waiting for OTLP export at run end or exit.",
        "`5.0`",
    ),
    "shared_run_dir": Param(
        ("RUNTEL_SHARED_RUN_DIR",),
        False,
        _parse_bool,
        "`true` makes new run folders group-readable (0750, files 0640) for a team sharing a run directory; "
        "by default they are private (0700, files 0600) whatever the umask.",
        "`false`",
    ),
    "run_index": Param(
        ("RUNTEL_RUN_INDEX",),
        True,
        _parse_bool,
        "`false` neither writes nor reads the run index (`.runtel-index.sqlite` in the runs root, see "
        "docs/looking-at-runs.md): every command then reads each run.json, as on a read-only folder. "
        "Read from the environment by runs and commands alike.",
        "`true`",
    ),
    "seed": Param(
        ("RUNTEL_SEED",),
        None,
        _optional_seed,
        "Pins every seed runtel would generate (`run_span(seed=True)`, `seed_everything()`, "
        "`@trace(seed_parameter=...)`) to this value; reproduce.sh and `runtel reproduce` set it to the "
        "recorded seed (see docs/reproducing.md). Explicit seeds are not affected.",
        "none (fresh seeds)",
    ),
    "trackers": Param(
        ("RUNTEL_TRACKER",),
        ("folder",),
        _parse_list,
        "Comma-separated tracker backends a run writes to and `Tracker` reads from: `folder` (alias "
        "`runfolder`, the run folders), `mlflow`, or any `runtel.trackers` entry point or `module:attribute` "
        "(see docs/backends.md). Each gets `RUNTEL_TRACKER_<NAME>_CONFIG`; queries use the first that reads.",
        "`folder`",
    ),
    "strict": Param(
        ("RUNTEL_STRICT",),
        False,
        _parse_bool,
        "Re-raise runtel's internal errors instead of logging them (for runtel's own tests).",
        "`false`",
    ),
}


@dataclass(frozen=True)
class Settings:
    """Resolved, immutable settings for this process (see :data:`PARAMS` for meanings)."""

    dir: Path = Path("runs")
    exporters: tuple[str, ...] = ("json",)
    traces_exporter: tuple[str, ...] | None = None
    metrics_exporter: tuple[str, ...] | None = None
    service_name: str | None = None
    disabled: bool = False
    telemetry: str = "full"
    attribute_max_length: int = 4096
    record_max_bytes: int = 1_048_576
    sample_interval: float = 1.0
    memory_detail_interval: float = 10.0
    metric_interval: float = 10.0
    sampling: bool = True
    block_counters: bool = True
    propagate: bool = True
    n_expected_cores: int | None = None
    gpu_backend: str = "auto"
    gpu_uuids: tuple[str, ...] | None = None
    carbon_intensity: float = 475.0
    cpu_tdp: float | None = None
    redact_patterns: tuple[str, ...] = ()
    redact_allow: tuple[str, ...] = ()
    git_diff_max_bytes: int = 1_048_576
    rotate_bytes: int = 268_435_456
    export_timeout: float = 5.0
    shared_run_dir: bool = False
    run_index: bool = True
    seed: int | None = None
    trackers: tuple[str, ...] = ("folder",)
    strict: bool = False
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def json_enabled(self) -> bool:
        """Whether the local run folder is written."""
        return "json" in self.exporters

    @property
    def otlp_enabled(self) -> bool:
        """Whether the user opted in to network export (of either signal)."""
        return "otlp" in self.exporters

    @property
    def otlp_traces(self) -> bool:
        """Whether spans go to OTLP: opted in, and ``OTEL_TRACES_EXPORTER`` (when set) names ``otlp``."""
        return self.otlp_enabled and (self.traces_exporter is None or "otlp" in self.traces_exporter)

    @property
    def otlp_metrics(self) -> bool:
        """Whether metrics go to OTLP: opted in, and ``OTEL_METRICS_EXPORTER`` (when set) names ``otlp``.

        ``prometheus`` in ``metrics_exporter`` means "not OTLP" here; it starts the Prometheus pull
        endpoint instead (``exporters/prometheus.py``), and ``otlp,prometheus`` does both.
        """
        return self.otlp_enabled and (self.metrics_exporter is None or "otlp" in self.metrics_exporter)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed."""
        return replace(self, **changes)


def _from_env(name: str, env: Mapping[str, str]) -> Any:
    param = PARAMS[name]
    for var in param.env:
        raw = env.get(var)
        if raw is not None and raw.strip() != "":
            try:
                return param.parse(raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{var}={raw!r}: {exc}") from exc
    return UNSET


def _check_arg(name: str, value: Any) -> Any:
    """Validate an explicitly passed argument with the same rules as its environment variable."""
    try:
        return _coerce_arg(name, value)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={value!r}: {exc}") from exc


#: settings whose value is a bool, a number, or a sequence of strings (checked by type when not given as text)
_BOOLS: Final = frozenset({"disabled", "sampling", "strict", "block_counters"})
_NUMBERS: Final = frozenset({"attribute_max_length", "record_max_bytes", "sample_interval", "memory_detail_interval",
                             "metric_interval", "n_expected_cores", "carbon_intensity", "cpu_tdp",
                             "git_diff_max_bytes", "rotate_bytes", "export_timeout", "seed"})
_STRINGS: Final = frozenset({"service_name", "gpu_backend", "telemetry"})


def _coerce_arg(name: str, value: Any) -> Any:
    """An explicit argument checked by type, then by the same rules as its environment variable.

    Text goes through the variable's parser; a number through it too (as its decimal text), so
    ``configure(sample_interval=0.01)`` and ``RUNTEL_SAMPLE_INTERVAL=0.01`` fail alike. A value of
    the wrong type (``telemetry=5``, ``sampling="maybe"``, ``dir=123``) is a ConfigError.
    """
    if isinstance(value, str) and name not in ("service_name", "gpu_backend"):
        try:
            return PARAMS[name].parse(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}={value!r}: {exc}") from exc
    if value is None and PARAMS[name].default is None:
        return None
    if name == "dir":
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"dir must be a path, got {type(value).__name__}")
        return Path(value)
    if name in _BOOLS:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {type(value).__name__}")
        return value
    if name in _NUMBERS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {type(value).__name__}")
        if isinstance(PARAMS[name].default, int) and not isinstance(value, int) and name != "n_expected_cores":
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        if name in ("n_expected_cores", "seed") and not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return PARAMS[name].parse(repr(value))
    if name in _STRINGS:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {type(value).__name__}")
        return value
    if name == "exporters":
        return _parse_exporters(",".join(_strings(name, value)))
    if name in ("traces_exporter", "metrics_exporter"):
        return _parse_signal_exporters(",".join(_strings(name, value)))
    if name in ("gpu_uuids", "redact_patterns", "redact_allow", "trackers"):
        return _strings(name, value)
    return value


def _strings(name: str, value: Any) -> tuple[str, ...]:
    """A sequence of strings (not one string, already handled as text)."""
    try:
        items = tuple(value)
    except TypeError:
        raise ConfigError(f"{name} must be a list of strings, got {type(value).__name__}") from None
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{name} must be a list of strings, got {value!r}")
    return items


def resolve_settings(env: Mapping[str, str] | None = None, **args: Any) -> Settings:
    """Resolve every setting: explicit argument > environment variable > default.

    Args:
        env: The environment to read (``os.environ`` when omitted); tests pass a dict.
        **args: Explicit values by setting name; ``UNSET`` values are ignored.

    Raises:
        ConfigError: An argument or environment variable has an unusable value, or an unknown
            setting name was given.
    """
    env = dict(os.environ if env is None else env)
    unknown = set(args) - set(PARAMS)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, param in PARAMS.items():
        arg = args.get(name, UNSET)
        if arg is not UNSET:
            values[name] = _check_arg(name, arg)
            continue
        from_env = _from_env(name, env)
        values[name] = param.default if from_env is UNSET else from_env
    # The standard OTel exporter selectors are honoured too (the SDK only reads them in auto-instrumentation):
    # `otlp` for either signal opts in; each signal then goes to OTLP unless its own selector excludes it.
    if "exporters" not in args or args["exporters"] is UNSET:
        standard = (values["traces_exporter"] or (), values["metrics_exporter"] or ())
        if any("otlp" in names for names in standard) and "otlp" not in values["exporters"]:
            values["exporters"] = (*values["exporters"], "otlp")
    if values["gpu_backend"] not in ("auto", "nvml", "amd", "none"):
        raise ConfigError(f"RUNTEL_GPU/gpu_backend must be auto, nvml, amd or none, got {values['gpu_backend']!r}")
    return Settings(**values, env=env)


def settings_table() -> str:
    """The Markdown table of every setting, for docs/configuration.md."""
    lines = [
        "| argument of `configure()` | environment variable | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for name, param in PARAMS.items():
        env = ", ".join(f"`{v}`" for v in param.env)
        default = param.default_doc or f"`{param.default!r}`"
        lines.append(f"| `{name}` | {env} | {default} | {param.doc} |")
    return "\n".join(lines) + "\n"


assert {f.name for f in fields(Settings)} - {"env"} == set(PARAMS), "Settings and PARAMS must agree"

if __name__ == "__main__":  # pragma: no cover - used to regenerate the docs table
    import sys

    sys.stdout.write(settings_table())


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce ``settings`` in a child process.

    Only settings that differ from their defaults are included. Used by ``worker_context`` so a
    spawned worker writes where, and how, its parent does even when the parent used ``configure()``.

    Example:
        >>> settings_env(resolve_settings(sampling=False, env={}))["RUNTEL_SAMPLING"]
        'false'
    """
    current = settings
    defaults = Settings()
    out: dict[str, str] = {}
    for name, param in PARAMS.items():
        value = getattr(current, name, None)
        if value is None or value == getattr(defaults, name, None) or not param.env:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (tuple, list)):
            text = ",".join(str(v) for v in value) or ("none" if name == "exporters" else "")
        elif isinstance(value, PurePath):
            text = str(value)
        else:
            text = str(value)
        if text:
            out[param.env[0]] = text
    return out
