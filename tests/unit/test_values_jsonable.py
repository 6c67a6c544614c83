"""runtel.values.jsonable: arbitrary user values → JSON-safe values for run.json, never raising."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import decimal
import hashlib
import json
import math
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from hypothesis import given, settings
from values_cases import MB10, Color, Hostile, Level, Point, RaisingMapping, RaisingRepr, TrainConfig, nested_values

from runtel.values.jsonable import BYTES_INLINE_MAX, json_dumps, to_jsonable
from runtel.values.markers import CYCLE_MARK, DEPTH_MARK, TRUNCATION_MARK


def test_jsonable_nested_containers() -> None:
    """Nested dicts/lists keep their structure; tuples become lists; sets are sorted lists."""
    value = {"a": [1, (2, 3), {"b": None}], "s": {3, 1, 2}, "f": frozenset({"y", "x"})}
    assert to_jsonable(value) == {"a": [1, [2, 3], {"b": None}], "s": [1, 2, 3], "f": ["x", "y"]}


def test_jsonable_special_scalars() -> None:
    """Path, Enum, datetime, Decimal, Fraction-like and NaN/inf become JSON values."""
    value = {
        "path": PurePosixPath("/data/x"),
        "enum": Color.RED,
        "tuple_enum": Color.PAIR,
        "int_enum": Level.HIGH,
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "day": datetime.date(2024, 1, 2),
        "dec": decimal.Decimal("1.10"),
        "nan": math.nan,
        "inf": math.inf,
        "ninf": -math.inf,
    }
    assert to_jsonable(value) == {
        "path": "/data/x",
        "enum": "red",
        "tuple_enum": [1, 2],
        "int_enum": 3,
        "when": "2024-01-02T03:04:05",
        "day": "2024-01-02",
        "dec": "1.10",
        "nan": "NaN",
        "inf": "Infinity",
        "ninf": "-Infinity",
    }


def test_jsonable_config_containers() -> None:
    """Dataclasses and namespaces inside a record become dicts."""
    assert to_jsonable({"cfg": TrainConfig(), "ns": argparse.Namespace(k=Point(1, 2))}) == {
        "cfg": {"optimizer": {"lr": 0.1, "betas": [0.9, 0.999]}, "epochs": 3, "out": "/tmp/out"},
        "ns": {"k": {"x": 1, "y": 2}},
    }


def test_jsonable_numpy_scalars_and_arrays() -> None:
    """numpy scalars become Python scalars; arrays become a summary dict, never element lists."""
    out = to_jsonable({"i": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True), "a": np.zeros((2, 3))})
    assert out["i"] == 3 and type(out["i"]) is int
    assert out["f"] == 0.5 and out["b"] is True
    assert out["a"]["shape"] == [2, 3] and out["a"]["dtype"] == "float64" and out["a"]["size"] == 6


def test_jsonable_array_nan_stats_are_json_safe() -> None:
    """A NaN mean in an array summary is written as the string NaN."""
    out = to_jsonable(np.array([math.inf, -math.inf]))
    assert out["mean"] == "NaN" and out["max"] == "Infinity"
    json.dumps(out, allow_nan=False)


def test_jsonable_self_referencing_dict_and_list() -> None:
    """Cycles are replaced by the cycle marker; shared (non-cyclic) references are copied."""
    d: dict[str, Any] = {"a": 1}
    d["me"] = d
    lst: list[Any] = [1]
    lst.append(lst)
    shared = [1]
    assert to_jsonable(d) == {"a": 1, "me": CYCLE_MARK}
    assert to_jsonable(lst) == [1, CYCLE_MARK]
    assert to_jsonable({"x": shared, "y": shared}) == {"x": [1], "y": [1]}


def test_jsonable_dataclass_cycle() -> None:
    """A dataclass that refers to itself ends in the cycle marker."""

    @dataclasses.dataclass
    class Node:
        child: Any = None

    n = Node()
    n.child = n
    assert to_jsonable(n) == {"child": CYCLE_MARK}


def test_jsonable_depth_limit() -> None:
    """Nesting deeper than max_depth becomes the depth marker."""
    value: Any = "leaf"
    for _ in range(50):
        value = [value]
    out = to_jsonable(value, max_depth=5)
    for _ in range(5):
        out = out[0]
    assert out == DEPTH_MARK


def test_jsonable_max_items() -> None:
    """Lists and dicts keep max_items entries plus a marker saying how many were dropped."""
    assert to_jsonable(list(range(10)), max_items=3) == [0, 1, 2, "…[7 more items]"]
    assert to_jsonable({str(i): i for i in range(5)}, max_items=2) == {"0": 0, "1": 1, "__truncated__": 3}


def test_jsonable_10mb_string_cut() -> None:
    """A 10 MB string is cut to max_str characters followed by the truncation mark."""
    out = to_jsonable("x" * MB10)
    assert len(out) == 1_048_576 + len(TRUNCATION_MARK)
    assert out.endswith(TRUNCATION_MARK)
    assert to_jsonable("é" * 100, max_str=10) == "é" * 10 + TRUNCATION_MARK


def test_jsonable_non_string_keys_and_collisions() -> None:
    """Non-string keys become their repr; a key colliding with a string key is disambiguated."""
    out = to_jsonable({1: "int", "1": "str", None: "none", (1, 2): "tuple"})
    assert out == {"1#2": "int", "1": "str", "None": "none", "(1, 2)": "tuple"}


def test_jsonable_big_ints() -> None:
    """Ints within [-2**63, 2**64) stay ints; larger ones become decimal strings."""
    assert to_jsonable(2**63) == 2**63
    assert to_jsonable(2**64) == str(2**64)
    assert to_jsonable(-(2**63) - 1) == str(-(2**63) - 1)
    assert to_jsonable(10**5000).startswith("<int with")


def test_jsonable_bytes_short_and_long() -> None:
    """Short bytes are inlined as base64; long ones as length plus sha256."""
    assert to_jsonable(b"abc") == {"__bytes__": 3, "base64": base64.b64encode(b"abc").decode()}
    blob = bytes(BYTES_INLINE_MAX + 1)
    assert to_jsonable(bytearray(blob)) == {"__bytes__": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


def test_jsonable_objects_and_raising_repr() -> None:
    """Plain objects become type + repr; a raising __repr__ gives a placeholder, not an exception."""
    out = to_jsonable(RaisingRepr())
    assert out["__type__"].endswith("RaisingRepr")
    assert "repr failed: RuntimeError" in out["__repr__"]


def test_jsonable_hostile_objects() -> None:
    """Objects whose __len__/__iter__/__eq__/__repr__ raise, and raising Mappings, do not break conversion."""
    out = to_jsonable({"h": Hostile(), "m": RaisingMapping(), "ok": 1})
    assert out["ok"] == 1
    assert "repr failed" in out["h"]["__repr__"]
    assert out["m"]["__type__"].endswith("RaisingMapping")


def test_jsonable_lone_surrogates_are_utf8_safe() -> None:
    """Strings with lone surrogates (undecodable file names) come out encodable as UTF-8."""
    out = to_jsonable({"name\udcff": "bad\udcff"})
    json_dumps(out).encode("utf-8")
    assert out == {"name\\udcff": "bad\\udcff"}


def test_json_dumps_compact_and_never_raises() -> None:
    """json_dumps gives compact JSON even for NaN, sets and objects."""
    assert json_dumps({"a": [1, math.nan], "b": {2}}) == '{"a":[1,"NaN"],"b":[2]}'
    assert json.loads(json_dumps(Hostile()))["__repr__"].startswith("<")


# --- properties -----------------------------------------------------------------------------------



@settings(max_examples=300)
@given(nested_values)
def test_property_jsonable_is_strict_json(value: object) -> None:
    """to_jsonable output always serialises with allow_nan=False and encodes as UTF-8."""
    text = json.dumps(to_jsonable(value), allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert json.loads(text) == json.loads(json_dumps(value))
