"""Secrets stored as key/value *pairs* (HTTP header lists, dict.items(), ASGI bytes headers, argv-style lists)
and webhook URLs are redacted in every file of a real run folder: run.json, spans.jsonl and the rest."""

from __future__ import annotations

import base64
import subprocess
import sys
import textwrap
from pathlib import Path

PY = sys.executable

SENTINELS = [f"S{i}sentinel" for i in range(1, 16)]


def _leaks(runs: Path) -> dict[str, list[str]]:
    """sentinel (or its base64, as bytes are stored) -> the files of ``runs`` that hold it."""
    found: dict[str, list[str]] = {}
    files = [f for f in runs.rglob("*") if f.is_file()]
    for sentinel in SENTINELS:
        forms = [sentinel.encode(), base64.b64encode(sentinel.encode())[:12]]
        for f in files:
            data = f.read_bytes()
            if any(form in data for form in forms):
                found.setdefault(sentinel, []).append(str(f.relative_to(runs)))
    return found


def test_the_audit_repro_leaks_nothing(tmp_path: Path) -> None:
    """The audit's command, verbatim (its ``__exit__`` call fails on the Run object; the run is still
    written at exit), then grep every file of the run folder."""
    code = "import runtel; runtel.run_span('t', config={'headers':[('X-Api-Key','S1sentinel')]}).__enter__().__exit__(None,None,None)"
    subprocess.run([PY, "-c", code], cwd=tmp_path, capture_output=True, timeout=60, check=False)
    runs = tmp_path / "runs"
    assert list(runs.glob("*/run.json")), "the repro wrote no run"
    assert _leaks(runs) == {}


def test_pairs_and_webhooks_leave_no_trace_in_a_real_run(tmp_path: Path) -> None:
    """Config, metadata, run attributes, span attributes set directly and captured call arguments."""
    job = textwrap.dedent("""
        import runtel
        from opentelemetry import trace

        @runtel.trace(capture=True)
        def call(headers, asgi, argv, items):
            span = trace.get_current_span()
            span.set_attribute("cmd", ["x", "--password", "S9sentinel"])
            span.set_attribute("hdrs", '[["X-Api-Key","S10sentinel"]]')

        config = {
            "headers": [("X-Api-Key", "S1sentinel"), ("Authorization", "S2sentinel")],
            "env": [["DB_PASSWORD", "S3sentinel"]],
            "asgi": [(b"authorization", b"Bearer S4sentinel"), (b"x-api-key", b"S5sentinel")],
            "argv": ["train.py", "--token", "S6sentinel"],
            "hook": "https://hooks.slack.com/services/T000/B000/S7sentinel",
            "items": {"api_key": "S8sentinel"}.items(),
        }
        with runtel.run_span("t", config=config) as run:
            run.add_metadata(upstream=[("x-api-key", "S11sentinel")])
            run.set_attributes(discord="https://discord.com/api/webhooks/123/S12sentinel",
                               pairs=[("cookie", "S13sentinel")])
            call([("X-Api-Key", "S14sentinel")], [(b"authorization", b"S15sentinel")], ["--token", "S6sentinel"],
                 {"api_key": "S8sentinel"}.items())
    """)
    done = subprocess.run([PY, "-c", job], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    runs = tmp_path / "runs"
    record = next(runs.glob("*/run.json")).read_text()
    assert "[REDACTED]" in record and "hooks.slack.com/services/[REDACTED]" in record
    assert _leaks(runs) == {}
    assert not [s for s in SENTINELS if s in done.stdout + done.stderr]
