"""The scrubbing stage: every ended span and every Resource passes here before any exporter sees it.

This is the one redaction choke point for telemetry (compare logfire's scrubbing span processor): the
:class:`~runtel._sdk.tracing.RunProcessor` calls :meth:`Scrubber.span` in ``on_end`` before forwarding
to the run folder's and OTLP's processors, so a span created by the user, by another instrumentation
library or by a new runtel call site cannot skip it. Name, attributes, events (exception messages and
stack traces included), links' attributes, status description and the Resource are covered.

Cap, then scan: the redactor sees a string only up to its limit plus ``SCAN_MARGIN`` characters, then it is
cut (``Redactor.redact_cut``), so the cost is bounded by the limits and not by what the user passed, and a
credential the cut goes through is still hidden whole. A span with nothing to change is returned as is (no copy);
the redactor caches its verdicts on short strings and keys, so a clean span costs dict lookups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, Status

from runtel import semconv
from runtel._guard import note_cut
from runtel._internals import attribute_items, span_fields
from runtel.redaction import REDACTED

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

    from runtel.redaction import Redactor

__all__ = ("NAME_MAX_LENGTH", "Scrubber")

#: span names are cut to this many characters (a 1 MB run name would otherwise be written on every span)
NAME_MAX_LENGTH: Final = 1024
#: status descriptions are cut to this many characters
STATUS_MAX_LENGTH: Final = 1024
#: ``exception.stacktrace`` keeps its last this-many multiples of the attribute limit (the innermost frames)
STACKTRACE_FACTOR: Final = 4
_STACKTRACE: Final = "exception.stacktrace"
#: runtel's routing ids: made by runtel from a slug of the name, read back by the exporters; never cut
_IDS: Final = frozenset({semconv.RUN_ID, semconv.RUN_PARENT_ID})



class _ScrubbedSpan(ReadableSpan):
    """A redacted copy of an ended span that still reports the original's dropped counts."""

    def __init__(self, original: ReadableSpan, **fields: Any) -> None:
        super().__init__(**fields)
        self._original = original

    @property
    def dropped_attributes(self) -> int:
        return self._original.dropped_attributes

    @property
    def dropped_events(self) -> int:
        return self._original.dropped_events

    @property
    def dropped_links(self) -> int:
        return self._original.dropped_links


