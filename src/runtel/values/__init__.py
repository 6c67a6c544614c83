"""Turn arbitrary user values into OTel-legal span attributes and JSON-safe record values.

Users hand runtel configs, tags and function arguments of any type. Telemetry must never break their
program, so every public function here is pure, bounded in time and size, and never raises: a value
that cannot be converted degrades to a marked placeholder instead.

Limits and markers (documented in docs/ for users):

* Strings longer than the limit are cut and end with :data:`TRUNCATION_MARK` (``"…[truncated]"``), so a
  cut string is at most ``limit + len(TRUNCATION_MARK)`` characters (limits count code points).
* Lone surrogates (undecodable file names) are replaced by ``\\udcxx`` escapes so the value always encodes
  as UTF-8 (OTLP/protobuf and run.json would otherwise fail to write).
* A reference cycle becomes :data:`CYCLE_MARK`; nesting deeper than ``max_depth`` becomes :data:`DEPTH_MARK`.
* Integers outside int64 (OTel's range; JSON readers lose precision too) become decimal strings.
* Array-likes (numpy, torch, jax, cupy, tensorflow; duck-typed, never imported) become summaries
  (:func:`summarize_array_like`), never element lists.
* NumPy is only used when it is already in ``sys.modules`` (an array of it exists, so it was imported).

This module is in the base layer: it imports the standard library only.
"""

from __future__ import annotations

import base64
import builtins
import collections
import dataclasses
import datetime as _dt
import enum
import functools
import json
import math
import reprlib
import sys
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from pathlib import PurePath
from typing import Any, Final, TypeAlias

__all__ = (
    "CYCLE_MARK",
    "DEPTH_MARK",
    "TRUNCATED_KEY",
    "TRUNCATION_MARK",
    "AttributeValue",
    "json_dumps",
    "normalize_config",
    "safe_repr",
    "summarize_array_like",
    "to_attribute_value",
    "to_attributes",
    "to_jsonable",
)

AttributeValue: TypeAlias = str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]
"""What OTel accepts as a span attribute value: a primitive or a homogeneous sequence of one primitive type."""

TRUNCATION_MARK: Final = "…[truncated]"
CYCLE_MARK: Final = "<cycle>"
DEPTH_MARK: Final = "<max depth>"
TRUNCATED_KEY: Final = "__truncated__"
"""Flattened attributes: ``<prefix>.__truncated__ = True`` when attributes or sequence items were dropped.
JSON: a dict that had more than ``max_items`` entries gets ``"__truncated__": <number of dropped entries>``."""

MORE_ITEMS_FORMAT: Final = "…[{n} more items]"
"""JSON: last element of a list that had more than ``max_items`` elements."""

BYTES_INLINE_MAX: Final = 1024
"""JSON: bytes up to this length are kept as ``{"__bytes__": len, "base64": ...}``; longer ones as
``{"__bytes__": len, "sha256": hexdigest}`` (a fingerprint, so a record never balloons with binary data)."""

SEQUENCE_MAX_ITEMS: Final = 256
"""Attributes: homogeneous primitive sequences keep their first 256 items (and flag ``__truncated__``)."""

DEFAULT_MAX_DEPTH: Final = 32
STATS_MAX_ELEMENTS: Final = 10_000_000
"""Array summaries skip min/max/mean/nan_count/inf_count above this many elements (a full pass per stat
would cost tens of milliseconds per call)."""

ARRAY_MODULES: Final = frozenset({"numpy", "torch", "jax", "jaxlib", "cupy", "tensorflow"})
"""Top-level modules whose objects with ``shape`` and ``dtype`` are treated as arrays."""

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_PRIMITIVES: Final = (str, int, float, bool, type(None))


# --- small helpers ------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    """``module.QualName`` of the value's type (bare name for builtins), for placeholders."""
    try:
        cls = type(value)
        qual = getattr(cls, "__qualname__", None)
        if not isinstance(qual, str):
            qual = cls.__name__
        module = getattr(cls, "__module__", None)
        if isinstance(module, str) and module != "builtins":
            return f"{module}.{qual}"
        return str(qual)
    except Exception:
        return "object"


