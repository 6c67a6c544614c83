"""The sampler loop: cadence, prompt stop, hung GPU reads, sample_now, history windows, errors logged once."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection, Iterator, Sequence

import pytest

from runtel.gpu.base import GpuDevice, GpuReading
from runtel.gpu.null import NullBackend
from runtel.gpu.nvml import open_nvml
from runtel.sampling.proctree import ProcessTree
from runtel.sampling.sampler import START_DELAY_S, Sampler
from runtel.testing.nvml import FakeGpu, FakeNvml

DEVICE = GpuDevice(0, "GPU-slow", "Slow GPU", 1024, "1", "12.4", "nvidia")


class HangingGpu:
    """A GPU backend whose read blocks until released, like an NVML call stuck in the driver."""

    name = "nvml"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def devices(self) -> Sequence[GpuDevice]:
        return (DEVICE,)

    def read(self, pids: Collection[int]) -> Sequence[GpuReading]:
        self.calls += 1
        self.release.wait(30)
        return (GpuReading(uuid=DEVICE.uuid),)

    def close(self) -> None:
        self.release.set()


class BrokenGpu(HangingGpu):
    """A GPU backend whose read raises every time."""

    def read(self, pids: Collection[int]) -> Sequence[GpuReading]:
        self.calls += 1
        raise RuntimeError("driver exploded")


def make(gpu: object = None, interval: float = 0.1) -> Sampler:
    return Sampler(
        interval=interval,
        detail_interval=1.0,
        tree=ProcessTree([os.getpid()]),
        gpu=gpu or NullBackend(),  # type: ignore[arg-type]
        energy=(),
        estimate=None,
        n_expected_cores=1,
    )


@pytest.fixture
def hanging() -> Iterator[HangingGpu]:
    gpu = HangingGpu()
    yield gpu
    gpu.release.set()


def test_interval_is_roughly_honoured_and_stop_is_prompt() -> None:
    """At 0.1 s for ~1 s the loop takes 5-15 samples, and stop() returns well under 2 s."""
    sampler = make()
    sampler.start()
    time.sleep(1.0)
    started = time.monotonic()
    sampler.stop()
    assert time.monotonic() - started < 2.0
    assert not sampler.running
    assert 5 <= len(sampler.history()) <= 15
    assert sampler.latest is not None and sampler.latest.combined.processes >= 1


def test_stop_does_not_wait_for_a_long_interval() -> None:
    """With a 30 s interval, stop() still returns promptly (the sleep is cancelled)."""
    sampler = make(interval=30.0)
    sampler.start()
    time.sleep(0.2)
    started = time.monotonic()
    sampler.stop()
    assert time.monotonic() - started < 2.0
    assert len(sampler.history()) == 1


def test_hung_gpu_read_does_not_stop_process_samples(hanging: HangingGpu) -> None:
    """A GPU read that never returns costs one bounded wait; process samples keep coming, stop() is quick."""
    sampler = make(hanging)
    sampler.start()
    time.sleep(1.5)
    started = time.monotonic()
    sampler.stop()
    assert time.monotonic() - started < 2.0
    snaps = sampler.history()
    assert len(snaps) >= 5
    assert all(s.gpus == () for s in snaps)
    assert hanging.calls == 1  # never re-entered while stuck


def test_sample_now_is_bounded_when_gpu_hangs(hanging: HangingGpu) -> None:
    """sample_now() returns a process sample within the GPU timeout even when the driver hangs."""
    sampler = make(hanging)
    started = time.monotonic()
    snap = sampler.sample_now()
    assert time.monotonic() - started < 2.0
    assert snap is not None and snap.gpus == () and snap.combined.rss_bytes > 0


def test_read_errors_are_logged_once_and_loop_continues(caplog: pytest.LogCaptureFixture) -> None:
    """A GPU read that raises every tick is logged once; process samples continue."""
    caplog.set_level(logging.INFO, logger="runtel")
    gpu = BrokenGpu()
    sampler = make(gpu)
    sampler.start()
    time.sleep(0.6)
    sampler.stop()
    assert gpu.calls >= 3
    assert len(sampler.history()) >= 3
    assert len([r for r in caplog.records if "driver exploded" in r.getMessage()]) == 1


def test_sample_now_and_windows_by_time() -> None:
    """sample_now() publishes to latest and history; window()/history_since() select by wall time."""
    sampler = make()
    snaps = [sampler.sample_now() for _ in range(5)]
    assert all(s is not None for s in snaps)
    times = [s.time_ns for s in snaps if s is not None]
    assert sampler.latest is snaps[-1]
    assert [s.time_ns for s in sampler.window(times[1], times[3])] == times[1:4]
    assert [s.time_ns for s in sampler.history_since(times[3])] == times[3:]
    assert sampler.window(times[-1] + 1, times[-1] + 10) == []


def test_history_is_bounded() -> None:
    """The history keeps at most history_limit snapshots, dropping the oldest."""
    sampler = Sampler(
        interval=0.1,
        detail_interval=1.0,
        tree=ProcessTree([os.getpid()]),
        gpu=NullBackend(),
        n_expected_cores=1,
        history_limit=3,
    )
    snaps = [sampler.sample_now() for _ in range(6)]
    assert sampler.history() == snaps[-3:]


def test_gpu_readings_and_energy_reach_the_snapshot() -> None:
    """With a FakeNvml GPU the snapshot carries its reading, tree GPU memory and a gpu:<uuid> energy domain."""
    pid = os.getpid()
    nvml = FakeNvml(gpus=[FakeGpu(uuid="GPU-x", power_w=100.0, processes={pid: 5 * 2**20, 1: 7})])
    sampler = make(open_nvml(nvml, env={}))
    sampler.sample_now()
    snap = sampler.sample_now()
    assert snap is not None
    assert [g.uuid for g in snap.gpus] == ["GPU-x"]
    assert snap.tree_gpu_memory_bytes == 5 * 2**20
    assert [e.domain for e in snap.energy] == ["gpu:GPU-x"]
    assert snap.energy[0].source == "nvml"


def stop_within(sampler: Sampler, seconds: float) -> None:
    """Call stop() in a helper thread and fail (instead of hanging the test) if it does not return in time."""
    stopper = threading.Thread(target=sampler.stop, name="test-stopper", daemon=True)
    stopper.start()
    stopper.join(seconds)
    assert not stopper.is_alive(), f"Sampler.stop() did not return within {seconds} s"


def test_start_returns_at_once_and_stop_during_the_start_delay_is_prompt() -> None:
    """start() does not wait for the loop; stopped within START_DELAY_S, the thread ends before any tick."""
    sampler = make(interval=0.05)
    started = time.monotonic()
    sampler.start()
    assert time.monotonic() - started < START_DELAY_S
    assert sampler.running and sampler.ticks == 0
    stop_within(sampler, 0.5)
    assert not sampler.running
    time.sleep(2 * START_DELAY_S)  # nothing happens after the delay either
    assert sampler.ticks == 0 and sampler.history() == []


def test_loop_ticks_after_the_start_delay_and_stops() -> None:
    """After the start delay the loop samples at its interval; stop() ends it promptly."""
    sampler = make(interval=0.05)
    sampler.start()
    time.sleep(0.3)
    assert sampler.ticks > 0 and sampler.running
    stop_within(sampler, 1.0)
    assert not sampler.running
    ticks = sampler.ticks
    assert len(sampler.history()) == ticks
    time.sleep(0.1)
    assert sampler.ticks == ticks


def test_sampler_stopped_during_the_delay_can_start_again() -> None:
    """A stop during the start delay leaves the sampler restartable: the next start() ticks normally."""
    sampler = make(interval=0.05)
    sampler.start()
    stop_within(sampler, 0.5)
    assert not sampler.running and sampler.ticks == 0
    sampler.start()
    time.sleep(0.3)
    stop_within(sampler, 1.0)
    assert sampler.ticks > 0 and not sampler.running


def test_cancel_after_the_loop_ended_returns_at_once() -> None:
    """Regression: stop() cancelled the loop with a call that waits for the loop to run it, and waited forever
    when the loop had just ended on its own. The cancel function must return at once even then."""
    sampler = make(interval=0.05)
    sampler.start()
    deadline = time.monotonic() + 5
    while sampler.ticks == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    cancel = sampler._cancel
    assert cancel is not None
    sampler.stop()
    assert not sampler.running
    done = threading.Event()
    threading.Thread(target=lambda: (cancel(), done.set()), daemon=True).start()
    assert done.wait(1.0), "cancelling an ended loop blocked"


def test_stop_landing_as_the_loop_starts_never_blocks() -> None:
    """stop() issued around the end of the start delay (the loop starting up) returns within its timeout."""
    for i in range(20):
        sampler = make(interval=0.05)
        sampler.start()
        time.sleep(START_DELAY_S + (i % 10) * 0.0005)
        stopper = threading.Thread(target=sampler.stop, daemon=True)
        stopper.start()
        stopper.join(3.0)
        assert not stopper.is_alive(), f"stop() blocked (trial {i})"
        assert not sampler.running
