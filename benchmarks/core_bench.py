"""Core benchmarks, measured side by side in one run: span overhead, run cost, exporter, import time.

Usage: python benchmarks/core_bench.py [--quick] [--redaction]

Each section prints a table; ratios compare runtel with the baseline measured in the same process
(or the same kind of fresh process). Peers (pycrumbs, kwutil) are measured only if installed
(`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import table

PY = sys.executable
#: a RAM-backed folder, to measure a run's cost without the disk (None where there is none)
RAM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
ROOT = Path(__file__).resolve().parents[1]


def _bytecode_env(env: dict[str, str] | None) -> dict[str, str]:
    """The child's environment with bytecode caching on: installed packages run from .pyc files, and a
    PYTHONDONTWRITEBYTECODE inherited from a shell would charge every fresh process for compiling."""
    out = dict(os.environ if env is None else env)
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out


_warmed: set[str] = set()


def fresh(code: str, env: dict[str, str] | None = None, cwd: str | None = None) -> dict[str, float]:
    """Run ``code`` as a script file in a fresh interpreter; it prints one JSON object of numbers.

    The script lives in a throwaway git repository (committed), so every tool can capture git state.
    The first call for a script also runs it once unmeasured, so .pyc files exist as after an install.
    """
    env = _bytecode_env(env)
    if code not in _warmed:
        _warmed.add(code)
        fresh(code, env, cwd)
    with tempfile.TemporaryDirectory() as repo:
        script = Path(repo) / "bench_job.py"
        script.write_text(textwrap.dedent(code))
        git = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}
        for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "bench"]):
            subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, env={**os.environ, **git})
        proc = subprocess.run([PY, str(script)], capture_output=True, text=True, env=env, cwd=cwd or repo,
                              timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]




def bench_import(repeats: int) -> None:
    code = """
        import time, json
        t = time.perf_counter(); import runtel; a = time.perf_counter()
        runtel.trace; runtel.run_span; runtel.block; b = time.perf_counter()
        import sys
        heavy = sorted(m for m in ("grpc", "opentelemetry.sdk.trace", "psutil", "pynvml", "rich") if m in sys.modules)
        print(json.dumps({"import": (a - t) * 1e3, "first_use": (b - a) * 1e3, "heavy": heavy}))
    """
    results = [fresh(code) for _ in range(repeats)]
    imp = statistics.median(r["import"] for r in results)
    use = statistics.median(r["first_use"] for r in results)
    table(
        f"import cost, fresh interpreter, median of {repeats}",
        ["what", "ms", "target"],
        [
            ["import runtel", f"{imp:.1f}", "<= 100 ms"],
            ["+ first use of runtel.trace/run_span/block (imports the OTel API)", f"{use:.1f}", "-"],
            ["heavy modules loaded by `import runtel`", ", ".join(results[0]["heavy"]) or "none", "none"],  # type: ignore[arg-type]
        ],
    )


SPAN_CODE = """
    import json, statistics, time, os
    import runtel
    from opentelemetry import trace
    runtel.configure(dir=os.environ["BENCH_DIR"], sample_interval=1.0)
    N, R = {n}, {repeats}

    @runtel.trace
    def traced():
        pass

    def bare(tracer):
        with tracer.start_as_current_span("bare"):
            pass

    def blk():
        with runtel.block("blk"):
            pass

    results = {{"bare": [], "trace": [], "block": []}}
    with runtel.run_span("overhead") as run:
        from runtel import _sdk
        rt = _sdk.get_runtime()
        tracer = trace.get_tracer_provider().get_tracer("bench")   # the same provider, processors and exporter
        for _ in range(2000):
            bare(tracer); traced(); blk()
        for _ in range(R):
            for name, fn in (("bare", lambda: bare(tracer)), ("trace", traced), ("block", blk)):
                # CPU time of the calling thread: what the user's code pays per span. The batch exporter
                # encodes in its own thread; with wall time its GIL contention would swamp the difference.
                rt.span_processors[0].force_flush()
                t = time.thread_time_ns()
                for _ in range(N):
                    fn()
                results[name].append((time.thread_time_ns() - t) / N / 1e3)
    out = {{k: statistics.median(v) for k, v in results.items()}}
    # paired ratios: each repeat measures all three back to back, so machine drift cancels out
    out["trace_ratio"] = statistics.median(t / b for t, b in zip(results["trace"], results["bare"], strict=True))
    out["block_ratio"] = statistics.median(t / b for t, b in zip(results["block"], results["bare"], strict=True))
    print(json.dumps(out))
