"""Observable instruments: names, units and attributes via a real MeterProvider; callbacks read only `latest`.

Also runtel's own path without a MeterProvider: the instruments registered on a RecordingMeter and
collected by RunMetrics into the run folder's metrics.jsonl and to SDK metric exporters.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider, ObservableCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from runtel import semconv
from runtel._guard import reset_log_once
from runtel._sdk.metrics import RecordingMeter, RunMetrics, observed_run_ids
from runtel.energy.base import EnergyReading
from runtel.gpu.nvml import open_nvml
from runtel.rundir.otlp_json import attributes_from_otlp
from runtel.rundir.writer import LineFile
from runtel.sampling.instruments import register_instruments
from runtel.sampling.proctree import ProcessTree
from runtel.sampling.sampler import Sampler
from runtel.sampling.samples import GpuReading, ProcessStats, Snapshot, SystemStats
from runtel.testing.nvml import FakeGpu, FakeNvml

UUID = "GPU-1234"


def snapshot(scale: int) -> Snapshot:
    main = ProcessStats(
        cpu_time_s=3.0 * scale,
        cpu_user_s=2.0 * scale,
        cpu_system_s=1.0 * scale,
        cpu_utilization=1.5,
        cpu_user_utilization=1.0,
        rss_bytes=100 * scale,
        vms_bytes=1000 * scale,
        uss_bytes=80 * scale,
        pss_bytes=90 * scale,
        threads=4,
        processes=1,
    )
    empty = ProcessStats()
    return Snapshot(
        time_ns=scale,
        monotonic_s=float(scale),
        main=main,
        descendants=empty,
        combined=main,
        system=SystemStats(0.25, 600 * scale, 400, 1000 * scale, 10, 50),
        gpus=(
            GpuReading(
                uuid=UUID,
                utilization=0.5,
                memory_used_bytes=2 * 2**30,
                memory_total_bytes=8 * 2**30,
                power_w=150.0,
                energy_j=10.0,
                temperature_c=70.0,
            ),
        ),
        energy=(
            EnergyReading("cpu:estimate", 36.0 * scale, True, "estimate", power_w=12.0),
            EnergyReading(f"gpu:{UUID}", 3600.0 * scale, False, "nvml", power_w=150.0),
        ),
        tree_gpu_memory_bytes=2**30,
        n_expected_cores=2,
        logical_cores=4,
    )


def make_sampler() -> Sampler:
    """A sampler over one fake NVIDIA GPU; tests set its ``latest`` snapshot themselves."""
    nvml = FakeNvml(gpus=[FakeGpu(uuid=UUID, name="NVIDIA T4")])
    return Sampler(
        interval=1.0,
        detail_interval=10.0,
        tree=ProcessTree([os.getpid()]),
        gpu=open_nvml(nvml, env={}),
        n_expected_cores=2,
    )


@pytest.fixture
def collected() -> Any:
    sampler = make_sampler()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    register_instruments(provider.get_meter("runtel"), sampler, lambda: ["run-a", "run-b"], carbon_intensity=360.0)

    def collect(snap: Snapshot | None) -> dict[str, tuple[str, list[tuple[dict[str, Any], float]]]]:
        sampler.latest = snap
        data = reader.get_metrics_data()
        out: dict[str, tuple[str, list[tuple[dict[str, Any], float]]]] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    points = [(dict(p.attributes or {}), p.value) for p in metric.data.data_points]  # type: ignore[union-attr]
                    out[metric.name] = (metric.unit or "", points)
        return out

    yield collect
    provider.shutdown()


def pick(points: list[tuple[dict[str, Any], float]], run: str = "run-a", /, **attrs: Any) -> list[float]:
    return [v for a, v in points if a.get(semconv.RUN_ID) == run and all(a.get(k) == x for k, x in attrs.items())]


def test_names_and_units(collected: Any) -> None:
    """Every instrument has its semantic-convention name and exact UCUM unit."""
    metrics = collected(snapshot(1))
    units = {name: unit for name, (unit, _) in metrics.items()}
    assert units == {
        semconv.PROCESS_CPU_TIME: "s",
        semconv.PROCESS_CPU_UTILIZATION: "1",
        semconv.PROCESS_MEMORY_USAGE: "By",
        semconv.PROCESS_MEMORY_VIRTUAL: "By",
        semconv.PROCESS_THREAD_COUNT: "{thread}",
        semconv.RUNTEL_PROCESS_COUNT: "{process}",
        semconv.SYSTEM_CPU_UTILIZATION: "1",
        semconv.SYSTEM_MEMORY_USAGE: "By",
        semconv.SYSTEM_MEMORY_LIMIT: "By",
        semconv.SYSTEM_PAGING_USAGE: "By",
        semconv.HW_GPU_UTILIZATION: "1",
        semconv.HW_GPU_MEMORY_USAGE: "By",
        semconv.HW_GPU_MEMORY_LIMIT: "By",
        semconv.HW_GPU_MEMORY_UTILIZATION: "1",
        semconv.HW_POWER: "W",
        semconv.HW_ENERGY: "J",
        semconv.HW_TEMPERATURE: "Cel",
        semconv.RUNTEL_PROCESS_GPU_MEMORY: "By",
        semconv.RUNTEL_EMISSIONS: "g",
    }


def test_values_come_from_latest_snapshot_per_run(collected: Any) -> None:
    """Values equal the swapped-in snapshot (not a fresh psutil read), once per active run id."""
    for scale in (1, 7):
        m = collected(snapshot(scale))
        mem = m[semconv.PROCESS_MEMORY_USAGE][1]
        assert pick(mem, **{semconv.SCOPE_ATTR: "main", semconv.MEMORY_KIND: "rss"}) == [100 * scale]
        assert pick(mem, "run-b", **{semconv.SCOPE_ATTR: "combined", semconv.MEMORY_KIND: "pss"}) == [90 * scale]
        cpu = m[semconv.PROCESS_CPU_TIME][1]
        assert pick(cpu, **{semconv.SCOPE_ATTR: "combined", semconv.CPU_MODE: "user"}) == [2.0 * scale]
        assert m[semconv.SYSTEM_MEMORY_LIMIT][1] and pick(m[semconv.SYSTEM_MEMORY_LIMIT][1]) == [1000 * scale]
        assert pick(m[semconv.HW_ENERGY][1], **{semconv.HW_TYPE: "cpu"}) == [36.0 * scale]


def test_cpu_utilization_semconv_and_cores_basis(collected: Any) -> None:
    """process.cpu.utilization is /logical cores by default and the sum of cores with basis=cores."""
    points = collected(snapshot(1))[semconv.PROCESS_CPU_UTILIZATION][1]
    user: dict[str, Any] = {semconv.SCOPE_ATTR: "combined", semconv.CPU_MODE: "user"}
    values = pick(points, **user)
    assert sorted(values) == [pytest.approx(0.25), pytest.approx(1.0)]
    assert pick(points, **user, **{semconv.CPU_UTILIZATION_BASIS: "cores"}) == [1.0]
    assert pick(points, **{semconv.SCOPE_ATTR: "combined", semconv.CPU_MODE: "system"}) == [0.125, 0.5]


def test_gpu_attributes(collected: Any) -> None:
    """GPU metrics carry hw.id=UUID, hw.name, hw.type=gpu, hw.vendor and hw.gpu.task=general."""
    m = collected(snapshot(1))
    ((attrs, value),) = [p for p in m[semconv.HW_GPU_UTILIZATION][1] if p[0][semconv.RUN_ID] == "run-a"]
    assert value == 0.5
    assert attrs[semconv.HW_ID] == UUID and attrs[semconv.HW_NAME] == "NVIDIA T4"
    assert (attrs[semconv.HW_TYPE], attrs[semconv.HW_VENDOR], attrs[semconv.HW_GPU_TASK]) == (
        "gpu",
        "nvidia",
        "general",
    )
    assert pick(m[semconv.HW_GPU_MEMORY_UTILIZATION][1]) == [0.25]
    energy = pick(m[semconv.HW_ENERGY][1], **{semconv.HW_TYPE: "gpu", semconv.ENERGY_SOURCE: "nvml"})
    assert energy == [3600.0]
    assert pick(m[semconv.HW_POWER][1], **{semconv.HW_TYPE: "cpu", semconv.ENERGY_ESTIMATED: True}) == [12.0]
    assert pick(m[semconv.HW_TEMPERATURE][1], **{semconv.HW_PARENT: UUID}) == [70.0]
    assert pick(m[semconv.RUNTEL_EMISSIONS][1]) == [pytest.approx((36.0 + 3600.0) / 3.6e6 * 360.0)]


def test_nothing_observed_without_snapshot(collected: Any) -> None:
    """Before the first sample no instrument reports a point."""
    metrics = collected(None)
    assert all(not points for _, points in metrics.values())


# --- RecordingMeter and RunMetrics ---------------------------------------------------------------------------

RESOURCE = Resource({"service.name": "trainer"})
SCOPE = InstrumentationScope("runtel", "0.0.0")
START_NS = 1_700_000_000_000_000_000


class RecordingExporter(MetricExporter):
    """A real SDK metric exporter that keeps what it is given (and whether it was shut down); like runtel's
    QuietMetricExporter it says in ``temporality`` which temporality it was built to prefer."""

    def __init__(self, preferred_temporality: dict[type, AggregationTemporality] | None = None) -> None:
        super().__init__(preferred_temporality=preferred_temporality)
        self.temporality = dict(preferred_temporality or {})
        self.received: list[MetricsData] = []
        self.shutdowns: list[float] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.received.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.shutdowns.append(timeout_millis)


Callback = Callable[[CallbackOptions], Iterable[Observation]]


def observing(values: list[float]) -> Callback:
    """A callback that observes the next value of ``values`` (for run ``run-a``) on each collection."""
    feed = iter(values)

    def callback(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(next(feed), {semconv.RUN_ID: "run-a"})]

    return callback


def metric_lines(path: Path) -> list[dict[str, dict[str, Any]]]:
    """Each line of a metrics.jsonl file as {metric name: metric message}."""
    out = []
    for raw in path.read_bytes().splitlines():
        message = json.loads(raw)
        ((rm,),) = [message["resourceMetrics"]]
        ((sm,),) = [rm["scopeMetrics"]]
        out.append({m["name"]: m for m in sm["metrics"]})
    return out


def sdk_points(data: MetricsData) -> dict[str, Any]:
    """{metric name: metric data} of the single resource/scope of an SDK MetricsData."""
    ((rm,),) = [data.resource_metrics]
    ((sm,),) = [rm.scope_metrics]
    return {m.name: m.data for m in sm.metrics}


def test_recording_meter_registers_what_the_sdk_meter_gets(tmp_path: Path) -> None:
    """runtel's instruments on a RecordingMeter have the same names, units, descriptions and kinds as on an SDK
    meter, and RunMetrics reports the same points the SDK does for the same snapshot."""
    sampler = make_sampler()
    sampler.latest = snapshot(3)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        register_instruments(provider.get_meter("runtel"), sampler, lambda: ["run-a"], carbon_intensity=360.0)
        data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    assert data is not None
    ((rm,),) = [data.resource_metrics]
    ((sm,),) = [rm.scope_metrics]

    def kind(metric_data: Any) -> str:
        if isinstance(metric_data, Sum):
            return "counter" if metric_data.is_monotonic else "up_down_counter"
        assert isinstance(metric_data, Gauge)
        return "gauge"

    sdk = {m.name: (m.unit, m.description, kind(m.data)) for m in sm.metrics}
    meter = RecordingMeter()
    register_instruments(meter, sampler, lambda: ["run-a"], carbon_intensity=360.0)
    recorded = {i.name: (i.unit, i.description, i.kind) for i in meter.instruments}
    assert len(recorded) == len(meter.instruments)  # each instrument registered once
    assert recorded == sdk
    assert len(recorded) == 19

    target = LineFile(tmp_path / "metrics.jsonl")
    exporter = RecordingExporter()
    run_metrics = RunMetrics(meter.instruments, json_file=lambda: target, exporters=[exporter], resource=RESOURCE,
                             scope=SCOPE, start_ns=START_NS)
    run_metrics.collect()

    def key(attributes: Any) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in dict(attributes).items()))

    def points(metric_data: Any) -> list[tuple[tuple[tuple[str, Any], ...], float]]:
        return sorted((key(p.attributes), p.value) for p in metric_data.data_points)

    expected = {m.name: points(m.data) for m in sm.metrics}
    assert {name: points(d) for name, d in sdk_points(exporter.received[0]).items()} == expected
    ((line,),) = [metric_lines(tmp_path / "metrics.jsonl")]
    from_line = {
        name: sorted(
            (key(attributes_from_otlp(p["attributes"])), int(p["asInt"]) if "asInt" in p else p["asDouble"])
            for p in (m.get("sum") or m["gauge"])["dataPoints"]
        )
        for name, m in line.items()
    }
    assert from_line == expected


def test_run_metrics_writes_one_cumulative_line_per_collect(tmp_path: Path) -> None:
    """Each collect appends one line; sums start at the run's start with cumulative temporality, gauges at 0."""
    meter = RecordingMeter()
    meter.create_observable_counter("test.counter", [observing([5, 8])], unit="s", description="a counter")
    meter.create_observable_up_down_counter("test.updown", [observing([4, -1])], unit="{thing}")
    meter.create_observable_gauge("test.gauge", [observing([0.5, 0.75])], unit="1")
    path = tmp_path / "metrics.jsonl"
    target = LineFile(path)
    run_metrics = RunMetrics(meter.instruments, json_file=lambda: target, exporters=[], resource=RESOURCE,
                             scope=SCOPE, start_ns=START_NS)
    run_metrics.collect()
    run_metrics.collect()
    lines = metric_lines(path)
    assert len(lines) == 2 and target.lines == 2
    for line, (counter, updown, gauge) in zip(lines, [("5", "4", 0.5), ("8", "-1", 0.75)], strict=True):
        for name, value, monotonic in (("test.counter", counter, True), ("test.updown", updown, False)):
            sum_ = line[name]["sum"]
            assert sum_["aggregationTemporality"] == 2 and sum_["isMonotonic"] is monotonic
            ((point,),) = [sum_["dataPoints"]]
            assert point["startTimeUnixNano"] == str(START_NS) and point["asInt"] == value
            assert int(point["timeUnixNano"]) > START_NS
            assert attributes_from_otlp(point["attributes"]) == {"runtel.run.id": "run-a"}
        ((point,),) = [line["test.gauge"]["gauge"]["dataPoints"]]
        assert "startTimeUnixNano" not in point and point["asDouble"] == gauge  # a gauge has no start (proto3: 0)
    assert lines[0]["test.counter"]["unit"] == "s" and lines[0]["test.counter"]["description"] == "a counter"
    assert "description" not in lines[1]["test.counter"], "a metric's description is written with its first point"
    times = [int(line["test.counter"]["sum"]["dataPoints"][0]["timeUnixNano"]) for line in lines]
    assert times[0] < times[1]


