"""The backend used when no GPU can be read: no devices, no readings."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from runtel.gpu.base import GpuDevice, GpuReading

__all__ = ("NullBackend",)


class NullBackend:
    """A :class:`~runtel.gpu.base.GpuBackend` with no devices.

    Args:
        reason: Why no real backend is in use (kept for diagnostics and the run record).
    """

    name = "none"

    def __init__(self, reason: str = "") -> None:
        self.reason = reason

    def devices(self) -> Sequence[GpuDevice]:
        """No devices."""
        return ()

    def read(self, pids: Collection[int]) -> Sequence[GpuReading]:
        """No readings."""
        return ()

    def close(self) -> None:
        """Nothing to release."""
