"""Services: one run for the service's lifetime, each request its own trace, linked to that run.

:class:`RequestSpans` is a plain ASGI middleware (FastAPI, Starlette, any ASGI app under uvicorn or
hypercorn). Each HTTP request gets a ``SERVER`` span that starts a trace of its own — or continues
the caller's, from an incoming W3C ``traceparent``/``tracestate`` header — instead of joining the
run's ever-growing trace. The span carries the run id and a link to the run span, and is current
while the app handles the request, so the request's blocks and traced calls are its children and
land in the service run's folder. The run is the one open in the request's context, else the
process run (a run opened in a FastAPI ``lifespan`` or around ``uvicorn.run``); in a process
started from inside a run (``runtel run -- uvicorn app:app``) with neither, the worker run that
``recording.workers.child_runtime`` opens. A request that already has a server span when it reaches
``RequestSpans`` (FastAPI's own telemetry, OpenTelemetry's ASGI middleware further out) keeps it as
its span (see ``RequestSpans._adopt``); further in, such instrumentations get the request span's
``traceparent`` in the headers and continue its trace.

**Per-request CPU** (``runtel.request.cpu.time``): the thread CPU time spent running *this request*
— the event-loop thread only while the request's own ASGI coroutine, or a task it spawned
(``create_task``, ``gather``/``ensure_future`` of a coroutine, task groups, and the tasks those
spawn: metered through the loop's task factory), runs (each step between two suspensions is timed
with ``time.thread_time_ns``), plus pool threads while they run work it handed off
(``asyncio.to_thread``, ``loop.run_in_executor``: timed in ``runtel._propagation``; anyio's worker
threads, where Starlette/FastAPI run sync endpoints: timed here). The steps of concurrent requests
are disjoint, so these figures never add up to more than the process's CPU time. Not counted:
threads the handler starts itself, work done after the request span ended (a task still running
then), and the server's own work outside the app (HTTP parsing).
``runtel.request.concurrency`` records how many requests were in flight when it started.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from runtel import _context, _sdk, semconv
from runtel._guard import guard, is_strict, log_once
from runtel._internals import set_owned_attributes
from runtel.recording.workers import child_runtime

__all__ = ("RequestSpans", "aiohttp_middleware")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class RequestSpans:
    """ASGI middleware: a server span per HTTP request, its own trace, linked to the service run.

    Example:
        >>> from runtel.recording.service import RequestSpans
        >>> app = RequestSpans(app)  # doctest: +SKIP
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self._in_flight = 0
        if "uvicorn" in sys.modules and _context.current_run() is not None:  # see finish_runs_on_sigterm
            with guard("service-sigterm", "finish the service run on SIGTERM"):
                _sdk.finish_runs_on_sigterm()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection; anything but HTTP passes through untouched."""
        current = otel_context.get_current()
        if scope.get("type") != "http" or current.get(_context.CPU_METER_KEY) is not None:
            await self.app(scope, receive, send)  # not a request, or one a RequestSpans further out handles
            return
        runtime, run = _service_run(current)
        if run is None:
            await self.app(scope, receive, send)
            return
        outer = trace.get_current_span(current)
        if outer.is_recording() and getattr(outer, "kind", None) is SpanKind.SERVER:
            await self._adopt(outer, run, current, scope, receive, send)
            return
        span: Any = None
        token: object = None
        meter = _Meter()
        self._in_flight += 1
        try:
            headers = scope.get("headers")
            carrier = _trace_headers(headers) if headers else None
            query = scope.get("query_string")
            client = scope.get("client")
            span, request_ctx = _start(runtime, run, current, carrier, scope.get("method") or "HTTP",
                                       scope.get("path") or "", scope.get("scheme") or "http",
                                       query.decode("latin-1") if query else None, client[0] if client else None,
                                       self._in_flight)
            token = otel_context.attach(otel_context.set_value(_context.CPU_METER_KEY, meter, request_ctx))
            scope = _with_trace_headers(scope, span)
        except Exception as exc:  # the request goes on unrecorded
            _start_failed(exc)
        sender = _StatusSend(send)
        try:
            if span is None:
                await self.app(scope, receive, send)
            else:
                await _Metered(self.app(scope, receive, sender), meter)
        except BaseException as exc:
            if span is not None:
                _failed(span, exc)
            raise
        finally:
            self._in_flight -= 1
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
            if span is not None:
                route = getattr(scope.get("route"), "path", None)  # Starlette/FastAPI set the matched route
                _end(span, route if isinstance(route, str) else None, sender.status, meter)

    async def _adopt(self, span: Any, run: Any, current: Context, scope: Scope, receive: Receive, send: Send) -> None:
        """The request already has a server span, made further out (FastAPI's own telemetry, OpenTelemetry's
        ASGI middleware): it is the request's span. No second one: it gets the run id, the link to the run,
        the concurrency and the request's CPU time (set before the final body is sent, after which its owner
        ends it); its owner names it, sets its status and ends it."""
        meter = _Meter()
        self._in_flight += 1
        token: object = None
        sender = _AdoptedSend(send, span, meter)
        try:
            attributes: dict[str, Any] = {semconv.REQUEST_CONCURRENCY: self._in_flight}
            if semconv.RUN_ID not in (getattr(span, "attributes", None) or {}):
                attributes[semconv.RUN_ID] = run.id
            set_owned_attributes(span, attributes)
            add_link = getattr(span, "add_link", None)
            if callable(add_link):
                add_link(run.span.get_span_context())
            _meter_spawned_work()
            token = otel_context.attach(otel_context.set_value(_context.CPU_METER_KEY, meter,
                                                               _context.with_run(run, current)))
        except Exception as exc:  # the request goes on, its span as its owner made it
            _start_failed(exc)
        try:
            await _Metered(self.app(scope, receive, sender), meter)
        finally:
            self._in_flight -= 1
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
            if not sender.done and span.is_recording():  # no final body went out (an error): still the owner's span
                sender.usage()


def aiohttp_middleware() -> Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]:
    """An aiohttp server middleware: the same request span as :class:`RequestSpans`, for ``aiohttp.web``.

    Example:
        >>> from runtel.recording.service import aiohttp_middleware
        >>> app = web.Application(middlewares=[aiohttp_middleware()])  # doctest: +SKIP

    The span is named after the method and the matched resource (``GET /item/{i}``); an
    ``HTTPException`` the handler raises gives its status (5xx: an error); the response is written by
    aiohttp after the handler returns, outside the span, as a server's own work is under ASGI.
    """
    in_flight = [0]

    async def runtel_request_spans(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        current = otel_context.get_current()
        runtime, run = (None, None) if current.get(_context.CPU_METER_KEY) is not None else _service_run(current)
        if run is None:
            return await handler(request)
        span: Any = None
        token: object = None
        meter = _Meter()
        in_flight[0] += 1
        try:
            headers = request.headers
            carrier = {key: headers[key] for key in _TRACE_NAMES if key in headers} or None
            transport = request.transport
            peer = transport.get_extra_info("peername") if transport is not None else None
            span, request_ctx = _start(runtime, run, current, carrier, request.method, request.path, request.scheme,
                                       request.query_string or None, peer[0] if peer else None, in_flight[0])
            token = otel_context.attach(otel_context.set_value(_context.CPU_METER_KEY, meter, request_ctx))
        except Exception as exc:  # the request goes on unrecorded
            _start_failed(exc)
        status = 0
        try:
            if span is None:
                return await handler(request)
            response = await _Metered(handler(request), meter)
            status = int(getattr(response, "status", 0) or 0)
            return response
        except BaseException as exc:
            status = int(getattr(exc, "status", 0) or 0)  # aiohttp's HTTPException (404, a redirect) is a response
            if span is not None and (not status or status >= 500):
                _failed(span, exc)
            raise
        finally:
            in_flight[0] -= 1
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
            if span is not None:
                route = None
                with guard("request-span-route", "read the matched aiohttp route"):
                    info = request.match_info
                    resource = info.route.resource if info is not None and info.route is not None else None
                    route = resource.canonical if resource is not None else None
                _end(span, route if isinstance(route, str) else None, status, meter)

    runtel_request_spans.__middleware_version__ = 1  # type: ignore[attr-defined] # what @web.middleware sets
    return runtel_request_spans


def _service_run(current: Context) -> tuple[Any, Any]:
    """(runtime, run) a request records into, or (None, None): no run, no request span.

    The run open in the request's context (a run around ``uvicorn.run``), else the process run (one
    opened in a lifespan task), else, in a process started from inside a run, its worker run.
    """
    runtime = _sdk.current_runtime()
    if runtime is None or not runtime.open_runs:
        runtime = child_runtime(batched=True) or runtime  # a service started from inside a run
    run = _context.run_in(current)
    if run is None and runtime is not None:
        run = runtime.process_run
    if runtime is None or run is None or getattr(run, "span", None) is None:
        return None, None
    return runtime, run


def _trace_headers(headers: Any) -> dict[str, str] | None:
    """``traceparent``/``tracestate``/``baggage`` of ASGI headers, or None (most requests have none)."""
    carrier: dict[str, str] | None = None
    for key, value in headers:
        if key[:1] in _TRACE_INITIALS and key.lower() in _TRACE_HEADERS:
            if carrier is None:
                carrier = {}
            carrier[key.decode("latin-1").lower()] = value.decode("latin-1")
    return carrier


#: the last service run seen and the link to its span (a service has one run: the link is made once)
_linked: tuple[Any, list[Link]] = (None, [])

#: the event loop seen last, whose task factory meters the tasks a request spawns (no weak reference:
#: uvloop's loop may not take one; a loop closed since is one object kept)
_metered_loop: list[Any] = [None]


def _start(runtime: Any, run: Any, current: Context, carrier: dict[str, str] | None, method: str, path: str,
           scheme: str, query: str | None, client: str | None, in_flight: int) -> tuple[Any, Context]:
    """The request's server span and the context the app runs in (the span current, the run open).

    The span starts from a context holding only the run (and the caller's span, from a
    ``traceparent``): a trace of its own, attributed by the span processor to ``run``. Its attributes
    are added in one step rather than through the SDK's per-value cleaning (the scrubber still sees
    them at the span's end); the link to the run span is made once per run.
    """
    global _linked
    parent = Context()
    if carrier is not None:
        if "traceparent" in carrier:
            parent = _TRACE_CONTEXT.extract(carrier, context=parent)
        if "baggage" in carrier:  # the caller's baggage, readable in the handler (as OTel's middlewares do)
            current = _BAGGAGE.extract(carrier, context=current)
    linked_run, links = _linked
    if linked_run is not run:
        links = [Link(run.span.get_span_context())]
        _linked = (run, links)
    span = runtime.tracer.start_span(method, context=_context.with_run(run, parent), kind=SpanKind.SERVER,
                                     links=links)
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.path": path,
        "url.scheme": scheme,
        semconv.REQUEST_CONCURRENCY: in_flight,
    }
    if query:
        attributes["url.query"] = query
    if client:
        attributes["client.address"] = str(client)
    set_owned_attributes(span, attributes)  # a non-str value (a broken server) takes the SDK's cleaning
    _meter_spawned_work()
    return span, _context.with_run(run, trace.set_span_in_context(span, current))


def _meter_spawned_work() -> None:
    """Time anyio's worker threads and the tasks a request spawns on the running event loop (once each)."""
    if not _anyio_timed:
        _time_anyio_threads()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # another async library (trio): spawned tasks are not metered
        return
    if loop is not _metered_loop[0]:
        _meter_tasks(loop)  # once per loop: a loop already metered is left as it is
        _metered_loop[0] = loop


