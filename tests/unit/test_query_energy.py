"""runtel.query.energy: a span's estimated energy from its CPU time and the run's factor, on any input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from runtel import semconv
from runtel.query.energy import cpu_energy_factor, with_estimated_energy

CPU, TOTAL, EST = semconv.USAGE_CPU_TIME, semconv.USAGE_ENERGY_TOTAL, semconv.USAGE_ENERGY_ESTIMATED


def test_cpu_time_times_the_factor_marked_estimated() -> None:
    attrs = {CPU: 0.25, "other": "x"}
    out = with_estimated_energy(attrs, 5.3125)
    assert out == {CPU: 0.25, "other": "x", TOTAL: 1.328125, EST: True}
    assert attrs == {CPU: 0.25, "other": "x"}  # the span's own attributes are not changed


@pytest.mark.parametrize("attrs", [
    {CPU: 0.25, TOTAL: 9.0},  # measured (RAPL, NVML) or written by an older runtel: kept as written
    {},
    {CPU: True}, {CPU: "0.25"}, {CPU: math.nan}, {CPU: math.inf}, {CPU: -1.0}, {CPU: 0.0},
])
def test_nothing_added_without_a_usable_cpu_time_or_with_an_energy_figure(attrs: dict[str, Any]) -> None:
    assert with_estimated_energy(attrs, 5.0) is attrs


def test_no_factor_no_estimate() -> None:
    attrs = {CPU: 0.25}
    assert with_estimated_energy(attrs, None) is attrs


@pytest.mark.parametrize(("record", "factor"), [
    ({"energy_method": {"cpu": "estimate", "joules_per_cpu_second": 5.3125}}, 5.3125),
    ({"energy_method": {"cpu": "estimate", "joules_per_cpu_second": 2}}, 2.0),
    ({"energy_method": {"cpu": "rapl", "joules_per_cpu_second": 5.0}}, None),  # measured: nothing to estimate
    ({"energy_method": {"cpu": "estimate"}}, None),
    ({"energy_method": {"cpu": "estimate", "joules_per_cpu_second": "5"}}, None),
    ({"energy_method": {"cpu": "estimate", "joules_per_cpu_second": True}}, None),
    ({"energy_method": {"cpu": "estimate", "joules_per_cpu_second": -1.0}}, None),
    ({"energy_method": {"cpu": "estimate", "joules_per_cpu_second": 1e999}}, None),
    ({"energy_method": "estimate"}, None),
    ({}, None),  # a record written before the factor was recorded: its spans carry their estimate
])
def test_the_factor_comes_from_the_start_record_only_when_valid(record: dict[str, Any], factor: float | None) -> None:
    assert cpu_energy_factor(record) == factor


def test_an_index_summary_reads_the_factor_from_its_run_json(tmp_path: Path) -> None:
    """The run index's summaries (how child runs are listed) have no energy_method: run.json has it."""
    import json

    run_dir = tmp_path / "20261203T000000Z-child-abcdef"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({
        "schema": "runtel.run/1", "id": "20261203T000000Z-child-abcdef", "name": "child", "status": "ok",
        "energy_method": {"cpu": "estimate", "joules_per_cpu_second": 4.25}}))
    assert cpu_energy_factor({"id": "x", "dir": str(run_dir)}) == 4.25
    assert cpu_energy_factor({"id": "x", "dir": str(tmp_path / "gone")}) is None  # unreadable: no joules
    (run_dir / "run.json").write_text("not json")
    assert cpu_energy_factor({"id": "x", "dir": str(run_dir)}) is None
    # a full record (it has its schema key) is never re-read
    assert cpu_energy_factor({"schema": "runtel.run/1", "dir": str(run_dir)}) is None


def test_the_streamed_aggregate_reads_cpu_time_as_runtel_writes_it_or_decodes() -> None:
    """compare's streamed path reads an unsampled block's CPU time from the encoded text; attributes written
    another way (spacing, an integer, twice) are decoded whole: the same joules either way."""
    from runtel.query.spanagg import Usage

    exact = b'[{"key":"runtel.run.id","value":{"stringValue":"r"}},{"key":"runtel.usage.cpu.time","value":{"doubleValue":0.25}}]'
    spaced = b'[{"key": "runtel.usage.cpu.time", "value": {"doubleValue": 0.25}}]'
    integer = b'[{"key":"runtel.usage.cpu.time","value":{"intValue":"2"}}]'
    zero = b'[{"key":"runtel.usage.cpu.time","value":{"doubleValue":0.0}}]'
    hostile = b'[{"key":"runtel.usage.cpu.time","value":{"doubleValue":nan}}]'
    for raw, want in ((exact, 0.5), (spaced, 0.5), (integer, 4.0), (zero, None), (hostile, None)):
        usage = Usage(cpu_energy=2.0)
        usage.add(1_000_000, raw)
        assert usage.energy.stat("total") == want, raw
    no_factor = Usage()
    no_factor.add(1_000_000, exact)
    assert no_factor.energy.stat("total") is None  # a measured run: CPU time is not energy