"""


def bench_span_overhead(n: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        r = fresh(SPAN_CODE.format(n=n, repeats=repeats), env={**os.environ, "BENCH_DIR": tmp})
    table(
        f"span overhead inside a run (sampler on at 1 Hz, run-folder exporter), CPU time of the calling thread, "
        f"median of {repeats} x {n} calls",
        ["what", "us/span", "ratio vs bare (median of paired repeats)", "target"],
        [
            ["bare tracer.start_as_current_span (same provider)", f"{r['bare']:.2f}", "1.00", "-"],
            ["@runtel.trace on a no-op function", f"{r['trace']:.2f}", f"{r['trace_ratio']:.2f}", "<= 1.25"],
            ["with runtel.block(...)", f"{r['block']:.2f}", f"{r['block_ratio']:.2f}", "-"],
        ],
    )


RUN_CODE = """
    import json, os, statistics, time
    t0 = time.perf_counter()
    import runtel
    runtel.configure(dir=os.environ["BENCH_DIR"], sampling=os.environ["BENCH_SAMPLING"] == "1")
    runtel.run_span, runtel.block
    t1 = time.perf_counter()
    if os.environ["BENCH_SDK_FIRST"] == "1":  # an application that already uses OTel has imported the SDK
        import opentelemetry.sdk.trace, opentelemetry.sdk.trace.export, opentelemetry.sdk.resources
    t2 = time.perf_counter()
    with runtel.run_span("cold"):
        pass
    t3 = time.perf_counter()
    # Warm runs, each paired with the file-system floor measured right after it in the same folder: the same
    # files created with plain os calls (a folder, run.json, reproduce.sh, spans.jsonl and, with sampling,
    # metrics.jsonl, then run.json rewritten). Paired, because this VM's disk changes speed minute to minute.
    files = ["run.json", "reproduce.sh", "spans.jsonl"] + (["metrics.jsonl"] if os.environ["BENCH_SAMPLING"] == "1" else [])
    warm, floor = [], []
    for i in range({runs}):
        t = time.perf_counter()
        with runtel.run_span("warm", config={{"lr": 0.1, "layers": [64, 64]}}):
            pass
        warm.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        d = os.path.join(os.environ["BENCH_DIR"], f"floor-{{os.getpid()}}-{{i}}")
        os.mkdir(d)
        for name in files:
            fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"x" * 2000)
            os.close(fd)
        fd = os.open(os.path.join(d, "run.json"), os.O_WRONLY)
        os.pwrite(fd, b"y" * 2500, 0)
        os.close(fd)
        floor.append((time.perf_counter() - t) * 1e3)
    own = sorted(w - f for w, f in zip(warm, floor))
    warm.sort()
    print(json.dumps({{"cold": (t3 - t2) * 1e3, "sdk_import": (t2 - t1) * 1e3, "median": statistics.median(warm),
                      "p95": warm[int(len(warm) * 0.95)], "floor": statistics.median(floor),
                      "own": statistics.median(own), "import": (t1 - t0) * 1e3}}))
"""

PYCRUMBS_CODE = """
    import json, os, statistics, time
    from pathlib import Path
    t0 = time.perf_counter()
    from pycrumbs import tracked
    out = Path(os.environ["BENCH_DIR"])
    @tracked(literal_directory=out, seed_numpy=False, seed_tensorflow=False, seed_torch=False)
    def job():
        pass
    t1 = time.perf_counter()
    job()
    cold = (time.perf_counter() - t1) * 1e3  # the first call, like runtel's cold (imports are reported apart)
    warm = []
    for _ in range({runs}):
        t = time.perf_counter(); job(); warm.append((time.perf_counter() - t) * 1e3)
    warm.sort()
    print(json.dumps({{"cold": cold, "import": (t1 - t0) * 1e3, "median": statistics.median(warm),
                      "p95": warm[int(len(warm) * 0.95)]}}))
