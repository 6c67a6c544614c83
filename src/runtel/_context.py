"""The run open in the current context: one OpenTelemetry context key, and the functions that read it.

A leaf module: it imports nothing of runtel, so the span processor (composition root), the recording
side and the environment carrier all read the same value without importing one another. The run
travels inside the OpenTelemetry ``Context``, so whatever carries that context (asyncio tasks,
``contextvars.copy_context``, the OTel instrumentations of threads and executors) carries the run, and
the span processor reads the run of the *parent context* a span starts in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context

if TYPE_CHECKING:
    from opentelemetry.context import Context

__all__ = ("CPU_METER_KEY", "current_run", "run_in", "with_run")

_RUN_KEY = otel_context.create_key("runtel-run")


#: the CPU meter of the request being handled (``recording.service``), read where work leaves for a thread
CPU_METER_KEY = otel_context.create_key("runtel-cpu-meter")


def current_run() -> Any:
    """The innermost run open in this context (task, thread or copied context), or None."""
    return otel_context.get_value(_RUN_KEY)


def run_in(context: Context | None) -> Any:
    """The run open in ``context`` (None: the current context)."""
    return otel_context.get_value(_RUN_KEY, context)


def with_run(run: object, context: Context | None = None) -> Context:
    """``context`` (default: the current one) with ``run`` as its open run."""
    return otel_context.set_value(_RUN_KEY, run, context)
