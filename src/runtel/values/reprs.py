"""A bounded repr that never raises, for logs, placeholders and non-string keys.

Containers show their first few items only (reprlib), arrays a one-line shape/dtype brief (never their
data), and a raising ``__repr__`` gives a placeholder instead of an exception.
"""

from __future__ import annotations

import builtins
import collections
import functools
import reprlib
from typing import Any, Final

from runtel.values.arrays import array_brief
from runtel.values.scalars import int_text, type_name, utf8_safe

__all__ = ("safe_repr",)


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
        s = int_text(x)
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
        brief = array_brief(x)
        if brief is not None:
            return brief
        try:
            s = builtins.repr(x)
            if not isinstance(s, str):
                raise TypeError("__repr__ returned non-string")
        except Exception as exc:
            return f"<{type_name(x)} object (repr failed: {type(exc).__name__})>"
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
        s = f"<{type_name(value)} object (repr failed: {type(exc).__name__})>"
    if len(s) > limit:
        s = s[: limit - 3] + "..."
    return utf8_safe(s)

