"""Reading a parent's trace context from environment variables (the OTel environment-variable carrier)."""

from __future__ import annotations

import subprocess
import sys

from opentelemetry import baggage, trace

from runtel.recording.carrier import extract_parent_context

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def test_traceparent_and_tracestate_are_read() -> None:
    """TRACEPARENT gives a remote parent; TRACESTATE travels with it."""
    ctx = extract_parent_context({"TRACEPARENT": f"00-{TRACE_ID}-{SPAN_ID}-01", "TRACESTATE": "vendor=x"})
    span = trace.get_current_span(ctx).get_span_context()
    assert span.is_valid and span.is_remote
    assert format(span.trace_id, "032x") == TRACE_ID and format(span.span_id, "016x") == SPAN_ID
    assert span.trace_state.get("vendor") == "x"


def test_baggage_alone_is_read() -> None:
    """BAGGAGE without a TRACEPARENT still reaches the context."""
    ctx = extract_parent_context({"BAGGAGE": "team=vision,run=7"})
    assert baggage.get_baggage("team", ctx) == "vision" and baggage.get_baggage("run", ctx) == "7"
    assert not trace.get_current_span(ctx).get_span_context().is_valid


def test_nothing_to_read_gives_an_empty_context_without_the_propagators() -> None:
    """No TRACEPARENT/BAGGAGE (TRACESTATE alone means nothing): an empty context, and the W3C propagator
    modules are not even imported for it (they cost a few ms of a process's first run)."""
    for env in ({}, {"TRACESTATE": "vendor=x"}, {"PATH": "/bin", "traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"}):
        ctx = extract_parent_context(env)
        assert not trace.get_current_span(ctx).get_span_context().is_valid
        assert baggage.get_all(ctx) == {}
    w3c = ("opentelemetry.trace.propagation.tracecontext", "opentelemetry.baggage.propagation",
           "opentelemetry.propagators.composite")
    code = ("import sys; from runtel.recording.carrier import extract_parent_context as x; x({'TRACESTATE': 'v=x'}); "
            f"print([m for m in {w3c!r} if m in sys.modules]); x({{'BAGGAGE': 'k=v'}}); "
            f"print([m for m in {w3c!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.splitlines() == ["[]", repr(list(w3c))], out.stdout  # imported only when there is something
