"""Summaries of arrays and tensors (shape, dtype, device, statistics), never their elements.

Array-likes of numpy, torch, jax, cupy and tensorflow are recognised by duck typing (their type's
top-level module and ``shape``/``dtype``), so no array library is ever imported here: NumPy is used only
when it is already in ``sys.modules`` (an array of it exists, so the user imported it). Statistics run on
the array's own device; only scalars are copied to host.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, Final

from runtel.values.scalars import AttributeValue, otel_int, truncate, type_name

__all__ = ("ARRAY_MODULES", "STATS_MAX_ELEMENTS", "array_brief", "summarize_array_like")

STATS_MAX_ELEMENTS: Final = 10_000_000
"""Array summaries skip min/max/mean/nan_count/inf_count above this many elements (a full pass per stat
would cost tens of milliseconds per call)."""

ARRAY_MODULES: Final = frozenset({"numpy", "torch", "jax", "jaxlib", "cupy", "tensorflow"})
"""Top-level modules whose objects with ``shape`` and ``dtype`` are treated as arrays."""


def _module_root(value: object) -> str:
    module = getattr(type(value), "__module__", None)
    return module.partition(".")[0] if isinstance(module, str) else ""


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
    return truncate(str(device), 64)


def array_brief(value: object) -> str | None:
    """``ndarray(shape=[3, 4], dtype=float32, device=cpu)`` for array-likes, else None; never raises.

    This is what :func:`runtel.values.reprs.safe_repr` shows for an array (no data, so no GPU-to-host copy).
    """
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
        return otel_int(int(value))
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
    out: dict[str, AttributeValue] = {"type": type_name(value)}
    try:
        shape = _shape_of(v)
        out["shape"] = shape
        out["dtype"] = _dtype_name(v)
        out["device"] = _device_name(v)
        size = math.prod(shape) if all(d >= 0 for d in shape) else -1
        out["size"] = otel_int(size)
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

