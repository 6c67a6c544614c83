"""The Collector configs, docker-compose stack, Prometheus config and Grafana dashboard agree with each other and with
the metric names a real run emits (no container engine needed: everything is checked statically).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import runtel
from runtel import _sdk
from runtel.config import Settings
from runtel.gpu import open_backend
from runtel.rundir.reader import iter_jsonl
from runtel.sampling.monitor import Monitor
from runtel.testing import FakeGpu, FakeNvml

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR = ROOT / "collector-config"
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yaml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "runtel.json"
COLLECTOR_CONFIGS = sorted(COLLECTOR.glob("*.yaml"))
#: exporter type names valid for the pinned contrib collector (>= v0.144.0; old names are deprecated aliases)
KNOWN_EXPORTERS = {"otlp_grpc", "otlp_http", "otlp", "otlphttp", "prometheus", "debug", "file"}
KNOWN_RECEIVERS = {"otlp", "otlpjsonfile"}
KNOWN_PROCESSORS = {"memory_limiter", "batch"}

# --- Prometheus naming, as the Collector's prometheus exporter applies it (add_metric_suffixes: true) -------------
#: CONTRIB pkg/translator/prometheus/normalize_name.go unit map (the part runtel's units use)
UNIT_SUFFIX = {"By": "bytes", "s": "seconds", "ms": "milliseconds", "J": "joules", "W": "watts", "Cel": "celsius",
               "Hz": "hertz", "g": "grams", "%": "percent", "1": ""}


def prometheus_name(name: str, unit: str, kind: str, monotonic: bool = False) -> str:
    """The series name the Collector's prometheus exporter gives an OTel metric.

    Dots and other invalid characters become underscores; the unit becomes a suffix (``{annotation}`` units
    add nothing); gauges with unit ``1`` get ``_ratio``; monotonic sums get ``_total``.
    """
    base = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    base = re.sub(r"__+", "_", base).strip("_")
    suffix = "" if unit.startswith("{") else UNIT_SUFFIX.get(unit, re.sub(r"[^a-zA-Z0-9_]", "_", unit))
    if unit == "1" and kind == "gauge":
        suffix = "ratio"
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    if kind == "sum" and monotonic and not base.endswith("_total"):
        base += "_total"
    return base


def label_name(key: str) -> str:
    """An attribute key as a Prometheus label (``host.name`` → ``host_name``)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def test_prometheus_name_converter_matches_the_documented_examples() -> None:
    """The converter reproduces the reference translations (otel-reference.md section 3.2)."""
    assert prometheus_name("hw.gpu.utilization", "1", "gauge") == "hw_gpu_utilization_ratio"
    assert prometheus_name("hw.energy", "J", "sum", monotonic=True) == "hw_energy_joules_total"
    assert prometheus_name("hw.gpu.memory.usage", "By", "sum") == "hw_gpu_memory_usage_bytes"
    assert prometheus_name("process.cpu.time", "s", "sum", monotonic=True) == "process_cpu_time_seconds_total"
    assert prometheus_name("process.thread.count", "{thread}", "sum") == "process_thread_count"
    assert prometheus_name("hw.temperature", "Cel", "gauge") == "hw_temperature_celsius"


# --- a real run's metrics ----------------------------------------------------------------------------------------


