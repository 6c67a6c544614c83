"""JSON-safe deep copies of user values, for run.json.

Any value becomes something ``json.dumps(..., allow_nan=False)`` accepts and that encodes as UTF-8:
containers are walked with cycle, depth, size and node limits (see :mod:`runtel.values.markers`), and
anything that cannot be converted degrades to a ``{"__type__", "__repr__"}`` placeholder instead of
raising.
"""

from __future__ import annotations

import base64
import datetime as _dt
import enum
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from pathlib import PurePath
from typing import Any, Final

from runtel.values.arrays import summarize_array_like
from runtel.values.containers import normalize_one
from runtel.values.markers import (
    CYCLE_MARK,
    DEFAULT_MAX_DEPTH,
    DEPTH_MARK,
    MORE_ITEMS_FORMAT,
    TRUNCATED_KEY,
    TRUNCATION_MARK,
)
from runtel.values.reprs import safe_repr
from runtel.values.scalars import INT64_MIN, int_text, truncate, type_name

__all__ = ("BYTES_INLINE_MAX", "json_dumps", "to_jsonable", "unique_key")

BYTES_INLINE_MAX: Final = 1024
"""JSON: bytes up to this length are kept as ``{"__bytes__": len, "base64": ...}``; longer ones as
``{"__bytes__": len, "sha256": hexdigest}`` (a fingerprint, so a record never balloons with binary data)."""


def _is_exact_number(value: object) -> bool:
    """A Decimal or Fraction, checked without importing those modules (a value of theirs implies they are loaded)."""
    for module, name in (("decimal", "Decimal"), ("fractions", "Fraction")):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(value, getattr(loaded, name)):
            return True
    return False


def unique_key(key: str, taken: Mapping[str, object] | set[str], also: set[str] | None = None) -> str:
    """``key``, or ``key#2``, ``key#3``... the first one in neither ``taken`` nor ``also``.

    How both JSON dicts and flattened attributes keep two keys that render alike (``1`` and ``"1"``).
    """
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


def finite_json(data: Any) -> Any:
    """``data`` (JSON-ready: dicts, lists, tuples, scalars) with every non-finite float as its OTLP/JSON
    string, so that ``json.dumps(..., allow_nan=False)`` succeeds: containers copied, everything else as is."""
    if isinstance(data, float):  # numpy's float64 is a float too
        return _float_json(float(data))
    if isinstance(data, Mapping):
        return {key: finite_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(value) for value in data]
    return data


def _object_json(value: object) -> dict[str, str]:
    return {"__type__": type_name(value), "__repr__": safe_repr(value)}


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
            return truncate(val, self.max_str)
        if cls is bool or v is None:
            return v
        if cls is int:
            return v if INT64_MIN <= val <= 2**64 - 1 else int_text(val)
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
            return truncate(str.__str__(v), self.max_str)
        if isinstance(v, bool):
            return bool(v)
        if isinstance(v, int):
            return self.conv(int.__int__(v), depth)
        if isinstance(v, float):
            return _float_json(float.__float__(v))
        if isinstance(v, (bytes, bytearray, memoryview)):
            return _bytes_json(v)
        if isinstance(v, PurePath):
            return truncate(str(v), self.max_str)
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
        n = normalize_one(v)
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
                out[unique_key(TRUNCATED_KEY, out)] = len(d) - self.max_items
                break
            if type(k) is str:
                ks = unique_key(truncate(k, self.max_str), out)
            else:
                if str_keys is None:
                    str_keys = {s for s in d if type(s) is str}
                text = str.__str__(k) if isinstance(k, str) else safe_repr(k)
                ks = unique_key(truncate(text, self.max_str), out, str_keys)
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
    containers → dicts (:func:`~runtel.values.containers.normalize_config`), other objects →
    ``{"__type__", "__repr__"}``.
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

