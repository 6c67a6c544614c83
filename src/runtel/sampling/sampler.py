"""The sampling engine: an anyio event loop in its own daemon thread that snapshots resources on a schedule.

Design (see docs/metrics.md, "How sampling works"):

* :meth:`Sampler.start` runs ``anyio.run`` in a daemon thread named ``runtel-sampler``; it never touches the
  user's event loop, and a program that exits without :meth:`Sampler.stop` is not held up by it.
* Each tick runs the blocking reads in worker threads (``anyio.to_thread.run_sync(abandon_on_cancel=True)``):
  first the process tree, system memory and CPU energy, then the GPUs for the tree's pids. Each phase has its
  own ``CapacityLimiter(1)`` and ``move_on_after`` bound, and the GPU phase is skipped while an earlier GPU call
  is still stuck in the driver, so a hung NVML call costs at most one bounded wait and process samples keep
  coming.
* Deadlines are scheduled as ``start + k x interval`` (no drift); ticks missed during a stall are skipped, not
  replayed (no burst).
* After each tick the new :class:`~runtel.sampling.samples.Snapshot` is published by swapping
  :attr:`Sampler.latest` (one reference assignment) and appended to a bounded, time-sorted history that
  :meth:`Sampler.window` searches by bisection.
* :meth:`Sampler.sample_now` takes one sample synchronously in the calling thread (run start/end); a lock
  serialises it with the loop's reads, and its GPU read is bounded by a timeout too.
* Nothing raises into user code: an exception in a read is logged once per kind and the loop goes on.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from runtel.energy.base import EnergyReading, EnergySource
from runtel.energy.estimate import CpuEnergyEstimator
from runtel.energy.gpu import GpuEnergy
from runtel.gpu.base import GpuBackend, GpuReading
from runtel.sampling.proctree import ProcessTree, TreeRead
from runtel.sampling.samples import Snapshot, SystemStats
from runtel.sampling.system import SystemReader

if TYPE_CHECKING:
    from anyio import CancelScope, CapacityLimiter

    from runtel.sampling.edges import EdgeReader

__all__ = ("Sampler",)

_log = logging.getLogger("runtel.sampling")

#: seconds between starting the sampler and its background loop beginning (see ``Sampler._thread_main``)
START_DELAY_S = 0.05


class _ProcPart(NamedTuple):
    time_ns: int
    monotonic_s: float
    tree: TreeRead
    system: SystemStats | None
    energy: tuple[EnergyReading, ...]


class _GpuPart(NamedTuple):
    gpus: tuple[GpuReading, ...]
    energy: tuple[EnergyReading, ...]


def _threadsafe_cancel(scope: CancelScope) -> Callable[[], None] | None:
    """A function that cancels ``scope`` from another thread without waiting (``None`` off asyncio).

    ``anyio.from_thread.run_sync`` would wait for the loop to run the request, and wait forever if the
    loop ended on its own just before; scheduling the call with ``call_soon_threadsafe`` cannot block.
    """
    import asyncio  # deferred: asyncio, only when the sampler starts (~23 ms)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # another anyio backend: the loop still ends at its next tick
        return None

    def cancel() -> None:
        try:
            loop.call_soon_threadsafe(scope.cancel)
        except RuntimeError:  # the loop is closed: it has ended anyway
            pass

    return cancel


class Sampler:
    """Samples a process tree, the machine, GPUs and energy every ``interval`` seconds in a background thread.

    Args:
        interval: Seconds between samples (>= 0.05).
        detail_interval: Seconds between USS/PSS reads (slower; ~1 ms per process).
        tree: The processes to track.
        gpu: GPU backend (``NullBackend`` for none).
        energy: Hardware energy counters (RAPL); read every tick.
        estimate: CPU energy estimator used when there is no RAPL (``None`` = no CPU energy).
        n_expected_cores: Cores the job is expected to use (denominator of the hardware CPU share).
        history_limit: Snapshots kept in memory (oldest dropped first); 100k x ~1 KiB at 1 Hz = 28 h.
        clock: Wall clock in ns (snapshot timestamps, window selection).
        monotonic: Monotonic clock in s (rates, integrals).
        system: Machine stats reader (created when omitted).
        logical_cores: Logical CPUs of the machine (``os.cpu_count()`` when omitted).

    Example:
        >>> import os
        >>> from runtel.gpu.null import NullBackend
        >>> s = Sampler(interval=0.1, detail_interval=1.0, tree=ProcessTree([os.getpid()]), gpu=NullBackend(),
        ...             energy=(), estimate=None, n_expected_cores=1)
        >>> s.sample_now().combined.processes
        1
    """

    def __init__(
        self,
        *,
        interval: float,
        detail_interval: float,
        tree: ProcessTree,
        gpu: GpuBackend,
        energy: Sequence[EnergySource] = (),
        estimate: CpuEnergyEstimator | None = None,
        n_expected_cores: int,
        history_limit: int = 100_000,
        clock: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
        system: SystemReader | None = None,
        logical_cores: int | None = None,
    ) -> None:
        self.interval = max(0.05, float(interval))
        self.detail_interval = max(self.interval, float(detail_interval))
        self.tree = tree
        self.gpu = gpu
        self.energy = tuple(energy)
        self.estimate = estimate
        self.n_expected_cores = max(1, int(n_expected_cores))
        self.logical_cores = max(1, logical_cores or os.cpu_count() or 1)
        self.history_limit = max(1, int(history_limit))
        self._clock = clock
        self._monotonic = monotonic
        self._system = system
        self._gpu_energy = GpuEnergy(gpu)
        self._has_gpu = bool(gpu.devices())
        # A process read should never block, but give a big tree time; a GPU call may hang in the driver.
        self.proc_timeout = max(2.0, self.interval)
        self.gpu_timeout = max(0.5, self.interval)

        self.latest: Snapshot | None = None
        self._history: list[Snapshot] = []
        self._times: list[int] = []
        self._history_lock = threading.Lock()
        self._state_lock = threading.Lock()  # tree, system reader, energy sources, estimator
        self._gpu_lock = threading.Lock()  # held while a GPU call is in flight (possibly forever)
        self._gpu_busy_since: float | None = None  # monotonic start of the GPU call in flight
        self._last_detail: float | None = None
        self._logged: set[str] = set()

        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._cancel: Callable[[], None] | None = None
        self.ticks = 0
        #: the block edges, told this thread's CPU after its start-up and every tick (set by Monitor.open)
        self.edges: EdgeReader | None = None
        self._own_base_ns = 0

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background loop (idempotent); returns at once.

        The thread imports anyio and starts its event loop on its own (tens of milliseconds, once per
        process); a run's start does not wait for that: its edge samples are taken by the caller.
        """
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._cancel = None
        self._thread = threading.Thread(target=self._thread_main, name="runtel-sampler", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the background loop is alive."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the loop promptly (cancels a pending sleep or a stuck read) and join the thread."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()  # a loop not yet started (or between ticks) sees this and ends
        cancel = self._cancel  # set before the loop's first check of the flag: None means it will see it
        if cancel is not None and thread.is_alive():
            cancel()  # interrupts a sleep or a read in progress; never blocks, even if the loop just ended
        thread.join(timeout)
        if thread.is_alive():
            self._log_once("stop", logging.WARNING, "sampler thread did not stop within %.1f s", timeout)
        else:
            self._thread = None

    def close(self) -> None:
        """Stop and release the GPU backend."""
        self.stop()
        try:
            self.gpu.close()
        except Exception as exc:
            _log.debug("closing GPU backend: %s", exc)

    def _publish_own_cpu(self) -> None:
        """Tell the block edges this thread's CPU so far (its CPU is runtel's, not a block's: edges.py)."""
        edges = self.edges
        if edges is not None:
            edges.own_cpu_ns = self._own_base_ns + time.thread_time_ns()

    def _thread_main(self) -> None:
        edges = self.edges
        self._own_base_ns = edges.own_cpu_ns if edges is not None else 0  # cumulative over restarts
        try:
            self._loop()
        finally:
            self._publish_own_cpu()

    def _loop(self) -> None:
        try:
            # Importing anyio and starting a loop is ~20-40 ms of pure-Python work; begun at once it would
            # contend for the GIL with the run that just started (its edge sample's /proc reads wait for the
            # GIL after every read) and with the application's own start-up. The edges are sampled by the
            # caller, so the loop can begin a little later; a run that ends sooner never pays for it.
            if self._stopping.wait(START_DELAY_S):
                return
            import anyio  # deferred: anyio, only when the sampler starts (~5 ms)

            self._publish_own_cpu()
            anyio.run(self._main)
        except Exception as exc:  # never let the thread die noisily
            self._log_once(f"loop:{type(exc).__name__}", logging.WARNING, "sampler loop ended: %r", exc)

    async def _main(self) -> None:
        import anyio  # deferred: anyio, only when the sampler starts (~5 ms)

        proc_limiter = anyio.CapacityLimiter(1)
        gpu_limiter = anyio.CapacityLimiter(1)
        with anyio.CancelScope() as scope:
            self._cancel = _threadsafe_cancel(scope)
            deadline = anyio.current_time()
            while not self._stopping.is_set():  # stop() may have come before the cancel function existed
                try:
                    await self._tick(proc_limiter, gpu_limiter)
                except Exception as exc:
                    self._log_once(f"tick:{type(exc).__name__}", logging.WARNING, "sampler tick failed: %r", exc)
                self._publish_own_cpu()
                deadline += self.interval
                now = anyio.current_time()
                if deadline <= now:  # stalled: skip to the next slot on the original grid, no burst
                    deadline += math.ceil((now - deadline) / self.interval + 1e-9) * self.interval
                await anyio.sleep_until(deadline)

    async def _tick(self, proc_limiter: CapacityLimiter, gpu_limiter: CapacityLimiter) -> None:
        import anyio  # deferred: anyio, only when the sampler starts (~5 ms)
        import anyio.to_thread  # deferred: anyio, only when the sampler starts (~6 ms)

        proc: _ProcPart | None = None
        # Reads run in a worker thread under a deadline: USS/PSS reads take the target's mmap lock and can
        # stall, and (measured) a worker thread hands the GIL back to a user's event loop sooner than the
        # sampler's own loop thread does (p99 lateness +0.05 ms vs +0.5 ms at 10 Hz with 16 processes).
        with anyio.move_on_after(self.proc_timeout):
            proc = await anyio.to_thread.run_sync(
                self._read_proc,
                limiter=proc_limiter,
                abandon_on_cancel=True,
            )
        if proc is None:
            self._log_once("proc-timeout", logging.INFO, "process read skipped or took > %.1f s", self.proc_timeout)
            return
        gpu: _GpuPart | None = None
        if self._has_gpu:
            with anyio.move_on_after(self.gpu_timeout):
                gpu = await anyio.to_thread.run_sync(
                    self._read_gpu,
                    proc.tree.pids,
                    limiter=gpu_limiter,
                    abandon_on_cancel=True,
                )
            if gpu is None:
                self._log_once(
                    "gpu-timeout",
                    logging.WARNING,
                    "GPU read did not return within %.1f s; skipping it",
                    self.gpu_timeout,
                )
        self._publish(self._assemble(proc, gpu))
        self.ticks += 1

    # --- reads (worker threads or the caller of sample_now) ------------------------------------------------
    def _read_proc(self) -> _ProcPart | None:
        try:
            with self._state_lock:
                time_ns = self._clock()
                mono = self._monotonic()
                want_detail = self._last_detail is None or mono - self._last_detail >= self.detail_interval
                if want_detail:
                    self._last_detail = mono
                tree = self.tree.read(mono, want_detail)
                system = self._read_system()
                energy: list[EnergyReading] = []
                for source in self.energy:
                    try:
                        energy.append(source.read())
                    except Exception as exc:
                        self._log_once(f"energy:{source.domain}", logging.INFO, "energy %s: %s", source.domain, exc)
                if self.estimate is not None:
                    energy.append(self.estimate.update(mono, tree.combined.cpu_time_s))
                return _ProcPart(time_ns, mono, tree, system, tuple(energy))
        except Exception as exc:
            self._log_once(f"proc:{type(exc).__name__}", logging.WARNING, "process read failed: %r", exc)
            return None

    def _read_system(self) -> SystemStats | None:
        try:
            if self._system is None:
                self._system = SystemReader()
            return self._system.read()
        except Exception as exc:
            self._log_once(f"system:{type(exc).__name__}", logging.INFO, "system read failed: %r", exc)
            return None

    def _read_gpu(self, pids: set[int]) -> _GpuPart | None:
        if not self._gpu_lock.acquire(blocking=False):
            return None  # an earlier call is still stuck in the driver
        self._gpu_busy_since = self._monotonic()
        try:
            gpus = tuple(self.gpu.read(pids))
            return _GpuPart(gpus, self._gpu_energy.readings(gpus))
        except Exception as exc:
            self._log_once(f"gpu:{type(exc).__name__}", logging.WARNING, "GPU read failed: %r", exc)
            return None
        finally:
            self._gpu_busy_since = None
            self._gpu_lock.release()

    def gpu_edge_energy(self) -> tuple[EnergyReading, ...]:
        """Each GPU's cumulative energy now, read directly for a block edge (empty without a counter).

        Skipped while a sampler GPU call has been stuck in the driver for longer than ``gpu_timeout``, so an
        edge never waits on a hung driver twice (the first stuck call is the sampler's, off the user's thread).
        """
        counters = getattr(self.gpu, "energy_counters", None)
        if counters is None or not self._has_gpu:
            return ()
        busy = self._gpu_busy_since
        if busy is not None and self._monotonic() - busy > self.gpu_timeout:
            return ()
        source = self._gpu_energy.source
        return tuple(EnergyReading(f"gpu:{uuid}", joules, estimated, source) for uuid, joules, estimated in counters())

    def _read_gpu_bounded(self, pids: set[int]) -> _GpuPart | None:
        """GPU read for :meth:`sample_now`: in a helper thread so a hung driver cannot block the caller."""
        result: list[_GpuPart | None] = []
        done = threading.Event()

        def run() -> None:
            try:
                result.append(self._read_gpu(pids))
            finally:
                done.set()

        threading.Thread(target=run, name="runtel-gpu-read", daemon=True).start()
        if not done.wait(self.gpu_timeout):
            self._log_once("gpu-timeout", logging.WARNING, "GPU read did not return within %.1f s", self.gpu_timeout)
            return None
        return result[0] if result else None

    def _assemble(self, proc: _ProcPart, gpu: _GpuPart | None) -> Snapshot:
        gpus = () if gpu is None else gpu.gpus
        tree_gpu: int | None = None
        if gpus:
            # No tracked pid on any device -> the tree holds 0 bytes; pids present but sizes unavailable -> unknown.
            values = [v for r in gpus for v in r.process_memory_bytes.values()]
            known = [v for v in values if v is not None]
            tree_gpu = sum(known) if known or not values else None
        tree = proc.tree
        return Snapshot(
            time_ns=proc.time_ns,
            monotonic_s=proc.monotonic_s,
            main=tree.main,
            descendants=tree.descendants,
            combined=tree.combined,
            system=proc.system,
            gpus=gpus,
            energy=proc.energy + (() if gpu is None else gpu.energy),
            tree_gpu_memory_bytes=tree_gpu,
            n_expected_cores=self.n_expected_cores,
            logical_cores=self.logical_cores,
        )

    def _publish(self, snap: Snapshot) -> None:
        with self._history_lock:
            if not self._times or snap.time_ns >= self._times[-1]:
                self._times.append(snap.time_ns)
                self._history.append(snap)
                self.latest = snap
            else:  # a sample_now() that finished after a later loop tick: keep the history sorted
                i = bisect.bisect_right(self._times, snap.time_ns)
                self._times.insert(i, snap.time_ns)
                self._history.insert(i, snap)
            excess = len(self._history) - self.history_limit
            if excess > 0 and (excess >= self.history_limit // 8 or excess >= 1024 or self.history_limit < 64):
                del self._history[:excess]  # trimmed in batches: amortised O(1) per append
                del self._times[:excess]

    def sample_now(self) -> Snapshot | None:
        """Take one sample now in the calling thread (run start/end); ``None`` if it failed (logged once)."""
        try:
            proc = self._read_proc()
            if proc is None:
                return None
            gpu = self._read_gpu_bounded(proc.tree.pids) if self._has_gpu else None
            snap = self._assemble(proc, gpu)
            self._publish(snap)
            return snap
        except Exception as exc:
            self._log_once(f"now:{type(exc).__name__}", logging.WARNING, "sample_now failed: %r", exc)
            return None

    def set_roots(self, pids: Sequence[int], include_self: bool = False) -> None:
        """Track ``pids`` (and this process too when ``include_self``) from the next sample on."""
        roots = list(pids) + ([os.getpid()] if include_self else [])
        with self._state_lock:
            self.tree.set_roots(roots, include_roots=True, exclude_pids=() if include_self else (os.getpid(),))

    # --- history ------------------------------------------------------------------------------------------
    def _trimmed(self) -> tuple[list[int], list[Snapshot]]:
        excess = len(self._history) - self.history_limit
        if excess > 0:
            return self._times[excess:], self._history[excess:]
        return self._times, self._history

    def history_since(self, start_ns: int) -> list[Snapshot]:
        """Snapshots with ``time_ns >= start_ns``, oldest first."""
        with self._history_lock:
            times, hist = self._trimmed()
            return hist[bisect.bisect_left(times, start_ns) :]

    def window(self, start_ns: int, end_ns: int) -> list[Snapshot]:
        """Snapshots with ``start_ns <= time_ns <= end_ns``, oldest first (bisection, O(log n + k))."""
        with self._history_lock:
            times, hist = self._trimmed()
            return hist[bisect.bisect_left(times, start_ns) : bisect.bisect_right(times, end_ns)]

    def before(self, time_ns: int) -> Snapshot | None:
        """The last snapshot taken before ``time_ns`` (the baseline of cumulative counters for a window)."""
        with self._history_lock:
            times, hist = self._trimmed()
            index = bisect.bisect_left(times, time_ns)
            return hist[index - 1] if index > 0 else None

    def history(self) -> list[Snapshot]:
        """Every snapshot kept, oldest first."""
        with self._history_lock:
            return list(self._trimmed()[1])

    # --- logging ------------------------------------------------------------------------------------------
    def _log_once(self, kind: str, level: int, msg: str, *args: object) -> None:
        if kind in self._logged:
            return
        self._logged.add(kind)
        _log.log(level, msg, *args)
