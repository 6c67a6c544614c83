"""The SDK's default sampler, ``parentbased_always_on``, without its per-span allocations.

``ParentBased(ALWAYS_ON)`` looks the parent span up twice and builds a new ``SamplingResult`` for
every span (~1.4 us of a ~17 us SDK span on the 2-vCPU VM, see docs/performance.md, per-span cost).
This one makes the same decision from one lookup and hands back a result made once per parent trace
state: a result is read-only to the SDK (it copies its attributes into the span), so sharing it is safe.
runtel uses it only on a provider it builds itself while ``OTEL_TRACES_SAMPLER`` is unset or names the
same sampler; any other sampler the user asks for is the SDK's own. ``tests/sdk/test_default_sampler.py``
checks every decision and trace state against ``ParentBased(ALWAYS_ON)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import get_current_span

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, SpanKind, TraceState
    from opentelemetry.util.types import Attributes

__all__ = ("ParentBasedAlwaysOn", "is_default_sampler")

_ROOT = SamplingResult(Decision.RECORD_AND_SAMPLE, None, None)


def is_default_sampler(setting: str | None) -> bool:
    """Whether ``OTEL_TRACES_SAMPLER`` asks for what :class:`ParentBasedAlwaysOn` does (unset: the SDK default)."""
    return not setting or setting.strip().lower() == "parentbased_always_on"


class ParentBasedAlwaysOn(Sampler):
    """Sample roots and sampled parents, drop unsampled parents; the parent's trace state is kept."""

    def __init__(self) -> None:
        # (trace state, sampled result, dropped result) of the last parent trace state seen
        self._last: tuple[TraceState | None, SamplingResult, SamplingResult] | None = None

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """The decision of ``ParentBased(ALWAYS_ON)`` for this parent."""
        parent = get_current_span(parent_context).get_span_context()
        if parent is None or not parent.is_valid:
            return _ROOT if not attributes else SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, None)
        sampled = parent.trace_flags.sampled
        state = parent.trace_state
        if attributes and sampled:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, state)
        last = self._last
        if last is None or last[0] is not state:
            last = self._last = (state, SamplingResult(Decision.RECORD_AND_SAMPLE, None, state),
                                 SamplingResult(Decision.DROP, None, state))
        return last[1] if sampled else last[2]

    def get_description(self) -> str:
        """What the SDK's own sampler calls itself (``ParentBased{root:AlwaysOnSampler,...}``)."""
        return "ParentBased{root:AlwaysOnSampler,remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:" \
               "AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}"
