"""seed_everything and the generate-inject-record seed parameter."""

from __future__ import annotations

import inspect
import logging
import random
import subprocess
import sys
import types
from typing import Any

import numpy as np
import pytest

from runtel.recording.seeding import check_seed_parameter, inject_seed, make_seed, seed_everything


def test_seed_everything_makes_random_and_numpy_repeat() -> None:
    """The same seed gives the same random and numpy draws."""
    assert seed_everything(1234) == 1234
    first = (random.random(), np.random.rand())
    seed_everything(1234)
    assert (random.random(), np.random.rand()) == first


def test_seed_everything_generates_a_32_bit_seed() -> None:
    """Without a seed one is drawn, returned, and fits every library's range."""
    seeds = {seed_everything() for _ in range(5)}
    assert all(0 <= s < 2**32 for s in seeds)
    assert len(seeds) > 1


def test_large_seed_is_accepted_by_numpy() -> None:
    """Seeds beyond numpy's 32-bit range are folded for numpy, kept for random."""
    assert seed_everything(2**40 + 5) == 2**40 + 5
    first = np.random.rand()
    seed_everything(5)
    assert np.random.rand() == first


def test_make_seed_range() -> None:
    """make_seed returns unsigned 32-bit integers."""
    assert all(0 <= make_seed() < 2**32 for _ in range(20))


def test_libraries_are_not_imported() -> None:
    """Seeding never imports numpy, torch or tensorflow (checked in a fresh interpreter)."""
    code = (
        "import sys; from runtel.recording.seeding import seed_everything; seed_everything(1); "
        "print(sorted(m for m in ('numpy', 'torch', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_fake_torch_and_tensorflow_are_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imported torch gets manual_seed and cuda.manual_seed_all; tensorflow gets random.set_seed."""
    calls: list[tuple[str, int]] = []
    torch = types.SimpleNamespace(
        manual_seed=lambda s: calls.append(("torch", s)),
        cuda=types.SimpleNamespace(is_available=lambda: True, manual_seed_all=lambda s: calls.append(("cuda", s))),
    )
    tf = types.SimpleNamespace(random=types.SimpleNamespace(set_seed=lambda s: calls.append(("tf", s))))
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    seed_everything(77)
    assert calls == [("torch", 77), ("cuda", 77), ("tf", 77)]


def test_failing_library_does_not_raise(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A library whose seeding fails is logged and skipped."""

    def broken(seed: int) -> None:
        raise RuntimeError("no")

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(manual_seed=broken))
    with caplog.at_level(logging.WARNING, logger="runtel.seeding"):
        assert seed_everything(3) == 3
    assert "torch" in caplog.text


def _train(data: str, seed: int | None = None, *, epochs: int = 1) -> None:
    """A function with a seed parameter."""


SIG = inspect.signature(_train)


def _call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    return dict(SIG.bind(*args, **kwargs).arguments)


def test_inject_seed_when_missing() -> None:
    """A call without a seed gets a fresh one, and the seed used is returned."""
    args, kwargs, seed = inject_seed(SIG, ("d",), {}, "seed")
    assert _call(args, kwargs)["seed"] == seed
    assert 0 <= seed < 2**32


def test_inject_seed_when_none() -> None:
    """An explicit None (positional or keyword) is replaced by a fresh seed."""
    args, kwargs, seed = inject_seed(SIG, ("d", None), {}, "seed")
    assert _call(args, kwargs)["seed"] == seed is not None
    args, kwargs, seed = inject_seed(SIG, ("d",), {"seed": None, "epochs": 3}, "seed")
    bound = _call(args, kwargs)
    assert bound["seed"] == seed and bound["epochs"] == 3


def test_inject_seed_keeps_given_seed() -> None:
    """A seed passed by the caller is left untouched and reported."""
    assert inject_seed(SIG, ("d", 42), {}, "seed") == (("d", 42), {}, 42)
    assert inject_seed(SIG, ("d",), {"seed": 7}, "seed") == (("d",), {"seed": 7}, 7)


def test_inject_seed_uses_non_none_default() -> None:
    """A non-None default seed is what the call will use, so it is reported and kept."""

    def f(seed: int = 99) -> None:
        """Function with a default seed."""

    assert inject_seed(inspect.signature(f), (), {}, "seed") == ((), {}, 99)


def test_inject_seed_keyword_only_and_positional_only() -> None:
    """The seed goes in by keyword for keyword-only parameters and by position for positional-only ones."""

    def kw(*, seed: int | None = None) -> None:
        """Keyword-only seed."""

    def pos(seed: int | None = None, /) -> None:
        """Positional-only seed."""

    args, kwargs, seed = inject_seed(inspect.signature(kw), (), {}, "seed")
    assert args == () and kwargs == {"seed": seed}
    args, kwargs, seed = inject_seed(inspect.signature(pos), (), {}, "seed")
    assert args == (seed,) and kwargs == {}


def test_missing_parameter_raises() -> None:
    """A function without the named parameter is rejected (also through **kwargs)."""

    def f(x: int, **kwargs: Any) -> None:
        """No seed parameter."""

    with pytest.raises(ValueError, match="seed"):
        check_seed_parameter(inspect.signature(f), "seed")
    with pytest.raises(ValueError, match="random_state"):
        inject_seed(SIG, ("d",), {}, "random_state")
    check_seed_parameter(SIG, "seed")  # does not raise


def test_non_integer_seed_raises() -> None:
    """A seed that is not an integer is reported instead of silently replaced."""
    with pytest.raises(TypeError, match="integer"):
        inject_seed(SIG, ("d", "abc"), {}, "seed")
    assert inject_seed(SIG, ("d", np.int64(5)), {}, "seed")[2] == 5
