"""The one place runtel uses private internals of other projects, each behind a fallback and a test.

The C JSON encoder (below); the SDK's span storage, a span's fields and the API's ``SpanContext`` tuple (the
run folder's hot path), an open span's fields under its lock (the checkpoints of open spans), and the SDK
span's fields for starting one without ``Tracer.start_span`` (runtel's lean tracer); multiprocessing's
process target and ``SimpleQueue``'s lock and reader; the bytes environment and a provider's Resource
(further down).

``compact_json(value)`` is ``json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=str).encode(value)``.
run.json is encoded one top-level value at a time, and the public ``encode`` spends ~0.4 us a value in
Python before it reaches the C encoder (``iterencode`` rebuilds its closure each call); calling
``json.encoder.c_make_encoder`` directly saves ~8 us of a ~0.43 ms warm run on tmpfs (~2 %; the
measurement is in the commit that added this module). The private constructor takes nine positional
arguments whose order is not promised, so at import the fast path is checked against the public encoder
on a probe value and left unused if they disagree; any ``TypeError`` at a call falls back to the public
encoder too. ``tests/unit/test_internals.py`` fails if the fast path is off on CPython or differs from
the public encoder, so an interpreter upgrade that changes the internal shows up in CI rather than as a
silent slowdown. Nothing else in runtel may touch a private name of another project (tests/architecture).
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

__all__ = (
    "FAST_JSON", "SIGNAL_TICK_S", "SpanFields", "attribute_items", "compact_json", "in_multiprocessing_exit",
    "environ_bytes", "json_string", "lean_span_starter", "open_span_snapshot", "process_start_method", "process_target",
    "set_owned_attributes", "set_process_target", "set_provider_resource",
    "signal_friendly_get", "span_attributes", "span_events", "span_fields", "span_links", "stamp_new_span",
    "stamp_run_id",
)

#: ``s`` as a JSON string literal, non-ASCII kept (undocumented but public name; the C function when available)
json_string: Callable[[str], str] = json.encoder.encode_basestring

_public = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=str)
_make = getattr(json.encoder, "c_make_encoder", None)


def _fast(value: Any) -> str:
    # a fresh markers dict each call keeps the circular-reference check correct across threads
    assert _make is not None
    return "".join(_make({}, str, json_string, None, ": ", ", ", False, False, False)(value, 0))


class _Probe:
    def __str__(self) -> str:
        return "x"


def _agrees() -> bool:
    """Whether the C path encodes a probe value, and rejects NaN, exactly as the public encoder does."""
    if _make is None:
        return False
    probe = {"é": [1, 2.5, -0.0, True, None, "a\"b\n\u2028"], "n": {"z": 1, "a": {}}, 3: [], None: 1.5e300,
             "o": _Probe()}
    try:
        if _fast(probe) != _public.encode(probe):
            return False
        _fast(float("nan"))
    except ValueError:
        return True  # NaN refused: allow_nan is where it belongs
    except Exception:
        return False
    return False


#: whether :func:`compact_json` uses the C encoder directly (tests require it on CPython)
FAST_JSON: bool = _agrees()


def compact_json(value: Any) -> str:
    """``json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=str).encode(value)``, faster on CPython.

    Raises what the public encoder raises: ``ValueError`` (NaN, a circular reference), ``TypeError``
    (a mapping key JSON cannot hold).
    """
    if FAST_JSON:
        try:
            return _fast(value)
        except TypeError:
            pass  # let the public encoder raise (or encode) exactly as it would
    return _public.encode(value)


# --- the OpenTelemetry SDK's span storage --------------------------------------------------------------------
# ``ReadableSpan.attributes`` / ``.events`` / ``.links`` build a MappingProxy or a tuple on every access, and
# iterating the SDK's ``BoundedAttributes`` goes through the Mapping ABC's generator: together about half the
# cost of scrubbing a clean span (2.1-2.4 us with these, 4.7 us without; see docs/performance.md). Each
# function falls back to the public property; tests/unit/test_internals.py fails when the SDK renames them.


def span_attributes(span: Any) -> Any:
    """The attributes a span stores (the SDK's ``_attributes``), else the public ``span.attributes``."""
    stored = getattr(span, "_attributes", _MISSING)
    return span.attributes if stored is _MISSING else stored


def span_events(span: Any) -> Any:
    """The events a span stores (``_events``), else ``span.events``."""
    stored = getattr(span, "_events", _MISSING)
    return span.events if stored is _MISSING else stored


def span_links(span: Any) -> Any:
    """The links a span stores (``_links``), else ``span.links``."""
    stored = getattr(span, "_links", _MISSING)
    return span.links if stored is _MISSING else stored


#: a finished span's fields, as :func:`span_fields` returns them
SpanFields = tuple[str, int, int, int, Any, "int | None", bool, Any, Any, Any, Any, Any, Any, Any, Any, Any]


def _context_is_tuple(ctx: Any) -> bool:
    """Whether the API's ``SpanContext`` is still the tuple ``(trace_id, span_id, is_remote, flags, state, valid)``.

    Checked on the first real context against its public properties (this module imports no OpenTelemetry).
    """
    try:
        trace_id, span_id, remote, flags, trace_state, valid = ctx
    except (TypeError, ValueError):
        return False
    return (trace_id == ctx.trace_id and span_id == ctx.span_id and remote is ctx.is_remote
            and flags == ctx.trace_flags and trace_state is ctx.trace_state and valid is ctx.is_valid)


_CONTEXT_TUPLE: bool | None = None


_last_fields: tuple[Any, SpanFields] | None = None


def span_fields(span: Any) -> SpanFields:
    """A finished span's fields in one call, for the scrubber and the run folder's encoder (both read all of them).

    ``(name, trace_id, span_id, trace_flags, trace_state, parent_span_id or None, parent_is_remote, kind,
    start_time, end_time, attributes, events, links, status, resource, instrumentation_scope)``;
    ``attributes`` is the stored container; ``events``/``links`` are the deques inside the SDK's
    ``BoundedList`` (which answers ``len()`` in Python and copies itself under its lock to be iterated),
    or ``()`` when empty. An ended span's are not changed any more. Through the public properties that is sixteen
    property calls (each a Python frame, ~60-100 ns): read here as the SDK's ``ReadableSpan`` fields and
    the ``SpanContext`` tuple, checked once against the properties; anything else (another SDK, a span
    built by hand) takes the public path. The last span's fields are kept: the scrubber and then the
    writer ask for the same ended span (held, so the identity check cannot be fooled by a reused id).
    """
    global _CONTEXT_TUPLE, _last_fields
    last = _last_fields
    if last is not None and last[0] is span:
        return last[1]
    try:
        name, ctx, parent, events, links = span._name, span._context, span._parent, span._events, span._links
        events, links = events._dq, links._dq  # the SDK's BoundedList copies itself, under its lock, to iterate
        rest = (span._kind, span._start_time, span._end_time, span._attributes, events if events else (),
                links if links else (), span._status, span._resource, span._instrumentation_scope)
    except AttributeError:  # another SDK, a changed one, or events/links that are not the SDK's BoundedList
        name, ctx, parent = span.name, span.context, span.parent
        rest = (span.kind, span.start_time, span.end_time, span_attributes(span), span.events, span.links,
                span.status, span.resource, span.instrumentation_scope)
    if _CONTEXT_TUPLE is None:
        _CONTEXT_TUPLE = _context_is_tuple(ctx)
    fields: SpanFields
    if _CONTEXT_TUPLE:
        trace_id, span_id, _, flags, trace_state, _ = ctx
        if parent is None:
            fields = (name, trace_id, span_id, flags, trace_state, None, False, *rest)
        else:
            fields = (name, trace_id, span_id, flags, trace_state, parent[1], parent[2], *rest)
    else:
        parent_id = parent.span_id if parent is not None else None
        remote = parent.is_remote if parent is not None else False
        fields = (name, ctx.trace_id, ctx.span_id, ctx.trace_flags, ctx.trace_state, parent_id, remote, *rest)
    _last_fields = (span, fields)
    return fields


def open_span_snapshot(span: Any, now: int, readable: Callable[..., Any]) -> Any:
    """An open SDK span as a finished span ending at ``now`` (built by ``readable``, the SDK's ``ReadableSpan``),
    for the run folder's checkpoints of open spans; ``None`` when it has ended meanwhile or is not the SDK's.

    Taken under the span's own lock, under which the SDK changes its attributes, events and status (another
    thread may be setting them); the stored containers are copied, so the snapshot never changes after.
    """
    try:
        with span._lock:
            if span._end_time is not None:
                return None
            attributes = dict(stored_dict(span._attributes))
            events, links, status = tuple(span._events), tuple(span._links), span._status
        return readable(name=span._name, context=span._context, parent=span._parent, resource=span._resource,
                        attributes=attributes, events=events, links=links, kind=span._kind, status=status,
                        start_time=span._start_time, end_time=now, instrumentation_scope=span._instrumentation_scope)
    except Exception:  # another SDK, or a changed one: no checkpoints of it
        return None


def stored_dict(attributes: Any) -> Any:
    """The plain dict inside the SDK's ``BoundedAttributes`` (a lookup without its lock), else ``attributes``."""
    raw = getattr(attributes, "_dict", None)
    return raw if isinstance(raw, dict) else attributes


def attribute_items(attributes: Any) -> Any:
    """``attributes.items()``, through the plain dict inside the SDK's ``BoundedAttributes`` when there is one."""
    raw = getattr(attributes, "_dict", None)
    return (raw if isinstance(raw, dict) else attributes).items()


def set_owned_attributes(span: Any, attributes: dict[str, Any]) -> None:
    """Add runtel's own attributes (numbers, booleans, short strings it made) to an open span.

    ``span.set_attributes`` runs the SDK's value cleaning over every item (~0.5 us each) and takes two locks;
    runtel's usage figures and span kind are already valid OTel values, so when the span's stored dict has
    room for all of them and holds none of their keys they are added under the span's lock in one
    ``update``. Anything else (a full dict, a key already set, an ended span, another SDK) takes the public
    path, so the SDK's limits and "set on an ended span" warning still apply.
    """
    try:
        stored = span._attributes
        raw = stored._dict
        lock = span._lock
        usable = type(raw) is dict and not stored._immutable and _fits(attributes, stored.max_value_len)
        maxlen = stored.maxlen
    except AttributeError:  # another SDK or a changed one: the public path
        usable = False
    if usable:
        with lock:
            if span._end_time is None and (maxlen is None or len(raw) + len(attributes) <= maxlen) \
                    and raw.keys().isdisjoint(attributes):
                raw.update(attributes)
                return
    span.set_attributes(attributes)


def stamp_new_span(span: Any, attributes: dict[str, Any]) -> None:
    """:func:`set_owned_attributes` for a span that is being started by this thread (no other thread has it yet).

    Called from a processor's ``on_start`` and right after ``start_span`` by runtel's wrappers: the span's
    lock and "ended?" check guard against other threads and cannot matter yet, so the attributes go into
    the stored dict directly (~0.3 us instead of ~0.8 us). The public path otherwise, as above.
    """
    try:
        stored = span._attributes
        raw = stored._dict
        maxlen = stored.maxlen
        usable = (type(raw) is dict and not stored._immutable and (maxlen is None or len(raw) + len(attributes) <= maxlen)
                  and _fits(attributes, stored.max_value_len))
    except AttributeError:  # another SDK or a changed one: the public path
        usable = False
    if usable and raw.keys().isdisjoint(attributes):
        raw.update(attributes)
        return
    span.set_attributes(attributes)


def stamp_run_id(span: Any, key: str, value: str) -> None:
    """:func:`stamp_new_span` of one short string (the run id every span gets at start): no dict, no loop."""
    try:
        stored = span._attributes
        raw = stored._dict
        maxlen, max_value_len = stored.maxlen, stored.max_value_len
        if (type(raw) is dict and not stored._immutable and key not in raw
                and (maxlen is None or len(raw) < maxlen) and (max_value_len is None or len(value) <= max_value_len)):
            raw[key] = value
            return
    except AttributeError:  # another SDK or a changed one: the public path
        pass
    span.set_attribute(key, value)


def _fits(attributes: dict[str, Any], max_value_len: int | None) -> bool:
    """Whether every value is a scalar the SDK would store unchanged (no string cut by its length limit)."""
    for value in attributes.values():
        cls = type(value)
        if cls is str:
            if max_value_len is not None and len(value) > max_value_len:
                return False
        elif cls is not float and cls is not int and cls is not bool:
            return False
    return True


_MISSING: Any = object()


# --- the SDK's spans, started without its per-span overhead ----------------------------------------------------
# ``Tracer.start_span`` builds an SDK span in ~7.6 us of a ~11.5 us start + end on the project's VM: it looks
# the parent up twice more inside the sampler, builds two ``TraceFlags`` and a ``SamplingResult``, creates
# four locks (the span's, its attributes', and the ``BoundedList``s of events and links that most spans never
# use) and goes through ``Span.__init__``'s keyword chain. For runtel's own tracer on a provider it built with
# the default decision (``runtel._sdk.sampler.ParentBasedAlwaysOn``), :func:`lean_span_starter` makes the same
# span — the SDK's ``Span`` class, the same fields with the same values — directly, and makes the events
# and links lists at a span's first event or link. It is checked at build time against a span the SDK's
# constructor made (the same field names, the same types), and returns ``None`` (the SDK's own path) when
# anything differs. tests/sdk/test_lean_tracer.py compares its spans with the SDK's for every kind of parent.


def lean_span_starter(tracer: Any, sampler: Any, *, api: Any, sdk: Any, bounded_attributes: Any,
                      bounded_list: Any) -> Callable[..., Any] | None:
    """A ``start_span`` with the SDK ``tracer``'s signature and results, for spans sampled by ``sampler``
    (a :class:`~runtel._sdk.sampler.ParentBasedAlwaysOn`); ``None`` when the SDK is not the one checked.

    ``api``/``sdk``: the modules ``opentelemetry.trace`` and ``opentelemetry.sdk.trace``; ``bounded_attributes``
    and ``bounded_list``: the classes of ``opentelemetry.attributes`` and ``opentelemetry.sdk.util`` (this
    module imports only the standard library). Falls back to ``tracer.start_span`` itself whenever the tracer
    is disabled or its sampler was replaced.
    """
    try:
        return _lean_starter(tracer, sampler, api, sdk, bounded_attributes, bounded_list)
    except Exception:  # another SDK, or a changed one
        return None


def _lean_starter(tracer: Any, sampler: Any, api: Any, sdk: Any, BoundedAttributes: Any,
                  BoundedList: Any) -> Callable[..., Any] | None:
    import logging  # deferred: runs once, when runtel builds its provider
    import threading  # deferred: as above
    import time  # deferred: as above

    # the SDK's own span metrics (OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED) are recorded on its path only
    if type(tracer) is not sdk.Tracer or tracer.sampler is not sampler \
            or type(tracer._tracer_metrics).__name__ != "NoOpTracerMetrics":
        return None
    span_processor = tracer.span_processor
    limits = tracer._span_limits
    generator = tracer.id_generator
    resource, scope, info = tracer.resource, tracer._instrumentation_scope, tracer.instrumentation_info
    max_attributes, max_length = limits.max_span_attributes, limits.max_span_attribute_length
    sdk_start = tracer.start_span
    logger = logging.getLogger(sdk.__name__)
    class NoList(BoundedList):  # type: ignore[misc]
        """The empty events (or links) list every lean span shares until its first event (or link).

        Iterated without the lock a BoundedList takes: one lock shared by every span could be held by another
        thread at a fork and block the child's first read of any span. Never appended to (LeanSpan replaces it
        first); an append would be every span's, so it raises instead.
        """

        def __iter__(self) -> Any:
            return iter(())

        def append(self, item: Any) -> None:
            raise TypeError("the shared empty list of lean spans is not appended to")

        def extend(self, seq: Any) -> None:
            raise TypeError("the shared empty list of lean spans is not appended to")

    no_list = NoList(None)
    if not isinstance(tracer._tracer_config.is_enabled, bool):  # read at every start: it must be there
        return None
    # The check's reference: a span the SDK's constructor makes (not started: no processor sees it).
    made = sdk._Span(name="probe", context=api.INVALID_SPAN_CONTEXT, sampler=sampler, resource=resource,
                     span_processor=span_processor, instrumentation_info=info, limits=limits,
                     instrumentation_scope=scope, record_end_metrics=None)
    unset = made._status  # the Status(UNSET) every new SDK span shares
    if not isinstance(unset, sdk.Status) or unset.status_code is not sdk.StatusCode.UNSET:
        return None

    class LeanSpan(sdk.Span):  # type: ignore[misc]
        """The SDK's span; its events and links lists are made at the first event or link."""

        def _add_event(self, event: Any) -> None:
            self._append("_events", "max_events", event, "_add_event")

        def _add_link(self, link: Any) -> None:
            self._append("_links", "max_links", link, "_add_link")

        def _append(self, key: str, limit: str, item: Any, what: str) -> None:
            """Append to the span's own events (or links) list, made here the first time; the SDK's warning
            when the span has ended."""
            fields: dict[str, Any] = self.__dict__
            with fields["_lock"]:
                if fields["_end_time"] is None:
                    items = fields[key]
                    if items is no_list:
                        items = fields[key] = BoundedList(getattr(fields["_limits"], limit))
                    items.append(item)
                    return
            logger.warning("Tried calling %s on an ended span.", what)

    LeanSpan.__qualname__ = "LeanSpan"
    get_current_span, span_context, non_recording = api.get_current_span, api.SpanContext, api.NonRecordingSpan
    default_state = api.DEFAULT_TRACE_STATE
    random_root = generator.is_trace_id_random()
    flags = {(sampled, random): api.TraceFlags((api.TraceFlags.SAMPLED if sampled else api.TraceFlags.DEFAULT)
                                               | (api.TraceFlags.RANDOM_TRACE_ID if random else 0))
             for sampled in (False, True) for random in (False, True)}
    root_flags, sampled_flags, sampled_random_flags = flags[True, random_root], flags[True, False], flags[True, True]
    internal = api.SpanKind.INTERNAL
    new, make_lock = object.__new__, threading.Lock
    trace_id_of, span_id_of = generator.generate_trace_id, generator.generate_span_id
    tuple_new, max_trace_id, max_span_id = tuple.__new__, 2**128 - 1, 2**64 - 1

    def context_of(trace_id: int, span_id: int, trace_flags: Any, state: Any) -> Any:
        """``SpanContext(trace_id, span_id, False, trace_flags, state)`` without its Python-level ``__new__``."""
        return tuple_new(span_context, (trace_id, span_id, False, trace_flags, state,
                                        0 < trace_id <= max_trace_id and 0 < span_id <= max_span_id))

    probe_state = api.TraceState([("k", "v")])
    for ids in ((1, 2), (0, 2), (1, 0), (2**128, 2), (1, 2**64)):
        if tuple(context_of(*ids, root_flags, probe_state)) != tuple(span_context(*ids, False, root_flags, probe_state)):
            return None

    def build(name: str, context: Any, kind: Any, parent: Any, attributes: Any, record_exception: bool,
              set_status_on_exception: bool) -> Any:
        """A not yet started LeanSpan with the fields ``Span.__init__`` gives (checked below)."""
        span = new(LeanSpan)
        span.__dict__ = {
            "_name": name, "_context": context, "_kind": kind, "_instrumentation_info": info,
            "_instrumentation_scope": scope, "_parent": parent, "_start_time": None, "_end_time": None,
            "_attributes": attributes, "_events": no_list, "_links": no_list, "_resource": tracer.resource,
            "_status": unset, "_sampler": sampler, "_trace_config": None, "_record_exception": record_exception,
            "_set_status_on_exception": set_status_on_exception, "_span_processor": span_processor,
            "_limits": limits, "_lock": make_lock(), "_record_end_metrics": None,
        }
        return span

    def start_span(name: str, context: Any = None, kind: Any = internal, attributes: Any = None, links: Any = (),
                   start_time: int | None = None, record_exception: bool = True,
                   set_status_on_exception: bool = True) -> Any:
        if tracer.sampler is not sampler or not tracer._tracer_config.is_enabled:
            return sdk_start(name, context=context, kind=kind, attributes=attributes, links=links,
                             start_time=start_time, record_exception=record_exception,
                             set_status_on_exception=set_status_on_exception)
        parent = get_current_span(context).get_span_context()
        if parent is not None and not isinstance(parent, span_context):
            raise TypeError("parent_span_context must be a SpanContext or None.")
        if parent is None or not parent.is_valid:
            parent = None
            trace_id, state, trace_flags = trace_id_of(), default_state, root_flags
        else:
            trace_id, state = parent.trace_id, parent.trace_state
            random = parent.trace_flags.random_trace_id
            if not parent.trace_flags.sampled:  # the default sampler drops what an unsampled parent dropped
                return non_recording(context=span_context(trace_id, span_id_of(), False, flags[False, random], state))
            trace_flags = sampled_random_flags if random else sampled_flags
        span = build(name, context_of(trace_id, span_id_of(), trace_flags, state), kind, parent,
                     BoundedAttributes(max_attributes, attributes, immutable=False, max_value_len=max_length),
                     record_exception, set_status_on_exception)
        if links:
            span._links = span._new_links(links)
        span._start_time = start_time if start_time is not None else time.time_ns()
        span_processor.on_start(span, parent_context=context)
        return span

    # The check: the SDK's span and one made here have the same fields, of the same types (or subtypes).
    mine = build("probe", api.INVALID_SPAN_CONTEXT, internal, None,
                 BoundedAttributes(max_attributes, None, immutable=False, max_value_len=max_length), True, True)
    theirs = vars(made)
    if theirs.keys() != mine.__dict__.keys() or any(not isinstance(v, type(theirs[k])) for k, v in vars(mine).items()):
        return None
    return start_span


# --- multiprocessing's process objects -------------------------------------------------------------------------
# Following a run into a spawned worker means wrapping the process's target before ``start()``, and only
# for start methods that do not fork; ``BaseProcess`` keeps both in private attributes and offers no public
# accessor. tests/unit/test_internals.py fails when CPython renames them.


def process_target(process: Any) -> Any:
    """The callable a ``multiprocessing`` process will run (``BaseProcess._target``), or None."""
    return getattr(process, "_target", None)


def set_process_target(process: Any, target: Any) -> None:
    """Replace the callable a not yet started process will run."""
    process._target = target


def process_start_method(process: Any) -> str | None:
    """The start method of a process's context (``'fork'``, ``'spawn'``, ``'forkserver'``), if it says."""
    method = getattr(process, "_start_method", None)
    return method if isinstance(method, str) else None


# --- the process environment as bytes -------------------------------------------------------------------------
# A subprocess child started inside a block gets a copy of the environment with the block's TRACEPARENT
# (runtel._propagation). dict(os.environ) decodes every variable (~22 us for 35 of them, ~80 us beside other
# work); CPython keeps the environment as a bytes dict (``os.environ._data``), which Popen takes as it is on
# POSIX. Used only where it matches os.environb; tests/unit/test_internals.py fails when it stops matching.


def environ_bytes() -> dict[bytes, bytes] | None:
    """A copy of the process environment as bytes (copied in C, ~0.3 us), or None where that is not available."""
    import os  # loaded at interpreter start

    data = getattr(os.environ, "_data", None)
    if not os.supports_bytes_environ or not isinstance(data, dict):
        return None
    out = dict(data)
    if out and not isinstance(next(iter(out)), bytes):
        return None
    return out


# --- the SDK's TracerProvider resource -------------------------------------------------------------------------
# A forked child's spans must name its own process.pid; the provider hands new tracers its ``_resource`` and
# has no public setter. tests/unit/test_internals.py fails if the attribute moves.


def set_provider_resource(provider: Any, resource: Any) -> bool:
    """Give ``provider`` (an SDK ``TracerProvider``) a new Resource for the tracers it makes from now on."""
    if not hasattr(provider, "_resource"):
        return False
    provider._resource = resource
    return True


# --- multiprocessing's exit path -------------------------------------------------------------------------------
# A pool worker told to stop (its sentinel task) runs multiprocessing.util._exit_function, which runs the
# finalizers, runtel's worker-run close among them. Pool.terminate() sends SIGTERM at the same moment to every
# worker not yet gone; a SystemExit raised into _exit_function there would skip the finalizers still to run
# and leave the worker's run "running". The SIGTERM handler asks this first. tests/unit/test_internals.py
# fails if the function is renamed.

_EXIT_FUNCTION = "_exit_function"


#: seconds a pool worker waiting for its next task sleeps between checks for a signal (see below)
SIGNAL_TICK_S = 0.2


def signal_friendly_get(queue: Any) -> Any:
    """A ``SimpleQueue.get`` for a pool worker that wakes every :data:`SIGNAL_TICK_S` while it waits, or None.

    A process with a Python SIGTERM handler (runtel's, in a worker with a run) can lose a SIGTERM that
    arrives between the interpreter's last signal check and a blocking ``sem_wait``/``read``: the C
    handler has run, the Python one never does, and the call blocks for good. ``Pool.terminate()`` sends
    SIGTERM exactly while idle workers go back to ``inqueue.get()`` — and holds the queue's lock — so
    ``with Pool(...)`` hung in about 1 of 15 runs (a spawn pool of 4). Waiting with timeouts gives the
    handler its chance at the next tick. Reads ``SimpleQueue``'s lock and reader (``_rlock``,
    ``_reader``); tests/unit/test_internals.py fails when CPython renames them.
    """
    from multiprocessing.reduction import ForkingPickler  # deferred: multiprocessing, in pool workers only (~8 ms)

    lock, reader = getattr(queue, "_rlock", None), getattr(queue, "_reader", None)
    if lock is None or reader is None or not hasattr(reader, "poll") or not hasattr(reader, "recv_bytes"):
        return None
    tick = SIGNAL_TICK_S

    def get() -> Any:
        while not lock.acquire(timeout=tick):
            pass
        try:
            while not reader.poll(tick):
                pass
            data = reader.recv_bytes()
        finally:
            lock.release()
        return ForkingPickler.loads(data)

    return get


def in_multiprocessing_exit(frame: Any) -> bool:
    """Whether ``frame`` (a signal handler's interrupted frame) is inside multiprocessing's exit function."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == _EXIT_FUNCTION and code.co_filename.replace("\\", "/").endswith("multiprocessing/util.py"):
            return True
        frame = frame.f_back
    return False
