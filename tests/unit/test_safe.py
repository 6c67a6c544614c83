"""runtel.values: arbitrary user values → OTel-legal attributes and JSON-safe values, never raising."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import decimal
import enum
import hashlib
import json
import logging
import math
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtel.values.attributes import SEQUENCE_MAX_ITEMS, to_attribute_value, to_attributes
from runtel.values.containers import normalize_config
from runtel.values.jsonable import BYTES_INLINE_MAX, json_dumps, to_jsonable
from runtel.values.markers import CYCLE_MARK, DEPTH_MARK, TRUNCATION_MARK
from runtel.values.reprs import safe_repr

MB10 = 10 * 1024 * 1024


# --- helpers --------------------------------------------------------------------------------------


def is_otel_legal(value: object) -> bool:
    """True for what OTLP can carry: str/bool/int64/float or a homogeneous list/tuple of one of them."""

    def primitive_kind(v: object) -> type | None:
        if type(v) is bool or type(v) is str or type(v) is float:
            return type(v)
        if type(v) is int:
            return int if -(2**63) <= v <= 2**63 - 1 else None
        return None

    if isinstance(value, (list, tuple)):
        kinds = {primitive_kind(v) for v in value}
        return None not in kinds and len(kinds) <= 1
    return primitive_kind(value) is not None


def strings_in(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


class Color(enum.Enum):
    RED = "red"
    PAIR = (1, 2)


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Optim:
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)


@dataclasses.dataclass
class TrainConfig:
    optimizer: Optim = dataclasses.field(default_factory=Optim)
    epochs: int = 3
    out: Path = Path("/tmp/out")


class Point(NamedTuple):
    x: int
    y: int


class RaisingRepr:
    def __repr__(self) -> str:
        raise RuntimeError("boom")

    __str__ = __repr__


class Hostile:
    """Every dunder that a converter might touch raises."""

    def __repr__(self) -> str:
        raise ValueError("repr")

    def __str__(self) -> str:
        raise ValueError("str")

    def __eq__(self, other: object) -> bool:
        raise ValueError("eq")

    def __hash__(self) -> int:
        return 1

    def __len__(self) -> int:
        raise ValueError("len")

    def __iter__(self) -> Iterator[int]:
        raise ValueError("iter")


class RaisingMapping(Mapping[str, int]):
    def __getitem__(self, key: str) -> int:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("iter")

    def __len__(self) -> int:
        raise RuntimeError("len")


class FakePydantic2:
    def __init__(self, **data: Any) -> None:
        self._data = data

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        return dict(self._data)


class FakePydantic1:
    __fields__ = {"a": None}

    def dict(self) -> dict[str, Any]:
        return {"a": 1}


class FakeAttrib:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeAttrs:
    __attrs_attrs__ = (FakeAttrib("a"), FakeAttrib("b"))

    def __init__(self) -> None:
        self.a = 1
        self.b = {"c": 2}


class DictConfig:
    """Stands in for omegaconf.DictConfig (module set below)."""

    def __init__(self, data: dict[str, Any], resolvable: bool = True) -> None:
        self.data = data
        self.resolvable = resolvable


DictConfig.__module__ = "omegaconf.dictconfig"


@pytest.fixture
def fake_omegaconf(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Install a fake ``omegaconf`` module whose OmegaConf.to_container records the resolve flag."""
    calls: list[bool] = []

    class OmegaConf:
        @staticmethod
        def to_container(cfg: DictConfig, resolve: bool = False) -> dict[str, Any]:
            calls.append(resolve)
            if resolve and not cfg.resolvable:
                raise ValueError("interpolation")
            return {**cfg.data, "resolved": resolve}

    module = types.ModuleType("omegaconf")
    module.OmegaConf = OmegaConf  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "omegaconf", module)
    return calls


# --- normalize_config -----------------------------------------------------------------------------


def test_normalize_dataclass_recursively() -> None:
    """Nested dataclass instances become nested plain dicts."""
    assert normalize_config(TrainConfig()) == {
        "optimizer": {"lr": 0.1, "betas": (0.9, 0.999)},
        "epochs": 3,
        "out": Path("/tmp/out"),
    }


def test_normalize_leaves_dataclass_class_and_scalars_alone() -> None:
    """A dataclass class and non-container values are returned unchanged."""
    assert normalize_config(TrainConfig) is TrainConfig
    marker = object()
    assert normalize_config(marker) is marker
    assert normalize_config(5) == 5


