"""Make a run repeatable: seed every random generator the program uses, and record the seed.

Only libraries the program already imported are seeded: importing numpy, torch or TensorFlow just to
seed them would cost hundreds of milliseconds and change the program's behaviour. The
generate-inject-record pattern (after pycrumbs) lets a function take ``seed=None``: runtel picks a
seed, passes it in, records it, and a re-run with that seed reproduces the run.

A re-run pins generated seeds with ``RUNTEL_SEED`` (reproduce.sh and ``runtel reproduce`` export the
recorded seed): every seed runtel would draw is that value instead. Libraries imported *after*
seeding are not seeded (an import hook would tax every import of the program); run.json
``seed_libraries`` names the ones that were.
"""

from __future__ import annotations

import inspect
import logging
import operator
import os
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from runtel import _context
from runtel._guard import guard, log_once
from runtel.config import PARAMS
from runtel.rundir.writer import file_mode, write_new_file

if TYPE_CHECKING:
    from runtel.recording.run import Run

__all__ = ("check_seed_parameter", "inject_seed", "make_seed", "pinned_seed", "seed_everything")

SEED_ENV: Final = "RUNTEL_SEED"

_logger = logging.getLogger("runtel.seeding")

_SEED_MASK: Final = 0xFFFF_FFFF  # numpy's legacy seeding accepts 0 <= seed < 2**32


def pinned_seed() -> int | None:
    """The seed ``RUNTEL_SEED`` pins, or ``None`` (unset, empty, or unusable: logged once)."""
    raw = os.environ.get(SEED_ENV, "")
    if not raw.strip():
        return None
    try:
        return PARAMS["seed"].parse(raw)  # type: ignore[no-any-return]
    except (TypeError, ValueError) as exc:
        log_once("seed-env", f"{SEED_ENV}={raw!r} is not a seed ({exc}); drawing fresh seeds")
        return None


def make_seed() -> int:
    """The seed to use when none is given: ``RUNTEL_SEED`` when set, else a fresh 32-bit one from ``os.urandom``."""
    pinned = pinned_seed()
    if pinned is not None:
        return pinned
    return int.from_bytes(os.urandom(4), "little")


#: the libraries the last seed_generators call seeded, for run.json ``seed_libraries``
_last_seeded: list[str] = []


def seeded_libraries() -> list[str]:
    """The libraries the last seeding reached (``random`` always; numpy/torch/tensorflow when imported)."""
    return list(_last_seeded)


def seed_generators(seed: int | None = None) -> int:
    """Seed ``random`` and, when already imported, numpy, torch (CPU and all CUDA devices) and TensorFlow.

    Args:
        seed: The seed; ``None`` draws one with :func:`make_seed`.

    Returns:
        The seed used, to be recorded.

    Example:
        >>> s = seed_generators(1234)
        >>> s
        1234
    """
    if seed is None:
        seed = make_seed()
    seed = operator.index(seed)
    random.seed(seed)
    seeded = ["random"]
    masked = seed & _SEED_MASK
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        try:
            numpy.random.seed(masked)
            seeded.append("numpy")
        except Exception:
            _logger.warning("could not seed numpy", exc_info=True)
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            torch.manual_seed(seed)
            cuda = getattr(torch, "cuda", None)
            if cuda is not None and cuda.is_available():
                cuda.manual_seed_all(seed)
            seeded.append("torch")
        except Exception:
            _logger.warning("could not seed torch", exc_info=True)
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is not None:
        try:
            tensorflow.random.set_seed(masked)
            seeded.append("tensorflow")
        except Exception:
            _logger.warning("could not seed tensorflow", exc_info=True)
    _last_seeded[:] = seeded
    return seed


def check_seed_parameter(signature: inspect.Signature, parameter: str) -> None:
    """Fail at decoration time when the function cannot receive the seed.

    Raises:
        ValueError: ``parameter`` is not a named parameter of the function (``*args``/``**kwargs`` do not count).
    """
    param = signature.parameters.get(parameter)
    if param is None or param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        names = ", ".join(
            p.name
            for p in signature.parameters.values()
            if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        )
        raise ValueError(f"seed parameter {parameter!r} is not a parameter of the function (parameters: {names})")


def inject_seed(
    signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any], parameter: str
) -> tuple[tuple[Any, ...], dict[str, Any], int]:
    """Give a call a seed when it has none, and tell which seed the call uses.

    When ``parameter`` is missing from the call (and its default is ``None`` or absent) or passed as
    ``None``, a fresh seed is put into the call, positionally or by keyword as the signature requires.
    A seed the caller (or a non-``None`` default) supplies is left alone and returned.

    Returns:
        ``(args, kwargs, seed)`` to call the function with, and the seed to record.

    Raises:
        ValueError: The function has no such parameter.
        TypeError: The arguments do not fit the signature, or the given seed is not an integer.
    """
    check_seed_parameter(signature, parameter)
    bound = signature.bind_partial(*args, **kwargs)
    value = bound.arguments.get(parameter)
    if value is None and parameter not in bound.arguments:
        default = signature.parameters[parameter].default
        if default is not inspect.Parameter.empty and default is not None:
            return args, kwargs, _as_int(default, parameter)
    if value is not None:
        return args, kwargs, _as_int(value, parameter)
    seed = make_seed()
    bound.arguments[parameter] = seed
    # BoundArguments puts the seed positionally only when every earlier positional argument is bound too.
    return tuple(bound.args), dict(bound.kwargs), seed


def _as_int(value: object, parameter: str) -> int:
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        pass
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError) as exc:
        raise TypeError(f"seed parameter {parameter!r} must be an integer, got {value!r}") from exc


def seed_everything(seed: int | None = None) -> int:
    """Seed ``random`` — and numpy, torch, TensorFlow if already imported — and return the seed.

    A seed is generated when none is given (``RUNTEL_SEED`` when set), and recorded on the current
    run with the libraries it reached (run.json ``seed_libraries``).

    Example:
        >>> import runtel
        >>> runtel.seed_everything(1234)
        1234
    """
    value = seed_generators(seed)
    run = _context.current_run()
    if run is not None and run.enabled:
        record_seed(run, value)
    return value


def record_seed(run: Run, seed: int, *, overwrite: bool = True) -> None:
    """Record ``seed`` and the libraries it seeded on ``run``; pin it in a reproduce.sh written before."""
    had = run.record.get("seed")
    run.set_seed(seed, overwrite=overwrite)
    if run.record.get("seed") != seed:
        return  # an earlier seed was kept
    run.record["seed_libraries"] = seeded_libraries()
    if had != seed and run.dir is not None and run.record.get("reproduce"):
        with guard("reproduce-seed", "pin the seed in reproduce.sh"):
            _repin_script(run.dir / str(run.record["reproduce"]), seed)


def _repin_script(path: Path, seed: int) -> None:
    """Rewrite reproduce.sh's seed line (the seed came after the script was written at run start)."""
    from runtel.rundir.reproduce import pin_seed  # deferred: runtel.rundir.reproduce + runtel.redaction (~6 ms)

    text = path.read_text()
    new = pin_seed(text, seed)
    if new == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    write_new_file(tmp, new, mode=file_mode(executable=True))
    os.replace(tmp, path)
