"""runtel.capture: hyrax-style summaries of a traced call's arguments and return value."""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any

import numpy as np
import pytest

from runtel import semconv
from runtel.recording.capture import capture_call, capture_return, summarize, summarize_array
from runtel.values.markers import TRUNCATION_MARK

P = semconv.PARAM_PREFIX
R = semconv.RETURN_VALUE


def is_otel_legal(value: object) -> bool:
    """True for str/bool/int64/float or a homogeneous list/tuple of one of them."""

    def kind(v: object) -> type | None:
        if type(v) in (bool, str, float):
            return type(v)
        if type(v) is int:
            return int if -(2**63) <= v <= 2**63 - 1 else None
        return None

    if isinstance(value, (list, tuple)):
        kinds = {kind(v) for v in value}
        return None not in kinds and len(kinds) <= 1
    return kind(value) is not None


class _Dtype:
    def __init__(self, name: str) -> None:
        self.name_ = name

    def __str__(self) -> str:
        return f"torch.{self.name_}"


class _Device:
    def __init__(self, name: str) -> None:
        self.name_ = name

    def __str__(self) -> str:
        return self.name_


class FakeTensor:
    """Mimics the torch.Tensor methods runtel uses; any host copy of the data fails the test."""

    def __init__(self, data: Any, device: str = "cuda:0") -> None:
        self._a = np.asarray(data)
        self.device = _Device(device)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._a.shape)

    @property
    def dtype(self) -> _Dtype:
        return _Dtype(str(self._a.dtype))

    def _wrap(self, a: Any) -> FakeTensor:
        return FakeTensor(a, str(self.device))

    def detach(self) -> FakeTensor:
        return self

    def is_complex(self) -> bool:
        return self._a.dtype.kind == "c"

    def is_floating_point(self) -> bool:
        return self._a.dtype.kind == "f"

    def isnan(self) -> FakeTensor:
        return self._wrap(np.isnan(self._a))

    def isinf(self) -> FakeTensor:
        return self._wrap(np.isinf(self._a))

    def sum(self) -> FakeTensor:
        return self._wrap(self._a.sum())

    def min(self) -> FakeTensor:
        return self._wrap(self._a.min())

    def max(self) -> FakeTensor:
        return self._wrap(self._a.max())

    def mean(self) -> FakeTensor:
        if self._a.dtype.kind != "f":
            raise RuntimeError("mean(): could not infer output dtype")  # as torch does for ints
        with np.errstate(all="ignore"):  # torch does not warn on inf - inf
            return self._wrap(self._a.mean())

    def nanmean(self) -> FakeTensor:
        return self._wrap(np.nanmean(self._a))

    def nan_to_num(self, nan: float, posinf: float, neginf: float) -> FakeTensor:
        return self._wrap(np.nan_to_num(self._a, nan=nan, posinf=posinf, neginf=neginf))

    def item(self) -> Any:
        assert self._a.size == 1, "item() on a non-scalar would copy a whole tensor"
        return self._a.item()

    def cpu(self) -> Any:
        raise AssertionError("host copy")

    def numpy(self) -> Any:
        raise AssertionError("host copy")

    def tolist(self) -> Any:
        raise AssertionError("host copy")

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("host copy")

    def __repr__(self) -> str:
        raise AssertionError("repr prints data")

    def float(self) -> FakeTensor:  # last: inside the class body `float` would name this method
        return self._wrap(self._a.astype(np.float32))


FakeTensor.__module__ = "torch"


class Model:
    def forward(self, x: Any, scale: float = 1.0, *extra: Any, **options: Any) -> Any:
        return x


FORWARD = inspect.signature(Model.forward)


# --- summarize ------------------------------------------------------------------------------------


def test_summarize_scalars() -> None:
    """Scalars are kept; None becomes 'None'; huge ints become strings; numpy scalars become Python ones."""
    assert summarize(3) == 3 and summarize(True) is True and summarize(0.5) == 0.5
    assert summarize(None) == "None"
    assert summarize(2**64) == str(2**64)
    assert summarize(np.int32(7)) == 7


def test_summarize_long_string_truncated() -> None:
    """Strings are cut at max_length and marked."""
    assert summarize("a" * 1000, max_length=10) == "a" * 10 + TRUNCATION_MARK


def test_summarize_containers() -> None:
    """Containers give type, length and the first max_items items (mappings: keys)."""
    assert summarize(list(range(100)), max_items=3) == {"type": "list", "len": 100, "items": ["0", "1", "2"]}
    assert summarize({"a": 1, "b": 2}) == {"type": "dict", "len": 2, "keys": ["a", "b"]}
    assert summarize(("x" * 50,), max_length=5) == {"type": "tuple", "len": 1, "items": ["x" * 5 + TRUNCATION_MARK]}


