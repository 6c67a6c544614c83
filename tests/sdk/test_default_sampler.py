"""runtel's default sampler decides exactly what the SDK's ``ParentBased(ALWAYS_ON)`` decides."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from runtel._sdk.sampler import ParentBasedAlwaysOn, is_default_sampler

STATES = [TraceState(), TraceState([("vendor", "x1")]), None]


def _parents() -> list[object]:
    out: list[object] = [None, trace.set_span_in_context(trace.INVALID_SPAN)]
    for remote, sampled, state in itertools.product((False, True), (False, True), STATES):
        ctx = SpanContext(0xABC, 0xDEF, is_remote=remote, trace_flags=TraceFlags(1 if sampled else 0),
                          trace_state=state)
        out.append(trace.set_span_in_context(NonRecordingSpan(ctx)))
    return out


@pytest.mark.parametrize("attributes", [None, {}, {"a": 1, "b": "x"}])
def test_every_parent_gets_the_sdk_decision_state_and_attributes(attributes: dict[str, object] | None) -> None:
    ours, sdk = ParentBasedAlwaysOn(), ParentBased(ALWAYS_ON)
    for _ in range(2):  # the second round is served from the cache
        for parent in _parents():
            mine = ours.should_sample(parent, 0xABC, "s", attributes=attributes)  # type: ignore[arg-type]
            theirs = sdk.should_sample(parent, 0xABC, "s", attributes=attributes)  # type: ignore[arg-type]
            assert mine.decision == theirs.decision
            assert dict(mine.attributes) == dict(theirs.attributes)
            assert (mine.trace_state.to_header() if mine.trace_state is not None else None) == \
                (theirs.trace_state.to_header() if theirs.trace_state is not None else None)
    assert ours.get_description() == sdk.get_description()


def test_only_the_default_setting_selects_it() -> None:
    assert is_default_sampler(None) and is_default_sampler("") and is_default_sampler(" ParentBased_Always_On ")
    assert not is_default_sampler("always_off") and not is_default_sampler("parentbased_traceidratio")


def test_a_sampler_the_user_names_is_the_sdks_own(tmp_path: object) -> None:
    code = textwrap.dedent(
        f"""
        import runtel
        from opentelemetry import trace
        runtel.configure(dir={str(tmp_path)!r}, sampling=False)
        with runtel.run_span("s"):
            print(type(trace.get_tracer_provider().sampler).__name__)
        """
    )
    env_default = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                 env={"PATH": "/usr/bin:/bin"})
    assert env_default.stdout.strip() == "ParentBasedAlwaysOn"
    named = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PATH": "/usr/bin:/bin", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                                "OTEL_TRACES_SAMPLER_ARG": "0.5"})
    assert named.stdout.strip() == "ParentBasedTraceIdRatio"
