"""Plain dicts and lists from config containers, without importing their libraries.

Users pass configs as dataclasses, pydantic models, OmegaConf containers, argparse namespaces, attrs
classes, NamedTuples or Mappings; redaction, JSON conversion and attribute flattening all need plain
dicts, so the conversion lives here once. Libraries are duck-typed or looked up in ``sys.modules``.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Mapping
from typing import Any

from runtel.values.markers import DEFAULT_MAX_DEPTH
from runtel.values.scalars import PRIMITIVE_TYPES

__all__ = ("normalize_config", "normalize_one")


def normalize_one(value: object) -> object:
    """One level of config-container conversion (children left as they are); never raises.

    For walks that handle the children themselves (:mod:`runtel.values.jsonable`,
    :mod:`runtel.values.attributes`); a value that is not a config container is returned as is.
    """
    cls = type(value)
    if cls in PRIMITIVE_TYPES or cls is dict or cls is list or cls is tuple or isinstance(value, type):
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
        if type(v) in PRIMITIVE_TYPES or depth > DEFAULT_MAX_DEPTH * 2:
            return v
        key = id(v)
        if key in memo:
            return memo[key]
        n = normalize_one(v)
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

