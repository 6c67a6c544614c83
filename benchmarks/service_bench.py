"""What recording a service costs: server CPU per request of a real uvicorn, with and without runtel.

Usage: python benchmarks/service_bench.py [--app hello|starlette|fastapi] [--requests 3000] [--repeats 3] [--quick]
       [--baseline-rev REV] [--modes none,runtel,...] [--in-process]

The same ASGI app (``hello``: a bare ASGI callable answering "ok"; ``starlette``: a Starlette route
returning a small JSON body; ``fastapi``: a FastAPI route that validates a POSTed JSON body of 32 features
into a pydantic model and returns a model, the shape of an inference endpoint) is served by uvicorn (httptools/h11 as installed, one process) in each
of these set-ups, and a load client in another process sends ``--requests`` requests over 8 keep-alive
connections after 300 warm-up requests. The server's CPU time (of the server process: the sum over its threads of ``/proc/<pid>/task/*/schedstat``, nanoseconds) is
read before and after the load, so start-up and shutdown are not counted.

* ``none``: no instrumentation;
* ``sdk provider``: an SDK ``TracerProvider`` + ``BatchSpanProcessor`` + a no-op exporter installed, nothing
  else: what an SDK switches on by itself (FastAPI 0.16x's own telemetry: a server span and its ``fastapi.*``
  operation spans per request; nothing for the other apps);
* ``otel-asgi``: the OpenTelemetry ASGI middleware on an SDK ``TracerProvider`` + ``BatchSpanProcessor``
  + a no-op exporter (what plain OpenTelemetry costs, writing nothing);
* ``sdk span``: no middleware, one plain SDK span per request with the request span's content (server
  kind, its own trace, a link, the same 8 attributes, current while the app runs) on a
  ``BatchSpanProcessor`` + no-op exporter: the floor any one-span-per-request design pays;
* ``runtel span``: the same span started on runtel's tracer in a lifetime run, written to the run
  folder, no middleware: ``runtel`` minus this is ``RequestSpans``'s own cost, this minus ``sdk span``
  is runtel's span pipeline (scrubbing, OTLP/JSON encoding, the journal write);
* ``runtel``: the lifetime-run model — a run opened in the ASGI lifespan, ``RequestSpans``, spans to
  the run folder, resource sampling off;
* ``runtel inside`` (``--app fastapi`` only): the same run, ``RequestSpans`` added with
  ``app.add_middleware`` as docs/services.md shows for FastAPI, so FastAPI's own server span is the request's;
* ``runtel+sampling``: the same with runtel's default resource sampling (a sampler thread in the server);
* ``runtel run``: ``runtel run -- uvicorn app:app`` with no runtel code in the app (the service gets a
  worker run, with the same span writer as an in-app run);
* ``run-per-request``: ``async with runtel.run_span()`` around each request, for comparison (the
  model the lifetime run replaces);
* ``runtel @REV`` (with ``--baseline-rev REV``): the ``runtel`` set-up with revision REV's ``src`` first
  on ``PYTHONPATH``, so a change is measured against what it replaced in the same run.

``--parts`` runs the ``runtel`` set-up with thread-CPU timers around the parts of a span's end (the router's
``on_end``, the scrubber, the encoder, the run-folder writer, its journal write and batch commit) inside the
real server, and prints each part's CPU per call: where a request's span costs under a server, as against
in a tight loop (``--in-process``, whose last rows encode the same span hot and between other work). Each
timer adds ~1.5 us to the part it wraps and to the parts around it.

Each repeat runs every set-up once, in turn; the table gives the median CPU per request and the ratio
to ``none`` of the same repeat (median of the ratios). Keep-alive and a handler that does nothing make
the per-request overhead look as large as it can: a real handler's own work dilutes it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind

import runtel
from runtel import _context, _sdk
from runtel._internals import set_owned_attributes, span_fields
from runtel.recording.service import RequestSpans
from runtel.rundir.otlp_json import fields_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import table

PY = sys.executable
BIN = Path(PY).parent
ROOT = Path(__file__).resolve().parent.parent

APP = textwrap.dedent(
    """
    import json, os, sys
    MODE = os.environ["BENCH_MODE"]
    if os.environ.get("BENCH_PARTS"):
        import bench_parts

    async def hello(scope, receive, send):
        if scope["type"] == "lifespan":
            spec = None
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if MODE in ("runtel", "runtel+sampling", "runtel span", "runtel inside"):
                        import runtel
                        runtel.configure(dir=os.environ["BENCH_DIR"], sampling=MODE == "runtel+sampling")
                        spec = runtel.run_span("service")
                        await spec.__aenter__()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if spec is not None:
                        await spec.__aexit__(None, None, None)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    if os.environ.get("BENCH_APP") == "starlette":  # routing, a request object, a JSON response
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def item(request):
            return JSONResponse({"id": request.path_params["i"], "q": request.query_params.get("q")})

        routes = Starlette(routes=[Route("/item/{i}", item)])

        async def hello(scope, receive, send, _plain=hello):
            if scope["type"] == "lifespan":
                return await _plain(scope, receive, send)
            await routes(scope, receive, send)

    if os.environ.get("BENCH_APP") == "fastapi":  # a JSON body validated into a model, a model returned
        from fastapi import FastAPI
        from pydantic import BaseModel

        class Features(BaseModel):
            model: str
            inputs: list[float]
            top_k: int = 3

        class Prediction(BaseModel):
            model: str
            item: int
            top: list[int]
            score: float

        api = FastAPI(telemetry=json.loads(os.environ.get("BENCH_FASTAPI_TELEMETRY") or "{}"))

        @api.post("/item/{i}")
        async def predict(i: int, body: Features) -> Prediction:
            order = sorted(range(len(body.inputs)), key=body.inputs.__getitem__, reverse=True)
            return Prediction(model=body.model, item=i, top=order[:body.top_k], score=body.inputs[order[0]])

        if MODE == "runtel inside":  # the documented FastAPI way: one server span a request, FastAPI's
            from runtel.recording.service import RequestSpans
            api.add_middleware(RequestSpans)

        async def hello(scope, receive, send, _plain=hello):
            if scope["type"] == "lifespan":
                return await _plain(scope, receive, send)
            await api(scope, receive, send)

    app = hello
    if MODE in ("runtel", "runtel+sampling"):
        from runtel.recording.service import RequestSpans
        app = RequestSpans(hello)
    elif MODE == "otel-asgi":
        from opentelemetry import trace
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class NoOp(SpanExporter):
            def export(self, spans):
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(NoOp()))
        trace.set_tracer_provider(provider)
        app = OpenTelemetryMiddleware(hello)
    elif MODE == "sdk provider":  # what installing any SDK switches on (FastAPI's own telemetry), writing nothing
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class NoOp(SpanExporter):
            def export(self, spans):
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(NoOp()))
        trace.set_tracer_provider(provider)
    elif MODE in ("sdk span", "runtel span"):
        # One span per request with the request span's content (server kind, its own trace, the link,
        # the 8 attributes, current while the app runs), no middleware: what the span itself costs.
        from opentelemetry import context, trace
        from opentelemetry.context import Context
        from opentelemetry.trace import Link, SpanKind

        if MODE == "sdk span":
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

            class NoOp(SpanExporter):
                def export(self, spans):
                    return SpanExportResult.SUCCESS

            provider = TracerProvider()
            provider.add_span_processor(BatchSpanProcessor(NoOp()))
            tracer = provider.get_tracer("bench")
            root = tracer.start_span("service")
            links = [Link(root.get_span_context())]

            def start(path):
                return tracer.start_span("GET", context=Context(), kind=SpanKind.SERVER, links=links, attributes={
                    "runtel.run.id": "20261202T000000Z-service-abcdef", "http.request.method": "GET",
                    "url.path": path, "url.scheme": "http", "runtel.request.concurrency": 1, "url.query": "q=x",
                    "client.address": "127.0.0.1"})

            def end(span):
                span.set_attributes({"runtel.request.cpu.time": 0.000123, "http.response.status_code": 200})
                span.end()
        else:
            from runtel import _context, _sdk
            from runtel._internals import set_owned_attributes

            def start(path):
                runtime = _sdk.current_runtime()
                run = runtime.process_run
                span = runtime.tracer.start_span("GET", context=_context.with_run(run, Context()),
                                                 kind=SpanKind.SERVER, links=[Link(run.span.get_span_context())])
                set_owned_attributes(span, {"http.request.method": "GET", "url.path": path, "url.scheme": "http",
                                            "runtel.request.concurrency": 1, "url.query": "q=x",
                                            "client.address": "127.0.0.1"})
                return span

            def end(span):
                set_owned_attributes(span, {"runtel.request.cpu.time": 0.000123, "http.response.status_code": 200})
                span.end()

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return await hello(scope, receive, send)
            span = start(scope["path"])
            token = context.attach(trace.set_span_in_context(span))
            try:
                await hello(scope, receive, send)
            finally:
                context.detach(token)
                end(span)
    elif MODE == "run-per-request":
        import runtel
        runtel.configure(dir=os.environ["BENCH_DIR"], sampling=False)

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return await hello(scope, receive, send)
            async with runtel.run_span("request"):
                await hello(scope, receive, send)
    """
)

PARTS = textwrap.dedent(
    """
    # Imported by bench_app when BENCH_PARTS names a file: thread-CPU timers around the parts of a span's
    # end; cumulative totals written to that file every 500 spans.
    import json, os, time
    import runtel._sdk.scrub as scrub
    import runtel._sdk.tracing as tracing
    import runtel.exporters.jsonl as jsonl
    import runtel.rundir.journal as journal

    OUT = os.environ["BENCH_PARTS"]
    TOTALS = {}

    def _wrap(owner, name, label):
        fn = getattr(owner, name)
        clock = time.thread_time_ns

        def timed(*args, **kwargs):
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                c = TOTALS.setdefault(label, [0, 0])
                c[0] += clock() - start
                c[1] += 1
                if label == "router on_end (all of a span's end)" and c[1] % 500 == 0:
                    with open(OUT + ".tmp", "w") as f:
                        json.dump(TOTALS, f)
                    os.replace(OUT + ".tmp", OUT)
        setattr(owner, name, timed)

    _wrap(tracing.RunProcessor, "on_end", "router on_end (all of a span's end)")
    _wrap(scrub.Scrubber, "span", "  scrub (redact, cap)")
    _wrap(jsonl.JsonlSpanWriter, "on_end", "  run-folder writer on_end")
    _wrap(jsonl, "fields_text", "    encode (OTLP/JSON text)")
    _wrap(journal.SpanJournal, "write", "    journal write")
    _wrap(jsonl.JsonlSpanWriter, "_commit", "    batch commit (per commit)")
    """
)

CLIENT = textwrap.dedent(
    """
    import http.client, json, sys, threading
    port, n, conns = int(sys.argv[1]), int(sys.argv[2]), 8
    post = sys.argv[3] == "fastapi"  # the FastAPI app's route takes a JSON body of 32 features
    body = json.dumps({"model": "m1", "inputs": [(i * 7919 % 101) / 101 for i in range(32)], "top_k": 3})
    headers = {"content-type": "application/json"}

    def worker(count):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(count):
            if post:
                c.request("POST", f"/item/{i}?q=x", body=body, headers=headers)
            else:
                c.request("GET", f"/item/{i}?q=x")
            r = c.getresponse()
            r.read()
            assert r.status == 200
        c.close()

    threads = [threading.Thread(target=worker, args=(n // conns,)) for _ in range(conns)]
    for t in threads: t.start()
    for t in threads: t.join()
    """
)

MODES = ("none", "sdk provider", "otel-asgi", "sdk span", "runtel span", "runtel", "runtel+sampling", "runtel run", "run-per-request")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """CPU seconds of every thread of ``pid`` (``/proc/<pid>/task/*/schedstat``: ns, not 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(x) for x in text]


def _source_of(rev: str, into: Path) -> Path:
    """``src`` of revision ``rev`` unpacked under ``into``."""
    archive = into / "src.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _read_parts(path: Path) -> dict[str, list[int]]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _measure(mode: str, work: Path, requests: int, app: str, parts: list[dict[str, float]] | None = None) -> float:
    """Server CPU seconds per request for ``mode`` (one server start, warm-up, one measured load).

    With ``parts``, the span end's parts are timed in the server and their CPU per call appended to it.
    """
    port = _free_port()
    runs = work / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_", "TRACEPARENT"))}
    path = f"{work}{os.pathsep}{env.get('PYTHONPATH', '')}"
    if mode.startswith("runtel @"):
        path = f"{work / 'baseline' / 'src'}{os.pathsep}{path}"  # that revision's runtel, found first
        mode = "runtel"
    env.update(BENCH_MODE=mode, BENCH_APP=app, BENCH_DIR=str(runs), PYTHONPATH=path)
    parts_file = work / "parts.json"
    if parts is not None:
        parts_file.unlink(missing_ok=True)
        env["BENCH_PARTS"] = str(parts_file)
    uvicorn = [str(BIN / "uvicorn"), "bench_app:app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning", "--no-access-log", "--lifespan", "on"]
    if mode == "runtel run":
        env["RUNTEL_SAMPLING"] = "false"
        command = [str(BIN / "runtel"), "run", "-q", "--dir", str(runs), "--", *uvicorn]
    else:
        command = uvicorn
    proc = subprocess.Popen(command, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{mode}: server did not start: {proc.communicate()[1]!r}") from None
                time.sleep(0.05)
        server = proc.pid if mode != "runtel run" else _children(proc.pid)[0]
        client = [PY, str(work / "bench_client.py"), str(port)]
        subprocess.run([*client, "304", app], check=True)  # warm-up (a first request opens the worker run)
        before, timed = _cpu_s(server), _read_parts(parts_file)
        subprocess.run([*client, str(requests), app], check=True)
        after = _cpu_s(server)
        if parts is not None:  # the totals of the last multiple of 500 spans: the measured load's, about
            done = _read_parts(parts_file)
            parts.append({k: (v[0] - timed.get(k, [0, 0])[0]) / max(1, v[1] - timed.get(k, [0, 0])[1]) / 1e3
                          for k, v in done.items()})
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return (after - before) / requests


def in_process(n: int = 20_000, repeats: int = 3) -> None:
    """Thread CPU per request with no server: RequestSpans around a no-op ASGI app, and its parts.

    Each part is the request span's content made another way in the same process (one run open, spans
    to its run folder), so the differences say what each costs: the span's start and end through
    runtel's pipeline with and without its link and attributes, and RequestSpans's own work (a tracer
    that makes no span). Best of ``repeats``, ``n`` calls each.
    """
    async def hello(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    scope = {"type": "http", "method": "GET", "path": "/item/1", "scheme": "http", "query_string": b"q=x",
             "client": ("127.0.0.1", 5555), "headers": headers}
    with_parent = dict(scope, headers=[*headers, (b"traceparent",
                                                  b"00-4bf92f3577b34da6a3ce929d0e0e0001-00f067aa0ba902b7-01")])

    def per_call(fn: Any) -> float:
        for _ in range(500):
            fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.thread_time_ns()
            for _ in range(n):
                fn()
            best = min(best, (time.thread_time_ns() - start) / n / 1e3)
        return best

    def timed_app(app: Any, scope: dict[str, Any]) -> float:
        async def loop(count: int) -> None:
            for _ in range(count):
                await app(dict(scope), receive, send)
        asyncio.run(loop(500))
        best = float("inf")
        for _ in range(repeats):
            start = time.thread_time_ns()
            asyncio.run(loop(n))
            best = min(best, (time.thread_time_ns() - start) / n / 1e3)
        return best

    with tempfile.TemporaryDirectory(prefix="runtel-service-bench-") as tmp:
        runtel.configure(dir=tmp, sampling=False)
        with runtel.run_span("service") as run:
            runtime = _sdk.current_runtime()
            assert runtime is not None
            tracer = runtime.tracer
            parent = _context.with_run(run, Context())
            links = [Link(run.span.get_span_context())]
            attrs = {"http.request.method": "GET", "url.path": "/item/1", "url.scheme": "http",
                     "runtel.request.concurrency": 1, "url.query": "q=x", "client.address": "127.0.0.1"}
            done = {"runtel.request.cpu.time": 0.000123, "http.response.status_code": 200}

            def span(link: bool, attributes: bool) -> Any:
                def make() -> None:
                    s = tracer.start_span("GET", context=parent, kind=SpanKind.SERVER, links=links if link else None)
                    if attributes:
                        set_owned_attributes(s, dict(attrs))
                        set_owned_attributes(s, dict(done))
                    s.end()
                return make

            rows = [
                ["no-op ASGI app, no middleware", f"{timed_app(hello, scope):.1f}"],
                ["RequestSpans (the whole request span)", f"{timed_app(RequestSpans(hello), scope):.1f}"],
                ["RequestSpans, request with a traceparent", f"{timed_app(RequestSpans(hello), with_parent):.1f}"],
                ["span start+end on runtel's tracer (server kind, no link/attributes)",
                 f"{per_call(span(False, False)):.1f}"],
                ["  + the link to the run span", f"{per_call(span(True, False)):.1f}"],
                ["  + the link and the 8 attributes (the request span's content)", f"{per_call(span(True, True)):.1f}"],
            ]

            from opentelemetry.sdk.trace import TracerProvider  # deferred: the OTel SDK (runtel's run loaded it)
            from opentelemetry.sdk.trace.export import (  # deferred: loaded with the SDK already
                BatchSpanProcessor,
                SpanExporter,
                SpanExportResult,
            )

            class NoOp(SpanExporter):
                def export(self, spans: Any) -> SpanExportResult:
                    return SpanExportResult.SUCCESS

            provider = TracerProvider()
            provider.add_span_processor(BatchSpanProcessor(NoOp()))
            sdk = provider.get_tracer("bench")

            def sdk_span() -> None:
                s = sdk.start_span("GET", context=Context(), kind=SpanKind.SERVER, links=links,
                                   attributes={**attrs, "runtel.run.id": run.id})
                s.set_attributes(done)
                s.end()

            rows.append(["the same span on a plain SDK provider + BatchSpanProcessor + no-op exporter",
                         f"{per_call(sdk_span):.1f}"])
            provider.shutdown()

            # The request span's scrub and encode, in a tight loop and with other work between spans (the
            # server's own code runs between two requests' span ends: the caches hold less of runtel's).
            ended = []
            for i in range(2000):
                s = tracer.start_span("GET", context=parent, kind=SpanKind.SERVER, links=links)
                set_owned_attributes(s, {**attrs, "url.path": f"/item/{i % 375}"})
                set_owned_attributes(s, {**done, "runtel.request.cpu.time": 0.000123 + i * 1e-9})
                s.end()
                ended.append(s)
            scrubber = runtime.scrubber
            other = {f"k{i}": [i, str(i), {"x": i * 1.5}] for i in range(300)}
            for label, between in (("hot", False), ("with other work between spans", True)):
                costs = {"scrub": float("inf"), "encode": float("inf")}
                for _ in range(repeats):
                    scrub_ns = encode_ns = 0
                    for s in ended:
                        if between:
                            json.loads(json.dumps(other))
                        t0 = time.thread_time_ns()
                        clean = scrubber.span(s)
                        t1 = time.thread_time_ns()
                        fields_text(span_fields(clean), clean, None)
                        encode_ns += time.thread_time_ns() - t1
                        scrub_ns += t1 - t0
                    costs["scrub"] = min(costs["scrub"], scrub_ns / len(ended) / 1e3)
                    costs["encode"] = min(costs["encode"], encode_ns / len(ended) / 1e3)
                rows.append([f"the request span's scrub / encode, {label}",
                             f"{costs['scrub']:.1f} / {costs['encode']:.1f}"])

            class NoSpans:
                def start_span(self, *args: Any, **kwargs: Any) -> Any:
                    return trace.INVALID_SPAN

            runtime.tracer = NoSpans()  # type: ignore[assignment]
            try:
                rows.append(["RequestSpans's own work (a tracer that makes no span)",
                             f"{timed_app(RequestSpans(hello), scope):.1f}"])
            finally:
                runtime.tracer = tracer
    table(f"in process, no server: thread CPU per request or span (best of {repeats} x {n})", ["what", "us"], rows)


def server_parts(requests: int, repeats: int, app: str) -> None:
    """The span end's parts, timed inside a real server running the ``runtel`` set-up (median of repeats)."""
    parts: list[dict[str, float]] = []
    per_request: list[float] = []
    with tempfile.TemporaryDirectory(prefix="runtel-service-bench-") as tmp:
        work = Path(tmp)
        (work / "bench_app.py").write_text(APP)
        (work / "bench_client.py").write_text(CLIENT)
        (work / "bench_parts.py").write_text(PARTS)
        for _ in range(repeats):
            per_request.append(_measure("runtel", work, requests, app, parts))
    order = ("router on_end (all of a span's end)", "  scrub (redact, cap)", "  run-folder writer on_end",
             "    encode (OTLP/JSON text)", "    journal write", "    batch commit (per commit)")
    rows = [[label, f"{statistics.median(p[label] for p in parts if label in p):.1f}"]
            for label in order if any(label in p for p in parts)] or [["(no part was timed)", "-"]]
    rows.append(["server CPU per request, with the timers", f"{statistics.median(per_request) * 1e6:.0f}"])
    table(f"the span end's parts inside the server, app {app}, {requests} requests x {repeats} (median)",
          ["part", "CPU us per call"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--app", choices=("hello", "starlette", "fastapi"), default="hello",
                        help="hello: a bare ASGI app; starlette: a route returning JSON; fastapi: a route "
                             "validating a JSON body of 32 features into a pydantic model, returning one")
    parser.add_argument("--fastapi-telemetry", default="",
                        help='JSON for FastAPI(telemetry=...) in --app fastapi, e.g. \'{"tracing": false}\'')
    parser.add_argument("--quick", action="store_true", help="1000 requests, 1 repeat")
    parser.add_argument("--baseline-rev", help="git revision whose src runs the runtel set-up too (the 'before')")
    parser.add_argument("--modes", help="comma-separated set-ups to run (default: all; 'none' is always run)")
    parser.add_argument("--in-process", action="store_true",
                        help="no server: what the request span and its parts cost in one process")
    parser.add_argument("--parts", action="store_true",
                        help="the runtel set-up with timers around the parts of a span's end, in the server")
    args = parser.parse_args()
    if args.fastapi_telemetry:
        json.loads(args.fastapi_telemetry)  # fails here, not in every server
        os.environ["BENCH_FASTAPI_TELEMETRY"] = args.fastapi_telemetry  # the servers inherit it
    if args.in_process:
        in_process()
        return
    if args.parts:
        server_parts(args.requests, args.repeats, args.app)
        return
    if args.quick:
        args.requests, args.repeats = 1000, 1
    modes = [m for m in MODES if m != "otel-asgi" or importlib.util.find_spec("opentelemetry.instrumentation.asgi")]
    if args.app == "fastapi":
        modes.insert(modes.index("runtel") + 1, "runtel inside")
    if args.baseline_rev:
        modes.insert(modes.index("runtel"), f"runtel @{args.baseline_rev}")
    if args.modes:
        wanted = {m.strip() for m in args.modes.split(",")} | {"none"}
        modes = [m for m in modes if m in wanted or (m.startswith("runtel @") and "runtel @" in wanted)]
    per: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="runtel-service-bench-") as tmp:
        work = Path(tmp)
        if args.baseline_rev:
            (work / "baseline").mkdir()
            _source_of(args.baseline_rev, work / "baseline")
        (work / "bench_app.py").write_text(APP)
        (work / "bench_client.py").write_text(CLIENT)
        for _ in range(args.repeats):
            for mode in modes:
                per[mode].append(_measure(mode, work, args.requests, args.app))
    rows = []
    for mode in modes:
        ratios = [x / b for x, b in zip(per[mode], per["none"], strict=True)]
        rows.append([mode, f"{statistics.median(per[mode]) * 1e6:.0f}", f"{statistics.median(ratios):.2f}x"])
    app = f"{args.app} (telemetry={args.fastapi_telemetry})" if args.fastapi_telemetry else args.app
    table(f"server CPU per request, app {app}, {args.requests} requests x {args.repeats} repeats (median)",
          ["set-up", "CPU us/request", "vs none"], rows)
    print(json.dumps({m: per[m] for m in modes}))


if __name__ == "__main__":
    main()
