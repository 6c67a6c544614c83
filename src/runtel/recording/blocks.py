"""Code blocks and traced functions as child spans: ``block()`` and ``@trace``.

The hot path is kept short: a span is started on the current tracer, made current with one context
attach, and ended; static attributes are computed once at decoration time. When resource sampling
is on, the span also gets the usage of its own time window (``runtel.usage.*``): CPU time and energy
are the differences of cumulative counters read at the block's two edges (exact whatever its length,
see runtel.sampling.edges), peaks and utilisation come from the samples that fell inside it, and a
block no sample fell into says ``runtel.usage.samples = 0`` next to its counter figures.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Span

from runtel import _context, _sdk, semconv
from runtel._guard import guard, note_cut
from runtel._internals import set_owned_attributes, stamp_new_span
from runtel.recording.safety import (
    bad_argument,
    coerce_int,
    coerce_name,
    record_exception,
    redacted_attributes,
    safe_str,
)
from runtel.recording.workers import child_runtime

__all__ = ("Block", "block", "trace")

F = TypeVar("F", bound=Callable[..., Any])

_PRIMITIVES = (str, bool, int, float)
_fallback_tracer = otel_trace.get_tracer(semconv.INSTRUMENTATION_SCOPE)
_BLOCK_KIND: dict[str, Any] = {semconv.SPAN_KIND: semconv.KIND_BLOCK}


def _tracer() -> otel_trace.Tracer:
    rt = _sdk.current_runtime() or child_runtime()
    return rt.tracer if rt is not None else _fallback_tracer


def _record_error(span: Span, exc: BaseException) -> None:
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return
    if isinstance(exc, (GeneratorExit, StopIteration, StopAsyncIteration)):
        return
    record_exception(span, exc)  # never raises: the user's exception is the one that propagates


def _start_edge() -> Any:
    """The edge counters at a block's start (``None`` without sampling): ~2 us, see runtel.sampling.edges."""
    rt = _sdk.current_runtime()
    monitor = rt.monitor if rt is not None else None
    if monitor is None or not monitor.block_edges:
        return None
    return monitor.edge()


#: the failure handling of the edge path, shared (a guard holds no state): ``with guard(...)`` per block cost ~0.3 us
_USAGE_GUARD = guard("block-usage", "summarise block resource usage")


_LOOK_UP: Any = object()


def _end(span: Span, start_ns: int, edge: Any = None, monitor: Any = _LOOK_UP) -> None:
    """Attach the window's resource usage (when sampling) and end the span.

    ``monitor``: the runtime's monitor as the caller read it at the start (saves a second lookup per span).
    """
    if monitor is _LOOK_UP:
        rt = _sdk.current_runtime()
        monitor = rt.monitor if rt is not None else None
    if edge is not None:
        if monitor is not None and span.is_recording():
            try:  # the hot path: one end edge, a dict of one to three numbers, one locked update
                attributes = monitor.block_attributes(edge, start_ns)
                if attributes:
                    set_owned_attributes(span, attributes)  # runtel's numbers: valid as made
            except Exception as exc:
                if not _USAGE_GUARD.__exit__(type(exc), exc, exc.__traceback__):
                    raise
    elif monitor is not None and span.is_recording():
        with guard("block-usage", "summarise block resource usage"):
            start_ns = start_ns or getattr(span, "start_time", 0) or 0
            sampler = monitor.sampler  # None when sampling could not start: no usage numbers, no error
            latest = sampler.latest if sampler is not None else None
            # No sample fell inside the window: the span stays without usage numbers rather than getting
            # invented ones; the run-folder exporter marks it `runtel.usage.samples = 0` off the hot path.
            if latest is not None and latest.time_ns >= start_ns:
                from runtel.sampling.summary import usage_attributes  # deferred: runtel.sampling.summary (~3 ms)

                span.set_attributes(usage_attributes(monitor.usage(start_ns, time.time_ns())))
    span.end()


