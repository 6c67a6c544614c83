"""Tracing: the span processor runtel attaches once to a TracerProvider (its own or the application's).

It reads the run from the parent context a span starts in (``runtel._context``), never from the
runtime, so it depends on nothing above it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from runtel import semconv
from runtel._context import run_in
from runtel._guard import log_once

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from runtel._sdk.scrub import Scrubber

__all__ = ("RunProcessor",)


class RunProcessor(SpanProcessor):
    """Stamps spans with the active run id on start; scrubs ended spans and forwards them to the delegates.

    The scrubber is the redaction choke point: no delegate (run folder, OTLP) ever sees an unscrubbed span.
    """

    def __init__(self) -> None:
        self.delegates: tuple[SpanProcessor, ...] = ()
        self.scrubber: Scrubber | None = None
        self.dropped = 0  # spans not forwarded because scrubbing them failed (never forwarded raw)

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
        """Redact and cap the span (see ``scrub.py``), then forward it to the exporters' processors."""
        scrubber = self.scrubber
        if scrubber is not None and self.delegates:
            try:
                span = scrubber.span(span)
            except Exception as exc:
                self.dropped += 1  # a span that could not be scrubbed is dropped, not leaked
                log_once("scrub-span", "runtel dropped %d span(s) it could not redact: %r", self.dropped, exc)
                return
        for delegate in self.delegates:
            delegate.on_end(span)

    def shutdown(self) -> None:
        """Delegates are shut down by the runtime, with a bound."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush every delegate."""
        return all(d.force_flush(timeout_millis) for d in self.delegates)
