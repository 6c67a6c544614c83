"""Argument and return-value summaries for ``@runtel.trace(capture=..., capture_return=...)``.

Like hyrax's data tracing, a traced call records what went in and what came out, so a data problem
(wrong shape, NaNs, an empty batch) can be found from the span alone. Values are summarised, never
stored: scalars and short strings as they are, containers as type/length/first items, arrays and
tensors (numpy, torch, jax, cupy, tensorflow; duck-typed, never imported) as shape, dtype, device and
statistics computed on their device. Every function here never raises.

Attribute layout (one level of flattening)::

    runtel.param.lr = 0.1
    runtel.param.x.type = "numpy.ndarray"; runtel.param.x.shape = [3, 4]; runtel.param.x.dtype = "float32"; ...
    runtel.param.items.type = "list"; runtel.param.items.len = 10; runtel.param.items.items = ["1", "2", ...]
    runtel.return = ... (same rules)

``None`` is recorded as the string ``"None"`` (a call summary should show that nothing was passed).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any, Final

from runtel import semconv
from runtel.values.arrays import STATS_MAX_ELEMENTS, summarize_array_like
from runtel.values.reprs import safe_repr
from runtel.values.scalars import AttributeValue, otel_int, truncate, type_name

__all__ = ("STATS_MAX_ELEMENTS", "capture_call", "capture_return", "summarize", "summarize_array")

_CONTAINERS: Final = (list, tuple, set, frozenset, dict)
_SKIPPED_PARAMS: Final = frozenset({"self", "cls"})


def summarize_array(value: object, *, stats_max_elements: int = STATS_MAX_ELEMENTS) -> dict[str, AttributeValue] | None:
    """Shape/dtype/device/size and min/max/mean/nan_count/inf_count of an array; None if not array-like.

    Stats run on the array's own device (torch tensor methods; numpy/cupy/jax NaN-aware reductions), only
    scalars are copied to host. They are skipped above ``stats_max_elements`` elements (default
    10,000,000), for empty arrays and for non-numeric dtypes (complex keeps nan/inf counts).
    """
    return summarize_array_like(value, stats_max_elements=stats_max_elements)


def summarize(
    value: object, *, max_length: int = 256, max_items: int = 5
) -> AttributeValue | dict[str, AttributeValue]:
    """A small, OTel-legal picture of one value, for a call's parameters and return value.

    bool/int/float as is (ints outside int64 → str), strings cut at ``max_length`` + ``…[truncated]``,
    ``None`` → ``"None"``, numpy scalars → Python scalars, arrays → :func:`summarize_array`, containers →
    ``{"type", "len", "items"}`` (mappings: ``"keys"``) with the first ``max_items`` entries as bounded
    reprs in iteration order, other objects → ``{"type": qualname, "repr": bounded repr}``.
    """
    cls = type(value)
    val: Any = value
    if cls is bool or cls is float:
        return val  # type: ignore[no-any-return]
    if cls is int:
        return otel_int(val, max_length)
    if cls is str:
        return truncate(val, max_length)
    if value is None:
        return "None"
    try:
        np = sys.modules.get("numpy")
        if np is not None and isinstance(value, np.generic):
            item = val.item()
            if type(item) in (bool, int, float, str):
                return summarize(item, max_length=max_length, max_items=max_items)
        array = summarize_array(value)
        if array is not None:
            return array
        if isinstance(value, (*_CONTAINERS, Mapping)):
            return _summarize_container(val, max_length, max_items)
        if isinstance(value, str):
            return truncate(str.__str__(val), max_length)
        return {"type": type_name(value), "repr": safe_repr(value, max_length)}
    except Exception:
        return {"type": type_name(value), "repr": safe_repr(value, max_length)}


def _summarize_container(value: Any, max_length: int, max_items: int) -> dict[str, AttributeValue]:
    """type/len/first items of a container; iteration order, no sorting (this runs on every call)."""
    out: dict[str, AttributeValue] = {"type": type_name(value), "len": len(value)}
    first = islice(value, max(max_items, 0))
    out["keys" if isinstance(value, Mapping) else "items"] = [_item_repr(x, max_length) for x in first]
    return out


def _item_repr(value: object, max_length: int) -> str:
    """One container item as text: strings plain (cut), anything else a bounded repr."""
    if type(value) is str:
        return truncate(value, max_length)
    return safe_repr(value, max_length)


def _flatten(key: str, summary: AttributeValue | dict[str, AttributeValue], out: dict[str, AttributeValue]) -> None:
    if isinstance(summary, dict):
        for k, v in summary.items():
            out[f"{key}.{k}"] = v
    else:
        out[key] = summary


def _bind(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Parameter name → value with defaults applied; None if the call does not fit the signature."""
    for bind in (signature.bind, signature.bind_partial):
        try:
            bound = bind(*args, **kwargs)
        except TypeError:
            continue
        bound.apply_defaults()
        return dict(bound.arguments)
    return None


def capture_call(
    signature: inspect.Signature,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    params: bool | Sequence[str],
    *,
    max_length: int = 256,
    max_items: int = 5,
) -> dict[str, AttributeValue]:
    """Span attributes ``runtel.param.<name>[.<field>]`` summarising one call's arguments; never raises.

    ``params=True`` captures every parameter except ``self``/``cls``; a sequence of names captures only
    those; ``False`` or an empty sequence captures nothing. Defaults are applied, so the span shows the
    values the function actually ran with. ``*args``/``**kwargs`` are summarised as their tuple/dict. If
    the arguments do not fit the signature, positional ones are recorded as ``arg0``, ``arg1``... and
    keyword ones by name.
    """
    out: dict[str, AttributeValue] = {}
    try:
        if params is False or (not isinstance(params, bool) and not params):
            return out
        wanted: frozenset[str] | None = None
        if isinstance(params, str):
            wanted = frozenset({params})
        elif not isinstance(params, bool):
            wanted = frozenset(params)
        arguments = _bind(signature, args, kwargs)
        if arguments is None:
            arguments = {f"arg{i}": a for i, a in enumerate(args)}
            arguments.update(kwargs)
        for name, value in arguments.items():
            if wanted is None:
                if name in _SKIPPED_PARAMS:
                    continue
            elif name not in wanted:
                continue
            _flatten(semconv.PARAM_PREFIX + name, summarize(value, max_length=max_length, max_items=max_items), out)
    except Exception:
        pass  # keep what was captured; telemetry never breaks the call
    return out


def capture_return(value: object, *, max_length: int = 256, max_items: int = 5) -> dict[str, AttributeValue]:
    """Span attributes ``runtel.return[.<field>]`` summarising a return value; never raises."""
    out: dict[str, AttributeValue] = {}
    _flatten(semconv.RETURN_VALUE, summarize(value, max_length=max_length, max_items=max_items), out)
    return out