def _user_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """User attributes made OTel-legal, with secret-looking keys and values redacted."""
    if not attributes:
        return {}
    rt = _sdk.current_runtime()
    max_length = rt.settings.attribute_max_length if rt is not None else 4096
    out: dict[str, Any] = {}
    with guard("block-attributes", "record block attributes"):
        redactor = rt.redactor if rt is not None else None
        simple = all(type(v) in _PRIMITIVES for v in attributes.values())
        if simple and redactor is not None:
            for key, value in attributes.items():
                if redactor.is_secret_key(key):
                    out[key] = "[REDACTED]"
                elif type(value) is str:  # scanned up to the limit (and a margin), then cut
                    if len(value) > max_length:
                        note_cut("attribute", max_length)
                    out[key] = redactor.redact_cut(value, max_length)
                else:
                    out[key] = value
            return out
        from runtel.redaction import SCAN_MARGIN  # deferred: runtel.redaction (~0.3 ms)
        from runtel.values.attributes import to_attributes  # deferred: runtel.values.attributes (~2 ms)

        # Run.convert's order: converted first (bounded by the attribute limits: 512 attributes, 256 items,
        # strings cut at the limit plus the scan margin, whatever the input's size), then redacted and cut.
        if redactor is None:
            return to_attributes(attributes, prefix="", max_length=max_length)
        converted = to_attributes(attributes, prefix="", max_length=max_length + SCAN_MARGIN)
        out = redacted_attributes(redactor, converted, max_length)
    return out


class Block:
    """A code block recorded as a child span of whatever span is current (``with`` / ``async with``)."""

    __slots__ = ("_attributes", "_edge", "_monitor", "_name", "_span", "_token")

    def __init__(self, name: str, attributes: Mapping[str, Any]) -> None:
        self._name = name if type(name) is str else coerce_name(name, "block(name=...)") or "block"
        self._attributes = attributes
        self._span: Span = otel_trace.INVALID_SPAN
        self._token: object = None
        self._edge: Any = None
        self._monitor: Any = None

    @property
    def span(self) -> Span:
        """The block's span (valid inside the block)."""
        return self._span

    def set_attributes(self, **attributes: Any) -> None:
        """Add attributes to the block's span while it is open."""
        self._span.set_attributes(_user_attributes(attributes))

    def __enter__(self) -> Block:
        rt = _sdk.current_runtime() or child_runtime()  # a child of a run records into a worker run
        span = self._span = (rt.tracer if rt is not None else _fallback_tracer).start_span(self._name)
        stamp_new_span(span, _BLOCK_KIND)
        if self._attributes:
            span.set_attributes(_user_attributes(self._attributes))
        self._token = otel_context.attach(otel_trace.set_span_in_context(span))
        monitor = self._monitor = rt.monitor if rt is not None else None
        if monitor is not None and monitor.block_edges:
            self._edge = monitor.edge()  # last: the counters start with the block's own code
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = self._span
        try:
            if exc is not None:
                _record_error(span, exc)
        finally:
            if self._token is not None:
                otel_context.detach(self._token)  # type: ignore[arg-type]
                self._token = None
            edge, self._edge = self._edge, None
            monitor, self._monitor = self._monitor, None
            _end(span, 0, edge, monitor)

    async def __aenter__(self) -> Block:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def block(name: str, **attributes: Any) -> Block:
    """Record a code block as a span, a child of the current span (sync or async).

    Example:
        >>> import runtel
        >>> with runtel.run_span("train"):
        ...     for epoch in range(2):
        ...         with runtel.block("epoch", index=epoch):
        ...             pass

    Works across ``await``, ``asyncio.gather``, task groups, and threads started with a copied
    ``contextvars`` context. Exceptions are recorded on the span (status ERROR) and re-raised.
    """
    return Block(name, attributes)


# --- @trace ----------------------------------------------------------------------------------------


