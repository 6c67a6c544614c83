"""NVML backend against FakeNvml: errors where NVML documents them, units, filtering, mid-run failures."""

from __future__ import annotations

import builtins
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pynvml
import pytest

from runtel.errors import BackendUnavailable
from runtel.gpu import NullBackend, open_backend
from runtel.gpu import nvml as nvml_module
from runtel.gpu.base import parse_visible_devices
from runtel.gpu.nvml import format_cuda_version, open_nvml
from runtel.testing.nvml import FakeGpu, FakeNvml

UUID_A = "GPU-aaaaaaaa-1111-2222-3333-444444444444"
UUID_B = "GPU-bbbbbbbb-1111-2222-3333-444444444444"
UUID_C = "GPU-cccccccc-1111-2222-3333-444444444444"


class StepClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def three_gpus(clock: StepClock | None = None, **kw: Any) -> FakeNvml:
    gpus = [FakeGpu(uuid=u, power_w=100.0 * (i + 1)) for i, u in enumerate((UUID_A, UUID_B, UUID_C))]
    return FakeNvml(gpus=gpus, clock=clock or StepClock(), **kw)


def test_fake_raises_real_uninitialized_before_init() -> None:
    """Any call before nvmlInit raises pynvml's own NVML_ERROR_UNINITIALIZED subclass."""
    nvml = FakeNvml()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()


def test_fake_invalid_index_raises_invalid_argument() -> None:
    """nvmlDeviceGetHandleByIndex with an index >= count raises NVML_ERROR_INVALID_ARGUMENT."""
    nvml = FakeNvml(gpus=[FakeGpu()])
    nvml.nvmlInit()
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetHandleByIndex(1)


