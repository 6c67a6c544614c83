"""A real uvicorn service: one run for its lifetime, each request its own trace, linked to the run.

Every case starts a real uvicorn on 127.0.0.1 and drives it with a real HTTP client (urllib in
threads, 60 requests in flight at once, every third with a W3C ``traceparent``), then reads the run
folders: exact span counts per request, every sub-span's parent inside its own request's trace.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtel.rundir.reader import SpanRecord, list_runs, read_spans

pytest.importorskip("uvicorn")

N = 60
TRACE = "4bf92f3577b34da6a3ce929d0e0e{:04x}"
CALLER_SPAN = "00f067aa0ba902b7"

LIFESPAN_APP = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    import runtel
    import uvicorn
    from runtel.recording.service import RequestSpans

    runtel.configure(dir=sys.argv[2], sampling=False, strict=True)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":  # the run opens and closes with the service, as in a FastAPI lifespan
            spec = None
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    spec = runtel.run_span("service")
                    await spec.__aenter__()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await spec.__aexit__(None, None, None)
                    t = os.times()
                    with open(sys.argv[3], "w") as f:  # the server's whole CPU time, for the per-request sum
                        json.dump({"cpu_s": t.user + t.system, "spawned": SPAWNED}, f)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        with runtel.block("handler", path=scope["path"]):
            await asyncio.sleep(0.02)                      # concurrent requests overlap in the event loop
            await traced_async(scope["path"])              # an awaited @trace function
            await asyncio.to_thread(traced, scope["path"])  # work in a pool thread
            with runtel.block("inner"):
                sum(range(2000))
            await asyncio.create_task(spawned(scope["path"]))  # a task the handler spawns
        body = runtel.current_run().id.encode() if runtel.current_run() else b"none"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    @runtel.trace
    def traced(path):
        return sum(range(5000))

    SPAWNED = {}

    async def spawned(path):  # its CPU time, as it measures itself, is part of its request's
        with runtel.block("spawned"):
            own = 0.0
            for _ in range(2):  # two steps, timed each (other requests run in between)
                start = time.thread_time()
                sum(range(20000))
                own += time.thread_time() - start
                await asyncio.sleep(0)
            SPAWNED[path] = own

    @runtel.trace
    async def traced_async(path):
        await asyncio.sleep(0.005)
        with runtel.block("deep"):
            await asyncio.sleep(0)

    uvicorn.run(RequestSpans(app), host="127.0.0.1", port=int(sys.argv[1]), lifespan="on", log_level="warning")
    """
)

#: a plain ASGI app with no runtel code: served by ``runtel run -- uvicorn plain_app:app``; its one
#: sub-span comes from the plain OpenTelemetry API
PLAIN_APP = textwrap.dedent(
    """
    import asyncio
    from opentelemetry import trace

    tracer = trace.get_tracer("plain-app")

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        with tracer.start_as_current_span("plain-handler"):
            await asyncio.sleep(0.02)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    """
)

#: the standard OpenTelemetry ASGI middleware alone (no RequestSpans), the run in the lifespan
OTEL_ASGI_APP = textwrap.dedent(
    """
    import asyncio, sys
    import runtel
    import uvicorn
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    runtel.configure(dir=sys.argv[2], sampling=False, strict=True)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            spec = None
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    spec = runtel.run_span("service")
                    await spec.__aenter__()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await spec.__aexit__(None, None, None)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        with runtel.block("handler"):
            await asyncio.sleep(0.02)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    uvicorn.run(OpenTelemetryMiddleware(app), host="127.0.0.1", port=int(sys.argv[1]), lifespan="on",
                log_level="warning")
    """
)