def test_run_folder_lines_are_compact_and_read_back_the_same_series(tmp_path: Path) -> None:
    """metrics.jsonl (docs/metrics.md, "Encoding"): the run id once per line on the Resource, a point only for a
    changed value (no line at all when nothing changed), every series in the first and the final (complete) line;
    stepping through the lines gives back every observed value. The OTLP exporter still gets every point with its
    run id."""
    from runtel.rundir.otlp_json import run_id_on_points

    meter = RecordingMeter()
    meter.create_observable_counter("test.counter", [observing([5, 5, 8, 8])], unit="s", description="a counter")
    meter.create_observable_gauge("test.gauge", [observing([0.5, 0.5, 0.5, 0.5])], unit="1")
    path = tmp_path / "metrics.jsonl"
    target = LineFile(path)
    exporter = RecordingExporter()
    file_resource = Resource({**RESOURCE.attributes, semconv.RUN_ID: "run-a"})
    run_metrics = RunMetrics(meter.instruments, json_file=lambda: target, exporters=[exporter], resource=RESOURCE,
                             scope=SCOPE, start_ns=START_NS, run_ids=("run-a",), file_resource=file_resource)
    for i in range(4):
        run_metrics.collect(complete=i == 3)
    raw = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert len(raw) == 3, "the unchanged second collection writes no line"
    lines = metric_lines(path)
    assert [sorted(line) for line in lines] == [["test.counter", "test.gauge"], ["test.counter"],
                                                 ["test.counter", "test.gauge"]]
    assert [line["test.counter"]["sum"]["dataPoints"][0]["asInt"] for line in lines] == ["5", "8", "8"]
    for message in raw:
        resource = attributes_from_otlp(message["resourceMetrics"][0]["resource"]["attributes"])
        assert resource == {"service.name": "trainer", semconv.RUN_ID: "run-a"}
        for metric in message["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]:
            for point in (metric.get("sum") or metric["gauge"])["dataPoints"]:
                assert point["attributes"] == []
    replayed = run_id_on_points(raw[0])
    assert "runtel.run.id" not in str(replayed["resourceMetrics"][0]["resource"])
    point = replayed["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]["dataPoints"][0]
    assert attributes_from_otlp(point["attributes"]) == {semconv.RUN_ID: "run-a"}
    assert len(exporter.received) == 4
    assert all(dict(p.attributes) == {semconv.RUN_ID: "run-a"} for data in exporter.received
               for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
               for p in m.data.data_points)


def test_a_new_file_segment_starts_with_every_series(tmp_path: Path) -> None:
    """After new_segment() (a rotated file) the next line holds every series and its description again."""
    meter = RecordingMeter()
    meter.create_observable_counter("test.counter", [observing([5, 5, 5])], unit="s", description="a counter")
    meter.create_observable_gauge("test.gauge", [observing([0.5, 0.75, 0.75])], unit="1")
    target = LineFile(tmp_path / "metrics.jsonl")
    run_metrics = RunMetrics(meter.instruments, json_file=lambda: target, exporters=[], resource=RESOURCE,
                             scope=SCOPE, start_ns=START_NS, run_ids=("run-a",))
    run_metrics.collect()
    run_metrics.collect()
    run_metrics.new_segment()
    run_metrics.collect()
    lines = metric_lines(tmp_path / "metrics.jsonl")
    assert [sorted(line) for line in lines] == [["test.counter", "test.gauge"], ["test.gauge"],
                                                 ["test.counter", "test.gauge"]]
    assert lines[2]["test.counter"]["description"] == "a counter"


def test_shared_instruments_observe_each_runs_own_id(tmp_path: Path) -> None:
    """Instruments registered once (the runtime does this per sampler) with observed_run_ids: two runs' collectors,
    even collecting at the same time in two threads, each write only their own run id; outside a collection
    the callbacks see no run and observe nothing."""
    import threading

    meter = RecordingMeter()
    sampler = make_sampler()
    sampler.latest = snapshot(1)  # what the callbacks read
    register_instruments(meter, sampler, observed_run_ids)
    targets = {name: LineFile(tmp_path / f"{name}.jsonl") for name in ("run-a", "run-b")}
    collectors = [RunMetrics(meter.instruments, json_file=lambda t=targets[name]: t, exporters=[], resource=RESOURCE,
                             scope=SCOPE, start_ns=START_NS, run_ids=(name,)) for name in targets]

    def hammer(metrics: RunMetrics) -> None:
        for _ in range(20):
            metrics.collect()

    threads = [threading.Thread(target=hammer, args=(m,)) for m in collectors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in targets:
        ids = {attributes_from_otlp(p["attributes"])[semconv.RUN_ID]
               for line in metric_lines(tmp_path / f"{name}.jsonl") for metric in line.values()
               for kind in ("sum", "gauge") if kind in metric for p in metric[kind]["dataPoints"]}
        assert ids == {name}
    assert observed_run_ids() == ()
    assert all(not list(cb(None)) for inst in meter.instruments for cb in inst.callbacks)  # type: ignore[arg-type]


def test_run_metrics_writes_nothing_without_observations(tmp_path: Path) -> None:
    """With no active run (callbacks observe nothing) a collection writes no line and exports nothing."""
    meter = RecordingMeter()
    meter.create_observable_counter("test.idle", [lambda _: []])
    path = tmp_path / "metrics.jsonl"
    exporter = RecordingExporter()
    RunMetrics(meter.instruments, json_file=lambda: LineFile(path), exporters=[exporter], resource=RESOURCE,
               scope=SCOPE, start_ns=START_NS).collect()
    assert not path.exists() and exporter.received == []


def test_delta_preferring_exporter_gets_differences(tmp_path: Path) -> None:
    """An exporter preferring delta for observable counters gets 5 then 3 (since the previous collection);
    up-down counters, other exporters and the run-folder line stay cumulative."""
    meter = RecordingMeter()
    meter.create_observable_counter("test.counter", [observing([5, 8])])
    meter.create_observable_up_down_counter("test.updown", [observing([4, 6])])
    delta = RecordingExporter({ObservableCounter: AggregationTemporality.DELTA})
    cumulative = RecordingExporter()
    path = tmp_path / "metrics.jsonl"
    target = LineFile(path)
    run_metrics = RunMetrics(meter.instruments, json_file=lambda: target, exporters=[delta, cumulative],
                             resource=RESOURCE, scope=SCOPE, start_ns=START_NS)
    run_metrics.collect()
    run_metrics.collect()
    assert len(delta.received) == len(cumulative.received) == 2

    first, second = (sdk_points(d) for d in delta.received)
    (p1,), (p2,) = first["test.counter"].data_points, second["test.counter"].data_points
    assert first["test.counter"].aggregation_temporality == AggregationTemporality.DELTA
    assert (p1.value, p1.start_time_unix_nano) == (5, START_NS)
    assert (p2.value, p2.start_time_unix_nano) == (3, p1.time_unix_nano)
    assert p2.time_unix_nano > p1.time_unix_nano
    (u2,) = second["test.updown"].data_points
    assert second["test.updown"].aggregation_temporality == AggregationTemporality.CUMULATIVE
    assert (u2.value, u2.start_time_unix_nano) == (6, START_NS)

    plain = [sdk_points(d)["test.counter"] for d in cumulative.received]
    cumulative_ = AggregationTemporality.CUMULATIVE
    assert [(m.aggregation_temporality, m.data_points[0].value, m.data_points[0].start_time_unix_nano)
            for m in plain] == [(cumulative_, 5, START_NS), (cumulative_, 8, START_NS)]
    line = metric_lines(path)[1]["test.counter"]["sum"]
    assert line["dataPoints"][0]["asInt"] == "8" and line["aggregationTemporality"] == 2


def test_failing_callback_is_logged_once_and_others_still_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A callback that raises is logged once (on a runtel logger); the other instruments are still written."""
    reset_log_once()
    caplog.set_level(logging.WARNING, logger="runtel")

    def broken(_: CallbackOptions) -> Iterable[Observation]:
        raise RuntimeError("sensor unplugged")

    meter = RecordingMeter()
    meter.create_observable_gauge("test.broken", [broken])
    meter.create_observable_gauge("test.ok", [observing([1.5, 2.5])])
    path = tmp_path / "metrics.jsonl"
    target = LineFile(path)
    exporter = RecordingExporter()
    run_metrics = RunMetrics(meter.instruments, json_file=lambda: target, exporters=[exporter], resource=RESOURCE,
                             scope=SCOPE, start_ns=START_NS)
    run_metrics.collect()
    run_metrics.collect()
    lines = metric_lines(path)
    assert [sorted(line) for line in lines] == [["test.ok"], ["test.ok"]]
    assert [line["test.ok"]["gauge"]["dataPoints"][0]["asDouble"] for line in lines] == [1.5, 2.5]
    assert [sorted(sdk_points(d)) for d in exporter.received] == [["test.ok"], ["test.ok"]]
    logged = [r for r in caplog.records if "test.broken" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].name.startswith("runtel") and "sensor unplugged" in logged[0].getMessage()


def test_shutdown_shuts_the_exporters_down_without_collecting() -> None:
    """shutdown() passes its timeout to every exporter's shutdown and exports nothing itself."""
    meter = RecordingMeter()
    meter.create_observable_counter("test.counter", [observing([1])])
    exporters = [RecordingExporter(), RecordingExporter()]
    run_metrics = RunMetrics(meter.instruments, json_file=None, exporters=exporters, resource=RESOURCE,
                             scope=SCOPE, start_ns=START_NS)
    run_metrics.shutdown(timeout_millis=1234)
    assert [e.shutdowns for e in exporters] == [[1234], [1234]]
    assert [e.received for e in exporters] == [[], []]
