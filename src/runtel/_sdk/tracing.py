"""Tracing: the span processor runtel attaches once to a TracerProvider (its own or the application's).

It reads the run from the parent context a span starts in (``runtel._context``), never from the
runtime, so it depends on nothing above it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from runtel import semconv
from runtel._context import run_in

if TYPE_CHECKING:
    from opentelemetry.context import Context

__all__ = ("RunProcessor",)


class RunProcessor(SpanProcessor):
    """Stamps spans with the active run id on start; forwards ended spans to the current delegates."""

    def __init__(self) -> None:
        self.delegates: tuple[SpanProcessor, ...] = ()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Attribute the span to the run open in the context it starts in (cheap: one context lookup)."""
        run = run_in(parent_context)
        if run is not None and run.id and span.is_recording():
            attributes = span.attributes
            if attributes is None or semconv.RUN_ID not in attributes:
                span.set_attribute(semconv.RUN_ID, run.id)
        for delegate in self.delegates:
            delegate.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        """Forward to the exporters' processors."""
        for delegate in self.delegates:
            delegate.on_end(span)

    def shutdown(self) -> None:
        """Delegates are shut down by the runtime, with a bound."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush every delegate."""
        return all(d.force_flush(timeout_millis) for d in self.delegates)