def test_summarize_object_and_raising_repr() -> None:
    """Objects give their qualified type name and a bounded repr that never raises."""

    class Broken:
        def __repr__(self) -> str:
            raise ValueError("no")

    out = summarize(Broken())
    assert isinstance(out, dict)
    assert str(out["type"]).endswith("Broken")
    assert "repr failed: ValueError" in str(out["repr"])


def test_summarize_array_stats() -> None:
    """A float array reports shape, dtype, device, size and NaN-ignoring min/max/mean with nan/inf counts."""
    a = np.array([[1.0, np.nan], [np.inf, 3.0]], dtype=np.float32)
    assert summarize_array(a) == {
        "type": "numpy.ndarray",
        "shape": [2, 2],
        "dtype": "float32",
        "device": "cpu",
        "size": 4,
        "nan_count": 1,
        "inf_count": 1,
        "min": 1.0,
        "max": math.inf,
        "mean": math.inf,
    }


def test_summarize_array_edge_dtypes() -> None:
    """Empty, all-NaN, object and complex arrays give summaries without stats that cannot exist."""
    empty = summarize_array(np.array([], dtype=np.float64))
    assert empty is not None and empty["size"] == 0 and "min" not in empty
    all_nan = summarize_array(np.full(3, np.nan))
    assert all_nan is not None and all_nan["nan_count"] == 3 and "min" not in all_nan
    obj = summarize_array(np.array([object(), None]))
    assert obj is not None and obj["dtype"] == "object" and "min" not in obj
    cplx = summarize_array(np.array([1 + 2j, complex(np.nan, 0)]))
    assert cplx is not None and cplx["nan_count"] == 1 and "mean" not in cplx


def test_summarize_array_bool_and_int() -> None:
    """Bool arrays give bool min/max and the true fraction as mean; int arrays give int min/max."""
    b = summarize_array(np.array([True, False, True, True]))
    assert b is not None and (b["min"], b["max"], b["mean"]) == (False, True, 0.75)
    i = summarize_array(np.arange(10, dtype=np.int16))
    assert i is not None and (i["min"], i["max"], i["mean"], i["nan_count"]) == (0, 9, 4.5, 0)


def test_summarize_array_stats_cap() -> None:
    """Above stats_max_elements only the shape description is kept."""
    out = summarize_array(np.zeros(100), stats_max_elements=10)
    assert out is not None and out["size"] == 100 and "mean" not in out


def test_summarize_array_not_array_like() -> None:
    """Lists and numpy scalars are not arrays."""
    assert summarize_array([1, 2]) is None
    assert summarize_array(np.float64(1.0)) is None


def test_summarize_torch_like_tensor_on_device() -> None:
    """A torch-like tensor is summarised with its own methods: no host copy, device kept, torch. prefix dropped."""
    out = summarize_array(FakeTensor([[1.0, np.nan, -2.0]]))
    assert out == {
        "type": "torch.FakeTensor",
        "shape": [1, 3],
        "dtype": "float64",
        "device": "cuda:0",
        "size": 3,
        "nan_count": 1,
        "inf_count": 0,
        "min": -2.0,
        "max": 1.0,
        "mean": -0.5,
    }


def test_summarize_torch_like_inf_without_nan() -> None:
    """Infinities without NaN are counted and kept in min/max."""
    out = summarize_array(FakeTensor([1.0, math.inf, -math.inf, 2.0]))
    assert out is not None
    assert (out["nan_count"], out["inf_count"], out["min"], out["max"]) == (0, 2, -math.inf, math.inf)
    assert math.isnan(out["mean"])  # type: ignore[arg-type]


def test_summarize_torch_like_int_and_bool() -> None:
    """Integer and bool tensors are averaged via .float() since torch cannot average them directly."""
    ints = summarize_array(FakeTensor(np.array([1, 2, 3], dtype=np.int64)))
    assert ints is not None and (ints["min"], ints["max"], ints["mean"]) == (1, 3, 2.0)
    bools = summarize_array(FakeTensor(np.array([True, False])))
    assert bools is not None and (bools["min"], bools["max"], bools["mean"]) == (False, True, 0.5)


def test_summarize_torch_like_failure_keeps_shape() -> None:
    """If a tensor method fails (e.g. a meta tensor), the summary keeps shape and dtype."""

    class MetaTensor(FakeTensor):
        def min(self) -> FakeTensor:
            raise RuntimeError("meta tensors have no data")

    MetaTensor.__module__ = "torch"
    out = summarize_array(MetaTensor([1.0, 2.0], device="meta"))
    assert out is not None and out["shape"] == [2] and out["device"] == "meta" and "min" not in out


