"""OTel's rules for scalar values, and the bounded, UTF-8-safe text every other values module builds on.

* Strings are cut with :func:`truncate` (which appends :data:`~runtel.values.markers.TRUNCATION_MARK`).
* Lone surrogates (undecodable file names) are replaced by ``\\udcxx`` escapes (:func:`utf8_safe`) so the
  value always encodes as UTF-8 (OTLP/protobuf and run.json would otherwise fail to write).
* Integers outside int64 (OTel's range; JSON readers lose precision too) become decimal strings
  (:func:`otel_int`).

Every function here is pure and never raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, TypeAlias

from runtel.values.markers import TRUNCATION_MARK

__all__ = (
    "INT64_MAX",
    "INT64_MIN",
    "PRIMITIVE_TYPES",
    "AttributeValue",
    "int_text",
    "otel_int",
    "truncate",
    "type_name",
    "utf8_safe",
)

AttributeValue: TypeAlias = str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]
"""What OTel accepts as a span attribute value: a primitive or a homogeneous sequence of one primitive type."""

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
PRIMITIVE_TYPES: Final = (str, int, float, bool, type(None))
"""Exact types (``type(v) in PRIMITIVE_TYPES``; subclasses do not count) that need no container conversion."""


def type_name(value: object) -> str:
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


def utf8_safe(text: str) -> str:
    """Replace lone surrogates so the string always encodes as UTF-8 (OTLP and run.json need that)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def truncate(text: str, limit: int) -> str:
    """Cut a string to ``limit`` characters plus the mark; copies at most ``limit`` characters.

    The result is always UTF-8 safe (:func:`utf8_safe`), cut or not.
    """
    if len(text) > limit:
        text = utf8_safe(text[: max(limit, 0)])
        if len(text) > limit:  # escaping surrogates lengthened it
            text = text[: max(limit, 0)]
        return text + TRUNCATION_MARK
    return utf8_safe(text)


def int_text(value: int) -> str:
    """Decimal text of an int; ints too long for ``str()`` (3.11's digit limit) get a size placeholder."""
    try:
        return str(int.__repr__(value))
    except ValueError:
        return f"<int with {value.bit_length()} bits>"


def otel_int(value: int, limit: int = 4096) -> int | str:
    """Ints in int64 stay ints (OTLP's type); others become decimal strings (cut at ``limit``)."""
    return value if INT64_MIN <= value <= INT64_MAX else truncate(int_text(value), limit)