def _failed(span: Any, exc: BaseException) -> None:
    span.record_exception(exc, escaped=True)
    span.set_attribute(semconv.ERROR_TYPE, type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:1024]))


class _StatusSend:
    """The app's ``send``: notes the response status and hands back the server's own awaitable (no extra frame)."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 0

    def __call__(self, message: MutableMapping[str, Any]) -> Awaitable[None]:
        if not self.status and message.get("type") == "http.response.start":
            self.status = int(message.get("status", 0))
        return self.send(message)


class _AdoptedSend(_StatusSend):
    """``send`` for an adopted span: the request's CPU time goes on it just before the final body is sent."""

    __slots__ = ("done", "meter", "span")

    def __init__(self, send: Send, span: Any, meter: _Meter) -> None:
        super().__init__(send)
        self.span, self.meter, self.done = span, meter, False

    def __call__(self, message: MutableMapping[str, Any]) -> Awaitable[None]:
        if not self.done and (message.get("type") == "http.response.body" and not message.get("more_body")
                              or message.get("type") == "http.response.pathsend"):
            self.usage()
        return self.send(message)

    def usage(self) -> None:
        self.done = True
        with guard("request-span-end", "add the request's CPU time"):
            set_owned_attributes(self.span, {semconv.REQUEST_CPU_TIME: round(self.meter.seconds, 9)})


