"""A whole run on a (faked) GPU machine: inventory in run.json, hw.* metrics, per-block GPU usage.

The GPU is faked at the NVML function boundary only: ``FakeNvml`` stands in for the ``pynvml``
module that runtel imports; everything else (sampler, instruments, exporters, files) is real.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import runtel
from runtel import semconv
from runtel.testing import FakeGpu, FakeNvml, isolated, read_run

UUID_A = "GPU-aaaaaaaa-0000-0000-0000-000000000001"
UUID_B = "GPU-bbbbbbbb-0000-0000-0000-000000000002"


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNvml]:
    """Two GPUs; this process uses 3 GiB on the second one."""
    nvml = FakeNvml(
        [
            FakeGpu(name="NVIDIA A100-SXM4-40GB", uuid=UUID_A, utilization=0.1, power_w=60.0),
            FakeGpu(name="NVIDIA H100 80GB HBM3", uuid=UUID_B, memory_total=80 * 2**30, memory_used=5 * 2**30,
                    utilization=0.9, power_w=300.0, processes={os.getpid(): 3 * 2**30}),
        ]
    )
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    yield nvml


def _metric_points(folder: Path) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        for rm in json.loads(line)["resourceMetrics"]:
            resource = {a["key"]: next(iter(a["value"].values())) for a in rm["resource"]["attributes"]}
            for sm in rm["scopeMetrics"]:
                for metric in sm["metrics"]:
                    kind = next(k for k in ("sum", "gauge", "histogram") if k in metric)
                    for point in metric[kind]["dataPoints"]:
                        attrs = {a["key"]: next(iter(a["value"].values())) for a in point["attributes"]}
                        assert semconv.RUN_ID not in attrs, "the file states the run id once, on the Resource"
                        attrs[semconv.RUN_ID] = resource[semconv.RUN_ID]
                        out.setdefault(metric["name"], []).append(attrs)
    return out


def test_visible_gpu_recorded_and_measured(fake_nvml: FakeNvml, runs_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA_VISIBLE_DEVICES=1 keeps only the second GPU: inventory, hw.* metrics and block usage all use it."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with isolated(runs_dir, sampling=True, sample_interval=0.05, metric_interval=0.1, gpu_backend="nvml"):
        with runtel.run_span("gpu-job") as run:
            with runtel.block("gpu-work"):
                time.sleep(0.4)
    record, spans = read_run(run.dir)  # type: ignore[arg-type]
    gpus = record["environment"]["machine"]["gpus"]
    assert [g["uuid"] for g in gpus] == [UUID_B]
    assert gpus[0]["name"] == "NVIDIA H100 80GB HBM3"
    points = _metric_points(run.dir)  # type: ignore[arg-type]
    for name in (semconv.HW_GPU_UTILIZATION, semconv.HW_GPU_MEMORY_USAGE, semconv.HW_POWER, semconv.HW_ENERGY):
        assert name in points, name
    assert {p[semconv.HW_ID] for p in points[semconv.HW_GPU_UTILIZATION]} == {UUID_B}
    assert all(p[semconv.RUN_ID] == run.id for pts in points.values() for p in pts)
    block = next(s for s in spans if s.name == "gpu-work")
    assert block.attributes[semconv.USAGE_PREFIX + "samples"] > 0
    usage = record["resource_usage"]
    assert usage["max_gpu_ram"]["tree_bytes"] == 3 * 2**30
    assert usage["gpu_utilization"]["max_fraction"] == pytest.approx(0.9)
    assert usage["energy"]["total_joules"] > 0


def test_gpu_failing_mid_run_keeps_the_run_going(fake_nvml: FakeNvml, runs_dir: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A GPU that starts failing (NVML_ERROR_GPU_IS_LOST) is logged once; the run and CPU sampling go on."""
    with isolated(runs_dir, sampling=True, sample_interval=0.05, metric_interval=0.1, gpu_backend="nvml",
                  strict=False):
        with runtel.run_span("lost-gpu") as run:
            time.sleep(0.15)
            fake_nvml.lose(UUID_A)
            time.sleep(0.3)
    record, _ = read_run(run.dir)  # type: ignore[arg-type]
    assert record["status"] == "ok"
    assert record["resource_usage"]["max_ram"]["combined"]["max_rss_bytes"] > 0
    lost = [r for r in caplog.records if UUID_A in r.getMessage()]
    assert 1 <= len(lost) <= 2  # once per failing call kind, not once per sample
