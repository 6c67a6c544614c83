"""A real uvicorn service: one run for its lifetime, each request its own trace, linked to the run."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from runtel.rundir.reader import list_runs, read_spans

pytest.importorskip("uvicorn")

APP = textwrap.dedent(
    """
    import asyncio, sys
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
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        with runtel.block("handler", path=scope["path"]):
            await asyncio.sleep(0.02)  # concurrent requests overlap in the event loop
            await asyncio.to_thread(traced, scope["path"])
        body = runtel.current_run().id.encode() if runtel.current_run() else b"none"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    @runtel.trace
    def traced(path):
        return path

    uvicorn.run(RequestSpans(app), host="127.0.0.1", port=int(sys.argv[1]), lifespan="on", log_level="warning")
    """
)

N = 60
TRACE = "4bf92f3577b34da6a3ce929d0e0e{:04x}"
CALLER_SPAN = "00f067aa0ba902b7"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, i: int) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/item/{i}")
    if i % 3 == 0:  # every third caller sends its own trace context
        request.add_header("traceparent", f"00-{TRACE.format(i)}-{CALLER_SPAN}-01")
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.read().decode())


def test_uvicorn_requests_are_their_own_traces_in_the_service_run(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """60 concurrent requests: 60 server spans, each its own trace (or the caller's), run id and link
    to the service run; every handler block and traced call hangs under its own request."""
    (tmp_path / "app.py").write_text(APP)
    port, runs = _free_port(), tmp_path / "runs"
    server = subprocess.Popen([sys.executable, str(tmp_path / "app.py"), str(port), str(runs)], env=clean_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.communicate()[1]
                time.sleep(0.05)
        with concurrent.futures.ThreadPoolExecutor(N) as pool:
            bodies = list(pool.map(lambda i: _get(port, i), range(N)))
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown runs the lifespan's end
        _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    (service,) = list_runs(runs)
    assert service["status"] == "ok"
    assert bodies == [service["id"]] * N  # the handler sees the service run as current
    spans = read_spans(Path(service["dir"]))
    raw = [s for line in (Path(service["dir"]) / "spans.jsonl").read_text().splitlines()
           for rs in json.loads(line)["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    kinds = {s["spanId"]: s.get("kind") for s in raw}
    requests = [s for s in spans if s.name == "GET"]
    assert len(requests) == N
    assert all(kinds[s.span_id] == 2 for s in requests)  # SPAN_KIND_SERVER
    assert all(s.attributes["runtel.run.id"] == service["id"] for s in requests)
    assert all(s.links and s.links[0]["span_id"] == service["span_id"] for s in requests)
    by_path = {s.attributes["url.path"]: s for s in requests}
    assert len(by_path) == N
    assert len({s.trace_id for s in requests}) == N and service["trace_id"] not in {s.trace_id for s in requests}
    for i in range(0, N, 3):  # callers' traces continued, under the caller's span
        req = by_path[f"/item/{i}"]
        assert req.trace_id == TRACE.format(i) and req.parent_span_id == CALLER_SPAN
    assert all(s.parent_span_id is None for i, s in enumerate(requests) if int(s.attributes["url.path"][6:]) % 3)
    handlers = [s for s in spans if s.name == "handler"]
    traced = [s for s in spans if s.name.endswith("traced")]
    assert len(handlers) == N and len(traced) == N
    for h in handlers:  # never mixed: each handler under the request of its own path
        req = by_path[h.attributes["path"]]
        assert h.parent_span_id == req.span_id and h.trace_id == req.trace_id
    handler_by_id = {h.span_id: h for h in handlers}
    assert all(handler_by_id[t.parent_span_id].trace_id == t.trace_id for t in traced)
    assert os.path.exists(Path(service["dir"]) / "run.json")