class _Options:
    """What a decorated function records, computed once at decoration time."""

    __slots__ = (
        "capture",
        "capture_limit",
        "capture_return",
        "calls",
        "name",
        "record_dir_parameter",
        "seed_parameter",
        "signature",
        "static",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None,
        attributes: Mapping[str, Any] | None,
        capture: bool | Sequence[str],
        capture_return: bool,
        capture_limit: int | None,
        stage: str | None,
        seed_parameter: str | None,
        record_dir_parameter: str | None,
    ) -> None:
        fallback = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
        self.name: str = (coerce_name(name, "trace(name=...)") if name else None) or safe_str(fallback or "function")
        static: dict[str, Any] = {
            semconv.SPAN_KIND: semconv.KIND_FUNCTION,
            semconv.CODE_FUNCTION_NAME: f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', self.name)}",
        }
        # code.file.path / code.line.number are left out on purpose: each attribute costs ~1 us per call,
        # and the qualified function name already locates the code.
        if stage:
            static[semconv.STAGE] = stage if type(stage) is str else safe_str(stage)
        if attributes:
            with guard("trace-attributes", "use trace(attributes=...)"):
                from runtel.values.attributes import to_attributes  # deferred: runtel.values.attributes (~2 ms)

                given: object = attributes  # typed a Mapping, but callers pass anything
                if not isinstance(given, Mapping):
                    bad_argument("trace-attributes", f"trace(attributes=...) should be a mapping, got "
                                 f"{type(given).__name__}; ignored")
                else:
                    static.update(to_attributes({safe_str(k): v for k, v in given.items()}, prefix=""))
        self.static = static
        if capture_limit is not None and coerce_int(capture_limit) is None:
            bad_argument("capture-limit", f"trace(capture_limit=...) should be an int, got "
                         f"{type(capture_limit).__name__}; every call is captured")
        if isinstance(capture, str):
            capture = (capture,)  # one parameter name, not one per character
        elif not isinstance(capture, (bool, list, tuple, set, frozenset)):
            capture = bool(capture)
        self.capture = capture
        self.capture_return = bool(capture_return)
        self.capture_limit = None if capture_limit is None else coerce_int(capture_limit)
        self.calls = itertools.count()
        self.seed_parameter = seed_parameter
        self.record_dir_parameter = record_dir_parameter
        needs_signature = bool(capture) or bool(seed_parameter) or bool(record_dir_parameter)
        self.signature = inspect.signature(fn) if needs_signature else None
        if seed_parameter:
            from runtel.recording.seeding import check_seed_parameter  # deferred: runtel.recording.seeding (~0.9 ms)

            assert self.signature is not None
            check_seed_parameter(self.signature, seed_parameter)
        if record_dir_parameter and self.signature is not None and record_dir_parameter not in self.signature.parameters:
            raise ValueError(f"{self.name}() has no parameter {record_dir_parameter!r} (record_dir_parameter)")

    @property
    def simple(self) -> bool:
        return not (self.capture or self.capture_return or self.seed_parameter or self.record_dir_parameter)