STARLETTE_APP = textwrap.dedent(
    """
    import contextlib, sys
    import runtel
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from runtel.recording.service import RequestSpans

    runtel.configure(dir=sys.argv[2], sampling=False, strict=True)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with runtel.run_span("api"):
            yield

    async def item(request):
        with runtel.block("handler"):
            return PlainTextResponse(request.path_params["i"])

    app = Starlette(routes=[Route("/item/{i}", item)], lifespan=lifespan)
    app.add_middleware(RequestSpans)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, i: int) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/item/{i}")
    if i % 3 == 0:  # every third caller sends its own trace context
        request.add_header("traceparent", f"00-{TRACE.format(i)}-{CALLER_SPAN}-01")
    with urllib.request.urlopen(request, timeout=60) as response:
        return str(response.read().decode())


def _serve(command: list[str], env: dict[str, str], port: int, stop: int = signal.SIGINT,
           load: Callable[[], list[str]] | None = None) -> tuple[list[str], str, int]:
    """Start the server, send N concurrent requests (or run ``load``), stop it with ``stop``: (bodies, stderr,
    exit code)."""
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.communicate()[1]
                time.sleep(0.05)
        if load is not None:
            bodies = load()
        else:
            with concurrent.futures.ThreadPoolExecutor(N) as pool:
                bodies = list(pool.map(lambda i: _get(port, i), range(N)))
    finally:
        server.send_signal(stop)  # uvicorn's graceful shutdown runs the lifespan's end
        _, err = server.communicate(timeout=60)
    return bodies, err, server.returncode


def _raw_kinds(run_dir: Path) -> dict[str, int]:
    raw = [s for line in (run_dir / "spans.jsonl").read_text().splitlines()
           for rs in json.loads(line)["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    return {s["spanId"]: s.get("kind", 0) for s in raw}


def _check_requests(requests: list[SpanRecord], run: dict[str, Any], kinds: dict[str, int],
                    path: Callable[[SpanRecord], str]) -> dict[str, SpanRecord]:
    """N server spans, one per path, each its own trace or the caller's, with the run id."""
    assert len(requests) == N
    assert all(kinds[s.span_id] == 2 for s in requests)  # SPAN_KIND_SERVER
    assert all(s.attributes["runtel.run.id"] == run["id"] for s in requests)
    by_path = {path(s): s for s in requests}
    assert len(by_path) == N
    assert len({s.trace_id for s in requests}) == N and run["trace_id"] not in {s.trace_id for s in requests}
    for i in range(N):
        req = by_path[f"/item/{i}"]
        if i % 3 == 0:  # the caller's trace continued, under the caller's span
            assert req.trace_id == TRACE.format(i) and req.parent_span_id == CALLER_SPAN
        else:
            assert req.parent_span_id is None
    return by_path


def test_lifespan_run_requests_are_their_own_traces(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """60 concurrent requests: 60 server spans, each with exactly its 6 sub-spans (blocks, an awaited
    traced call, a to_thread call, a spawned task) in its own trace; the run id, the link, and its own
    CPU time, which includes the task it spawned."""
    (tmp_path / "app.py").write_text(LIFESPAN_APP)
    port, runs, usage = _free_port(), tmp_path / "runs", tmp_path / "usage.json"
    bodies, err, code = _serve([sys.executable, str(tmp_path / "app.py"), str(port), str(runs), str(usage)],
                               clean_env, port)
    assert code == 0, err
    (service,) = list_runs(runs)
    assert service["status"] == "ok"
    assert bodies == [service["id"]] * N  # the handler sees the service run as current
    spans = read_spans(Path(service["dir"]))
    requests = [s for s in spans if s.name == "GET"]
    by_path = _check_requests(requests, service, _raw_kinds(Path(service["dir"])), lambda s: s.attributes["url.path"])
    assert all(s.links and s.links[0]["span_id"] == service["span_id"] for s in requests)
    by_id = {s.span_id: s for s in spans}
    subs = [s for s in spans if s.name in ("handler", "inner", "deep", "spawned") or s.name.endswith("traced") or
            s.name.endswith("traced_async")]
    assert len(subs) == 6 * N
    for i in range(N):  # never mixed: exactly its own 6 sub-spans, each chained up to its own request
        req = by_path[f"/item/{i}"]
        mine = [s for s in subs if s.trace_id == req.trace_id]
        assert sorted(s.name.rsplit(".", 1)[-1] for s in mine) == ["deep", "handler", "inner", "spawned", "traced",
                                                                   "traced_async"]
        for s in mine:
            parent = by_id[s.parent_span_id]
            assert parent.trace_id == req.trace_id
            while parent.span_id != req.span_id:
                parent = by_id[parent.parent_span_id]
        assert next(s for s in mine if s.name == "handler").attributes["path"] == f"/item/{i}"
    # Per-request CPU: each request's own, so together never more than the server's whole CPU time.
    cpu = [s.attributes["runtel.request.cpu.time"] for s in requests]
    assert all(isinstance(c, float) and c > 0 for c in cpu)
    server = json.loads(usage.read_text())
    assert sum(cpu) <= server["cpu_s"]
    # the task each handler spawned is counted in its own request's figure (it measured itself inside it)
    assert len(server["spawned"]) == N
    assert all(by_path[p].attributes["runtel.request.cpu.time"] >= own for p, own in server["spawned"].items())
    assert all(1 <= s.attributes["runtel.request.concurrency"] <= N for s in requests)
    assert max(s.attributes["runtel.request.concurrency"] for s in requests) > 1  # they did overlap


def test_runtel_run_uvicorn_without_runtel_code(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel run -- uvicorn plain_app:app`: the service process gets a worker run (child of the
    wrapper's run) holding a server span per request and the app's own OpenTelemetry span under it."""
    (tmp_path / "plain_app.py").write_text(PLAIN_APP)
    port, runs = _free_port(), tmp_path / "runs"
    runtel = Path(sys.executable).with_name("runtel")
    uvicorn = Path(sys.executable).with_name("uvicorn")
    env = {**clean_env, "PYTHONPATH": f"{tmp_path}{os.pathsep}{clean_env['PYTHONPATH']}"}
    _, err, code = _serve([str(runtel), "run", "--dir", str(runs), "-q", "--", str(uvicorn), "plain_app:app",
                           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                          env, port, stop=signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err  # the wrapper exits as its command did: stopped by SIGTERM
    records = list_runs(runs)
    (wrapper,) = [r for r in records if r["parent"] is None]
    (child,) = [r for r in records if r["parent"] is not None]
    assert wrapper["status"] == "interrupted"
    assert child["parent"]["run_id"] == wrapper["id"] and child["name"] == "uvicorn"
    assert child["status"] == "ok"  # closed when the server shut down, before uvicorn re-raised SIGTERM
    spans = read_spans(Path(child["dir"]))
    requests = [s for s in spans if s.name == "GET"]
    by_path = _check_requests(requests, child, _raw_kinds(Path(child["dir"])), lambda s: s.attributes["url.path"])
    handlers = [s for s in spans if s.name == "plain-handler"]
    assert len(handlers) == N
    assert sorted(h.parent_span_id for h in handlers) == sorted(s.span_id for s in by_path.values())
    assert all(h.trace_id == next(r for r in requests if r.span_id == h.parent_span_id).trace_id for h in handlers)


@pytest.mark.skipif(importlib.util.find_spec("opentelemetry.instrumentation.asgi") is None
                    and os.environ.get("CI") != "true", reason="opentelemetry-instrumentation-asgi is not installed")
def test_otel_asgi_instrumentation_alone(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """The standard OpenTelemetryMiddleware, no RequestSpans, the run in the lifespan: its server spans
    are the requests' own traces (or the callers'), in the service run's folder with its run id."""
    (tmp_path / "app.py").write_text(OTEL_ASGI_APP)
    port, runs = _free_port(), tmp_path / "runs"
    _, err, code = _serve([sys.executable, str(tmp_path / "app.py"), str(port), str(runs)], clean_env, port)
    assert code == 0, err
    (service,) = list_runs(runs)
    spans = read_spans(Path(service["dir"]))
    kinds = _raw_kinds(Path(service["dir"]))
    requests = [s for s in spans if kinds[s.span_id] == 2]
    by_path = _check_requests(requests, service, kinds, lambda s: s.name.split()[-1])  # "GET /item/7"
    handlers = [s for s in spans if s.name == "handler"]
    assert len(handlers) == N
    assert {h.parent_span_id for h in handlers} == {s.span_id for s in by_path.values()}


@pytest.mark.skipif(importlib.util.find_spec("starlette") is None and os.environ.get("CI") != "true",
                    reason="starlette is not installed")
def test_starlette_lifespan_and_middleware(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """Starlette: the run in its lifespan, app.add_middleware(RequestSpans); spans named after the route."""
    (tmp_path / "app.py").write_text(STARLETTE_APP)
    port, runs = _free_port(), tmp_path / "runs"
    bodies, err, code = _serve([sys.executable, str(tmp_path / "app.py"), str(port), str(runs)], clean_env, port)
    assert code == 0, err
    assert bodies == [str(i) for i in range(N)]
    (service,) = list_runs(runs)
    assert service["status"] == "ok" and service["name"] == "api"
    spans = read_spans(Path(service["dir"]))
    requests = [s for s in spans if s.name == "GET /item/{i}"]
    by_path = _check_requests(requests, service, _raw_kinds(Path(service["dir"])), lambda s: s.attributes["url.path"])
    assert all(s.attributes["http.route"] == "/item/{i}" for s in requests)
    handlers = [s for s in spans if s.name == "handler"]
    assert len(handlers) == N and {h.parent_span_id for h in handlers} == {s.span_id for s in by_path.values()}


FASTAPI_APP = textwrap.dedent(
    """
    import asyncio, contextlib, sys
    import runtel
    import uvicorn
    from fastapi import FastAPI
    from runtel.recording.service import RequestSpans

    runtel.configure(dir=sys.argv[2], sampling=False, strict=True)

    @contextlib.asynccontextmanager
    async def lifespan(app):  # the idiomatic place: one run for the service's lifetime
        async with runtel.run_span("api"):
            yield

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(RequestSpans)

    @app.get("/item/{i}")
    @runtel.trace  # FastAPI still reads the signature (i: int) through the decorator
    async def item(i: int) -> dict[str, int]:
        with runtel.block("handler"):
            await asyncio.sleep(0.01)
        return {"i": i, "square": square(i)}

    @runtel.trace
    def square(i: int) -> int:
        return i * i

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


FASTAPI_PLAIN_APP = textwrap.dedent(
    """
    from fastapi import FastAPI
    from opentelemetry import trace

    app = FastAPI()  # no runtel code: served by `runtel run -- uvicorn fastapi_app:app`
    tracer = trace.get_tracer("fastapi-app")

    @app.get("/item/{i}")
    async def item(i: int) -> dict[str, int]:
        with tracer.start_as_current_span("plain-handler"):
            return {"i": i}
    """
)

needs_fastapi = pytest.mark.skipif(importlib.util.find_spec("fastapi") is None and os.environ.get("CI") != "true",
                                   reason="fastapi is not installed")


def _own(spans: list[SpanRecord], request: SpanRecord) -> list[SpanRecord]:
    """The spans of a request's trace below it, without FastAPI's own operation spans (``fastapi.*``)."""
    return [s for s in spans if s.trace_id == request.trace_id and s.span_id != request.span_id
            and not s.name.startswith("fastapi.")]


@needs_fastapi
def test_fastapi_lifespan_and_traced_handlers(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """FastAPI with its own telemetry: the run in its lifespan, RequestSpans, an async handler under
    @runtel.trace (its typed path parameter still parsed). FastAPI's server span is the request's span —
    one per request, no second one: the run id, the link, the request's CPU time; exactly its 3 sub-spans."""
    (tmp_path / "app.py").write_text(FASTAPI_APP)
    port, runs = _free_port(), tmp_path / "runs"
    bodies, err, code = _serve([sys.executable, str(tmp_path / "app.py"), str(port), str(runs)], clean_env, port)
    assert code == 0, err
    assert [json.loads(b) for b in bodies] == [{"i": i, "square": i * i} for i in range(N)]
    (service,) = list_runs(runs)
    assert service["status"] == "ok" and service["name"] == "api"
    spans = read_spans(Path(service["dir"]))
    kinds = _raw_kinds(Path(service["dir"]))
    requests = [s for s in spans if kinds[s.span_id] == 2]  # SERVER: FastAPI's own, adopted
    by_path = _check_requests(requests, service, kinds, lambda s: s.attributes["url.path"])
    assert all(s.name == "GET /item/{i}" and s.attributes["http.route"] == "/item/{i}" for s in requests)
    assert all(s.links and s.links[0]["span_id"] == service["span_id"] for s in requests)
    assert all(s.attributes["runtel.request.cpu.time"] > 0 and s.attributes["runtel.request.concurrency"] >= 1
               for s in requests)
    by_id = {s.span_id: s for s in spans}
    for i in range(N):
        req = by_path[f"/item/{i}"]
        mine = _own(spans, req)
        assert sorted(s.name.rsplit(".", 1)[-1] for s in mine) == ["handler", "item", "square"]
        traced = next(s for s in mine if s.name.endswith("item"))
        assert {by_id[s.parent_span_id].name for s in mine if s is not traced} == {traced.name}
        parent = by_id[traced.parent_span_id]  # under FastAPI's endpoint span, inside the request
        while parent.span_id != req.span_id:
            parent = by_id[parent.parent_span_id]


@needs_fastapi
def test_runtel_run_uvicorn_fastapi_is_one_trace_per_request(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel run -- uvicorn` of a FastAPI app with no runtel code: runtel's request span is outermost and
    hands its trace context in, so FastAPI's own server span continues it (one trace per request, not two)."""
    (tmp_path / "fastapi_app.py").write_text(FASTAPI_PLAIN_APP)
    port, runs = _free_port(), tmp_path / "runs"
    runtel = Path(sys.executable).with_name("runtel")
    uvicorn = Path(sys.executable).with_name("uvicorn")
    env = {**clean_env, "PYTHONPATH": f"{tmp_path}{os.pathsep}{clean_env['PYTHONPATH']}"}
    bodies, err, _ = _serve([str(runtel), "run", "--dir", str(runs), "-q", "--", str(uvicorn), "fastapi_app:app",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            env, port, stop=signal.SIGTERM)
    assert [json.loads(b) for b in bodies] == [{"i": i} for i in range(N)], err
    (child,) = [r for r in list_runs(runs) if r["parent"] is not None]
    spans = read_spans(Path(child["dir"]))
    kinds = _raw_kinds(Path(child["dir"]))
    servers = [s for s in spans if kinds[s.span_id] == 2]
    assert len(servers) == 2 * N  # runtel's and, inside it, FastAPI's
    outer = [s for s in servers if "url.path" in s.attributes and "runtel.request.cpu.time" in s.attributes]
    by_path = _check_requests(outer, child, kinds, lambda s: s.attributes["url.path"])
    assert {s.trace_id for s in servers} == {s.trace_id for s in outer}  # one trace per request
    for i in range(N):
        req = by_path[f"/item/{i}"]
        inner = [s for s in servers if s.parent_span_id == req.span_id]
        assert len(inner) == 1 and inner[0].trace_id == req.trace_id  # FastAPI's, continuing runtel's span
        (handler,) = [s for s in _own(spans, req) if s.name == "plain-handler"]
        assert handler.trace_id == req.trace_id


GRPC_SERVER = textwrap.dedent(
    """
    import signal, sys, threading
    from concurrent import futures
    import grpc
    import runtel
    from opentelemetry.instrumentation.grpc import server_interceptor

    runtel.configure(dir=sys.argv[2], sampling=False, strict=True)

    def say(request, context):
        with runtel.block("handler", item=request.decode()):
            return request

    with runtel.run_span("grpc-service"):     # one run for the server's lifetime
        server = grpc.server(futures.ThreadPoolExecutor(16), interceptors=[server_interceptor()])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}),))
        server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
        server.start()
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        print("ready", flush=True)
        stop.wait()
        server.stop(5).wait()
    """
)


@pytest.mark.skipif(importlib.util.find_spec("opentelemetry.instrumentation.grpc") is None
                    and os.environ.get("CI") != "true", reason="opentelemetry-instrumentation-grpc is not installed")
def test_grpc_server_through_the_otel_instrumentation(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A gRPC server with OpenTelemetry's server interceptor inside a run: 60 concurrent calls are 60
    server spans of their own traces (or the callers'), with the run id, each handler block under its own."""
    import grpc

    (tmp_path / "server.py").write_text(GRPC_SERVER)
    port, runs = _free_port(), tmp_path / "runs"
    server = subprocess.Popen([sys.executable, str(tmp_path / "server.py"), str(port), str(runs)], env=clean_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n", server.communicate()[1]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/test.Echo/Say")

            def one(i: int) -> bytes:
                metadata = [("traceparent", f"00-{TRACE.format(i)}-{CALLER_SPAN}-01")] if i % 3 == 0 else None
                return bytes(call(str(i).encode(), metadata=metadata, timeout=60))

            with concurrent.futures.ThreadPoolExecutor(N) as pool:
                assert list(pool.map(one, range(N))) == [str(i).encode() for i in range(N)]
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    (service,) = list_runs(runs)
    assert service["status"] == "ok"
    spans = read_spans(Path(service["dir"]))
    kinds = _raw_kinds(Path(service["dir"]))
    calls = [s for s in spans if kinds[s.span_id] == 2]
    handlers = {s.parent_span_id: s for s in spans if s.name == "handler"}
    assert len(handlers) == N
    by_item = {handlers[s.span_id].attributes["item"]: s for s in calls}  # every call has its own handler
    by_path = _check_requests(calls, service, kinds, lambda s: "/item/" + str(handlers[s.span_id].attributes["item"]))
    assert len(by_item) == N and len(by_path) == N
    assert all(handlers[s.span_id].trace_id == s.trace_id for s in calls)


AIOHTTP_APP = textwrap.dedent(
    """
    import asyncio, sys
    import runtel
    from aiohttp import web
    from runtel.recording.service import aiohttp_middleware

    runtel.configure(dir=sys.argv[2], sampling=False, strict=True)

    async def service_run(app):  # one run while the server is up (aiohttp's cleanup context)
        async with runtel.run_span("aiohttp-service"):
            yield

    async def spawned():
        with runtel.block("spawned"):
            await asyncio.sleep(0)
        return "done"

    async def item(request):
        with runtel.block("handler", item=request.match_info["i"]):
            await asyncio.sleep(0.02)
            assert await asyncio.create_task(spawned()) == "done"
        return web.Response(text=runtel.current_run().id)

    async def missing(request):
        raise web.HTTPNotFound()

    app = web.Application(middlewares=[aiohttp_middleware()])
    app.cleanup_ctx.append(service_run)
    app.add_routes([web.get("/item/{i}", item), web.get("/missing", missing)])
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, handle_signals=True)
    """
)


@pytest.mark.skipif(importlib.util.find_spec("aiohttp") is None and os.environ.get("CI") != "true",
                    reason="aiohttp is not installed")
def test_aiohttp_server_with_runtels_middleware(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A plain aiohttp.web server, the run in its cleanup context, ``aiohttp_middleware()``: 60 concurrent
    requests are 60 server spans named after the route, own traces or the callers', with the run id and
    the link, each with exactly its handler block and its spawned task's block; a 404 is a status, not an error."""
    (tmp_path / "app.py").write_text(AIOHTTP_APP)
    port, runs = _free_port(), tmp_path / "runs"

    def requests() -> list[str]:
        with concurrent.futures.ThreadPoolExecutor(N) as pool:
            bodies = list(pool.map(lambda i: _get(port, i), range(N)))
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/missing", timeout=60)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        return bodies

    bodies, err, code = _serve([sys.executable, str(tmp_path / "app.py"), str(port), str(runs)], clean_env, port,
                               load=requests)
    assert code == 0, err
    (service,) = list_runs(runs)
    assert service["status"] == "ok" and service["name"] == "aiohttp-service"
    assert bodies == [service["id"]] * N
    run_dir = Path(service["dir"])
    spans = read_spans(run_dir)
    requests_ = [s for s in spans if s.name == "GET /item/{i}"]
    by_path = _check_requests(requests_, service, _raw_kinds(run_dir), lambda s: s.attributes["url.path"])
    assert all(s.links and s.links[0]["span_id"] == service["span_id"] for s in requests_)
    assert all(s.attributes["http.route"] == "/item/{i}" and s.attributes["http.response.status_code"] == 200
               for s in requests_)
    by_id = {s.span_id: s for s in spans}
    for i in range(N):
        req = by_path[f"/item/{i}"]
        mine = [s for s in spans if s.trace_id == req.trace_id and s.span_id != req.span_id]
        assert sorted(s.name for s in mine) == ["handler", "spawned"]
        handler = next(s for s in mine if s.name == "handler")
        assert handler.parent_span_id == req.span_id and handler.attributes["item"] == str(i)
        assert by_id[next(s for s in mine if s.name == "spawned").parent_span_id] is handler
    (missing,) = [s for s in spans if s.attributes.get("url.path") == "/missing"]
    assert missing.attributes["http.response.status_code"] == 404 and missing.status_code == 0
    assert len(spans) == 1 + 3 * N + 1  # the run span, 3 per request, the 404: nothing else, nothing lost


#: PLAIN_APP answering with the pid of the worker process that served the request
PID_APP = PLAIN_APP.replace('body": b"ok"', 'body": str(os.getpid()).encode()').replace("import asyncio", "import asyncio, os")


def test_runtel_run_uvicorn_with_two_workers(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel run -- uvicorn app:app --workers 2`: each worker process gets a worker run of its own (a child
    of the wrapper's run), holding exactly the requests that worker served, each its own trace; none lost."""
    (tmp_path / "pid_app.py").write_text(PID_APP)
    port, runs = _free_port(), tmp_path / "runs"
    runtel = Path(sys.executable).with_name("runtel")
    uvicorn = Path(sys.executable).with_name("uvicorn")
    env = {**clean_env, "PYTHONPATH": f"{tmp_path}{os.pathsep}{clean_env['PYTHONPATH']}"}
    served: list[str] = []

    def load() -> list[str]:
        deadline = time.monotonic() + 60  # until both workers have served requests: the second may still be
        with concurrent.futures.ThreadPoolExecutor(N) as pool:  # starting when the first answers (under load)
            while len(set(served)) < 2 and time.monotonic() < deadline:
                base = len(served)  # read once: extend() appends while later requests are still being sent
                served.extend(pool.map(lambda i, base=base: _get(port, base + i), range(N)))
                if len(set(served)) < 2:
                    time.sleep(0.2)
        return served

    _, err, code = _serve([str(runtel), "run", "--dir", str(runs), "-q", "--", str(uvicorn), "pid_app:app",
                           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--workers", "2"],
                          env, port, stop=signal.SIGTERM, load=load)
    assert code == 0, err  # uvicorn's supervisor stops its workers and exits 0 on SIGTERM
    assert len(set(served)) == 2
    records = list_runs(runs)
    (wrapper,) = [r for r in records if r["parent"] is None]
    workers = [r for r in records if r["parent"] is not None]
    assert wrapper["status"] == "ok" and len(workers) == 2
    assert {w["process"]["pid"] for w in workers} == {int(pid) for pid in served}
    every: list[SpanRecord] = []
    for worker in workers:
        assert worker["parent"]["run_id"] == wrapper["id"] and worker["name"] == "uvicorn"
        assert worker["status"] == "ok"  # closed by each worker's own shutdown
        spans = read_spans(Path(worker["dir"]))
        requests = [s for s in spans if s.name == "GET"]
        handlers = [s for s in spans if s.name == "plain-handler"]
        assert len(requests) == served.count(str(worker["process"]["pid"])) == len(handlers)
        assert len(spans) == 1 + 2 * len(requests)  # its run span, and exactly its requests' spans
        assert all(s.attributes["runtel.run.id"] == worker["id"] for s in requests)
        assert {h.parent_span_id for h in handlers} == {s.span_id for s in requests}
        assert worker["trace_id"] not in {s.trace_id for s in requests}
        every += requests
    by_path = {s.attributes["url.path"]: s for s in every}
    assert len(every) == len(by_path) == len(served)  # every request once, none lost
    assert set(by_path) == {f"/item/{i}" for i in range(len(served))}
    assert len({s.trace_id for s in every}) == len(served)  # each its own trace, or its caller's
    for i in range(0, len(served), 3):  # callers' traces continued in whichever worker served them
        assert by_path[f"/item/{i}"].trace_id == TRACE.format(i)
        assert by_path[f"/item/{i}"].parent_span_id == CALLER_SPAN


AROUND_APP = textwrap.dedent(
    """
    import sys
    import uvicorn
    import runtel
    from runtel.recording.service import RequestSpans

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        with runtel.block("handler"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with runtel.run_span("around"):
        uvicorn.run(RequestSpans(app), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def test_a_run_around_uvicorn_run_is_finished_when_sigterm_stops_the_server(
        tmp_path: Path, clean_env: dict[str, str]) -> None:
    """uvicorn stops gracefully on SIGTERM and then raises it again with the handler it found: the process
    ends inside the ``with run_span`` block. The run is still finished (interrupted, with its end time and
    usage) and every request span is on disk; the process still ends by SIGTERM."""
    (tmp_path / "around.py").write_text(AROUND_APP)
    port, runs = _free_port(), tmp_path / "runs"
    env = {**clean_env, "RUNTEL_DIR": str(runs), "RUNTEL_SAMPLING": "true"}
    bodies, err, code = _serve([sys.executable, str(tmp_path / "around.py"), str(port)], env, port,
                               stop=signal.SIGTERM)
    assert code == -signal.SIGTERM, err
    assert bodies == ["ok"] * N
    (summary,) = list_runs(runs)
    record = json.loads((Path(summary["dir"]) / "run.json").read_text())
    assert record["status"] == "interrupted" and record.get("end_time"), record
    assert record.get("resource_usage"), sorted(record)
    spans = read_spans(Path(summary["dir"]))
    assert len([s for s in spans if s.name == "GET"]) == N
    assert len([s for s in spans if s.name == "handler"]) == N
    assert [s.name for s in spans if s.span_id == record["span_id"]] == ["around"]


LOGGING_LOOP = textwrap.dedent(
    """
    import runtel
    from runtel.recording.service import RequestSpans

    async def app(scope, receive, send):
        pass

    with runtel.run_span("loop") as run:
        RequestSpans(app)  # inside a run, uvicorn imported: the SIGTERM handler is installed
        print("ready", flush=True)
        for step in range(10**9):
            run.log(step=step, loss=1.0 / (step + 1))  # SIGTERM lands while runtel writes a series line
    """
)


def test_sigterm_in_the_middle_of_runtels_own_writing_still_ends_the_process(
        tmp_path: Path, clean_env: dict[str, str]) -> None:
    """The handler never waits for a lock the interrupted thread holds (it once hung in 14 of 16 tries): that
    thread goes on while a helper finishes the run (interrupted, with its end), then the process ends by SIGTERM,
    as without runtel."""
    (tmp_path / "loop.py").write_text("import uvicorn\n" + LOGGING_LOOP)
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(tmp_path / "loop.py")], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=60) == -signal.SIGTERM, proc.stderr.read() if proc.stderr else ""
        finally:
            proc.kill()
            proc.communicate()
    runs = list_runs(tmp_path / "runs")
    assert len(runs) == 3
    for summary in runs:
        record = json.loads((Path(summary["dir"]) / "run.json").read_text())
        assert record["status"] == "interrupted" and record.get("end_time"), record


TRACED_LOOP = textwrap.dedent(
    """
    import time, uvicorn, runtel
    from runtel.recording.service import RequestSpans

    async def app(scope, receive, send):
        pass

    @runtel.trace
    def serve_forever():
        print("ready", flush=True)
        while True:
            time.sleep(0.01)

    with runtel.run_span("traced"):
        RequestSpans(app)
        serve_forever()
    """
)


def test_sigterm_under_a_traced_function_finishes_the_run(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """The user's code runs under runtel's @trace wrapper frame: that is the user's code, not runtel's own
    writing, so a SIGTERM still finishes the run (interrupted, with its end) before the process ends."""
    (tmp_path / "traced.py").write_text(TRACED_LOOP)
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "traced.py")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.communicate()
    (summary,) = list_runs(tmp_path / "runs")
    record = json.loads((Path(summary["dir"]) / "run.json").read_text())
    assert record["status"] == "interrupted" and record.get("end_time"), record
