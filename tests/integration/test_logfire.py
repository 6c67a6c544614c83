"""logfire and runtel record one trace (docs/jaeger-grafana.md, "logfire"), with real logfire (``send_to_logfire=False``).

logfire installs its own re-assignable ``ProxyTracerProvider`` over an SDK provider; runtel adds its
processor to that SDK provider (as to any application's own), so logfire's spans inside runtel's blocks
land in the run folder and runtel's spans reach logfire's exporters (here an in-memory one), all in one
trace. A TracerProvider set up after runtel's first run gets one warning that says what to do. Each case
is a real subprocess: the global TracerProvider can be set once per process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("logfire", reason="LOUD SKIP: logfire is not installed (it is in the dev extra)")

SCRIPT = textwrap.dedent("""
    import json, sys
    import logfire, runtel
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from runtel.rundir.reader import read_spans

    exporter = InMemorySpanExporter()
    def configure():
        logfire.configure(send_to_logfire=False, console=False, inspect_arguments=False,
                          additional_span_processors=[SimpleSpanProcessor(exporter)])

    late = sys.argv[1] == "late"
    if not late:
        configure()
    runs = []
    with runtel.run_span("job") as run:
        runs.append(run)
        with runtel.block("step"):
            with logfire.span("logfire-inner"):
                logfire.info("hello {who}", who="world")
    if late:
        configure()
        with runtel.run_span("second") as run:
            runs.append(run)
            with logfire.span("logfire-late"):
                pass
    runtel.flush()
    print(json.dumps({
        "logfire": [[s.name, format(s.context.trace_id, "032x"), format(s.parent.span_id, "016x") if s.parent else None,
                     format(s.context.span_id, "016x")] for s in exporter.get_finished_spans()],
        "runtel": [[s.name, s.trace_id, s.parent_span_id, s.span_id] for r in runs for s in read_spans(r.dir)],
    }))
""")


def _run(mode: str, tmp_path: Path, clean_env: dict[str, str]) -> tuple[dict[str, list[list[str]]], str]:
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs"), "LOGFIRE_IGNORE_NO_CONFIG": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1]), proc.stderr


def test_logfire_and_runtel_share_every_span_in_one_trace(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """logfire configured first: both sides get all five spans, same ids, one trace, logfire's under runtel's block."""
    got, stderr = _run("early", tmp_path, clean_env)
    logfire_spans = {tuple(s) for s in got["logfire"]}
    runtel_spans = {tuple(s) for s in got["runtel"]}
    names = {s[0] for s in runtel_spans}
    assert {"job", "step", "logfire-inner", "hello {who}"} <= names, names
    assert logfire_spans == runtel_spans, "both sides hold the same spans (names, trace, parent and span ids)"
    assert len({s[1] for s in runtel_spans}) == 1, "one trace"
    by_name = {s[0]: s for s in runtel_spans}
    assert by_name["logfire-inner"][2] == by_name["step"][3], "logfire's span is a child of runtel's block"
    assert "TracerProvider was set up after" not in stderr


def test_a_provider_set_up_after_the_first_run_gets_one_warning_saying_what_to_do(
        tmp_path: Path, clean_env: dict[str, str]) -> None:
    """logfire.configure() after runtel's first run: one clear warning (set it up before the first run_span)."""
    got, stderr = _run("late", tmp_path, clean_env)
    assert stderr.count("a TracerProvider was set up after runtel's first run") == 1, stderr
    assert "before runtel's first run_span" in stderr
    assert {s[0] for s in got["runtel"]} >= {"job", "step", "second"}


def test_a_plain_sdk_provider_set_up_late_gets_the_warning_once(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """The same for a plain SDK TracerProvider set as the global one after runtel's first run, twice: one warning."""
    script = textwrap.dedent("""
        import runtel
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        with runtel.run_span("first"):
            pass
        for _ in range(2):
            trace.set_tracer_provider(TracerProvider())
            with runtel.run_span("next"):
                pass
    """)
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("a TracerProvider was set up after runtel's first run") == 1, proc.stderr