class Scrubber:
    """Redacts and caps spans and resources with one :class:`~runtel.redaction.Redactor`.

    Args:
        redactor: The process-wide redactor (its rules, extra patterns and caches).
        max_length: The documented attribute limit (``attribute_max_length``); strings are cut to it first.
    """

    def __init__(self, redactor: Redactor, *, max_length: int = 4096) -> None:
        self.redactor = redactor
        self.max_length = max(1, max_length)
        self._resources: dict[int, tuple[Resource, Resource]] = {}
        self._last_resource: tuple[Any, Any] = (None, None)

    # --- strings -----------------------------------------------------------------------------------
    def text(self, text: str, limit: int, kind: str = "attribute", *, tail: bool = False) -> str:
        """``text`` redacted and cut to ``limit`` (the same object back when nothing changed)."""
        if len(text) > limit:
            note_cut(kind, limit)  # said once per kind of value
            return self.redactor.redact_cut(text, limit, tail=tail)  # scanned past the cut: no half token kept
        hit = self.redactor.text_results.get(text)
        if hit is not None and (hit is text or hit == text):
            return text  # known clean and within the limit
        out = self.redactor.redact_text(text)
        return text if out == text else out

    def attributes(self, attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """A redacted copy of ``attributes``, or None when nothing needed to change.

        The hot path (a clean span) is two dict lookups per attribute: the redactor's key verdict and its
        cached result for the string value.
        """
        if not attributes:
            return None
        redactor = self.redactor
        key_verdicts = redactor.key_verdicts
        text_results = redactor.text_results
        limit = self.max_length
        changed: dict[str, Any] | None = None
        for key, value in attribute_items(attributes):
            if key in _IDS:
                continue  # runtel's routing ids (every span's first attribute): never redacted nor cut
            secret = key_verdicts.get(key)
            if secret is None:
                secret = redactor.is_secret_key(key)
            if not secret:
                cls = type(value)
                if cls is str:
                    hit = text_results.get(value)
                    if hit is not None and (hit is value or hit == value) and len(value) <= limit:
                        continue
                elif cls is not tuple and cls is not list:
                    continue  # numbers and booleans hold no text
            new = self._value(key, value, secret)
            if new is not value:
                if changed is None:
                    changed = dict(attributes)
                changed[key] = new
        return changed

    def _value(self, key: str, value: Any, secret: bool) -> Any:
        if secret:
            return value if value == REDACTED else REDACTED
        limit = self.max_length
        if type(value) is str:
            if key == _STACKTRACE:
                return self.text(value, limit * STACKTRACE_FACTOR, "stack trace", tail=True)
            return self.text(value, limit)
        if isinstance(value, (tuple, list)) and value and isinstance(value[0], str):
            items = self.redactor.redact_flag_values([self.text(v, limit) if isinstance(v, str) else v for v in value])
            if any(a is not b for a, b in zip(items, value, strict=True)):
                return tuple(items)
        return value

    # --- spans -------------------------------------------------------------------------------------
    def span(self, span: ReadableSpan) -> ReadableSpan:
        """``span`` itself when clean, else a redacted, capped copy."""
        # The stored fields (the public properties build a proxy or a tuple on every access).
        fields = span_fields(span)
        name, stored_events, stored_links, status = fields[0], fields[11], fields[12], fields[13]
        hit = self.redactor.text_results.get(name)
        if hit is None or not (hit is name or hit == name) or len(name) > NAME_MAX_LENGTH:
            name = self.text(name, NAME_MAX_LENGTH, "span name")
        attributes = self.attributes(fields[10])
        events = self._events(stored_events) if stored_events else None
        links = self._links(stored_links) if stored_links else None
        description = status.description
        new_description = self.text(description, STATUS_MAX_LENGTH, "status") if description else description
        resource = fields[14]
        last = self._last_resource  # a process's spans share one or two resources
        if last[0] is resource:
            clean = last[1]
        else:
            clean = self.resource(resource)
            self._last_resource = (resource, clean)
        if (name is fields[0] and attributes is None and events is None and links is None
                and new_description is description and clean is resource):
            return span
        return _ScrubbedSpan(
            span,
            name=name,
            context=span.context,
            parent=span.parent,
            resource=clean,
            attributes=attributes if attributes is not None else span.attributes,
            events=events if events is not None else span.events,
            links=links if links is not None else span.links,
            kind=span.kind,
            status=Status(status.status_code, new_description) if new_description is not description else status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def _events(self, events: Sequence[Event]) -> list[Event] | None:
        if not events:
            return None
        out: list[Event] | None = None
        for i, event in enumerate(events):
            name = self.text(event.name, NAME_MAX_LENGTH, "event name")
            attributes = self.attributes(event.attributes)
            if name is not event.name or attributes is not None:
                if out is None:
                    out = list(events)
                out[i] = Event(name, attributes if attributes is not None else event.attributes, event.timestamp)
        return out

    def _links(self, links: Sequence[Link]) -> list[Link] | None:
        if not links:
            return None
        out: list[Link] | None = None
        for i, link in enumerate(links):
            attributes = self.attributes(link.attributes)
            if attributes is not None:
                if out is None:
                    out = list(links)
                out[i] = Link(link.context, attributes)
        return out

    # --- resources ---------------------------------------------------------------------------------
    def resource(self, resource: Resource) -> Resource:
        """The redacted Resource (computed once per Resource object; the same object when clean)."""
        cached = self._resources.get(id(resource))
        if cached is not None and cached[0] is resource:
            return cached[1]
        from opentelemetry.sdk.resources import Resource  # loaded already: every span holds one

        attributes = self.attributes(resource.attributes)
        clean = resource if attributes is None else Resource(attributes, resource.schema_url)
        if len(self._resources) > 64:
            self._resources.clear()
        self._resources[id(resource)] = (resource, clean)
        return clean