def test_missing_library_gives_null_backend_and_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """'auto' without libnvidia-ml (and no amdsmi) falls back to the null backend with exactly one log record."""
    caplog.set_level(logging.DEBUG, logger="runtel")
    nvml = FakeNvml(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    backend = open_backend("auto", env={}, nvml_module=nvml)
    assert isinstance(backend, NullBackend)
    records = [r for r in caplog.records if r.name.startswith("runtel")]
    assert len(records) == 1 and records[0].getMessage().startswith("no GPU backend:")
    assert records[0].levelno == logging.INFO


def test_pynvml_not_importable_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """open_nvml() without a module raises BackendUnavailable when importing pynvml fails."""
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pynvml":
            raise ImportError("no pynvml here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(nvml_module, "_nvml_library_loadable", lambda: True)  # as on a machine with a driver
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(BackendUnavailable, match="pynvml"):
        open_nvml(env={})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the library check is Linux-only")
def test_missing_driver_library_is_found_without_importing_pynvml(tmp_path: Path) -> None:
    """Without libnvidia-ml (these machines have no NVIDIA driver) open_nvml() says so and never imports pynvml,
    whose import alone costs ~15 ms. Checked in a fresh interpreter, where nothing imported pynvml before."""
    if nvml_module._nvml_library_loadable():
        pytest.skip("this machine has an NVIDIA driver")
    code = (
        "import sys\n"
        "from runtel.errors import BackendUnavailable\n"
        "from runtel.gpu.nvml import open_nvml\n"
        "try:\n"
        "    open_nvml(env={})\n"
        "except BackendUnavailable as exc:\n"
        "    print('unavailable:', exc)\n"
        "print('pynvml imported:', 'pynvml' in sys.modules)\n"
        "print('ctypes imported:', 'ctypes' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "unavailable: NVML init failed: no NVIDIA driver" in out
    assert "pynvml imported: False" in out
    if not any(os.path.exists(p) for p in nvml_module._DRIVER_PATHS):  # no driver at all: not even ctypes
        assert "ctypes imported: False" in out


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND])
def test_init_error_raises_backend_unavailable(code: int) -> None:
    """An NVMLError from nvmlInit becomes BackendUnavailable naming the NVML error."""
    with pytest.raises(BackendUnavailable, match="NVML init failed"):
        open_nvml(FakeNvml(init_error=code), env={})


def test_zero_devices_is_unavailable_and_shuts_down() -> None:
    """A driver with no GPU is unavailable, and the init is balanced by a shutdown."""
    nvml = FakeNvml(gpus=[])
    with pytest.raises(BackendUnavailable, match="no visible GPU"):
        open_nvml(nvml, env={})
    assert nvml.init_count == 0


def test_explicit_nvml_unavailable_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """Requesting 'nvml' where it cannot load returns the null backend and logs one warning."""
    caplog.set_level(logging.DEBUG, logger="runtel")
    backend = open_backend("nvml", env={}, nvml_module=FakeNvml(init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert backend.name == "none"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "nvml" in warnings[0].getMessage()


def test_inventory_of_one_gpu_with_bytes_strings() -> None:
    """Inventory decodes old-pynvml bytes and formats the CUDA version 12040 as '12.4'."""
    nvml = FakeNvml(gpus=[FakeGpu(name="NVIDIA A100-SXM4-40GB", uuid=UUID_A)], bytes_strings=True, cuda=12040)
    backend = open_nvml(nvml, env={})
    (dev,) = backend.devices()
    assert (dev.index, dev.uuid, dev.name) == (0, UUID_A, "NVIDIA A100-SXM4-40GB")
    assert dev.memory_total_bytes == 40 * 2**30
    assert (dev.driver_version, dev.cuda_version, dev.vendor) == ("550.54.15", "12.4", "nvidia")
    assert format_cuda_version(11080) == "11.8"


def test_readings_are_converted_to_si_units() -> None:
    """Percent becomes a fraction, mW becomes W, temperature stays in Celsius, memory stays in bytes."""
    gpu = FakeGpu(uuid=UUID_A, utilization=0.5, power_w=250.0, memory_used=3 * 2**30, temperature_c=61)
    backend = open_nvml(FakeNvml(gpus=[gpu], clock=StepClock()), env={})
    (reading,) = backend.read(())
    assert reading.utilization == 0.5
    assert reading.power_w == 250.0
    assert reading.memory_used_bytes == 3 * 2**30
    assert reading.memory_total_bytes == 40 * 2**30
    assert reading.temperature_c == 61.0


def test_several_gpus_report_in_order() -> None:
    """Every device yields one reading, in NVML order, each with its own power."""
    backend = open_nvml(three_gpus(), env={})
    readings = backend.read(())
    assert [r.uuid for r in readings] == [UUID_A, UUID_B, UUID_C]
    assert [r.power_w for r in readings] == [100.0, 200.0, 300.0]


def test_process_memory_only_for_tracked_pids() -> None:
    """Per-process GPU memory includes only the pids asked for; unavailable sizes stay None."""
    gpu = FakeGpu(uuid=UUID_A, processes={10: 1000, 11: 2000, 12: None})
    gpu.graphics_processes = {10: 500}
    backend = open_nvml(FakeNvml(gpus=[gpu]), env={})
    (reading,) = backend.read({10, 12, 99})
    assert dict(reading.process_memory_bytes) == {10: 1000, 12: None}


def test_energy_counter_is_millijoules_to_joules() -> None:
    """The total-energy counter (mJ since driver load) is reported in J and advances with power x time."""
    clock = StepClock()
    nvml = FakeNvml(gpus=[FakeGpu(uuid=UUID_A, power_w=200.0)], clock=clock)
    backend = open_nvml(nvml, env={}, clock=clock)
    first = backend.read(())[0]
    clock.now += 10.0
    second = backend.read(())[0]
    assert first.energy_j == pytest.approx(1000.0)  # 1,000,000 mJ at start
    assert first.energy_j is not None and second.energy_j is not None
    assert second.energy_j - first.energy_j == pytest.approx(2000.0)
    assert not second.energy_integrated


def test_energy_falls_back_to_power_integration_when_not_supported() -> None:
    """Pre-Volta (NOT_SUPPORTED) devices integrate power over time and mark the value as integrated."""
    clock = StepClock()
    nvml = FakeNvml(gpus=[FakeGpu(uuid=UUID_A, power_w=100.0, energy_supported=False)], clock=clock)
    backend = open_nvml(nvml, env={}, clock=clock)
    assert backend.read(())[0].energy_j == 0.0
    clock.now += 2.0
    nvml.set_power(UUID_A, 300.0)
    reading = backend.read(())[0]
    assert reading.energy_integrated
    assert reading.energy_j == pytest.approx((100.0 + 300.0) / 2 * 2.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", [UUID_B]),
        ("2,0", [UUID_C, UUID_A]),
        ("0,7,1", [UUID_A]),  # an invalid index ends the list, as in CUDA
        ("GPU-cccc", [UUID_C]),  # unique UUID prefix
        (UUID_B + ",0", [UUID_B, UUID_A]),
    ],
)
def test_cuda_visible_devices_filters_and_orders(value: str, expected: list[str]) -> None:
    """CUDA_VISIBLE_DEVICES selects devices by index or UUID prefix, in its order."""
    backend = open_nvml(three_gpus(), env={"CUDA_VISIBLE_DEVICES": value})
    assert [d.uuid for d in backend.devices()] == expected


@pytest.mark.parametrize("value", ["", "-1"])
def test_cuda_visible_devices_empty_hides_everything(value: str) -> None:
    """An empty CUDA_VISIBLE_DEVICES or -1 means no GPU, so NVML is unavailable."""
    with pytest.raises(BackendUnavailable):
        open_nvml(three_gpus(), env={"CUDA_VISIBLE_DEVICES": value})


def test_uuid_filter_combines_with_visible_devices() -> None:
    """The gpu_uuids setting narrows the visible devices further."""
    backend = open_nvml(three_gpus(), env={"CUDA_VISIBLE_DEVICES": "0,1"}, uuids=[UUID_B, UUID_C])
    assert [d.uuid for d in backend.devices()] == [UUID_B]
    assert parse_visible_devices(None, [UUID_A]) is None


def test_failing_call_leaves_field_empty_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    """A call that keeps failing (no permission) leaves only that field None and logs one line."""
    caplog.set_level(logging.INFO, logger="runtel")
    nvml = three_gpus()
    nvml.fail(UUID_B, "nvmlDeviceGetPowerUsage", pynvml.NVML_ERROR_NO_PERMISSION)
    backend = open_nvml(nvml, env={})
    for _ in range(3):
        readings = backend.read(())
    assert readings[1].power_w is None and readings[1].utilization is not None
    assert readings[0].power_w == 100.0
    lines = [r for r in caplog.records if "nvmlDeviceGetPowerUsage" in r.getMessage()]
    assert len(lines) == 1


def test_gpu_lost_mid_run_other_gpus_continue(caplog: pytest.LogCaptureFixture) -> None:
    """A GPU that falls off the bus after two reads reports None; others keep reporting; one warning."""
    caplog.set_level(logging.INFO, logger="runtel")
    nvml = three_gpus()
    nvml.fail(UUID_A, "*", pynvml.NVML_ERROR_GPU_IS_LOST, after_calls=12)
    backend = open_nvml(nvml, env={})
    history = [backend.read(()) for _ in range(5)]
    assert history[0][0].utilization == 0.0
    lost = history[-1][0]
    assert (lost.utilization, lost.power_w, lost.energy_j, lost.temperature_c) == (None, None, None, None)
    assert all(r[1].power_w == 200.0 and r[2].power_w == 300.0 for r in history)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and UUID_A in warnings[0].getMessage()


def test_unknown_error_marks_gpu_lost() -> None:
    """NVML_ERROR_UNKNOWN from a device is treated like a lost GPU."""
    nvml = three_gpus()
    nvml.fail(UUID_C, "nvmlDeviceGetUtilizationRates", pynvml.NVML_ERROR_UNKNOWN)
    backend = open_nvml(nvml, env={})
    readings = backend.read(())
    assert readings[2].power_w is None and readings[0].power_w == 100.0


def test_close_balances_init() -> None:
    """close() shuts NVML down once, however often it is called."""
    nvml = three_gpus()
    backend = open_nvml(nvml, env={})
    backend.close()
    backend.close()
    assert nvml.init_count == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the library check is Linux-only")
def test_driver_present_but_library_missing_is_checked_by_loading(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    """With a driver node present the check loads the library itself; where it is missing, the answer is no."""
    monkeypatch.setattr(nvml_module, "_DRIVER_PATHS", (str(tmp_path),))
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        expected = True
    except OSError:
        expected = False
    assert nvml_module._nvml_library_loadable() is expected
    monkeypatch.setattr(nvml_module, "_DRIVER_PATHS", (str(tmp_path / "absent"),))
    assert nvml_module._nvml_library_loadable() is False


class _HangingInit(FakeNvml):
    """nvmlInit never returns (a wedged driver)."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__([FakeGpu(uuid="GPU-hang")])
        self._release = release

    def nvmlInit(self) -> None:
        self._release.wait()


class _OSErrorInit(FakeNvml):
    """nvmlInit fails with an error that is not an NVMLError (ctypes, a broken driver install)."""

    def nvmlInit(self) -> None:
        raise OSError(5, "Input/output error")


def test_a_hanging_init_is_given_up_after_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    """open_backend returns the null backend with the reason instead of blocking run_span forever."""
    release = threading.Event()
    try:
        with caplog.at_level(logging.WARNING, logger="runtel.gpu"):
            backend = open_backend("nvml", env={}, nvml_module=_HangingInit(release), timeout=0.2)
        assert backend.name == "none"
        assert "did not finish opening within 0.2 s" in caplog.text
    finally:
        release.set()


@pytest.mark.parametrize("name", ["nvml", "auto"])
def test_an_init_error_of_any_type_switches_off_only_the_gpu(name: str) -> None:
    """An OSError from the driver is not an NVMLError; it still ends as 'no GPU', never as an exception."""
    backend = open_backend(name, env={}, nvml_module=_OSErrorInit(), amdsmi_module=None)
    assert isinstance(backend, NullBackend)
    assert "OSError: [Errno 5] Input/output error" in backend.reason