def _clean_str(text: str) -> str:
    """Replace lone surrogates so the string always encodes as UTF-8 (OTLP and run.json need that)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _cut(text: str, limit: int) -> str:
    """Cut a string to ``limit`` characters plus the mark; copies at most ``limit`` characters."""
    if len(text) > limit:
        text = _clean_str(text[: max(limit, 0)])
        if len(text) > limit:  # escaping surrogates lengthened it
            text = text[: max(limit, 0)]
        return text + TRUNCATION_MARK
    return _clean_str(text)


def _int_text(value: int) -> str:
    """Decimal text of an int; ints too long for ``str()`` (3.11's digit limit) get a size placeholder."""
    try:
        return str(int.__repr__(value))
    except ValueError:
        return f"<int with {value.bit_length()} bits>"


def _is_exact_number(value: object) -> bool:
    """A Decimal or Fraction, checked without importing those modules (a value of theirs implies they are loaded)."""
    for module, name in (("decimal", "Decimal"), ("fractions", "Fraction")):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(value, getattr(loaded, name)):
            return True
    return False


def _otel_int(value: int, limit: int = 4096) -> int | str:
    """Ints in int64 stay ints (OTLP's type); others become decimal strings (cut at ``limit``)."""
    return value if _INT64_MIN <= value <= _INT64_MAX else _cut(_int_text(value), limit)


def _module_root(value: object) -> str:
    module = getattr(type(value), "__module__", None)
    return module.partition(".")[0] if isinstance(module, str) else ""


# --- safe_repr ----------------------------------------------------------------------------------


class _SafeRepr(reprlib.Repr):
    """reprlib with limits tied to one length, that never raises and never renders huge values in full."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = 8
        self.maxdict = 6
        self.maxarray = 8
        self.maxstring = max(limit, 8)
        self.maxlong = max(limit, 8)
        self.maxother = max(limit, 8)

    def repr1(self, x: Any, level: int) -> str:
        # Dispatch on the real type only: a user class named "str" must not reach repr_str.
        cls = type(x)
        name = cls.__name__.replace(" ", "_")
        if cls in _REPRLIB_TYPES:
            return str(getattr(self, "repr_" + name)(x, level))
        if isinstance(x, (list, tuple, dict, set, frozenset)) and len(x) > self.maxlist:
            # A big container subclass (OrderedDict, Counter, user lists): bounded like its base type.
            base = next(b for b in (dict, list, tuple, set, frozenset) if isinstance(x, b))
            return f"{name}({getattr(self, 'repr_' + base.__name__)(x, level)})"
        return self.repr_instance(x, level)

    def repr_int(self, x: Any, level: int) -> str:
        s = _int_text(x)
        if len(s) > self.maxlong:
            i = max(0, (self.maxlong - 3) // 2)
            j = max(0, self.maxlong - 3 - i)
            s = s[:i] + "..." + s[len(s) - j :]
        return s

    def repr_bytes(self, x: Any, level: int) -> str:
        return self._repr_binary(bytes(x[: self.maxstring + 1]), len(x), "")

    def repr_bytearray(self, x: Any, level: int) -> str:
        return self._repr_binary(bytes(x[: self.maxstring + 1]), len(x), "bytearray")

    def _repr_binary(self, head: bytes, n: int, wrapper: str) -> str:
        s = builtins.repr(head[: self.maxstring]) + ("..." if n > self.maxstring else "")
        return f"{wrapper}({s})" if wrapper else s

    def repr_instance(self, x: Any, level: int) -> str:
        brief = _array_brief(x)
        if brief is not None:
            return brief
        try:
            s = builtins.repr(x)
            if not isinstance(s, str):
                raise TypeError("__repr__ returned non-string")
        except Exception as exc:
            return f"<{_type_name(x)} object (repr failed: {type(exc).__name__})>"
        if len(s) > self.maxother:
            i = max(0, (self.maxother - 3) // 2)
            j = max(0, self.maxother - 3 - i)
            s = s[:i] + "..." + s[len(s) - j :]
        return s


_REPRLIB_TYPES: Final = frozenset({str, int, list, tuple, dict, set, frozenset, bytes, bytearray, collections.deque})


@functools.lru_cache(maxsize=16)
def _repr_for(limit: int) -> _SafeRepr:
    return _SafeRepr(limit)


def safe_repr(value: object, limit: int = 200) -> str:
    """A repr for logs and placeholders that never raises and is at most ``limit`` characters.

    Containers show their first few items only (reprlib), arrays a one-line shape/dtype brief (never their
    data, so no GPU-to-host copy), and a raising ``__repr__`` gives ``<Type object (repr failed: Exc)>``.
    Longer results are cut in the middle with ``...``.
    """
    try:
        limit = max(int(limit), 8)
        s = _repr_for(limit).repr(value)
    except Exception as exc:
        s = f"<{_type_name(value)} object (repr failed: {type(exc).__name__})>"
    if len(s) > limit:
        s = s[: limit - 3] + "..."
    return _clean_str(s)


# --- arrays -------------------------------------------------------------------------------------


def _is_array_like(value: object) -> bool:
    """An array/tensor of a known array library (not a numpy scalar, not a class)."""
    try:
        if isinstance(value, type) or _module_root(value) not in ARRAY_MODULES:
            return False
        np = sys.modules.get("numpy")
        if np is not None and isinstance(value, np.generic):
            return False
        return hasattr(value, "shape") and hasattr(value, "dtype")
    except Exception:
        return False


def _shape_of(value: Any) -> list[int]:
    """Shape as ``list[int]``; unknown dimensions (symbolic, None) are -1."""
    dims: list[int] = []
    for d in value.shape:
        try:
            dims.append(int(d))
        except Exception:
            dims.append(-1)
    return dims


def _dtype_name(value: Any) -> str:
    dtype = value.dtype
    name = getattr(dtype, "name", None)
    if isinstance(name, str) and _module_root(value) != "torch":
        return name
    text = str(dtype)
    return text[6:] if text.startswith("torch.") else text


def _device_name(value: Any) -> str:
    device = getattr(value, "device", None)
    if device is None:
        return "cpu"
    if callable(device) and _module_root(value) in ("jax", "jaxlib"):  # older jax: a method
        device = device()
    return _cut(str(device), 64)


def _array_brief(value: object) -> str | None:
    """``ndarray(shape=[3, 4], dtype=float32, device=cpu)`` for array-likes, else None."""
    if not _is_array_like(value):
        return None
    try:
        v: Any = value
        return f"{type(value).__name__}(shape={_shape_of(v)}, dtype={_dtype_name(v)}, device={_device_name(v)})"
    except Exception:
        return None


def _num(value: Any, kind: str) -> bool | int | float | str:
    """A reduced 0-d result as an OTel-legal python scalar of the dtype's kind."""
    if kind == "b":
        return bool(value)
    if kind in "iu":
        return _otel_int(int(value))
    return float(value)


def _float_stats(
    mn: float,
    mx: float,
    count_nan: Callable[[], int],
    count_inf: Callable[[], int],
    nan_aware: Callable[[], tuple[float, float, float]],
    plain_mean: Callable[[], float],
    size: int,
    out: dict[str, AttributeValue],
) -> None:
    """Float stats from a plain min/max first: min/max propagate NaN, so clean data (the usual case)
    needs three passes and no temporaries; the NaN/inf counting passes run only when they can be non-zero."""
    if mn != mn or mx != mx:  # at least one NaN
        nan = count_nan()
        out["nan_count"] = nan
        if nan == size:  # all NaN: no min/max/mean (and numpy's nanmin would warn)
            out["inf_count"] = 0
            return
        mn, mx, mean = nan_aware()
    else:
        out["nan_count"] = 0
        mean = plain_mean()
    out["inf_count"] = count_inf() if math.isinf(mn) or math.isinf(mx) else 0
    out["min"] = mn
    out["max"] = mx
    out["mean"] = mean


def _xp_stats(value: Any, xp: Any, kind: str, size: int, out: dict[str, AttributeValue]) -> None:
    """min/max/mean/nan/inf with a numpy-compatible namespace (numpy, cupy, jax.numpy), NaN-aware."""
    if kind == "c":  # complex has no order: counts only
        out["nan_count"] = int(xp.isnan(value).sum())
        out["inf_count"] = int(xp.isinf(value).sum())
        return
    is_numpy = xp is sys.modules.get("numpy")
    if kind == "f":
        _float_stats(
            float(value.min()),
            float(value.max()),
            lambda: int(xp.isnan(value).sum()),
            lambda: int(xp.isinf(value).sum()),
            lambda: (float(xp.nanmin(value)), float(xp.nanmax(value)), float(xp.nanmean(value))),
            lambda: float(value.mean(dtype="float64")) if is_numpy else float(value.mean()),
            size,
            out,
        )
        return
    out["nan_count"] = 0
    out["inf_count"] = 0
    out["min"] = _num(value.min(), kind)
    out["max"] = _num(value.max(), kind)
    out["mean"] = float(value.mean(dtype="float64")) if is_numpy else float(value.mean())


def _torch_stats(value: Any, size: int, out: dict[str, AttributeValue]) -> None:
    """Stats with tensor methods so reductions run on the tensor's device; only scalars cross to host."""
    t = value.detach() if hasattr(value, "detach") else value
    if t.is_complex():
        out["nan_count"] = int(t.isnan().sum().item())
        out["inf_count"] = int(t.isinf().sum().item())
        return
    if t.is_floating_point():
        inf = math.inf

        def nan_aware() -> tuple[float, float, float]:
            return (
                float(t.nan_to_num(nan=inf, posinf=inf, neginf=-inf).min().item()),
                float(t.nan_to_num(nan=-inf, posinf=inf, neginf=-inf).max().item()),
                float(t.nanmean().item()),
            )

        _float_stats(
            float(t.min().item()),
            float(t.max().item()),
            lambda: int(t.isnan().sum().item()),
            lambda: int(t.isinf().sum().item()),
            nan_aware,
            lambda: float(t.mean().item()),
            size,
            out,
        )
        return
    kind = "b" if _dtype_name(value) == "bool" else "i"
    out["nan_count"] = 0
    out["inf_count"] = 0
    out["min"] = _num(t.min().item(), kind)
    out["max"] = _num(t.max().item(), kind)
    out["mean"] = float(t.float().mean().item())


def summarize_array_like(
    value: object, *, stats_max_elements: int = STATS_MAX_ELEMENTS
) -> dict[str, AttributeValue] | None:
    """Summary of an array/tensor without copying it to host: ``None`` when the value is not array-like.

    Keys: ``type``, ``shape`` (list[int]), ``dtype``, ``device``, ``size``, and for numeric dtypes
    (bool/int/uint/float; complex gets only the counts) with at most ``stats_max_elements`` elements:
    ``min``, ``max``, ``mean`` (NaN-ignoring), ``nan_count``, ``inf_count``. Stats are computed for numpy,
    torch (tensor methods, on device), jax and cupy; tensorflow gets shape/dtype only. A stat that fails
    (exotic dtype, traced jax value, meta tensor) is simply absent. Public as ``capture.summarize_array``.
    """
    if not _is_array_like(value):
        return None
    v: Any = value
    out: dict[str, AttributeValue] = {"type": _type_name(value)}
    try:
        shape = _shape_of(v)
        out["shape"] = shape
        out["dtype"] = _dtype_name(v)
        out["device"] = _device_name(v)
        size = math.prod(shape) if all(d >= 0 for d in shape) else -1
        out["size"] = _otel_int(size)
    except Exception:
        return out
    if not 0 < size <= stats_max_elements:
        return out
    stats: dict[str, AttributeValue] = {}
    try:
        root = _module_root(value)
        if root == "torch":
            _torch_stats(v, size, stats)
        else:
            xp = {"numpy": "numpy", "cupy": "cupy", "jax": "jax.numpy", "jaxlib": "jax.numpy"}.get(root)
            xp_mod = sys.modules.get(xp) if xp else None
            kind = getattr(v.dtype, "kind", "")
            if xp_mod is not None and isinstance(kind, str) and len(kind) == 1 and kind in "biufc":
                errstate = getattr(xp_mod, "errstate", None) if root == "numpy" else None
                if errstate is not None:
                    with errstate(all="ignore"):
                        _xp_stats(v, xp_mod, kind, size, stats)
                else:
                    _xp_stats(v, xp_mod, kind, size, stats)
    except Exception:
        pass  # keep whatever stats were computed before the failure
    out.update(stats)
    return out


# --- config containers --------------------------------------------------------------------------


def _normalize_one(value: object) -> object:
    """One level of config-container conversion (children left as they are); never raises."""
    cls = type(value)
    if cls in _PRIMITIVES or cls is dict or cls is list or cls is tuple or isinstance(value, type):
        return value
    obj: Any = value  # duck-typed from here on
    try:
        module = getattr(cls, "__module__", None)
        if isinstance(module, str) and module.startswith("omegaconf"):
            oc = getattr(sys.modules.get("omegaconf"), "OmegaConf", None)
            if oc is not None:
                try:
                    return oc.to_container(value, resolve=True)
                except Exception:
                    return oc.to_container(value, resolve=False)
        if callable(getattr(cls, "model_dump", None)):  # pydantic v2
            return obj.model_dump(mode="python")
        if getattr(cls, "__fields__", None) is not None and callable(getattr(cls, "dict", None)):  # pydantic v1
            return obj.dict()
        if dataclasses.is_dataclass(value):
            return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        attrs_fields = getattr(cls, "__attrs_attrs__", None)
        if attrs_fields is not None:
            return {a.name: getattr(value, a.name) for a in attrs_fields}
        argparse = sys.modules.get("argparse")
        if (argparse is not None and isinstance(value, argparse.Namespace)) or isinstance(value, types.SimpleNamespace):
            return dict(vars(value))
        if isinstance(value, tuple) and hasattr(cls, "_asdict") and hasattr(cls, "_fields"):
            return dict(obj._asdict())
        if isinstance(value, Mapping):
            return dict(value.items())
    except Exception:
        return value
    return value


def normalize_config(value: object) -> object:
    """Plain dicts/lists from config containers, without importing their libraries.

    Handles argparse/SimpleNamespace, dataclass instances, pydantic v2/v1 models, OmegaConf
    DictConfig/ListConfig (resolved; unresolvable interpolations left as written), attrs classes,
    NamedTuples and any Mapping, recursively through dicts, lists and tuples (so redaction sees every
    key). Shared references and cycles are preserved as such. Anything else is returned unchanged.
    """
    memo: dict[int, object] = {}
    keep: list[object] = []  # keeps converted originals alive so their ids are not reused mid-walk

    def walk(v: object, depth: int) -> object:
        if type(v) in _PRIMITIVES or depth > DEFAULT_MAX_DEPTH * 2:
            return v
        key = id(v)
        if key in memo:
            return memo[key]
        n = _normalize_one(v)
        if type(n) is dict:
            d: dict[Any, object] = {}
            memo[key] = d
            keep.append(v)
            for k, x in n.items():
                d[k] = walk(x, depth + 1)
            return d
        if type(n) is list:
            lst: list[object] = []
            memo[key] = lst
            keep.append(v)
            lst.extend(walk(x, depth + 1) for x in n)
            return lst
        if type(n) is tuple:
            return tuple(walk(x, depth + 1) for x in n)
        return n

    try:
        return walk(value, 0)
    except Exception:
        return value


# --- to_jsonable --------------------------------------------------------------------------------


def _uniquify(key: str, taken: Mapping[str, object] | set[str], also: set[str] | None = None) -> str:
    """``key``, or ``key#2``, ``key#3``... the first one not yet used."""
    if key not in taken and (also is None or key not in also):
        return key
    i = 2
    while True:
        candidate = f"{key}#{i}"
        if candidate not in taken and (also is None or candidate not in also):
            return candidate
        i += 1


def _bytes_json(value: bytes | bytearray | memoryview) -> dict[str, Any]:
    n = value.nbytes if isinstance(value, memoryview) else len(value)
    if n <= BYTES_INLINE_MAX:
        return {"__bytes__": n, "base64": base64.b64encode(value).decode("ascii")}
    import hashlib  # here: importing it loads OpenSSL (~4 ms), which most runs never need

    return {"__bytes__": n, "sha256": hashlib.sha256(value).hexdigest()}


def _float_json(value: float) -> float | str:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _object_json(value: object) -> dict[str, str]:
    return {"__type__": _type_name(value), "__repr__": safe_repr(value)}


class _Jsonify:
    """One to_jsonable walk: limits plus the ids on the current path (for cycle detection)."""

    __slots__ = ("active", "max_depth", "max_items", "max_str", "nodes")

    def __init__(self, max_str: int, max_items: int, max_depth: int, max_nodes: int | None) -> None:
        self.max_str = max_str
        self.max_items = max_items
        self.max_depth = max_depth
        self.nodes = max_nodes if max_nodes is not None else -1
        self.active: set[int] = set()

    def conv(self, v: object, depth: int) -> Any:
        cls = type(v)
        val: Any = v
        if cls is str:
            return _cut(val, self.max_str)
        if cls is bool or v is None:
            return v
        if cls is int:
            return v if _INT64_MIN <= val <= 2**64 - 1 else _int_text(val)
        if cls is float:
            return _float_json(val)
        try:
            if cls is dict or cls is list or cls is tuple:
                return self._guarded(v, depth)
            return self._conv_other(v, depth)
        except Exception:
            try:
                return _object_json(v)
            except Exception:  # pragma: no cover - _object_json already never raises
                return "<unconvertible>"

    def _conv_other(self, v: object, depth: int) -> Any:
        if isinstance(v, enum.Enum):
            return self.conv(v.value, depth + 1) if depth < self.max_depth else DEPTH_MARK
        if isinstance(v, str):
            return _cut(str.__str__(v), self.max_str)
        if isinstance(v, bool):
            return bool(v)
        if isinstance(v, int):
            return self.conv(int.__int__(v), depth)
        if isinstance(v, float):
            return _float_json(float.__float__(v))
        if isinstance(v, (bytes, bytearray, memoryview)):
            return _bytes_json(v)
        if isinstance(v, PurePath):
            return _cut(str(v), self.max_str)
        if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
            return v.isoformat()
        if isinstance(v, complex) or _is_exact_number(v):
            return str(v)
        np = sys.modules.get("numpy")
        if np is not None and isinstance(v, np.generic):
            item = v.item()
            if type(item) is type(v):  # e.g. longdouble: item() returns itself
                return _object_json(v)
            return self.conv(item, depth)
        summary = summarize_array_like(v)
        if summary is not None:
            return {k: self.conv(x, depth + 1) for k, x in summary.items()}
        return self._guarded(v, depth)

    def _guarded(self, v: object, depth: int) -> Any:
        """Containers: depth, cycle and node-budget checks around the conversion."""
        if depth >= self.max_depth:
            return DEPTH_MARK
        key = id(v)
        if key in self.active:
            return CYCLE_MARK
        if self.nodes == 0:
            return TRUNCATION_MARK
        self.nodes -= 1
        self.active.add(key)
        try:
            return self._container(v, depth)
        finally:
            self.active.discard(key)

    def _container(self, v: object, depth: int) -> Any:
        n = _normalize_one(v)
        if isinstance(n, dict):
            return self._mapping(n, depth)
        if isinstance(n, (set, frozenset)):
            items = sorted(n, key=safe_repr)
            return self._sequence(items, len(items), depth)
        if isinstance(n, (list, tuple, range)) or (
            isinstance(n, Sequence) and not isinstance(n, (str, bytes, bytearray, memoryview))
        ):
            return self._sequence(n, len(n), depth)
        if isinstance(n, Mapping):
            return self._mapping(dict(n.items()), depth)
        if n is not v:  # e.g. a pydantic model dumped to something else
            return self.conv(n, depth + 1)
        return _object_json(v)

    def _sequence(self, items: Iterable[object], n: int, depth: int) -> list[Any]:
        out = [self.conv(x, depth + 1) for x in islice(items, self.max_items)]
        if n > self.max_items:
            out.append(MORE_ITEMS_FORMAT.format(n=n - self.max_items))
        return out

    def _mapping(self, d: dict[Any, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        str_keys: set[str] | None = None
        for i, (k, x) in enumerate(d.items()):
            if i >= self.max_items:
                out[_uniquify(TRUNCATED_KEY, out)] = len(d) - self.max_items
                break
            if type(k) is str:
                ks = _uniquify(_cut(k, self.max_str), out)
            else:
                if str_keys is None:
                    str_keys = {s for s in d if type(s) is str}
                text = str.__str__(k) if isinstance(k, str) else safe_repr(k)
                ks = _uniquify(_cut(text, self.max_str), out, str_keys)
            out[ks] = self.conv(x, depth + 1)
        return out


def to_jsonable(
    value: object,
    *,
    max_str: int = 1_048_576,
    max_items: int = 10_000,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int | None = None,
) -> Any:
    """A JSON-safe deep copy of ``value`` for run.json; never raises.

    dict keys become strings (non-string keys via :func:`safe_repr`; a collision gets ``#2``, ``#3``...),
    tuples/sets → lists (sets sorted by repr), bytes → ``{"__bytes__": n, "base64"|"sha256": ...}``
    (see :data:`BYTES_INLINE_MAX`), Path → str, Enum → its value, datetime/date/time → ISO string,
    Decimal/Fraction/complex → str, NaN/±inf → ``"NaN"``/``"Infinity"``/``"-Infinity"``, ints outside
    [-2**63, 2**64) → decimal string, numpy scalars → Python scalars, arrays → summary dict, config
    containers → dicts (:func:`normalize_config`), other objects → ``{"__type__", "__repr__"}``.
    Limits: strings > ``max_str`` chars cut + :data:`TRUNCATION_MARK`; containers keep ``max_items`` entries
    (+ :data:`MORE_ITEMS_FORMAT` / ``"__truncated__": n``); :data:`CYCLE_MARK`, :data:`DEPTH_MARK`;
    ``max_nodes`` (optional) caps the number of containers visited, later ones become the truncation mark.
    """
    try:
        return _Jsonify(max_str, max_items, max_depth, max_nodes).conv(value, 0)
    except Exception:  # pragma: no cover - conv already never raises (RecursionError included)
        return _object_json(value)


def json_dumps(value: object) -> str:
    """Compact JSON text of :func:`to_jsonable` (UTF-8 safe, no NaN tokens); never raises."""
    try:
        return json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except Exception:
        return json.dumps(_object_json(value), ensure_ascii=False, separators=(",", ":"))


# --- attributes ---------------------------------------------------------------------------------


def _homogeneous(items: Iterable[object], n: int, max_length: int, max_items: int) -> tuple[list[Any], bool] | None:
    """A homogeneous primitive list (ints mixed with floats become floats), or None if not possible."""
    out: list[Any] = []
    kinds: set[type] = set()
    for x in islice(items, max_items):
        cls = type(x)
        if cls is str:
            out.append(_cut(x, max_length))  # type: ignore[arg-type]
        elif cls is bool or cls is float:
            out.append(x)
        elif cls is int:
            if not _INT64_MIN <= x <= _INT64_MAX:  # type: ignore[operator]
                return None
            out.append(x)
        elif isinstance(x, float) and not isinstance(x, enum.Enum):  # numpy.float64
            cls = float
            out.append(float.__float__(x))
        else:
            return None
        kinds.add(cls)
    if len(kinds) > 1:
        if kinds != {int, float}:
            return None
        out = [float(x) for x in out]
    return out, n > max_items


def _attribute_value(value: object, max_length: int, max_items: int) -> tuple[AttributeValue, bool]:
    """``to_attribute_value`` plus whether sequence items were dropped."""
    cls = type(value)
    if cls is str:
        return _cut(value, max_length), False  # type: ignore[arg-type]
    if cls is bool or cls is float:
        return value, False  # type: ignore[return-value]
    if cls is int:
        return _otel_int(value, max_length), False  # type: ignore[arg-type]
    if value is None:
        return "None", False
    try:
        if isinstance(value, enum.Enum):
            inner = value.value
            if type(inner) in _PRIMITIVES:
                return _attribute_value(inner, max_length, max_items)
            return _cut(safe_repr(value, max_length), max_length), False
        if isinstance(value, str):
            return _cut(str.__str__(value), max_length), False
        if isinstance(value, int):
            return _otel_int(int.__int__(value), max_length), False
        if isinstance(value, float):
            return float.__float__(value), False
        np = sys.modules.get("numpy")
        if np is not None and isinstance(value, np.generic):
            item = value.item()
            if type(item) in _PRIMITIVES:
                return _attribute_value(item, max_length, max_items)
        if isinstance(value, (list, tuple, set, frozenset)) and not hasattr(type(value), "_fields"):
            items: Iterable[object] = value
            if isinstance(value, (set, frozenset)):
                try:
                    items = sorted(value)
                except Exception:
                    items = sorted(value, key=safe_repr)
            found = _homogeneous(items, len(value), max_length, max_items)
            if found is not None:
                if not found[0]:
                    return "[]", False
                return found
        if isinstance(value, PurePath):
            return _cut(str(value), max_length), False
        if isinstance(value, Mapping) and not value:
            return "{}", False
        # Each container adds >= 2 characters of JSON, so visiting more than max_length/2 is wasted work.
        j = _Jsonify(max_length, max_items, 8, max(max_length // 2, 8)).conv(value, 0)
        if isinstance(j, str):
            return _cut(j, max_length), False
        if isinstance(j, dict) and set(j) == {"__type__", "__repr__"}:
            return _cut(str(j["__repr__"]), max_length), False
        text = json.dumps(j, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return _cut(text, max_length), False
    except Exception:
        return _cut(safe_repr(value, max_length), max_length), False


def to_attribute_value(value: object, *, max_length: int = 4096, max_items: int = SEQUENCE_MAX_ITEMS) -> AttributeValue:
    """One OTel-legal attribute value for any input; never raises.

    bool/int/float/str kept (strings cut at ``max_length`` + mark, ints outside int64 → str, NaN/inf kept:
    OTel allows them); ``None`` → ``"None"``; Enum → its value; homogeneous lists/tuples/sets of
    primitives → lists (first ``max_items``; ints mixed with floats → floats); empty containers → ``"[]"``
    / ``"{}"``; other containers → compact JSON text (cut); other objects → :func:`safe_repr` (cut).
    """
    return _attribute_value(value, max_length, max_items)[0]


class _Flatten:
    """One to_attributes walk."""

    __slots__ = ("active", "full", "max_attributes", "max_items", "max_length", "out", "truncated")

    def __init__(self, max_length: int, max_attributes: int, max_items: int) -> None:
        self.max_length = max_length
        self.max_attributes = max_attributes
        self.max_items = max_items
        self.out: dict[str, AttributeValue] = {}
        self.active: set[int] = set()
        self.truncated = False
        self.full = False

    def stopped(self) -> bool:
        return self.full

    def emit(self, key: str, value: AttributeValue) -> None:
        if len(self.out) >= self.max_attributes:
            self.truncated = self.full = True
            return
        self.out[_uniquify(key, self.out)] = value

    def walk(self, value: object, key: str, depth: int) -> None:
        if self.full:
            return
        cls = type(value)
        if cls is str or cls is bool or cls is int or cls is float:
            self.emit(key or "value", _attribute_value(value, self.max_length, self.max_items)[0])
            return
        if value is None:
            return  # OTel drops None attributes; run.json keeps the null
        n = _normalize_one(value)
        if isinstance(n, dict) and not n and not key:
            return  # nothing to say about an empty mapping without a name
        if not isinstance(n, dict) or not n:
            attr, cut = _attribute_value(n, self.max_length, self.max_items)
            self.truncated |= cut
            self.emit(key or "value", attr)
            return
        if depth >= DEFAULT_MAX_DEPTH:
            self.emit(key or "value", DEPTH_MARK)
            return
        ident = id(value)
        if ident in self.active:
            self.emit(key or "value", CYCLE_MARK)
            return
        self.active.add(ident)
        try:
            for k, x in n.items():
                if type(k) is str:
                    ks = k
                elif isinstance(k, enum.Enum) and isinstance(k.value, str):
                    ks = k.value
                else:
                    ks = safe_repr(k)
                ks = _cut(ks, self.max_length) if ks else '""'
                self.walk(x, f"{key}.{ks}" if key else ks, depth + 1)
                if self.stopped():
                    return
        finally:
            self.active.discard(ident)


def to_attributes(
    value: object,
    *,
    prefix: str,
    max_length: int = 4096,
    max_attributes: int = 512,
    max_items: int = SEQUENCE_MAX_ITEMS,
) -> dict[str, AttributeValue]:
    """Flatten a (config) value into dotted, OTel-legal span attributes; never raises.

    ``{'optimizer': {'lr': 0.1}}`` with prefix ``config`` (a trailing ``.`` is ignored) gives
    ``{'config.optimizer.lr': 0.1}``; with prefix ``''`` keys have no leading dot. Leaves follow
    :func:`to_attribute_value`, except that ``None`` leaves are skipped (OTel drops them; run.json keeps
    them). Keys containing ``.`` are kept as is; a key that would repeat an earlier one gets ``#2``.
    A non-mapping top-level value becomes one attribute named ``prefix`` (or ``value`` without a prefix).
    Lists are leaves (homogeneous → sequence, else JSON text). Cycles → :data:`CYCLE_MARK`, nesting past
    32 → :data:`DEPTH_MARK`. After ``max_attributes`` attributes, or when a sequence lost items beyond
    ``max_items``, ``<prefix>.__truncated__ = True`` is added (so at most ``max_attributes + 1`` entries).
    """
    base = prefix[:-1] if prefix.endswith(".") else prefix
    flat = _Flatten(max_length, max_attributes, max_items)
    try:
        flat.walk(value, base, 0)
    except Exception:
        flat.out.setdefault(base or "value", _cut(safe_repr(value, max_length), max_length))
    if flat.truncated:
        flat.out[f"{base}.{TRUNCATED_KEY}" if base else TRUNCATED_KEY] = True
    return flat.out