def _with_trace_headers(scope: Scope, span: Any) -> Scope:
    """``scope`` for the app, its ``traceparent``/``tracestate`` naming the request span.

    Instrumentations further in start their server span from the request headers, not from the current
    context (FastAPI's own telemetry, OpenTelemetry's ASGI middleware): they then continue the request's
    trace under its span instead of starting a second trace for the same request, as a tracing proxy
    would have them do. The caller's own headers are kept in the request span (its parent).
    """
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return scope
    headers = [(k, v) for k, v in scope.get("headers") or () if k.lower() not in _REPLACED_HEADERS]
    headers.append((b"traceparent", b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, ctx.trace_flags)))
    state = ctx.trace_state.to_header() if ctx.trace_state else ""
    if state:
        headers.append((b"tracestate", state.encode("latin-1")))
    inner = dict(scope)
    inner["headers"] = headers
    return inner


_REPLACED_HEADERS = (b"traceparent", b"tracestate")


def _start_failed(exc: Exception) -> None:
    if is_strict():
        raise exc
    log_once("request-span", "runtel could not start the request span: %s: %s (telemetry continues without it)",
             type(exc).__name__, exc)


class _Meter:
    """The CPU time of one request: its own steps in the event-loop thread, and pool threads' work for it."""

    __slots__ = ("loop_ns", "thread_ns")

    def __init__(self) -> None:
        self.loop_ns = 0  # written by the event-loop thread only
        self.thread_ns = 0

    def add(self, ns: int) -> None:
        """Called by pool threads (``runtel._propagation``) when work done for the request ends."""
        with _thread_lock:
            self.thread_ns += ns

    @property
    def seconds(self) -> float:
        return (self.loop_ns + self.thread_ns) / 1e9


