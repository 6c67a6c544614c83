"""RequestSpans in-process: errors, cancellation, nesting, no run, and the request's own CPU time."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

import runtel
from runtel.config import Settings
from runtel.recording.service import RequestSpans
from runtel.rundir.reader import SpanRecord, read_spans


def _scope(path: str = "/x") -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "headers": [], "scheme": "http"}


async def _receive() -> MutableMapping[str, Any]:
    return {"type": "http.request", "body": b""}


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _call(app: Any, path: str = "/x") -> list[MutableMapping[str, Any]]:
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(_scope(path), _receive, send)
    return sent


def _requests(run_dir: Path | None) -> list[SpanRecord]:
    assert run_dir is not None
    return [s for s in read_spans(run_dir) if s.name.split()[0] == "GET"]


def test_error_is_recorded_and_raised(rt: Settings) -> None:
    async def boom(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0)
        raise ValueError("bad request handling")

    with runtel.run_span("svc") as run:
        with pytest.raises(ValueError, match="bad request"):
            asyncio.run(_call(RequestSpans(boom)))
    (span,) = _requests(run.dir)
    assert span.status_code == 2 and span.attributes["error.type"] == "ValueError"
    assert span.attributes["runtel.request.cpu.time"] >= 0


def test_cancelled_request_ends_its_span(rt: Settings) -> None:
    async def forever(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.create_task(_call(RequestSpans(forever)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with runtel.run_span("svc") as run:
        asyncio.run(main())
    assert len(_requests(run.dir)) == 1


def test_nested_middleware_makes_one_span_and_return_values_pass(rt: Settings) -> None:
    with runtel.run_span("svc") as run:
        sent = asyncio.run(_call(RequestSpans(RequestSpans(_ok))))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    (span,) = _requests(run.dir)
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["runtel.request.concurrency"] == 1


def test_no_run_passes_through(rt: Settings, runs_dir: Path) -> None:
    sent = asyncio.run(_call(RequestSpans(_ok)))
    assert len(sent) == 2 and list(runs_dir.iterdir()) == []


def test_cpu_time_counts_the_requests_own_steps_and_its_pool_threads(rt: Settings) -> None:
    """A request whose pool-thread work burns CPU gets more CPU time than one that only sleeps, and the
    two (run concurrently) are each given their own: the sleeper's figure does not include the other's work."""

    def burn() -> int:
        return sum(i * i for i in range(300_000))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/burn":
            await asyncio.to_thread(burn)
            burn()  # in the event-loop thread, during this request's step
        else:
            await asyncio.sleep(0.05)
        await _ok(scope, receive, send)

    async def main() -> None:
        wrapped = RequestSpans(app)
        await asyncio.gather(_call(wrapped, "/burn"), _call(wrapped, "/sleep"))

    with runtel.run_span("svc") as run:
        asyncio.run(main())
    spans = {s.attributes["url.path"]: s for s in _requests(run.dir)}
    burn_cpu, sleep_cpu = (spans[p].attributes["runtel.request.cpu.time"] for p in ("/burn", "/sleep"))
    assert burn_cpu > sleep_cpu  # the sleeper ran only a few microseconds of its own
    assert {s.attributes["runtel.request.concurrency"] for s in spans.values()} == {1, 2}


def test_cpu_time_counts_anyio_worker_threads_of_sync_endpoints(rt: Settings) -> None:
    """Starlette runs a sync endpoint in an anyio worker thread: that thread's CPU time for the request is
    in the request's figure (at least what the endpoint measured of itself)."""
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    own: list[float] = []

    def burn(request: Any) -> PlainTextResponse:  # a sync endpoint
        start = time.thread_time()
        sum(i * i for i in range(300_000))
        own.append(time.thread_time() - start)
        return PlainTextResponse("ok")

    app = RequestSpans(Starlette(routes=[Route("/burn", burn)]))
    with runtel.run_span("svc") as run:
        asyncio.run(_call(app, "/burn"))
        asyncio.run(_call(app, "/burn"))  # the first request may have loaded anyio.to_thread only now
    spans = _requests(run.dir)
    assert len(spans) == 2 and len(own) == 2
    assert spans[-1].attributes["runtel.request.cpu.time"] >= own[-1]


def test_cpu_time_counts_tasks_the_request_spawns(rt: Settings) -> None:
    """Tasks a handler spawns (create_task, gather of coroutines, tasks those spawn) count for its request,
    not for a neighbour; a task factory the application set is kept, and tasks outside requests are untouched."""
    own: dict[str, float] = {"/spawn": 0.0}

    async def burn(path: str) -> int:
        for _ in range(2):  # each step timed by itself: other requests run in between
            start = time.thread_time()
            sum(i * i for i in range(100_000))
            own[path] += time.thread_time() - start
            await asyncio.sleep(0)
        return 7

    async def nested(path: str) -> int:
        return await asyncio.create_task(burn(path))  # a task spawned by a spawned task

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/spawn":
            assert await asyncio.create_task(burn("/spawn")) == 7  # results pass through
            assert await asyncio.gather(burn("/spawn"), nested("/spawn")) == [7, 7]
        else:
            await asyncio.sleep(0.05)
        await _ok(scope, receive, send)

    made: list[Any] = []

    def app_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(app_factory)
        wrapped = RequestSpans(app)
        await asyncio.gather(_call(wrapped, "/spawn"), _call(wrapped, "/sleep"))
        outside = asyncio.create_task(asyncio.sleep(0))  # no request: its coroutine is the one given
        assert inspect.getcoroutinestate(outside.get_coro()) == inspect.CORO_CREATED
        assert outside.get_coro().__qualname__ == "sleep"
        await outside

    with runtel.run_span("svc") as run:
        asyncio.run(main())
    assert len(made) >= 5  # the application's factory still made every task
    spans = {s.attributes["url.path"]: s for s in _requests(run.dir)}
    spawn_cpu, sleep_cpu = (spans[p].attributes["runtel.request.cpu.time"] for p in ("/spawn", "/sleep"))
    assert spawn_cpu >= own["/spawn"] > 0
    assert sleep_cpu < own["/spawn"]  # the neighbour's figure holds none of it


