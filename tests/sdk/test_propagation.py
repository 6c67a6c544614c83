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


def _child_env(code_env: dict[str, str] | None = None) -> dict[str, str | None]:
    """What a real `subprocess.run` child sees of the carrier."""
    import json

    code = "import os, json; print(json.dumps({k: os.environ.get(k) for k in ('TRACEPARENT', 'RUNTEL_PARENT_RUN_ID')}))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=code_env)
    return dict(json.loads(out.stdout))


def test_a_subprocess_child_hangs_under_the_block_that_started_it(rt: object) -> None:
    """Inside a block, subprocess gives the child the block's TRACEPARENT (a copy of the environment; the
    caller's env dict is never modified, and a TRACEPARENT the caller set is kept); at the run's own level
    and with a positional env, os.environ's (the run span's)."""
    import os

    import runtel

    def span_of(tp: str | None) -> str:
        assert tp is not None
        return tp.split("-")[2]

    with runtel.run_span("parent") as run:
        assert span_of(_child_env()["TRACEPARENT"]) == run.span_id  # no block: the run span
        with runtel.block("launch") as blk:
            block_id = format(blk.span.get_span_context().span_id, "016x")
            seen = _child_env()
            assert span_of(seen["TRACEPARENT"]) == block_id and seen["RUNTEL_PARENT_RUN_ID"] == run.id
            copied = dict(os.environ)
            assert span_of(_child_env(copied)["TRACEPARENT"]) == block_id  # a copy of os.environ: followed
            assert copied["TRACEPARENT"] == os.environ["TRACEPARENT"]  # ... and not modified
            own = {**os.environ, "TRACEPARENT": f"00-{TRACE_ID}-{SPAN_ID}-01"}
            assert span_of(_child_env(own)["TRACEPARENT"]) == SPAN_ID  # the caller's own context wins
            code = "import os; print(os.environ.get('TRACEPARENT'))"
            positional = subprocess.Popen([sys.executable, "-c", code], -1, None, None, subprocess.PIPE, None, None,
                                          True, False, None, dict(os.environ), text=True)
            assert span_of(positional.communicate()[0].strip()) == run.span_id  # left as given
        assert os.environ["TRACEPARENT"].split("-")[2] == run.span_id  # os.environ itself never changed
