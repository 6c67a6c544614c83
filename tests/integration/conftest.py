"""A real OTLP receiver for the integration tests: the ``rotel-agent`` binary shipped in the ``rotel`` package.

The fixture starts one receiver per pytest process (so each xdist worker has its own, on its own free
127.0.0.1 ports), with the blackhole exporter and detailed debug logging of traces and metrics. What it
receives is printed to its stdout, which goes to a file; :class:`Receiver` parses that file. Tests
identify their own data by trace id or run id, because the receiver is shared by the whole session.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ATTR = re.compile(r"^(\s*)-> ([^:]+): (\w+)\((.*)\)\s*$")
_FIELD = re.compile(r"^\s*(Trace ID|Parent ID|ID|Name|Kind)\s*: ?(.*)$")


@dataclass
class ReceivedSpan:
    """One span as the receiver printed it."""

    trace_id: str
    span_id: str = ""
    parent_id: str = ""
    name: str = ""
    kind: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    resource: dict[str, str] = field(default_factory=dict)


@dataclass
class ReceivedMetric:
    """One metric (name, unit, kind) with the attributes of its data points."""

    name: str
    unit: str = ""
    data_type: str = ""
    points: list[dict[str, str]] = field(default_factory=list)
    resource: dict[str, str] = field(default_factory=dict)


def parse_debug_output(text: str) -> tuple[list[ReceivedSpan], list[ReceivedMetric]]:
    """Parse rotel's ``--debug-log-verbosity detailed`` output into spans and metrics.

    Attribute values are kept as printed (``Str(x)`` → ``x``, ``Int(3)`` → ``3``); nested event and
    link attributes are ignored.
    """
    spans: list[ReceivedSpan] = []
    metrics: list[ReceivedMetric] = []
    resource: dict[str, str] = {}
    section = ""
    span: ReceivedSpan | None = None
    metric: ReceivedMetric | None = None
    point: dict[str, str] | None = None
    for raw in _ANSI.sub("", text.replace("\x00", "")).splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if stripped.startswith(("ResourceSpans #", "ResourceMetrics #")):
            resource, section, span, metric, point = {}, "", None, None, None
            continue
        if stripped == "Resource attributes:":
            section = "resource"
            continue
        if stripped.startswith("Span #"):
            span = ReceivedSpan(trace_id="", resource=resource)
            spans.append(span)
            section = "span"
            continue
        if stripped.startswith("Metric #"):
            metric, point, section = None, None, "metric"
            continue
        if stripped == "Attributes:" and span is not None:
            section = "span-attributes"
            continue
        if stripped in ("Events:", "Links:") or stripped.startswith(("SpanEvent #", "SpanLink #")):
            section = "ignore"
            continue
        if stripped == "Data point attributes:":
            section = "point-attributes"
            continue
        if re.match(r"^(Number|Histogram|ExponentialHistogram|Summary)DataPoints #", stripped):
            if metric is not None:
                point = {}
                metric.points.append(point)
            section = "point"
            continue
        attr = _ATTR.match(line)
        if attr:
            indent, key, kind, value = attr.groups()
            if section == "resource":
                resource[key] = value
            elif section == "span-attributes" and span is not None and len(indent) <= 6:
                span.attributes[key] = value
            elif section == "point-attributes" and point is not None:
                point[key] = value
            continue
        plain = re.match(r"^\s*-> (Name|Unit|DataType): ?(.*)$", line)
        if plain and section == "metric":
            key, value = plain.groups()
            if key == "Name":
                metric = ReceivedMetric(name=value.strip(), resource=resource)
                metrics.append(metric)
            elif metric is not None and key == "Unit":
                metric.unit = value.strip()
            elif metric is not None and key == "DataType":
                metric.data_type = value.strip()
            continue
        fld = _FIELD.match(line)
        if fld and span is not None and section == "span":
            key, value = fld.groups()
            value = value.strip()
            if key == "Trace ID":
                span.trace_id = value
            elif key == "Parent ID":
                span.parent_id = value
            elif key == "ID":
                span.span_id = value
            elif key == "Name":
                span.name = value
            elif key == "Kind":
                span.kind = value
    return spans, metrics


class Receiver:
    """A running rotel-agent: its endpoints and a parser for what it printed so far."""

    def __init__(self, grpc_port: int, http_port: int, output: Path, process: subprocess.Popen[bytes]) -> None:
        self.grpc_port = grpc_port
        self.http_port = http_port
        self.output = output
        self.process = process

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:<grpc port>``."""
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://127.0.0.1:<http port>`` (signal paths are appended by the exporters)."""
        return f"http://127.0.0.1:{self.http_port}"

    def endpoint(self, protocol: str) -> str:
        """The endpoint for an OTLP protocol name."""
        return self.grpc_endpoint if protocol == "grpc" else self.http_endpoint

    def text(self) -> str:
        """Everything the receiver printed so far."""
        return self.output.read_bytes().decode("utf-8", "replace")

    def received(self) -> tuple[list[ReceivedSpan], list[ReceivedMetric]]:
        """Spans and metrics received so far."""
        return parse_debug_output(self.text())

    def spans(self, trace_ids: set[str] | None = None) -> list[ReceivedSpan]:
        """Received spans, optionally only those of some traces."""
        spans, _ = self.received()
        return [s for s in spans if trace_ids is None or s.trace_id in trace_ids]

    def metrics(self, run_id: str | None = None) -> list[ReceivedMetric]:
        """Received metrics, optionally only those with a data point of ``run_id``."""
        _, metrics = self.received()
        if run_id is None:
            return metrics
        return [m for m in metrics if any(p.get("runtel.run.id") == run_id for p in m.points)]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Poll ``condition`` until true or ``timeout`` seconds pass (the receiver prints after batching)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.1)
        return condition()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    """A 127.0.0.1 port that refuses connections (bound, then released)."""
    return free_port()


def _rotel_binary() -> Path:
    spec = importlib.util.find_spec("rotel")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the rotel package is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "rotel-agent"
    if not binary.is_file():
        pytest.skip(f"rotel-agent binary not found at {binary}")
    return binary


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rotel-agent exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"rotel-agent did not listen on 127.0.0.1:{port} within {timeout} s")


@pytest.fixture(scope="session")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """A real OTLP receiver (gRPC and HTTP) on free 127.0.0.1 ports, one per pytest process."""
    binary = _rotel_binary()
    folder = tmp_path_factory.mktemp("rotel")
    output = folder / "received.log"
    for _attempt in range(3):  # a port picked as free may be taken before rotel binds it
        grpc_port, http_port = free_port(), free_port()
        if grpc_port == http_port:
            continue
        with output.open("wb") as out:
            process = subprocess.Popen(
                [str(binary), "start",
                 "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
                 "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
                 "--exporter", "blackhole",
                 "--debug-log", "traces", "--debug-log", "metrics",
                 "--debug-log-verbosity", "detailed",
                 "--batch-timeout", "50ms",
                 "--pid-file", str(folder / "rotel.pid"),
                 "--log-file", str(folder / "rotel-agent.log")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "NO_COLOR": "1"},
            )
        try:
            _wait_listening(grpc_port, process)
            _wait_listening(http_port, process)
        except RuntimeError:
            process.kill()
            process.wait(5)
            continue
        break
    else:
        raise RuntimeError(f"could not start rotel-agent; output:\n{output.read_text(errors='replace')[-2000:]}")
    try:
        yield Receiver(grpc_port, http_port, output, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
