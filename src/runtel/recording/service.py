"""Services: one run for the service's lifetime, each request its own trace, linked to that run.

:class:`RequestSpans` is a plain ASGI middleware (FastAPI, Starlette, any ASGI app under uvicorn or
hypercorn). Each HTTP request gets a ``SERVER`` span that starts a trace of its own — or continues
the caller's, from an incoming W3C ``traceparent``/``tracestate`` header — instead of joining the
run's ever-growing trace. The span carries the run id and a link to the run span, and is current
while the app handles the request, so the request's blocks and traced calls are its children and
land in the service run's folder. The run is the one open in the request's context, else the
process run (a run opened in a FastAPI ``lifespan`` or around ``uvicorn.run``); in a process
started from inside a run (``runtel run -- uvicorn app:app``) with neither, the worker run that
``recording.workers.child_runtime`` opens.

**Per-request CPU** (``runtel.request.cpu.time``): the thread CPU time spent running *this request*
— the event-loop thread only while the request's own ASGI coroutine runs (each step between two
suspensions is timed with ``time.thread_time_ns``), plus pool threads while they run work it handed
off (``asyncio.to_thread``, ``loop.run_in_executor``: timed in ``runtel._propagation``; anyio's
worker threads, where Starlette/FastAPI run sync endpoints: timed here). The steps of
concurrent requests are disjoint, so these figures never add up to more than the process's CPU
time. Not counted: tasks the handler spawns (``create_task``, ``gather`` of coroutines) and the
server's own work outside the app (HTTP parsing).
``runtel.request.concurrency`` records how many requests were in flight when it started.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from runtel import _context, _sdk, semconv
from runtel._guard import guard
from runtel._propagation import w3c_propagator
from runtel.recording.workers import child_runtime

__all__ = ("RequestSpans",)

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection; anything but HTTP passes through untouched."""
        if scope.get("type") != "http" or otel_context.get_value(_context.CPU_METER_KEY) is not None:
            await self.app(scope, receive, send)  # not a request, or one a RequestSpans further out handles
            return
        runtime = _sdk.current_runtime()
        if runtime is None or not runtime.open_runs:
            # a service started from inside a run records into a worker run
            runtime = child_runtime(batched=True) or runtime
        run = _context.current_run()
        if run is None and runtime is not None:
            run = runtime.process_run
        if runtime is None or run is None or getattr(run, "span", None) is None:
            await self.app(scope, receive, send)
            return
        if not _anyio_timed:
            _time_anyio_threads()
        span, token = None, None
        meter = _Meter()
        self._in_flight += 1
        with guard("request-span", "start the request span"):
            span = _start(runtime, run, scope, self._in_flight)
            ctx = _context.with_run(run, trace.set_span_in_context(span))
            token = otel_context.attach(otel_context.set_value(_context.CPU_METER_KEY, meter, ctx))
        status: list[int] = []

        async def send_status(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                status.append(int(message.get("status", 0)))
            await send(message)

        try:
            if span is None:
                await self.app(scope, receive, send)
            else:
                await _Metered(self.app(scope, receive, send_status), meter)
        except BaseException as exc:
            if span is not None:
                span.record_exception(exc, escaped=True)
                span.set_attribute(semconv.ERROR_TYPE, type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:1024]))
            raise
        finally:
            self._in_flight -= 1
            if span is not None:
                _end(span, scope, status, meter)
            if token is not None:
                otel_context.detach(token)


class _Meter:
    """The CPU time of one request: its own steps in the event-loop thread, and pool threads' work for it."""

    __slots__ = ("_lock", "loop_ns", "thread_ns")

    def __init__(self) -> None:
        self.loop_ns = 0  # written by the event-loop thread only
        self.thread_ns = 0
        self._lock = threading.Lock()

    def add(self, ns: int) -> None:
        """Called by pool threads (``runtel._propagation``) when work done for the request ends."""
        with self._lock:
            self.thread_ns += ns

    @property
    def seconds(self) -> float:
        return (self.loop_ns + self.thread_ns) / 1e9


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

    def __init__(self, coro: Awaitable[None], meter: _Meter) -> None:
        self.coro: Any = coro
        self.meter = meter

    def __await__(self) -> Generator[Any, Any, None]:
        coro, meter, clock = self.coro.__await__(), self.meter, time.thread_time_ns
        if not hasattr(coro, "send"):  # an awaitable that is a plain iterator: awaited as is, untimed
            yield from coro
            return
        value: Any = None
        error: BaseException | None = None
        while True:
            start = clock()
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration:
                meter.loop_ns += clock() - start
                return
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


_TRACE_HEADERS = (b"traceparent", b"tracestate")


def _start(runtime: Any, run: Any, scope: Scope, in_flight: int) -> Any:
    """The request's server span: child of the caller's traceparent if any, else a new trace."""
    parent = Context()
    carrier = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers") or ()
               if key.lower() in _TRACE_HEADERS}  # only these two are decoded: a request has ~10 headers
    if "traceparent" in carrier:
        parent = w3c_propagator().extract(carrier, context=Context())
    method = str(scope.get("method") or "HTTP")
    attributes: dict[str, Any] = {
        semconv.RUN_ID: run.id,
        "http.request.method": method,
        "url.path": str(scope.get("path") or ""),
        "url.scheme": str(scope.get("scheme") or "http"),
        semconv.REQUEST_CONCURRENCY: in_flight,
    }
    if scope.get("query_string"):
        attributes["url.query"] = scope["query_string"].decode("latin-1")
    client = scope.get("client")
    if client:
        attributes["client.address"] = str(client[0])
    return runtime.tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes,
                                     links=[Link(run.span.get_span_context())])


def _end(span: Any, scope: Scope, status: list[int], meter: _Meter) -> None:
    with guard("request-span-end", "end the request span"):
        span.set_attribute(semconv.REQUEST_CPU_TIME, round(meter.seconds, 9))
        route = scope.get("route")
        path = getattr(route, "path", None)  # Starlette/FastAPI set the matched route while routing
        if isinstance(path, str):
            span.set_attribute("http.route", path)
            span.update_name(f"{scope.get('method') or 'HTTP'} {path}")
        if status:
            span.set_attribute("http.response.status_code", status[0])
            if status[0] >= 500:
                span.set_status(Status(StatusCode.ERROR))
        span.end()
