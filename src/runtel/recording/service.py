"""Services: one run for the service's lifetime, each request its own trace, linked to that run.

:class:`RequestSpans` is a plain ASGI middleware (FastAPI, Starlette, any ASGI app under uvicorn or
hypercorn). Each HTTP request gets a ``SERVER`` span that starts a trace of its own — or continues
the caller's, from an incoming W3C ``traceparent``/``tracestate`` header — instead of joining the
run's ever-growing trace. The span carries the run id and a link to the run span, and is current
while the app handles the request, so the request's blocks and traced calls are its children and
land in the service run's folder. The run is the one open in the request's context, else the
process run (a run opened in a FastAPI ``lifespan`` or around ``uvicorn.run``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from runtel import _context, _sdk, semconv
from runtel._guard import guard
from runtel._propagation import w3c_propagator

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection; anything but HTTP passes through untouched."""
        runtime = _sdk.current_runtime()
        run = _context.current_run()
        if run is None and runtime is not None:
            run = runtime.process_run
        if scope.get("type") != "http" or runtime is None or run is None or getattr(run, "span", None) is None:
            await self.app(scope, receive, send)
            return
        span, token = None, None
        with guard("request-span", "start the request span"):
            span = _start(runtime, run, scope)
            token = otel_context.attach(_context.with_run(run, trace.set_span_in_context(span)))
        status: list[int] = []

        async def send_status(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                status.append(int(message.get("status", 0)))
            await send(message)

        try:
            await self.app(scope, receive, send_status if span is not None else send)
        except BaseException as exc:
            if span is not None:
                span.record_exception(exc, escaped=True)
                span.set_attribute(semconv.ERROR_TYPE, type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:1024]))
            raise
        finally:
            if span is not None:
                _end(span, scope, status)
            if token is not None:
                otel_context.detach(token)


def _start(runtime: Any, run: Any, scope: Scope) -> Any:
    """The request's server span: child of the caller's traceparent if any, else a new trace."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}
    parent = Context()
    if "traceparent" in headers:
        parent = w3c_propagator().extract(headers, context=Context())
    method = str(scope.get("method") or "HTTP")
    attributes: dict[str, Any] = {
        semconv.RUN_ID: run.id,
        "http.request.method": method,
        "url.path": str(scope.get("path") or ""),
        "url.scheme": str(scope.get("scheme") or "http"),
    }
    if scope.get("query_string"):
        attributes["url.query"] = scope["query_string"].decode("latin-1")
    client = scope.get("client")
    if client:
        attributes["client.address"] = str(client[0])
    return runtime.tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes,
                                     links=[Link(run.span.get_span_context())])


def _end(span: Any, scope: Scope, status: list[int]) -> None:
    with guard("request-span-end", "end the request span"):
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
