"""Durable span writing: what each design costs per span against a plain SDK, in one process.

Usage: python benchmarks/durable_bench.py [--quick]

Every variant records the same spans (``runtel.block`` / ``@runtel.trace`` on a no-op body) inside one
run; only the processor the run's spans are handed to (after scrubbing) changes. The baseline is a
plain SDK ``TracerProvider`` + ``BatchSpanProcessor`` + a no-op exporter (its own provider, so
runtel's processor is not on its path). Paired repeats: each repeat measures every variant back to
back, ratios are medians of the per-repeat ratios. "hot" is the loop alone; "total" adds the final
flush (everything written out). Variants:

* ``batch thread`` - the previous design: the SDK's BatchSpanProcessor feeding the JSON Lines exporter
  (encoding in the exporter thread); not durable while the main thread holds the GIL;
* ``(a) line per span`` - encode and append a whole ExportTraceServiceRequest line (resource included)
  in ``on_end``; durable, ~6x the bytes;
* ``(b) marshal journal`` - ``marshal`` a flat tuple of the span's fields and append it to a journal in
  ``on_end``; converted to OTLP/JSON lines in bulk at flush (counted in "total");
* ``(c) journal + batches`` - what runtel ships (``exporters.jsonl.JsonlSpanWriter``): encode the span's
  OTLP/JSON in ``on_end``, append it to the journal and to a batch the ending thread writes as one line;
* ``(c) without journal`` - the same batches without the journal write: what durability costs.

The second table splits the shipped writer's cost per span by subtraction (paired, same process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import table

PY = sys.executable

CODE = """
import json, marshal, os, statistics, threading, time
import runtel
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from runtel.exporters.jsonl import JsonlSpanExporter, JsonlSpanWriter
from runtel.rundir.otlp_json import framed_line, span_frame, spans_line

class NoOp(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

class Nothing(SpanProcessor):
    def on_end(self, span):
        pass

class LinePerSpan(SpanProcessor):
    def __init__(self, sinks):
        self.sinks = sinks
    def on_end(self, span):
        sink = self.sinks.spans(span.attributes["runtel.run.id"])
        sink.write(spans_line([span]))

class MarshalJournal(SpanProcessor):
    # (b): one marshal record per span in on_end; OTLP/JSON lines built from the records at flush.
    def __init__(self, sinks, path):
        self.sinks, self.fd, self.path = sinks, os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT), path
        self.frame = None
    def on_end(self, span):
        ctx, parent = span.context, span.parent
        if self.frame is None:
            self.frame = (span_frame(span.resource, span.instrumentation_scope), span.attributes["runtel.run.id"])
        record = marshal.dumps((ctx.trace_id, ctx.span_id, parent.span_id if parent else 0, span.name,
                                span.kind.value + 1, span.start_time, span.end_time, int(ctx.trace_flags),
                                tuple(span.attributes.items())))
        os.write(self.fd, len(record).to_bytes(4, "little") + record)
    def force_flush(self, timeout_millis=30000):
        if self.frame is None:
            return True
        data = os.pread(self.fd, os.fstat(self.fd).st_size, 0)
        q = json.encoder.encode_basestring
        texts, pos = [], 0
        while pos < len(data):
            size = int.from_bytes(data[pos:pos + 4], "little")
            t, s, p, name, kind, start, end, flags, attrs = marshal.loads(data[pos + 4:pos + 4 + size])
            pos += 4 + size
            a = ",".join('{"key":%s,"value":{"stringValue":%s}' % (q(k), q(v)) if type(v) is str else
                         '{"key":%s,"value":{"intValue":"%d"}' % (q(k), v) for k, v in attrs)
            texts.append('{"traceId":"%032x","spanId":"%016x","name":%s,"kind":%d,"startTimeUnixNano":"%d",'
                         '"endTimeUnixNano":"%d"%s,"flags":%d,"attributes":[%s]}' % (
                             t, s, q(name), kind, start, end, ',"parentSpanId":"%016x"' % p if p else "",
                             flags | 0x100, a))
        frame, run_id = self.frame
        sink = self.sinks.spans(run_id)
        for k in range(0, len(texts), 1024):
            sink.write((framed_line([(frame, texts[k:k + 1024])]) + "\\n").encode())
        os.ftruncate(self.fd, 0)
        return True

plain = TracerProvider()
plain_processor = BatchSpanProcessor(NoOp(), max_queue_size=16384, schedule_delay_millis=200, max_export_batch_size=1024)
plain.add_span_processor(plain_processor)
tracer = plain.get_tracer("bench")
runtel.configure(dir=os.environ["BENCH_DIR"], sampling=False)
N, R = __N__, __R__

@runtel.trace
def traced():
    pass

def blk():
    with runtel.block("blk"):
        pass

def bare():
    with tracer.start_as_current_span("bare"):
        pass