"""

KWUTIL_CODE = """
    import json, statistics, time
    t0 = time.perf_counter()
    from kwutil.process_context import ProcessContext
    t1 = time.perf_counter()
    ProcessContext(name="job", config={{"lr": 0.1}}).start().stop()
    cold = (time.perf_counter() - t1) * 1e3  # the first start/stop (imports are reported apart)
    warm = []
    for _ in range({runs}):
        t = time.perf_counter()
        ProcessContext(name="job", config={{"lr": 0.1}}).start().stop()
        warm.append((time.perf_counter() - t) * 1e3)
    warm.sort()
    print(json.dumps({{"cold": cold, "import": (t1 - t0) * 1e3, "median": statistics.median(warm),
                      "p95": warm[int(len(warm) * 0.95)]}}))
"""


def bench_run_span(runs: int, repeats: int) -> None:
    """Cold and warm run cost, runtel with and without sampling, then the peers; medians of fresh processes."""
    rows: list[list[object]] = []
    base: dict[str, float] = {}
    configs = (("runtel run_span, full capture, sampler off", "0"),
               ("runtel run_span, full capture, sampler on (default)", "1"))
    variants = (("natural", "0", None), ("sdk_first", "1", None), ("ram", "0", RAM_DIR))
    by_config: dict[tuple[str, str], list[dict[str, float]]] = {(c, v): [] for _, c in configs for v, _, _ in variants}
    # Interleaved (each repeat runs every configuration and variant once), so sampler off and on see the same
    # minutes of this VM, whose disk alternates between quick and slow stretches.
    for _ in range(repeats):
        for _, sampling in configs:
            for variant, sdk, base_dir in variants:
                if variant == "ram" and RAM_DIR is None:
                    continue
                with tempfile.TemporaryDirectory(dir=base_dir) as tmp:
                    by_config[(sampling, variant)].append(fresh(
                        RUN_CODE.format(runs=runs),
                        env={**os.environ, "BENCH_DIR": tmp, "BENCH_SAMPLING": sampling, "BENCH_SDK_FIRST": sdk}))
    for label, sampling in configs:
        natural, sdk_first, ram = (by_config[(sampling, v)] for v, _, _ in variants)
        r = {k: statistics.median(x[k] for x in natural) for k in natural[0]}
        r_sdk = {k: statistics.median(x[k] for x in sdk_first) for k in sdk_first[0]}
        warm_median = statistics.median([x["median"] for x in natural + sdk_first])
        warm_p95 = statistics.median([x["p95"] for x in natural + sdk_first])
        floor = statistics.median([x["floor"] for x in natural + sdk_first])
        own = statistics.median([x["own"] for x in natural + sdk_first])
        on_ram = f"{statistics.median([x['median'] for x in ram]):.3f}" if ram else "n/a"
        rows.append([label, f"{r['import']:.1f}", f"{r['cold']:.1f}", f"{r['import'] + r['cold']:.1f}",
                     f"{r_sdk['cold']:.1f} (SDK import {r_sdk['sdk_import']:.0f})",
                     f"{warm_median:.3f}", f"{warm_p95:.3f}", f"{floor:.3f}", f"{own:.3f}", on_ram, "-"])
        if sampling == "0":
            base = {"median": warm_median, "first": r["import"] + r["cold"]}
    for label, code in (("pycrumbs @tracked no-op (record file)", PYCRUMBS_CODE),
                        ("kwutil ProcessContext().start().stop()", KWUTIL_CODE)):
        try:
            results = []
            for _ in range(repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    results.append(fresh(code.format(runs=runs), env={**os.environ, "BENCH_DIR": tmp}))
            r = {k: statistics.median(x[k] for x in results) for k in results[0]}
            rows.append([label, f"{r['import']:.1f}", f"{r['cold']:.1f}", f"{r['import'] + r['cold']:.1f}", "-",
                         f"{r['median']:.3f}", f"{r['p95']:.3f}", "-", "-", "-",
                         f"{base['first'] / (r['import'] + r['cold']):.2f} / {base['median'] / r['median']:.2f}"])
        except RuntimeError as exc:
            rows.append([label, "", "not installed" if "ModuleNotFoundError" in str(exc) else "failed: "
                         + str(exc).strip().splitlines()[-1][:60], "", "", "", "", "", "", "", ""])
    table(
        f"run cost, medians of {repeats} fresh processes: import = importing the tool (runtel: + configure + "
        "first use of run_span); cold = the first run (runtel: run_span enter+exit: git, packages, host facts, "
        "providers, the run folder), including the OTel SDK's import, and again with the SDK imported beforehand "
        "as an application already using OTel has; import + cold = from nothing to the end of the first run; "
        f"warm = median/p95 of {runs} later runs in the same process; FS floor = the same files created with "
        "plain os calls right after each run (paired); warm - floor = median of the paired differences; on RAM = "
        "warm median with the run folder on tmpfs (/dev/shm)",
        ["what", "import ms", "cold ms", "import + cold ms", "cold ms, SDK already imported (target <= 50)",
         "warm median ms (target <= 1)", "warm p95 ms", "FS floor ms", "warm - floor ms", "warm on RAM ms",
         "runtel (sampler off) / peer: import + cold / warm"],
        rows,
    )


EXPORT_CODE = """
    import json, os, time, resource
    import runtel
    from runtel import _sdk
    from runtel.exporters.jsonl import JsonlSpanWriter
    runtel.configure(dir=os.environ["BENCH_DIR"], sampling=False)
    N = {n}
    # 1) the run folder's span writer alone, on one core: what the ending thread does per finished span
    #    (encode, journal write, batch of 1,024 spans written as one line), without the span's own creation
    with runtel.run_span("collect") as run:
        spans = []
        rt = _sdk.get_runtime()
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        mem = InMemorySpanExporter()
        rt.provider.add_span_processor(SimpleSpanProcessor(mem))
        for i in range(20_000):
            with runtel.block("s", i=i, phase="bench"):
                pass
        spans = list(mem.get_finished_spans())
        mem.shutdown()
        for processor in rt.span_processors:
            processor.force_flush()  # the run's own batch worker must be idle while the exporter is timed
        writer = JsonlSpanWriter(rt.sinks, batch=1024, delay=3600.0)  # a fresh one: only the batch bound cuts lines
        t = time.process_time()
        for span in spans:
            writer.on_end(span)
        writer.force_flush()
        cpu = time.process_time() - t
        writer.close_run(run.id)
    exporter_rate = len(spans) / cpu
    # 2) end to end: N spans through block() in one run; RSS at every 10% of the way
    rss = []
    t = time.perf_counter()
    with runtel.run_span("million") as run:
        for i in range(N):
            with runtel.block("s"):
                pass
            if i % (N // 10) == 0:
                with open("/proc/self/status") as f:
                    rss.append(int(next(l for l in f if l.startswith("VmRSS")).split()[1]) // 1024)
    wall = time.perf_counter() - t
    lines = sum(1 for _ in open(run.dir / "spans.jsonl"))
    written = sum(len(ss["spans"]) for line in open(run.dir / "spans.jsonl")
                  for rs in json.loads(line)["resourceSpans"] for ss in rs["scopeSpans"])
    print(json.dumps({{"exporter_rate": exporter_rate, "e2e_rate": N / wall, "rss": rss, "written": written,
                      "lines": lines, "n": N}}))
"""


def bench_exporter(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        r = fresh(EXPORT_CODE.format(n=n), env={**os.environ, "BENCH_DIR": tmp})
    table(
        "run-folder JSON exporter",
        ["what", "value", "target"],
        [
            ["span writer alone: spans/s on one core (CPU: encode, journal, lines of 1,024)", f"{r['exporter_rate']:,.0f}",
             ">= 20,000"],
            [f"end to end: {r['n']:,} blocks in one run, spans/s wall", f"{r['e2e_rate']:,.0f}", "-"],
            ["spans on disk / produced (drops when producing faster than writing)",
             f"{r['written']:,} / {r['n'] + 1:,}", "-"],
            ["RSS (MiB) at each 10% of the run", " ".join(str(x) for x in r["rss"]), "flat"],  # type: ignore[union-attr]
        ],
    )


REDACT_CODE = """
    import json, os, statistics, time
    import runtel
    from opentelemetry.sdk.trace import TracerProvider
    from runtel._sdk.scrub import Scrubber
    from runtel.redaction import Redactor

    N, REPEATS = {n}, {repeats}
    tracer = TracerProvider().get_tracer("bench")  # no processor: spans are built, ended, then scrubbed below
    ATTRS = {{"runtel.run.id": "20260101T000000Z-train-abc123", "code.function": "train_step", "epoch": 3,
             "lr": 0.001, "batch_size": 64, "dataset": "cifar10", "device": "cuda:0", "model": "resnet50",
             "optimizer": "adamw", "path": "/data/cifar10/train"}}

    def spans(attrs_for):
        out = []
        for i in range(N):
            with tracer.start_as_current_span("step") as span:
                span.set_attributes(attrs_for(i))
            out.append(span)
        return out

    def per_span(batch, fn):  # CPU time of this thread: other processes on the machine do not count
        t = time.thread_time()
        for span in batch:
            fn(span)
        return (time.thread_time() - t) / len(batch) * 1e6

    scrubber = Scrubber(Redactor())
    same = spans(lambda i: ATTRS)
    fresh_values = spans(lambda i: {{**ATTRS, "dataset": f"cifar10-{{i}}", "path": f"/data/run{{i}}/train",
                                     "model": f"resnet{{i}}", "device": f"cuda:{{i}}"}})
    secret = spans(lambda i: {{**ATTRS, "api_key": "k" * 20}})
    forward = lambda span: span  # what on_end did before: hand the span on
    rows = {{}}
    for label, batch in (("repeated values", same), ("4 of 10 values new on every span", fresh_values),
                         ("one secret attribute (copy built)", secret)):
        rows[label] = statistics.median(per_span(batch, scrubber.span) for _ in range(REPEATS))
        if label.startswith("4"):  # every repeat after the first would hit the cache: clear it each time
            rows[label] = statistics.median(
                (scrubber.redactor.text_results.clear(), per_span(batch, scrubber.span))[1] for _ in range(REPEATS))
    rows["forward only (baseline)"] = statistics.median(per_span(same, forward) for _ in range(REPEATS))

    runtel.configure(dir=os.environ["BENCH_DIR"], sampling=False)
    with runtel.run_span("warm"):
        pass
    big = "x" * 100_000_000
    keys = {{f"k{{i}}": i for i in range(1_000_000)}}
    def run_with(config):  # (CPU time of the process: all threads, not what other processes take; wall)
        c, t = time.process_time(), time.perf_counter()
        with runtel.run_span("big", config=config):
            pass
        return (time.process_time() - c) * 1e3, (time.perf_counter() - t) * 1e3
    for label, config in (("big_string", {{"s": big}}), ("many_keys", keys), ("plain", {{"lr": 0.1}})):
        cpu, wall = zip(*(run_with(config) for _ in range(REPEATS)))
        rows[label + "_ms"], rows[label + "_wall_ms"] = statistics.median(cpu), statistics.median(wall)
    print(json.dumps(rows))
"""


def bench_redaction(n: int, repeats: int) -> None:
    """The scrubbing stage per ended span, side by side with forwarding it; run_span with hostile configs."""
    with tempfile.TemporaryDirectory(dir=RAM_DIR) as tmp:
        r = fresh(REDACT_CODE.format(n=n, repeats=repeats), env={**os.environ, "BENCH_DIR": tmp})
    table(
        f"redaction stage (RunProcessor.on_end's Scrubber) per span of 10 short attributes, CPU time, "
        f"median of {repeats} x {n} spans",
        ["what", "us/span", "target"],
        [[k, f"{r[k]:.2f}", "<= 3" if k != "forward only (baseline)" else "-"]
         for k in ("forward only (baseline)", "repeated values", "4 of 10 values new on every span",
                   "one secret attribute (copy built)")],
    )
    table(
        f"run_span enter+exit with hostile configs (warm, sampler off, run folder on RAM), median of {repeats}",
        ["what", "CPU ms (process)", "wall ms", "target"],
        [
            [label, f"{r[key + '_ms']:.1f}", f"{r[key + '_wall_ms']:.1f}", target]
            for label, key, target in (("config {'lr': 0.1} (baseline)", "plain", "-"),
                                       ("config with one 100 MB string", "big_string", "<= 50"),
                                       ("config with 10^6 keys", "many_keys", "<= 50"))
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--redaction", action="store_true", help="only the redaction section")
    args = parser.parse_args()
    if args.redaction:
        bench_redaction(2_000 if args.quick else 20_000, 3 if args.quick else 7)
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    bench_import(3 if args.quick else 9)
    bench_span_overhead(2_000 if args.quick else 20_000, 3 if args.quick else 7)
    bench_run_span(20 if args.quick else 200, 1 if args.quick else 3)
    bench_exporter(100_000 if args.quick else 1_000_000)
    bench_redaction(2_000 if args.quick else 20_000, 3 if args.quick else 7)


if __name__ == "__main__":
    main()
