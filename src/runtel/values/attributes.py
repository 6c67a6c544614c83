"""OTel-legal span attributes from user values: one attribute value, or a config flattened to dotted keys.

OTel accepts only primitives and homogeneous primitive sequences, so anything else is turned into a
homogeneous list, compact JSON text (:mod:`runtel.values.jsonable`) or a bounded repr, within length,
item and attribute-count limits. Nothing here raises.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterable, Mapping
from itertools import islice
from pathlib import PurePath
from typing import Any, Final

from runtel.values.containers import normalize_one
from runtel.values.jsonable import to_jsonable, unique_key
from runtel.values.markers import CYCLE_MARK, DEFAULT_MAX_DEPTH, DEPTH_MARK, TRUNCATED_KEY
from runtel.values.reprs import safe_repr
from runtel.values.scalars import INT64_MAX, INT64_MIN, PRIMITIVE_TYPES, AttributeValue, otel_int, truncate

__all__ = ("SEQUENCE_MAX_ITEMS", "to_attribute_value", "to_attributes")

SEQUENCE_MAX_ITEMS: Final = 256
"""Attributes: homogeneous primitive sequences keep their first 256 items (and flag ``__truncated__``)."""


def _homogeneous(items: Iterable[object], n: int, max_length: int, max_items: int) -> tuple[list[Any], bool] | None:
    """A homogeneous primitive list (ints mixed with floats become floats), or None if not possible."""
    out: list[Any] = []
    kinds: set[type] = set()
    for x in islice(items, max_items):
        cls = type(x)
        if cls is str:
            out.append(truncate(x, max_length))  # type: ignore[arg-type]
        elif cls is bool or cls is float:
            out.append(x)
        elif cls is int:
            if not INT64_MIN <= x <= INT64_MAX:  # type: ignore[operator]
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
        return truncate(value, max_length), False  # type: ignore[arg-type]
    if cls is bool or cls is float:
        return value, False  # type: ignore[return-value]
    if cls is int:
        return otel_int(value, max_length), False  # type: ignore[arg-type]
    if value is None:
        return "None", False
    try:
        if isinstance(value, enum.Enum):
            inner = value.value
            if type(inner) in PRIMITIVE_TYPES:
                return _attribute_value(inner, max_length, max_items)
            return truncate(safe_repr(value, max_length), max_length), False
        if isinstance(value, str):
            return truncate(str.__str__(value), max_length), False
        if isinstance(value, int):
            return otel_int(int.__int__(value), max_length), False
        if isinstance(value, float):
            return float.__float__(value), False
        np = sys.modules.get("numpy")
        if np is not None and isinstance(value, np.generic):
            item = value.item()
            if type(item) in PRIMITIVE_TYPES:
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
            return truncate(str(value), max_length), False
        if isinstance(value, Mapping) and not value:
            return "{}", False
        # Each container adds >= 2 characters of JSON, so visiting more than max_length/2 is wasted work.
        j = to_jsonable(value, max_str=max_length, max_items=max_items, max_depth=8, max_nodes=max(max_length // 2, 8))
        if isinstance(j, str):
            return truncate(j, max_length), False
        if isinstance(j, dict) and set(j) == {"__type__", "__repr__"}:
            return truncate(str(j["__repr__"]), max_length), False
        text = json.dumps(j, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return truncate(text, max_length), False
    except Exception:
        return truncate(safe_repr(value, max_length), max_length), False


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
        self.out[unique_key(key, self.out)] = value

    def walk(self, value: object, key: str, depth: int) -> None:
        if self.full:
            return
        cls = type(value)
        if cls is str or cls is bool or cls is int or cls is float:
            self.emit(key or "value", _attribute_value(value, self.max_length, self.max_items)[0])
            return
        if value is None:
            return  # OTel drops None attributes; run.json keeps the null
        n = normalize_one(value)
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
                ks = truncate(ks, self.max_length) if ks else '""'
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
        flat.out.setdefault(base or "value", truncate(safe_repr(value, max_length), max_length))
    if flat.truncated:
        flat.out[f"{base}.{TRUNCATED_KEY}" if base else TRUNCATED_KEY] = True
    return flat.out