with runtel.run_span("durable") as run:
    from runtel import _sdk
    rt = _sdk.get_runtime()
    shipped = rt.span_processors[0]
    assert isinstance(shipped, JsonlSpanWriter)
    no_journal = JsonlSpanWriter(rt.sinks, batch=1024, delay=0.2)
    no_journal._open(run.id).journal = None
    variants = {
        "batch thread": BatchSpanProcessor(JsonlSpanExporter(rt.sinks), max_queue_size=16384,
                                           schedule_delay_millis=200, max_export_batch_size=1024),
        "(a) line per span": LinePerSpan(rt.sinks),
        "(b) marshal journal": MarshalJournal(rt.sinks, os.path.join(os.environ["BENCH_DIR"], "marshal.journal")),
        "(c) journal + batches": shipped,
        "(c) without journal": no_journal,
        "no processor": None,
        "scrub only": Nothing(),
    }
    plans = [("plain SDK", bare, plain_processor, None)]
    plans += [(name, blk, p, p) for name, p in variants.items()]
    plans += [("@trace: plain SDK", bare, plain_processor, None), ("@trace: shipped", traced, shipped, shipped)]
    for name, fn, flush, delegate in plans:  # warm up every path
        rt.router.delegates = (delegate,) if delegate is not None else ()
        for _ in range(1000):
            fn()
        if flush is not None:
            flush.force_flush()
    hot = {name: [] for name, *_ in plans}
    total = {name: [] for name, *_ in plans}
    for _ in range(R):
        for name, fn, flush, delegate in plans:
            if fn is bare:
                rt.router.delegates = (shipped,)
            else:
                rt.router.delegates = (delegate,) if delegate is not None else ()
            if flush is not None:
                flush.force_flush()
            t = time.perf_counter_ns()
            for _ in range(N):
                fn()
            h = time.perf_counter_ns()
            if flush is not None:
                flush.force_flush()
            e = time.perf_counter_ns()
            hot[name].append((h - t) / N / 1e3)
            total[name].append((e - t) / N / 1e3)
    rt.router.delegates = (shipped,)
out = {"hot": hot, "total": total}
print(json.dumps(out))
"""


def fresh(code: str) -> dict[str, dict[str, list[float]]]:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench.py"
        script.write_text(textwrap.dedent(code))
        done = subprocess.run([PY, str(script)], capture_output=True, text=True, timeout=1800,
                              env={**os.environ, "BENCH_DIR": str(Path(tmp) / "runs")})
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    result: dict[str, dict[str, list[float]]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, repeats = (2_000, 3) if args.quick else (20_000, 9)
    r = fresh(CODE.replace("__N__", str(n)).replace("__R__", str(repeats)))
    hot, total = r["hot"], r["total"]

    def ratio(kind: dict[str, list[float]], name: str, base: str = "plain SDK") -> str:
        return f"{_median([a / b for a, b in zip(kind[name], kind[base], strict=True)]):.2f}"

    durable = {"batch thread": "no", "(a) line per span": "yes", "(b) marshal journal": "yes",
               "(c) journal + batches": "yes (shipped)", "(c) without journal": "no"}
    rows = [["plain SDK + BatchSpanProcessor + no-op", f"{_median(hot['plain SDK']):.2f}",
             f"{_median(total['plain SDK']):.2f}", "1.00", "1.00", "-"]]
    for name, is_durable in durable.items():
        rows.append([f"block: {name}", f"{_median(hot[name]):.2f}", f"{_median(total[name]):.2f}",
                     ratio(hot, name), ratio(total, name), is_durable])
    rows.append(["@trace: shipped", f"{_median(hot['@trace: shipped']):.2f}",
                 f"{_median(total['@trace: shipped']):.2f}", ratio(hot, "@trace: shipped", "@trace: plain SDK"),
                 ratio(total, "@trace: shipped", "@trace: plain SDK"), "yes"])
    table(f"per-span wall time inside a run, us (median of {repeats} paired repeats x {n} spans); ratio = paired "
          "median vs the plain SDK; target <= 1.25", ["what", "hot us", "total us", "hot ratio", "total ratio",
                                                      "durable under a GIL-holding C call"], rows)

    def diff(a: str, b: str) -> str:
        return f"{_median([x - y for x, y in zip(total[a], total[b], strict=True)]):+.2f}"

    table("where the shipped writer's time goes, us per span (paired median differences of 'total')", [
        "stage", "us/span"], [
        ["SDK span + runtel block/@trace + run attribution (no processor)", f"{_median(total['no processor']):.2f}"],
        ["+ scrubbing (RunProcessor hands the span to a no-op processor)", diff("scrub only", "no processor")],
        ["+ OTLP/JSON encoding and batch lines, in the ending thread", diff("(c) without journal", "scrub only")],
        ["+ the journal write (one os.write per span)", diff("(c) journal + batches", "(c) without journal")],
        ["plain SDK: the SDK span + BatchSpanProcessor + no-op exporter", f"{_median(total['plain SDK']):.2f}"],
    ])


if __name__ == "__main__":
    main()