@pytest.fixture
def emitted(rt_sampling: Settings) -> tuple[set[str], set[str]]:
    """Prometheus series names and label names from a real run's metrics.jsonl (sampler on, one fake GPU)."""
    runtime = _sdk.get_runtime()
    assert runtime is not None
    nvml = FakeNvml([FakeGpu(utilization=0.5, memory_used=2**30)])
    runtime.monitor = Monitor.open(rt_sampling, gpu_backend=open_backend("nvml", env={}, nvml_module=nvml))
    with runtel.run_span("stack-files") as run:
        time.sleep(0.5)
    assert run.dir is not None
    names: set[str] = set()
    labels: set[str] = {"job", "instance"}
    for line in iter_jsonl(Path(run.dir) / "metrics.jsonl"):
        for rm in line["resourceMetrics"]:
            labels |= {label_name(a["key"]) for a in rm["resource"]["attributes"]}  # resource_to_telemetry_conversion
            for sm in rm["scopeMetrics"]:
                for m in sm["metrics"]:
                    kind = next(k for k in ("sum", "gauge", "histogram") if k in m)
                    names.add(prometheus_name(m["name"], m.get("unit", ""), kind, bool(m[kind].get("isMonotonic"))))
                    for point in m[kind]["dataPoints"]:
                        labels |= {label_name(a["key"]) for a in point["attributes"]}
    return names, labels


# --- file helpers ------------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    """Parsed YAML (safe loader)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def expand(value: str) -> str:
    """Compose-style ``${VAR:-default}`` / ``${VAR}`` with the variables unset (defaults apply)."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)


def compose() -> dict[str, Any]:
    """docker-compose.yaml."""
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


def mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(host path, container path) of a service's bind mounts, defaults expanded, host paths absolute."""
    for volume in service.get("volumes", ()):
        source, target = expand(volume).split(":")[:2]
        yield str((DOCKER / source).resolve()) if source.startswith(".") else source, target


def published(service: dict[str, Any]) -> set[int]:
    """Container ports a service publishes."""
    return {int(str(p).split(":")[-1].split("/")[0]) for p in service.get("ports", ())}


def host_port(endpoint: str) -> tuple[str, int]:
    """``host:port`` (optionally with a scheme) split."""
    endpoint = endpoint.split("://")[-1].split("/")[0]
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