#: one lock for every request's pool-thread additions (rare, short): cheaper than a lock per request
_thread_lock = threading.Lock()


_anyio_timed = False


def _time_anyio_threads() -> None:
    """Time the functions ``anyio.to_thread.run_sync`` runs for a request (once anyio's module is loaded).

    Starlette and FastAPI run *sync* endpoints, sync dependencies and background tasks there, in
    anyio's own worker threads, not in a ``ThreadPoolExecutor``; the context (and so the request's
    meter) already follows, so wrapping the function is all it takes. Starlette looks the function up
    on the module at every call, so replacing the module attribute reaches it.
    """
    global _anyio_timed
    module = sys.modules.get("anyio.to_thread")
    if module is None:
        return  # not loaded (yet): looked for again at the next request
    _anyio_timed = True
    original = getattr(module, "run_sync", None)
    if original is None:
        return

    @functools.wraps(original)
    async def run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        meter = otel_context.get_value(_context.CPU_METER_KEY)
        if isinstance(meter, _Meter):
            func = functools.partial(_timed, meter, func)
        return await original(func, *args, **kwargs)

    setattr(module, "run_sync", run_sync)  # noqa: B010 (a module attribute mypy cannot see through sys.modules)


def _timed(meter: _Meter, func: Callable[..., Any], /, *args: Any) -> Any:
    start = time.thread_time_ns()
    try:
        return func(*args)
    finally:
        meter.add(time.thread_time_ns() - start)


