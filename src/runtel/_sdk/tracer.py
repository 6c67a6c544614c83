"""runtel's own tracer: the SDK's spans, started without the SDK's per-span overhead.

``Tracer.start_span`` is ~7.6 us of a ~11.5 us SDK span (start + end) on the project's 2-vCPU VM, more
than runtel's whole recording of the span. runtel's blocks, traced calls, runs and requests start their
spans through :class:`LeanTracer`, which makes the same span (the SDK's ``Span`` class, the same fields and
values, the same processors called) in about a third of that: ``runtel._internals.lean_span_starter``,
checked against the SDK when the provider is built. Only on a provider runtel built with the default
sampler (``ParentBasedAlwaysOn``); every other tracer (instrumentations, an application's provider, a
sampler the user named) is the SDK's own. See docs/performance.md, section 4.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.util.types import Attributes

from runtel._internals import lean_span_starter
from runtel._sdk.sampler import ParentBasedAlwaysOn

__all__ = ("LeanTracer", "lean_tracer")


class LeanTracer(trace.Tracer):
    """An SDK tracer whose ``start_span`` takes the lean path (``start_as_current_span`` is the SDK's)."""

    def __init__(self, tracer: trace.Tracer, start: Callable[..., Span]) -> None:
        self.sdk_tracer = tracer
        self._start = start

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        """The SDK's ``start_span``, made lean (see the module docstring)."""
        return self._start(name, context, kind, attributes, links or (), start_time, record_exception,
                           set_status_on_exception)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        """The SDK tracer's own (runtel's code starts spans with ``start_span``)."""
        return self.sdk_tracer.start_as_current_span(*args, **kwargs)


def lean_tracer(tracer: trace.Tracer) -> trace.Tracer:
    """``tracer`` with the lean ``start_span`` when it is an SDK tracer with runtel's default sampler, else itself."""
    sampler = getattr(tracer, "sampler", None)
    if not isinstance(sampler, ParentBasedAlwaysOn):
        return tracer
    start = lean_span_starter(tracer, sampler, api=trace, sdk=sdk_trace, bounded_attributes=BoundedAttributes,
                              bounded_list=BoundedList)
    return tracer if start is None else LeanTracer(tracer, start)