def test_summarize_list_of_tensors_uses_brief() -> None:
    """Items that are tensors are shown by shape, not by printing their data."""
    out = summarize([FakeTensor([1.0, 2.0])])
    assert out == {"type": "list", "len": 1, "items": ["FakeTensor(shape=[2], dtype=float64, device=cuda:0)"]}


# --- capture_call / capture_return ----------------------------------------------------------------


def test_capture_call_all_params_except_self() -> None:
    """params=True captures every parameter (defaults applied) except self, arrays flattened one level."""
    x = np.ones((3, 4), dtype=np.float32)
    out = capture_call(FORWARD, (Model(), x), {}, True)
    assert f"{P}self" not in out and not any(k.startswith(f"{P}self.") for k in out)
    assert out[f"{P}x.shape"] == [3, 4]
    assert out[f"{P}x.dtype"] == "float32"
    assert out[f"{P}x.mean"] == 1.0
    assert out[f"{P}scale"] == 1.0


def test_capture_call_selected_params() -> None:
    """A sequence of names captures only those parameters."""
    out = capture_call(FORWARD, (Model(), 1, 2.0), {}, ["scale"])
    assert out == {f"{P}scale": 2.0}


def test_capture_call_disabled() -> None:
    """params=False or an empty list captures nothing."""
    assert capture_call(FORWARD, (Model(), 1), {}, False) == {}
    assert capture_call(FORWARD, (Model(), 1), {}, []) == {}


def test_capture_call_var_args() -> None:
    """*args and **kwargs are captured as their summarised tuple and dict."""
    out = capture_call(FORWARD, (Model(), 1, 2.0, "a", "b"), {"flag": True}, ["extra", "options"])
    assert out == {
        f"{P}extra.type": "tuple",
        f"{P}extra.len": 2,
        f"{P}extra.items": ["a", "b"],
        f"{P}options.type": "dict",
        f"{P}options.len": 1,
        f"{P}options.keys": ["flag"],
    }


def test_capture_call_binding_failure_falls_back() -> None:
    """Arguments that do not fit the signature are captured as arg0.. and by keyword name."""

    def f(a: int) -> None:
        pass

    out = capture_call(inspect.signature(f), (1, 2), {"zzz": "k"}, True)
    assert out == {f"{P}arg0": 1, f"{P}arg1": 2, f"{P}zzz": "k"}


def test_capture_return_scalar_and_array() -> None:
    """Return values go under runtel.return, arrays with .shape etc."""
    assert capture_return(0.25) == {R: 0.25}
    out = capture_return(np.zeros((2, 5)))
    assert out[f"{R}.shape"] == [2, 5] and out[f"{R}.size"] == 10
    assert capture_return(None) == {R: "None"}


def test_capture_attributes_accepted_by_real_otel_span(caplog: pytest.LogCaptureFixture) -> None:
    """Captured attributes are OTel-legal and kept unchanged by a real SDK span."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    attrs = capture_call(
        FORWARD,
        (Model(), FakeTensor([[1.0, 2.0]]), np.uint64(2**64 - 1), {"k": object()}),
        {"opt": [1, "x", None], "big": 2**80},
        True,
    )
    attrs.update(capture_return((np.arange(3), "s" * 1000)))
    assert all(is_otel_legal(v) for v in attrs.values())
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with caplog.at_level(logging.WARNING, logger="opentelemetry"):
            span = provider.get_tracer("test").start_span("call")
            span.set_attributes(attrs)
            span.end()
        (finished,) = exporter.get_finished_spans()
        kept = dict(finished.attributes or {})
        assert kept == {k: tuple(v) if isinstance(v, list) else v for k, v in attrs.items()}
        assert not caplog.records
    finally:
        provider.shutdown()


def test_summarize_huge_int_string_is_cut() -> None:
    """An int beyond int64 becomes a decimal string that still respects max_length."""
    assert summarize(10**300, max_length=8) == "1" + "0" * 7 + TRUNCATION_MARK


def test_summarize_numpy_inf_without_nan() -> None:
    """A numpy array with infinities but no NaN counts them and keeps them as min/max."""
    out = summarize_array(np.array([-np.inf, 0.0, 1.0]))
    assert out is not None
    assert (out["nan_count"], out["inf_count"], out["min"], out["max"]) == (0, 1, -math.inf, 1.0)
    assert out["mean"] == -math.inf