class _Metered:
    """Awaits a coroutine step by step, like ``yield from``, timing each step with the thread CPU clock.

    A step (from one resumption to the next suspension) runs only this request's code, so the time is
    its own even with hundreds of requests interleaved on one event loop.
    """

    __slots__ = ("coro", "meter")

    def __init__(self, coro: Awaitable[Any], meter: _Meter) -> None:
        self.coro: Any = coro
        self.meter = meter

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, meter, clock = self.coro.__await__(), self.meter, time.thread_time_ns
        if not hasattr(coro, "send"):  # an awaitable that is a plain iterator: awaited as is, untimed
            return (yield from coro)
        value: Any = None
        error: BaseException | None = None
        while True:
            start = clock()
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                meter.loop_ns += clock() - start
                return stop.value  # the handler's response, a spawned task's result
            except BaseException:
                meter.loop_ns += clock() - start
                raise
            meter.loop_ns += clock() - start
            value, error = None, None
            try:
                value = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like go to the app, as with ``await``
                error = exc


def _meter_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Make ``loop`` meter the tasks a request spawns: their steps count for the request that created them.

    A task created in a request's context (``asyncio.create_task``, ``gather``/``ensure_future`` of a
    coroutine, a ``TaskGroup`` or anyio task group, any task those tasks create in turn) runs its
    coroutine through :class:`_Metered` with the request's meter. An existing task factory is kept
    (called with the wrapped coroutine); one set later replaces this one, and spawned tasks then go
    unmetered. Outside requests the factory costs one context lookup per task.
    """
    previous = loop.get_task_factory()
    if getattr(previous, "runtel_meters_tasks", False):
        return  # another RequestSpans (or an earlier one) installed it on this loop

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        context = kwargs.get("context")
        meter = (otel_context.get_value(_context.CPU_METER_KEY) if context is None
                 else context.run(otel_context.get_value, _context.CPU_METER_KEY))
        if isinstance(meter, _Meter) and asyncio.iscoroutine(coro):
            coro = _metered(coro, meter)
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    factory.runtel_meters_tasks = True  # type: ignore[attr-defined]
    loop.set_task_factory(factory)


async def _metered(coro: Any, meter: _Meter) -> Any:
    """A spawned task's coroutine, each of its steps timed for the request that spawned it."""
    return await _Metered(coro, meter)


_TRACE_HEADERS = (b"traceparent", b"tracestate", b"baggage")
_TRACE_INITIALS = (b"t", b"T", b"b", b"B")
_TRACE_NAMES = tuple(name.decode() for name in _TRACE_HEADERS)
_TRACE_CONTEXT = TraceContextTextMapPropagator()
_BAGGAGE = W3CBaggagePropagator()


def _end(span: Any, route: str | None, status: int, meter: _Meter) -> None:
    with guard("request-span-end", "end the request span"):
        attributes: dict[str, Any] = {semconv.REQUEST_CPU_TIME: round(meter.seconds, 9)}
        if route is not None:
            attributes["http.route"] = route
            span.update_name(f"{span.name} {route}")
        if status:
            attributes["http.response.status_code"] = status
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        set_owned_attributes(span, attributes)
        span.end()
