"""The amdsmi backend against a small fake module: units, N/A values, visibility, process filter."""

from __future__ import annotations

from typing import Any

import pytest

from runtel.errors import BackendUnavailable
from runtel.gpu import open_backend
from runtel.gpu.amd import open_amd


class FakeAmdSmi:
    """Just enough of amdsmi's Python API (dict results, MB for VRAM, W for power)."""

    class AmdSmiException(Exception):
        pass

    class AmdSmiTemperatureType:
        EDGE = 0

    class AmdSmiTemperatureMetric:
        CURRENT = 0

    def __init__(self, n: int = 2) -> None:
        self.handles = [f"h{i}" for i in range(n)]

    def amdsmi_init(self) -> None:
        pass

    def amdsmi_shut_down(self) -> None:
        pass

    def amdsmi_get_processor_handles(self) -> list[str]:
        return self.handles

    def amdsmi_get_gpu_device_uuid(self, h: str) -> str:
        return f"uuid-{h}"

    def amdsmi_get_gpu_asic_info(self, h: str) -> dict[str, Any]:
        return {"market_name": "AMD Instinct MI250X"}

    def amdsmi_get_gpu_driver_info(self, h: str) -> dict[str, Any]:
        return {"driver_version": "6.7.0"}

    def amdsmi_get_gpu_vram_usage(self, h: str) -> dict[str, Any]:
        return {"vram_total": 65536, "vram_used": 1024}

    def amdsmi_get_gpu_activity(self, h: str) -> dict[str, Any]:
        return {"gfx_activity": 75, "umc_activity": "N/A", "mm_activity": "N/A"}

    def amdsmi_get_power_info(self, h: str) -> dict[str, Any]:
        return {"current_socket_power": "N/A", "average_socket_power": 300}

    def amdsmi_get_energy_count(self, h: str) -> dict[str, Any]:
        return {"energy_accumulator": 1_000_000, "counter_resolution": 15.3}

    def amdsmi_get_temp_metric(self, h: str, sensor: int, metric: int) -> int:
        raise self.AmdSmiException("not supported on this ASIC")

    def amdsmi_get_gpu_process_list(self, h: str) -> list[dict[str, Any]]:
        return [{"pid": 42, "memory_usage": {"vram_mem": 4096}}, {"pid": 7, "memory_usage": {"vram_mem": 1}}]


def test_amd_readings_in_si_units() -> None:
    """MB -> bytes, percent -> fraction, average power when current is N/A, accumulator x resolution uJ -> J."""
    backend = open_amd(FakeAmdSmi(), env={})
    dev = backend.devices()[0]
    assert (dev.name, dev.vendor, dev.memory_total_bytes) == ("AMD Instinct MI250X", "amd", 65536 * 2**20)
    reading = backend.read({42})[0]
    assert reading.utilization == 0.75 and reading.memory_used_bytes == 1024 * 2**20
    assert reading.power_w == 300.0 and reading.energy_j == pytest.approx(15.3)
    assert reading.temperature_c is None
    assert dict(reading.process_memory_bytes) == {42: 4096}


def test_amd_visible_devices_and_missing_module() -> None:
    """HIP_VISIBLE_DEVICES selects devices; without amdsmi the explicit 'amd' backend is the null one."""
    backend = open_amd(FakeAmdSmi(), env={"HIP_VISIBLE_DEVICES": "1"})
    assert [d.uuid for d in backend.devices()] == ["uuid-h1"]
    with pytest.raises(BackendUnavailable):
        open_amd(FakeAmdSmi(n=0), env={})
    assert open_backend("amd", env={}, amdsmi_module=FakeAmdSmi(n=0)).name == "none"
