"""Sample values shared by the tests of the runtel.values modules (test_values_*.py).

Awkward user objects (raising ``__repr__``, hostile dunders, raising Mappings), config-like classes, the
OTel legality check and a hypothesis strategy of nested values. Imported as ``values_cases``: pytest's
default (prepend) import mode puts tests/unit on sys.path, as tests/integration does for its conftest.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from hypothesis import strategies as st

MB10 = 10 * 1024 * 1024


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


_text = st.text(st.characters(exclude_categories=[]), max_size=20)
_hashable_leaf = st.none() | st.booleans() | st.integers() | st.floats() | _text | st.binary(max_size=20)
_leaf = _hashable_leaf
#: Nested dicts/lists/tuples/sets of awkward leaves (any text, NaN, huge ints, bytes, mixed keys).
nested_values = st.recursive(
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