def test_traceparent_is_continued_and_baggage_reaches_the_handler(rt: Settings) -> None:
    from opentelemetry import baggage

    seen: list[object] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(baggage.get_baggage("tenant"))
        await _ok(scope, receive, send)

    scope = _scope()
    scope["headers"] = [(b"host", b"x"), (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                        (b"Baggage", b"tenant=acme")]
    with runtel.run_span("svc") as run:
        asyncio.run(RequestSpans(app)(scope, _receive, _discard))
    (span,) = _requests(run.dir)
    assert span.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and span.parent_span_id == "00f067aa0ba902b7"
    assert span.attributes["runtel.run.id"] == run.id and seen == ["acme"]


async def _discard(message: MutableMapping[str, Any]) -> None:
    pass


def test_spawned_task_metering_keeps_anyio_task_groups_working(rt: Settings) -> None:
    """Starlette's BaseHTTPMiddleware and StreamingResponse run anyio task groups in the request; a task
    group cancelled from inside a handler still cancels its metered tasks, and every response is whole."""
    pytest.importorskip("starlette")
    import anyio
    from starlette.applications import Starlette
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    async def stream(request: Any) -> StreamingResponse:
        async def parts() -> Any:
            for i in range(3):
                yield f"{i}\n"
                await asyncio.sleep(0)
        return StreamingResponse(parts())

    async def cancelled(request: Any) -> PlainTextResponse:
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.sleep, 100)
            with anyio.move_on_after(0.01):
                await anyio.sleep(100)
            group.cancel_scope.cancel()
        return PlainTextResponse("cancelled")

    class Passing(BaseHTTPMiddleware):
        async def dispatch(self, request: Any, call_next: Any) -> Any:
            return await call_next(request)

    inner = Starlette(routes=[Route("/stream", stream), Route("/cancel", cancelled)])
    inner.add_middleware(Passing)
    app = RequestSpans(inner)

    async def call(path: str) -> bytes:
        sent: list[MutableMapping[str, Any]] = []
        received: list[int] = []

        async def receive() -> MutableMapping[str, Any]:
            if not received:
                received.append(1)
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.sleep(0.05)
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope = {**_scope(path), "query_string": b"", "root_path": "", "server": ("127.0.0.1", 80)}
        await app(scope, receive, send)
        return b"".join(m.get("body", b"") for m in sent)

    async def main() -> list[bytes]:
        return list(await asyncio.gather(call("/stream"), call("/cancel"), call("/stream")))

    with runtel.run_span("svc") as run:
        assert asyncio.run(main()) == [b"0\n1\n2\n", b"cancelled", b"0\n1\n2\n"]
    spans = _requests(run.dir)
    assert sorted(s.name for s in spans) == ["GET /cancel", "GET /stream", "GET /stream"]
    assert all(s.attributes["http.response.status_code"] == 200 for s in spans)


def test_the_sigterm_handler_never_replaces_the_applications_own() -> None:
    """finish_runs_on_sigterm installs itself over the default handler only, from the main thread only."""
    import signal

    from runtel import _sdk

    before = signal.getsignal(signal.SIGTERM)
    try:
        own = signal.signal(signal.SIGTERM, lambda *_: None)
        own = signal.getsignal(signal.SIGTERM)
        assert _sdk.finish_runs_on_sigterm() is False and signal.getsignal(signal.SIGTERM) is own
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert _sdk.finish_runs_on_sigterm() is True and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert _sdk.finish_runs_on_sigterm() is True  # twice is harmless
        result: list[bool] = []
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        thread = threading.Thread(target=lambda: result.append(_sdk.finish_runs_on_sigterm()))
        thread.start()
        thread.join()
        assert result == [False] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)


def test_sigterm_sees_an_installed_apps_traced_code_as_the_applications(rt: Settings) -> None:
    """_inside_runtel: a @trace body compiled as an installed package's module (under site-packages) is the
    application's code, as a script's is; code compiled as runtel's own is runtel's."""
    import sys
    import sysconfig

    import runtel
    from runtel._sdk import process

    purelib = sysconfig.get_paths()["purelib"]
    scope: dict[str, object] = {"sys": sys, "process": process, "__name__": "myapp.cli"}
    exec(compile("def main():\n    return process._inside_runtel(sys._getframe())\n",
                 f"{purelib}/myapp/cli.py", "exec"), scope)
    with runtel.run_span("inside"):
        assert runtel.trace(scope["main"])() is False  # type: ignore[arg-type]
    own: dict[str, object] = {"sys": sys, "process": process, "__name__": "runtel.rundir.writer"}
    exec(compile("def write():\n    return process._inside_runtel(sys._getframe())\n",
                 process._PACKAGE_DIR + "rundir/writer.py", "exec"), own)
    assert own["write"]() is True  # type: ignore[operator]
