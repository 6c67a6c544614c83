"""runtel.values.attributes: arbitrary user values → OTel-legal span attributes, never raising."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from values_cases import (
    MB10,
    Color,
    Hostile,
    Level,
    Point,
    RaisingMapping,
    RaisingRepr,
    TrainConfig,
    is_otel_legal,
    nested_values,
    strings_in,
)

from runtel.values.attributes import SEQUENCE_MAX_ITEMS, to_attribute_value, to_attributes
from runtel.values.markers import CYCLE_MARK, TRUNCATION_MARK


def test_attribute_value_scalars() -> None:
    """Primitives are kept; big ints and None become strings; NaN stays a float."""
    assert to_attribute_value(True) is True
    assert to_attribute_value(3) == 3
    assert to_attribute_value(2**63) == str(2**63)
    assert math.isnan(to_attribute_value(math.nan))  # type: ignore[arg-type]
    assert to_attribute_value(None) == "None"
    assert to_attribute_value(Color.RED) == "red"
    assert to_attribute_value(np.float32(1.5)) == 1.5


def test_attribute_value_sequences() -> None:
    """Homogeneous lists stay lists; int/float mixes become floats; others become JSON text."""
    assert to_attribute_value([1, 2]) == [1, 2]
    assert to_attribute_value((1, 2.5)) == [1.0, 2.5]
    assert to_attribute_value({"b", "a"}) == ["a", "b"]
    assert to_attribute_value([1, "a"]) == '[1,"a"]'
    assert to_attribute_value([[1], [2]]) == "[[1],[2]]"
    assert to_attribute_value([True, 1]) == "[true,1]"
    assert to_attribute_value([]) == "[]"
    assert to_attribute_value({}) == "{}"


def test_attribute_value_objects_use_repr() -> None:
    """Arbitrary objects become their bounded repr; paths become their text."""
    assert to_attribute_value(Path("/a/b")) == "/a/b"
    assert "repr failed" in to_attribute_value(RaisingRepr())  # type: ignore[operator]


def test_attribute_value_long_string_and_list_cut() -> None:
    """Strings are cut at max_length; long sequences keep SEQUENCE_MAX_ITEMS items."""
    assert to_attribute_value("x" * MB10) == "x" * 4096 + TRUNCATION_MARK
    assert to_attribute_value(list(range(1000))) == list(range(SEQUENCE_MAX_ITEMS))


def test_to_attributes_flattens_config() -> None:
    """Nested mappings become dotted keys under the prefix; a trailing dot in the prefix is ignored."""
    cfg = {"optimizer": {"lr": 0.1, "name": "adam"}, "layers": [64, 32], "dropout": None}
    expected = {"config.optimizer.lr": 0.1, "config.optimizer.name": "adam", "config.layers": [64, 32]}
    assert to_attributes(cfg, prefix="config") == expected
    assert to_attributes(cfg, prefix="config.") == expected


def test_to_attributes_empty_prefix_and_dotted_keys() -> None:
    """With prefix '' keys have no leading dot; keys containing dots are kept as they are."""
    assert to_attributes({"a.b": 1, "c": {"d": 2}}, prefix="") == {"a.b": 1, "c.d": 2}


def test_to_attributes_config_objects() -> None:
    """Dataclasses, namespaces and NamedTuples are flattened like dicts."""
    out = to_attributes(TrainConfig(), prefix="config")
    assert out == {
        "config.optimizer.lr": 0.1,
        "config.optimizer.betas": [0.9, 0.999],
        "config.epochs": 3,
        "config.out": "/tmp/out",
    }
    assert to_attributes(argparse.Namespace(p=Point(1, 2)), prefix="a") == {"a.p.x": 1, "a.p.y": 2}


def test_to_attributes_empty_and_scalar_top_level() -> None:
    """Empty containers become '{}'/'[]'; a scalar becomes one attribute named by the prefix."""
    assert to_attributes({"d": {}, "l": []}, prefix="c") == {"c.d": "{}", "c.l": "[]"}
    assert to_attributes(5, prefix="c") == {"c": 5}
    assert to_attributes({}, prefix="") == {}


def test_to_attributes_cycle() -> None:
    """A self-referencing config ends in the cycle marker."""
    d: dict[str, Any] = {"a": 1}
    d["me"] = d
    assert to_attributes(d, prefix="c") == {"c.a": 1, "c.me": CYCLE_MARK}


def test_to_attributes_max_attributes_flag() -> None:
    """After max_attributes entries flattening stops and <prefix>.__truncated__ is set."""
    out = to_attributes({f"k{i}": i for i in range(100)}, prefix="c", max_attributes=10)
    assert len(out) == 11
    assert out["c.__truncated__"] is True


def test_to_attributes_long_list_flag() -> None:
    """A sequence cut to max_items also sets the truncation flag."""
    out = to_attributes({"l": list(range(10))}, prefix="c", max_items=3)
    assert out == {"c.l": [0, 1, 2], "c.__truncated__": True}


def test_to_attributes_non_string_keys_and_big_int() -> None:
    """Non-string keys use their repr; ints beyond int64 become strings."""
    assert to_attributes({1: 2**70, None: "x"}, prefix="c") == {"c.1": str(2**70), "c.None": "x"}


def test_to_attributes_10mb_string() -> None:
    """A 10 MB string value is cut to max_length plus the truncation mark."""
    out = to_attributes({"s": "x" * MB10}, prefix="c", max_length=100)
    assert out == {"c.s": "x" * 100 + TRUNCATION_MARK}


def test_to_attributes_hostile_values() -> None:
    """Raising objects become placeholders and the other keys survive."""
    out = to_attributes({"h": Hostile(), "m": RaisingMapping(), "ok": 1}, prefix="c")
    assert out["c.ok"] == 1
    assert "repr failed" in out["c.h"]  # type: ignore[operator]
    assert all(is_otel_legal(v) for v in out.values())


def test_to_attributes_accepted_by_real_otel_span(caplog: pytest.LogCaptureFixture) -> None:
    """Every produced attribute is kept by a real SDK span and encodes to OTLP protobuf."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    d: dict[str, Any] = {"a": 1}
    d["me"] = d
    cfg = {
        "train": TrainConfig(),
        "nan": math.nan,
        "big": 2**100,
        "bytes": b"\x00\xff",
        "mixed": [1, "a", None],
        "nested_list": [[1, 2], [3]],
        "arr": np.arange(4.0),
        "set": {1, 2},
        "bad": Hostile(),
        "cycle": d,
        "surrogate\udcff": "x\udcff",
        "long": "y" * 10_000,
        "none": None,
        "empty": {},
        "enum": Level.HIGH,
        3: "int key",
    }
    attrs = to_attributes(cfg, prefix="config")
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=10_000, max_attribute_length=None))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with caplog.at_level(logging.WARNING, logger="opentelemetry"):
            span = provider.get_tracer("test").start_span("s")
            span.set_attributes(attrs)
            span.end()
            (finished,) = exporter.get_finished_spans()
            encoded = encode_spans([finished]).resource_spans[0].scope_spans[0].spans[0]
        assert not caplog.records
        kept = dict(finished.attributes or {})
        assert kept.keys() == attrs.keys()
        for key, value in attrs.items():
            expected = tuple(value) if isinstance(value, list) else value
            assert kept[key] == expected or (isinstance(value, float) and math.isnan(value))
        assert {kv.key for kv in encoded.attributes} == attrs.keys()
    finally:
        provider.shutdown()


# --- properties -----------------------------------------------------------------------------------


@settings(max_examples=300)
@given(nested_values, st.integers(min_value=1, max_value=40))
def test_property_attributes_are_otel_legal(value: object, max_length: int) -> None:
    """to_attributes values are OTel-legal, keys non-empty, strings at most max_length + mark."""
    out = to_attributes({"root": value}, prefix="p", max_length=max_length)
    for key, attr in out.items():
        assert isinstance(key, str) and key
        key.encode("utf-8")
        assert is_otel_legal(attr), (key, attr)
        for s in strings_in(attr):
            assert len(s) <= max_length + len(TRUNCATION_MARK)
            s.encode("utf-8")