def test_normalize_namespaces_and_namedtuple() -> None:
    """argparse.Namespace, SimpleNamespace and NamedTuple become dicts, also inside lists."""
    ns = argparse.Namespace(lr=0.1, inner=types.SimpleNamespace(a=1))
    assert normalize_config(ns) == {"lr": 0.1, "inner": {"a": 1}}
    assert normalize_config([Point(1, 2)]) == [{"x": 1, "y": 2}]


def test_normalize_pydantic_v2_and_v1() -> None:
    """Objects with model_dump (v2) or __fields__ + dict() (v1) are dumped."""
    assert normalize_config(FakePydantic2(a=1, nested=FakePydantic2(b=2))) == {"a": 1, "nested": {"b": 2}}
    assert normalize_config(FakePydantic1()) == {"a": 1}


def test_normalize_attrs_and_mapping() -> None:
    """attrs-style classes use __attrs_attrs__; other Mappings become dicts."""
    assert normalize_config(FakeAttrs()) == {"a": 1, "b": {"c": 2}}
    assert type(normalize_config(OrderedDict(a=1))) is dict


def test_normalize_omegaconf_resolves(fake_omegaconf: list[bool]) -> None:
    """OmegaConf containers are converted via sys.modules['omegaconf'] with resolve=True."""
    assert normalize_config(DictConfig({"a": 1})) == {"a": 1, "resolved": True}
    assert fake_omegaconf == [True]


def test_normalize_omegaconf_falls_back_to_unresolved(fake_omegaconf: list[bool]) -> None:
    """When interpolation fails the container is converted with resolve=False."""
    assert normalize_config(DictConfig({"a": "${missing}"}, resolvable=False)) == {"a": "${missing}", "resolved": False}
    assert fake_omegaconf == [True, False]


def test_normalize_preserves_cycles() -> None:
    """A self-referencing config normalises to a self-referencing dict instead of recursing forever."""
    ns = argparse.Namespace(a=1)
    ns.me = ns
    out = normalize_config(ns)
    assert isinstance(out, dict)
    assert out["me"] is out


def test_normalize_raising_object_returned_unchanged() -> None:
    """A Mapping that raises while being read is returned as is."""
    bad = RaisingMapping()
    assert normalize_config(bad) is bad


# --- to_jsonable ----------------------------------------------------------------------------------


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


# --- safe_repr ------------------------------------------------------------------------------------


def test_safe_repr_bounded() -> None:
    """safe_repr never exceeds its limit, even for huge containers, strings, bytes and ints."""
    for value in (list(range(100_000)), "x" * MB10, b"y" * MB10, 10**5000, {i: i for i in range(10_000)}):
        assert len(safe_repr(value, limit=50)) <= 50


def test_safe_repr_raising_repr() -> None:
    """A raising __repr__ yields the documented placeholder."""
    assert safe_repr(RaisingRepr()) == f"<{__name__}.RaisingRepr object (repr failed: RuntimeError)>"


def test_safe_repr_big_container_subclass() -> None:
    """A large dict subclass is rendered with reprlib limits and its type name."""
    text = safe_repr(OrderedDict((i, i) for i in range(100_000)), limit=1000)
    assert text.startswith("OrderedDict({") and "..." in text


def test_safe_repr_array_is_brief() -> None:
    """Arrays are shown as shape/dtype/device, never as their data."""
    assert (
        safe_repr(np.zeros((1000, 1000), dtype=np.float32)) == "ndarray(shape=[1000, 1000], dtype=float32, device=cpu)"
    )


# --- to_attribute_value / to_attributes -------------------------------------------------------------


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

_text = st.text(st.characters(exclude_categories=[]), max_size=20)
_hashable_leaf = st.none() | st.booleans() | st.integers() | st.floats() | _text | st.binary(max_size=20)
_leaf = _hashable_leaf
_values = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.one_of(_text, st.integers(), st.floats(), st.none(), st.booleans()), inner, max_size=5)
        | st.sets(_hashable_leaf, max_size=5)
        | st.frozensets(_hashable_leaf, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=300)
@given(_values)
def test_property_jsonable_is_strict_json(value: object) -> None:
    """to_jsonable output always serialises with allow_nan=False and encodes as UTF-8."""
    text = json.dumps(to_jsonable(value), allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert json.loads(text) == json.loads(json_dumps(value))


@settings(max_examples=300)
@given(_values, st.integers(min_value=1, max_value=40))
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
