"""The CLI's unit formatting: a figure is never printed as a misleading zero."""

from __future__ import annotations

import pytest

from runtel.cli.render import format_joules


@pytest.mark.parametrize(("joules", "text"), [
    (0, "0 mJ"),
    (0.00012, "0.12 mJ"),  # a sub-millisecond block's estimate: two significant digits, not "0 mJ"
    (0.0049, "4.9 mJ"),
    (0.027, "27 mJ"),  # a 5 ms block at ~5 W: once printed "0.0 J"
    (0.999, "999 mJ"),
    (1.0, "1.0 J"),
    (2.71, "2.7 J"),
    (-0.5, "-500 mJ"),  # a difference in compare
    (1234.5, "1234.5 J"),
])
def test_joules_switch_to_millijoules_below_one(joules: float, text: str) -> None:
    assert format_joules(joules) == text