class _Call:
    """Per-call work of the optional features (capture, seeds, record dirs)."""

    __slots__ = ("args", "capture_this", "kwargs", "run_span", "seed")

    def __init__(self, opts: _Options, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args, self.kwargs = args, kwargs
        self.seed: int | None = None
        self.run_span: Any = None
        limit = opts.capture_limit
        self.capture_this = (opts.capture or opts.capture_return) and (limit is None or next(opts.calls) < limit)
        if opts.seed_parameter and opts.signature is not None:
            with guard("seed-inject", "inject a seed"):
                from runtel.recording.seeding import (  # deferred: runtel.recording.seeding (~0.9 ms)
                    inject_seed,
                    seed_generators,
                )

                self.args, self.kwargs, self.seed = inject_seed(opts.signature, args, kwargs, opts.seed_parameter)
                seed_generators(self.seed)
        if opts.record_dir_parameter and opts.signature is not None:
            with guard("record-dir", "find the record directory"):
                bound = opts.signature.bind_partial(*self.args, **self.kwargs)
                bound.apply_defaults()
                target = bound.arguments.get(opts.record_dir_parameter)
                if target is not None:
                    from runtel.recording.lifecycle import run_span  # deferred: runtel.recording.lifecycle (~4 ms)

                    run = _context.current_run()
                    if run is None:  # pycrumbs-style: a decorated entry point records its own run
                        config = {k: v for k, v in bound.arguments.items() if k not in ("self", "cls")}
                        self.run_span = run_span(opts.name, config=config, output_dir=os.fspath(target))
                    else:
                        run.add_output_dir(target)

    def on_start(self, opts: _Options, span: Span) -> None:
        if self.seed is not None:
            span.set_attribute(semconv.SEED, self.seed)
            run = _context.current_run()
            if run is not None and run.enabled:
                from runtel.recording.seeding import record_seed  # deferred: runtel.recording.seeding (~0.9 ms)

                record_seed(run, self.seed, overwrite=False)
        if not self.capture_this and (opts.capture or opts.capture_return):
            span.set_attribute(semconv.CAPTURE_SKIPPED, True)  # past capture_limit: say so, not "no arguments"
        elif self.capture_this and opts.capture and opts.signature is not None:
            with guard("capture-args", "capture call arguments"):
                from runtel.recording.capture import capture_call  # deferred: runtel.recording.capture (~0.7 ms)

                span.set_attributes(capture_call(opts.signature, self.args, self.kwargs, opts.capture))

    def on_return(self, opts: _Options, span: Span, value: Any) -> None:
        if self.capture_this and opts.capture_return:
            with guard("capture-return", "capture a return value"):
                from runtel.recording.capture import capture_return  # deferred: runtel.recording.capture (~0.7 ms)

                span.set_attributes(capture_return(value))


def _wrap_function(fn: Callable[..., Any], opts: _Options) -> Callable[..., Any]:
    name, static = opts.name, opts.static

    if opts.simple:

        @functools.wraps(fn)
        def simple_wrapper(*args: Any, **kwargs: Any) -> Any:
            # The hot path: every line here is paid per call (see benchmarks/core_bench.py).
            rt = _sdk.current_runtime() or child_runtime()
            span = (rt.tracer if rt is not None else _fallback_tracer).start_span(name)
            stamp_new_span(span, static)  # cleaned at decoration: cheaper than attributes= or set_attributes
            token = otel_context.attach(otel_trace.set_span_in_context(span))
            monitor = rt.monitor if rt is not None else None
            edge = monitor.edge() if monitor is not None and monitor.block_edges else None
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                _record_error(span, exc)
                raise
            finally:
                otel_context.detach(token)
                _end(span, 0, edge, monitor)

        return simple_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = _Call(opts, args, kwargs)
        if call.run_span is not None:
            with call.run_span:
                return _call_sync(fn, opts, call)
        return _call_sync(fn, opts, call)

    return wrapper


def _call_sync(fn: Callable[..., Any], opts: _Options, call: _Call) -> Any:
    start_ns = time.time_ns()
    span = _tracer().start_span(opts.name, attributes=opts.static)
    token = otel_context.attach(otel_trace.set_span_in_context(span))
    edge = _start_edge()
    try:
        call.on_start(opts, span)
        value = fn(*call.args, **call.kwargs)
        call.on_return(opts, span, value)
        return value
    except BaseException as exc:
        _record_error(span, exc)
        raise
    finally:
        otel_context.detach(token)
        _end(span, start_ns, edge)


def _wrap_coroutine(fn: Callable[..., Any], opts: _Options) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = _Call(opts, args, kwargs)
        if call.run_span is not None:
            async with call.run_span:
                return await _call_async(fn, opts, call)
        return await _call_async(fn, opts, call)

    return wrapper


async def _call_async(fn: Callable[..., Any], opts: _Options, call: _Call) -> Any:
    start_ns = time.time_ns()
    span = _tracer().start_span(opts.name, attributes=opts.static)
    token = otel_context.attach(otel_trace.set_span_in_context(span))
    edge = _start_edge()
    try:
        call.on_start(opts, span)
        value = await fn(*call.args, **call.kwargs)
        call.on_return(opts, span, value)
        return value
    except BaseException as exc:
        _record_error(span, exc)
        raise
    finally:
        otel_context.detach(token)
        _end(span, start_ns, edge)


def _wrap_generator(fn: Callable[..., Generator[Any, Any, Any]], opts: _Options) -> Callable[..., Any]:
    """The span covers the whole iteration; the generator body runs with its span current, the caller not."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        call = _Call(opts, args, kwargs)
        start_ns = time.time_ns()
        span = _tracer().start_span(opts.name, attributes=opts.static)
        ctx = otel_trace.set_span_in_context(span)
        items = 0
        edge = _start_edge()

        def step(method: Callable[..., Any], *arg: Any) -> Any:
            token = otel_context.attach(ctx)
            try:
                return method(*arg)
            finally:
                otel_context.detach(token)

        try:
            call.on_start(opts, span)
            gen = fn(*call.args, **call.kwargs)  # creating a generator runs none of its body
            item = step(next, gen)
            while True:
                items += 1
                try:
                    sent = yield item
                except GeneratorExit:
                    step(gen.close)
                    raise
                except BaseException as thrown:
                    item = step(gen.throw, thrown)
                else:
                    item = step(gen.send, sent)
        except StopIteration as stop:
            call.on_return(opts, span, stop.value)
            return stop.value
        except BaseException as exc:
            _record_error(span, exc)
            raise
        finally:
            span.set_attribute("runtel.generator.items", items)
            _end(span, start_ns, edge)

    return wrapper


def _wrap_async_generator(fn: Callable[..., AsyncGenerator[Any, Any]], opts: _Options) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        call = _Call(opts, args, kwargs)
        start_ns = time.time_ns()
        span = _tracer().start_span(opts.name, attributes=opts.static)
        ctx = otel_trace.set_span_in_context(span)
        items = 0
        edge = _start_edge()

        async def step(awaitable_factory: Callable[[], Any]) -> Any:
            token = otel_context.attach(ctx)
            try:
                return await awaitable_factory()
            finally:
                otel_context.detach(token)

        try:
            call.on_start(opts, span)
            token = otel_context.attach(ctx)
            try:
                agen = fn(*call.args, **call.kwargs)
            finally:
                otel_context.detach(token)
            item = await step(agen.__anext__)
            while True:
                items += 1
                try:
                    sent = yield item
                except GeneratorExit:
                    await step(agen.aclose)
                    raise
                except BaseException as thrown:
                    item = await step(functools.partial(agen.athrow, thrown))
                else:
                    item = await step(functools.partial(agen.asend, sent))
        except StopAsyncIteration:
            return
        except BaseException as exc:
            _record_error(span, exc)
            raise
        finally:
            span.set_attribute("runtel.generator.items", items)
            _end(span, start_ns, edge)

    return wrapper


def _decorate(fn: Any, opts_kwargs: dict[str, Any]) -> Any:
    if isinstance(fn, (classmethod, staticmethod)):
        return type(fn)(_decorate(fn.__func__, opts_kwargs))
    if not callable(fn):
        raise TypeError(f"@runtel.trace needs a function, got {type(fn).__name__}")
    opts = _Options(fn, **opts_kwargs)
    if inspect.isasyncgenfunction(fn):
        return _wrap_async_generator(fn, opts)
    if inspect.isgeneratorfunction(fn):
        return _wrap_generator(fn, opts)
    if inspect.iscoroutinefunction(fn):
        return _wrap_coroutine(fn, opts)
    return _wrap_function(fn, opts)


@overload
def trace(fn: F, /) -> F: ...


@overload
def trace(
    *,
    name: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    capture: bool | Sequence[str] = False,
    capture_return: bool = False,
    capture_limit: int | None = None,
    stage: str | None = None,
    seed_parameter: str | None = None,
    record_dir_parameter: str | None = None,
) -> Callable[[F], F]: ...


def trace(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    capture: bool | Sequence[str] = False,
    capture_return: bool = False,
    capture_limit: int | None = None,
    stage: str | None = None,
    seed_parameter: str | None = None,
    record_dir_parameter: str | None = None,
) -> Any:
    """Record each call of a function as a span (sync, async, generators, methods).

    Usable bare (``@runtel.trace``) or with options. Name, docstring and ``inspect.signature`` are
    kept, so it composes with click/typer and FastAPI. A generator's span covers its whole iteration.

    Args:
        name: Span name (default: the function's qualified name).
        attributes: Static attributes for every call's span.
        capture: Record argument values (``True`` for all, or a list of parameter names) as
            ``runtel.param.*`` summaries (arrays as shape/dtype/stats, never their data).
        capture_return: Record a summary of the return value as ``runtel.return``.
        capture_limit: Capture only the first N calls (later calls still get timing).
        stage: A pipeline stage name (``runtel.stage``), e.g. ``"evaluation"``.
        seed_parameter: Name of a parameter that receives a generated seed when left ``None``;
            the seed is recorded and the RNGs are seeded with it (as pycrumbs does).
        record_dir_parameter: Name of a parameter holding an output folder; the run record is also
            written there. If no run is open, the call records a run of its own.

    Example:
        >>> import runtel
        >>> @runtel.trace
        ... async def handle(request_id: int) -> str:
        ...     return "ok"
    """
    opts_kwargs = dict(
        name=name,
        attributes=attributes,
        capture=capture,
        capture_return=capture_return,
        capture_limit=capture_limit,
        stage=stage,
        seed_parameter=seed_parameter,
        record_dir_parameter=record_dir_parameter,
    )
    if fn is not None:
        return _decorate(fn, opts_kwargs)
    return lambda f: _decorate(f, opts_kwargs)
