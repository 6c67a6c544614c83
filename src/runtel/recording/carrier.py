"""Trace context across processes through environment variables (``TRACEPARENT``/``TRACESTATE``).

Implements the OpenTelemetry environment-variable carrier: W3C keys upper-cased and normalised to
``[A-Z0-9_]``. A parent injects into a *copy* of its environment for each child; the child's first
run extracts it and joins the trace. ``RUNTEL_PARENT_RUN_ID`` travels with it so the child's run
record names its parent run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter

from runtel import _context
from runtel._propagation import PARENT_RUN_ENV, w3c_propagator

__all__ = ("PARENT_RUN_ENV", "extract_parent_context", "inject_env")


_INVALID = re.compile(r"[^A-Z0-9_]")


def _normalize(key: str) -> str:
    name = _INVALID.sub("_", key.upper()) or "_"
    return "_" + name if name[0].isdigit() else name


class _EnvGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(_normalize(key))
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return [k for k in carrier if _normalize(k) == k]


class _EnvSetter(Setter[MutableMapping[str, str]]):
    def set(self, carrier: MutableMapping[str, str], key: str, value: str) -> None:
        carrier[_normalize(key)] = value


def _w3c() -> Any:
    """W3C trace context + baggage (see ``runtel._propagation.w3c_propagator``)."""
    return w3c_propagator()


def extract_parent_context(env: Mapping[str, str]) -> Context:
    """The context found in ``TRACEPARENT``/``TRACESTATE``/``BAGGAGE`` of ``env`` (empty if none)."""
    if "TRACEPARENT" not in env and "BAGGAGE" not in env:
        return Context()  # nothing to extract (TRACESTATE means nothing alone): skip importing the propagators
    return _w3c().extract(env, getter=_EnvGetter())  # type: ignore[no-any-return]


def inject_env(env: Mapping[str, str] | None = None, *, context: Context | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) carrying the current trace context to a child process.

    Example:
        >>> import subprocess, runtel
        >>> with runtel.run_span("parent"):
        ...     subprocess.run(["python", "child.py"], env=runtel.inject_env())  # doctest: +SKIP

    A child that uses runtel then records its run inside this trace, and its run record names this
    run as its parent. Old ``TRACEPARENT``/``TRACESTATE`` values in ``env`` are replaced.
    """
    out: dict[str, Any] = dict(os.environ if env is None else env)
    for key in ("TRACEPARENT", "TRACESTATE", "BAGGAGE"):
        out.pop(key, None)
    span_context = trace.get_current_span(context).get_span_context()
    if span_context.is_valid:
        _w3c().inject(out, context=context, setter=_EnvSetter())
    run = _context.current_run()
    if run is not None and run.id:
        out[PARENT_RUN_ENV] = run.id
        if run.dir is not None:
            # Children record next to the parent's run even if they change directory.
            if env is None:
                out["RUNTEL_DIR"] = str(run.dir.parent.resolve())
            else:
                out.setdefault("RUNTEL_DIR", str(run.dir.parent.resolve()))
    return out