def dashboard() -> dict[str, Any]:
    """The provisioned Grafana dashboard."""
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def expressions(dash: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard (panel targets and template-variable queries)."""
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", ())]
    for var in dash["templating"]["list"]:
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        exprs.append(query)
    return exprs


# --- tests: syntax -----------------------------------------------------------------------------------------------


def test_every_stack_file_parses() -> None:
    """Every YAML and JSON file under collector-config/ and docker/ parses."""
    files = [*COLLECTOR.rglob("*.yaml"), *DOCKER.rglob("*.yaml"), *DOCKER.rglob("*.yml"), *DOCKER.rglob("*.json")]
    assert len(files) >= 8
    for path in files:
        data = json.loads(path.read_text()) if path.suffix == ".json" else load_yaml(path)
        assert isinstance(data, dict) and data, f"{path} is empty"


# --- tests: collector configs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_collector_config_is_consistent(path: Path) -> None:
    """Pipelines use defined components of known types; memory_limiter runs first, batch second; OTLP binds 0.0.0.0."""
    config = load_yaml(path)
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}
    for section, known in (("receivers", KNOWN_RECEIVERS), ("processors", KNOWN_PROCESSORS),
                           ("exporters", KNOWN_EXPORTERS)):
        for name in config[section]:
            assert name.split("/")[0] in known, f"{path.name}: unknown {section[:-1]} type {name!r}"
        for pipeline in pipelines.values():
            for name in pipeline[section]:
                assert name in config[section], f"{path.name}: {name!r} used but not defined"
    for pipeline in pipelines.values():
        assert pipeline["processors"][:2] == ["memory_limiter", "batch"]
    assert config["processors"]["memory_limiter"]["check_interval"] != "0s"
    otlp = config["receivers"].get("otlp")
    if otlp is not None:
        assert otlp["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
        assert otlp["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    assert "otlp" not in config["exporters"], "use the current name otlp_grpc/<name>"
    assert config["exporters"]["prometheus"]["resource_to_telemetry_conversion"]["enabled"] is True


def test_replay_config_reads_run_folders_from_the_beginning() -> None:
    """otel-collector-replay.yaml: spans.jsonl in the traces pipeline, metrics.jsonl in metrics, start_at beginning."""
    config = load_yaml(COLLECTOR / "otel-collector-replay.yaml")
    receivers = config["receivers"]
    pipelines = config["service"]["pipelines"]
    by_signal = {"traces": "spans.jsonl", "metrics": "metrics.jsonl"}
    for signal, filename in by_signal.items():
        files = [r for r in pipelines[signal]["receivers"] if r.startswith("otlpjsonfile")]
        assert files, f"no otlpjsonfile receiver in the {signal} pipeline"
        for name in files:
            assert receivers[name]["start_at"] == "beginning"
            stem = filename.removesuffix(".jsonl")  # spans.jsonl and its rotated segments spans.2.jsonl, ...
            assert all(glob.endswith(("/" + filename, f"/{stem}.*.jsonl")) for glob in receivers[name]["include"])
    _, collector_mounts = zip(*mounts(compose()["services"]["otel-collector"]), strict=True)
    assert "/runs" in collector_mounts
    assert all(g.startswith("/runs/") for r in receivers if r.startswith("otlpjsonfile") for g in receivers[r]["include"])


def test_files_config_writes_json_lines_to_the_mounted_volume() -> None:
    """otel-collector-files.yaml writes OTLP/JSON files under /data, which compose mounts writable."""
    config = load_yaml(COLLECTOR / "otel-collector-files.yaml")
    files = {k: v for k, v in config["exporters"].items() if k.startswith("file")}
    assert {"file/traces", "file/metrics"} <= set(files)
    assert all(v["path"].startswith("/data/") and v.get("format", "json") == "json" for v in files.values())
    assert "file/traces" in config["service"]["pipelines"]["traces"]["exporters"]
    assert "file/metrics" in config["service"]["pipelines"]["metrics"]["exporters"]
    targets = dict((t, s) for s, t in mounts(compose()["services"]["otel-collector"]))
    assert "/data" in targets and Path(targets["/data"]).is_dir()


# --- tests: compose ------------------------------------------------------------------------------------------------


def test_compose_images_are_pinned() -> None:
    """Every image has an exact version tag (no latest, no bare major)."""
    services = compose()["services"]
    assert {"otel-collector", "jaeger", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: {image} is not pinned"
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image} needs an exact x.y.z tag"
    assert services["otel-collector"]["image"].startswith("otel/opentelemetry-collector-contrib:")
    minor = int(services["otel-collector"]["image"].rsplit(":", 1)[1].split(".")[1])
    assert minor >= 144, "otlp_grpc exporter names need collector >= 0.144.0"
    assert services["jaeger"]["image"].startswith("jaegertracing/jaeger:2.")


def test_compose_collector_publishes_otlp_and_mounts_its_config() -> None:
    """The collector publishes 4317/4318 and its config file (default and every variant) exists at the mount source."""
    collector = compose()["services"]["otel-collector"]
    assert {4317, 4318} <= published(collector)
    targets = {t: s for s, t in mounts(collector)}
    source = targets["/etc/otelcol-contrib/config.yaml"]
    assert Path(source).is_file(), source
    assert Path(source).parent == COLLECTOR
    raw = next(v for v in collector["volumes"] if v.endswith("/etc/otelcol-contrib/config.yaml:ro"))
    assert "${OTELCOL_CONFIG:-otel-collector.yaml}" in raw
    assert "--config=/etc/otelcol-contrib/config.yaml" in collector["command"]


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_collector_exporters_name_compose_services(path: Path) -> None:
    """OTLP exporter endpoints point at compose services; the prometheus exporter port is what Prometheus scrapes."""
    services = compose()["services"]
    config = load_yaml(path)
    for name, exporter in config["exporters"].items():
        if name.split("/")[0] in ("otlp_grpc", "otlp_http", "otlp", "otlphttp"):
            host, port = host_port(exporter["endpoint"])
            assert host in services, f"{path.name}: {name} sends to unknown host {host!r}"
            assert port in (4317, 4318)
    _, prom_port = host_port(config["exporters"]["prometheus"]["endpoint"])
    scrape = load_yaml(DOCKER / "prometheus" / "prometheus.yml")
    targets = [t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert f"otel-collector:{prom_port}" in targets


def test_prometheus_and_grafana_mounts_exist() -> None:
    """Prometheus's config and Grafana's provisioning/dashboards folders exist where compose mounts them from."""
    services = compose()["services"]
    prom = {t: s for s, t in mounts(services["prometheus"])}
    assert Path(prom["/etc/prometheus/prometheus.yml"]).is_file()
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    graf = {t: s for s, t in mounts(services["grafana"])}
    provisioning = Path(graf["/etc/grafana/provisioning"])
    assert (provisioning / "datasources" / "datasources.yaml").is_file()
    provider = load_yaml(provisioning / "dashboards" / "dashboards.yaml")["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert (Path(graf["/var/lib/grafana/dashboards"]) / DASHBOARD.name).is_file()
    assert {3000} <= published(services["grafana"]) and {16686} <= published(services["jaeger"])
    assert {9090} <= published(services["prometheus"])


def test_grafana_datasources_point_at_compose_services_and_match_the_dashboard() -> None:
    """Datasource URLs name compose services on the right ports; the dashboard uses only provisioned uids."""
    services = compose()["services"]
    sources = load_yaml(DOCKER / "grafana" / "provisioning" / "datasources" / "datasources.yaml")["datasources"]
    by_type = {s["type"]: s for s in sources}
    assert host_port(by_type["prometheus"]["url"]) == ("prometheus", 9090)
    assert host_port(by_type["jaeger"]["url"]) == ("jaeger", 16686)
    assert all(host_port(s["url"])[0] in services for s in sources)
    uids = {s["uid"] for s in sources}
    used = {p["datasource"]["uid"] for p in dashboard()["panels"]}
    used |= {t["datasource"]["uid"] for p in dashboard()["panels"] for t in p["targets"]}
    assert used <= uids


# --- tests: the dashboard against a real run --------------------------------------------------------------------


def test_dashboard_queries_use_only_emitted_metric_names(emitted: tuple[set[str], set[str]]) -> None:
    """Every metric name and label in the dashboard's PromQL exists in a real run's (converted) metrics."""
    names, labels = emitted
    assert "process_cpu_time_seconds_total" in names and "hw_gpu_utilization_ratio" in names
    used_names: set[str] = set()
    used_labels: set[str] = set()
    for expr in expressions(dashboard()):
        used_names |= set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr))
        used_labels |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*=~?\s*\"", expr))
        used_labels |= {lbl.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for lbl in group.split(",")}
        used_labels |= set(re.findall(r"label_values\([^,]*,\s*(\w+)\)", expr))
    assert used_names, "no metric selectors found"
    assert used_names <= names, f"not emitted: {sorted(used_names - names)}"
    assert used_labels <= labels, f"labels not emitted: {sorted(used_labels - labels)}"


def test_dashboard_covers_resources_filters_and_links_to_jaeger() -> None:
    """CPU, RAM, GPU utilisation/memory, power and energy panels; host and run-id variables; a run → trace link."""
    dash = dashboard()
    assert dash["uid"] == "runtel"
    exprs = " ".join(expressions(dash))
    for needed in ("process_cpu_time_seconds_total", "process_memory_usage_bytes", "hw_gpu_utilization_ratio",
                   "hw_gpu_memory_usage_bytes", "hw_power_watts", "hw_energy_joules_total"):
        assert needed in exprs
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"host", "run_id"} <= set(variables)
    for panel in dash["panels"]:
        for target in panel["targets"]:
            assert "$run_id" in target["expr"] and "$host" in target["expr"], panel["title"]
    links = json.dumps([p.get("fieldConfig", {}) for p in dash["panels"]])
    assert "16686/search" in links and "runtel.run.id" in links.replace("%22", '"')
