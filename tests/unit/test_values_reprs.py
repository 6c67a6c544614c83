"""runtel.values.reprs: safe_repr is bounded and never raises, arrays shown as a brief."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from values_cases import MB10, RaisingRepr

from runtel.values.reprs import safe_repr


def test_safe_repr_bounded() -> None:
    """safe_repr never exceeds its limit, even for huge containers, strings, bytes and ints."""
    for value in (list(range(100_000)), "x" * MB10, b"y" * MB10, 10**5000, {i: i for i in range(10_000)}):
        assert len(safe_repr(value, limit=50)) <= 50


def test_safe_repr_raising_repr() -> None:
    """A raising __repr__ yields the documented placeholder."""
    assert safe_repr(RaisingRepr()) == f"<{RaisingRepr.__module__}.RaisingRepr object (repr failed: RuntimeError)>"


def test_safe_repr_big_container_subclass() -> None:
    """A large dict subclass is rendered with reprlib limits and its type name."""
    text = safe_repr(OrderedDict((i, i) for i in range(100_000)), limit=1000)
    assert text.startswith("OrderedDict({") and "..." in text


def test_safe_repr_array_is_brief() -> None:
    """Arrays are shown as shape/dtype/device, never as their data."""
    assert (
        safe_repr(np.zeros((1000, 1000), dtype=np.float32)) == "ndarray(shape=[1000, 1000], dtype=float32, device=cpu)"
    )
