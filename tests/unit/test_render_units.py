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


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_figures_are_printed_not_fatal(value: float) -> None:
    """A hostile recorded value (a span's cpu.time set to NaN by user code) is shown as itself."""
    from runtel.cli.render import format_bytes, format_duration

    assert format_duration(value) == f"{value} s"
    assert format_bytes(value) == f"{value} B"
    assert format_joules(value) == f"{value} J"


def test_json_output_spells_non_finite_numbers_as_otlp_json_does() -> None:
    """--json output is valid JSON even with a hostile value: NaN and infinities as OTLP/JSON's strings."""
    import io
    import json

    from runtel.cli.render import print_json

    class Float64(float):  # what numpy's float64 is: a float subclass
        pass

    out = io.StringIO()
    print_json({"a": [float("nan"), float("inf"), (float("-inf"), 1.5)], "b": {"c": 2, "d": Float64("nan")}},
               file=out)
    assert json.loads(out.getvalue()) == {"a": ["NaN", "Infinity", ["-Infinity", 1.5]], "b": {"c": 2, "d": "NaN"}}


@pytest.mark.parametrize("unit", ["s", "bytes", "cores", "J", "gCO2eq", ""])
def test_compare_cells_spell_non_finite_values_and_differences_plainly(unit: str) -> None:
    """compare's cell for a NaN value or a NaN difference has no doubled or invented sign ("--nan B" once)."""
    from runtel.cli.compare import _cell

    nan, inf = float("nan"), float("inf")
    metric = {"unit": unit, "values": [1.0, nan, 2.0, inf], "diff": [None, nan, 1.0, inf], "ratio": [None, nan, 2.0, inf]}
    cells = [_cell(metric, i) for i in range(4)]
    assert "-" not in cells[1] and "nan" in cells[1] and "(" not in cells[1], cells
    assert "(+" in cells[2], cells
    assert "-" not in cells[3] and "inf" in cells[3] and "(+inf" in cells[3], cells
    negative = {"unit": unit, "values": [1.0, -inf], "diff": [None, -inf], "ratio": [None, None]}
    assert _cell(negative, 1).count("-") == 2 and "--" not in _cell(negative, 1), _cell(negative, 1)


def test_compare_result_cells_leave_out_a_difference_against_nan() -> None:
    from runtel.cli.compare import _result_cell

    nan = float("nan")
    row = {"numeric": True, "values": [1.0, nan, 3.0], "diff": [None, nan, 2.0], "ratio": [None, nan, 3.0]}
    assert [_result_cell(row, i) for i in range(3)] == ["1", "nan", "3 (+2, ×3)"]
