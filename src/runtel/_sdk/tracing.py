"""Tracing: the span processor runtel attaches once to a TracerProvider (its own or the application's).

It reads the run from the parent context a span starts in (``runtel._context``), never from the
runtime, so it depends on nothing above it. A span whose context holds no open run (a thread runtel's
patches did not reach, a callback scheduled from outside the run, an instrumentation that drops the
context) is attributed to the *process run* the runtime keeps in ``default_run`` (the most recently
opened root run still open); with no run open at all it is counted in ``unattributed`` and reported.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from runtel import semconv
from runtel._context import run_in
from runtel._guard import log_once
from runtel._internals import span_attributes, stamp_run_id, stored_dict

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from runtel._sdk.scrub import Scrubber

__all__ = ("RunProcessor",)

#: spans tracked as open at most (beyond: not checkpointed; a program leaking open spans is not tracked forever)
OPEN_SPANS_MAX = 4096
#: ``on_start`` methods known to do nothing: the SDK's base and batch processors'
_NO_OP_STARTS = frozenset({SpanProcessor.on_start, BatchSpanProcessor.on_start})


class RunProcessor(SpanProcessor):
    """Stamps spans with the active run id on start; scrubs ended spans and forwards them to the delegates.

    The scrubber is the redaction choke point: no delegate (run folder, OTLP) ever sees an unscrubbed span.
    """

    def __init__(self) -> None:
        self._delegates: tuple[SpanProcessor, ...] = ()
        self._starters: tuple[SpanProcessor, ...] = ()  # the delegates whose on_start does something
        self.scrubber: Scrubber | None = None
        self.dropped = 0  # spans not forwarded because scrubbing them failed (never forwarded raw)
        #: the run a span with no open run in its context is attributed to (set by the runtime)
        self.default_run: Any = None
        #: spans that started while no run was open in the process (not recorded in any run folder)
        self.unattributed = 0
        #: warn at the first such span (only where runtel built the provider: an application's own
        #: provider exports spans outside runs itself)
        self.warn_unattributed = True
        self._count_lock = threading.Lock()
        #: the spans open now, by the ``id`` of their SpanContext (the run folder's writer checkpoints them; set by
        #: the runtime, None: not tracked). Kept here, before the delegates: one dict insert at start and one
        #: removal at end, no extra call. Not by ``id(span)``: the SDK ends a span by handing on a copy of it,
        #: which shares the span's SpanContext object (held by the span, so its id is not reused meanwhile).
        self.open_spans: dict[int, Any] | None = None

    @property
    def delegates(self) -> tuple[SpanProcessor, ...]:
        """The processors ended (scrubbed) spans are forwarded to: the run folder's, OTLP's."""
        return self._delegates

    @delegates.setter
    def delegates(self, processors: tuple[SpanProcessor, ...]) -> None:
        # Calling an inherited no-op ``on_start`` (the run folder's writer, the SDK's batch processor) for
        # every span costs ~0.1 us each: only overriding delegates are called.
        self._starters = tuple(p for p in processors if getattr(type(p), "on_start", None) not in _NO_OP_STARTS)
        self._delegates = processors

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Attribute the span to the run open in the context it starts in (cheap: one context lookup)."""
        # The stored dict, not ``span.attributes``: that is a read-only proxy whose ``in`` raises and catches
        # a KeyError inside the SDK's mapping for every span that has no run id yet (~1 us).
        attributes = stored_dict(span_attributes(span))
        if span.is_recording() and (not attributes or semconv.RUN_ID not in attributes):
            run = run_in(parent_context)
            if run is None or run.end_time_ns is not None:  # no run here, or one that already ended
                run = self.default_run
            if run is not None and run.id:
                stamp_run_id(span, semconv.RUN_ID, run.id)  # a short id runtel made: no cleaning pass
            else:
                with self._count_lock:  # the rare path: exact counts across threads
                    self.unattributed += 1
                if self.warn_unattributed:
                    log_once("unattributed-span", "runtel: span %r started while no run was open; it is not "
                             "recorded (such spans are counted and the total reported at exit)", span.name)
        opened = self.open_spans
        if opened is not None and len(opened) < OPEN_SPANS_MAX:
            opened[id(span.get_span_context())] = span
        for delegate in self._starters:
            delegate.on_start(span, parent_context)

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's may have been held at the fork)."""
        self._count_lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        """Redact and cap the span (see ``scrub.py``), then forward it to the exporters' processors."""
        opened = self.open_spans
        if opened:
            opened.pop(id(span.context), None)
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
