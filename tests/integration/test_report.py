"""``runtel report``: the HTML file opened in a real headless Chromium with the network shut off.

Chromium comes from Debian (``make test`` installs it where it can). Without it the tests skip with
the reason, except under ``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "test-artifacts"

JOB = """
import runtel, time
for lr in (0.1, 0.2):
    with runtel.run_span("train", config={"lr": lr}) as run:
        for epoch in range(4):
            with runtel.block("epoch", index=epoch):
                t = time.time()
                while time.time() - t < 0.25:
                    pass
            run.log(step=epoch, loss=lr / (epoch + 1))
        run.set_result(accuracy=0.9 - lr)
        print(run.id)
"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing under CI=true: `make test` installs Debian's chromium as root")
        pytest.skip("LOUD SKIP: no chromium on PATH (apt-get install chromium, or run `make test` as root)")
    return path


def _browser(html_file: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium as this machine runs it: no sandbox (root), no GPU, no network of any kind."""
    args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'profile'}", "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", *extra, html_file.as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    base = tmp_path_factory.mktemp("report")
    env = {**os.environ, "RUNTEL_DIR": str(base / "runs"), "RUNTEL_SAMPLE_INTERVAL": "0.1",
           "RUNTEL_METRIC_INTERVAL": "0.2"}
    out = subprocess.run([PY, "-c", JOB], env=env, cwd=base, capture_output=True, text=True, timeout=120, check=True)
    return base, out.stdout.split()


def _report(base: Path, ids: list[str], name: str) -> Path:
    target = base / name
    subprocess.run([PY, "-m", "runtel", "report", *ids, "-o", str(target)], cwd=base, check=True, timeout=120,
                   env={**os.environ, "RUNTEL_DIR": str(base / "runs")}, capture_output=True, text=True)
    return target


def _status(dom: str) -> dict[str, object]:
    match = re.search(r'<pre id="report-status"[^>]*>(.*?)</pre>', dom, flags=re.S)
    assert match, "the report's script did not run"
    return dict(json.loads(match.group(1).replace("&quot;", '"')))


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]


@pytest.mark.parametrize("which", ["one run", "comparison"])
def test_report_renders_offline_in_chromium(which: str, two_runs: tuple[Path, list[str]], tmp_path: Path) -> None:
    """Charts exist with their series and points, the timeline has every span, no console error; screenshot."""
    base, ids = two_runs
    chosen = ids[:1] if which == "one run" else ids
    page = _report(base, chosen, f"{which.replace(' ', '-')}.html")
    text = page.read_text(encoding="utf-8")
    assert "<script src" not in text and "<link" not in text  # everything inline
    assert "default-src 'none'" in text  # and the page may not fetch anything
    dom = _browser(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    status = _status(dom.stdout)
    assert _console_errors(dom.stderr) == []
    assert status["runs"] == len(chosen)
    assert status["spans"] == 5 * len(chosen)  # the run span and four epochs each
    charts, series, points = int(status["charts"]), list(status["series"]), list(status["points"])  # type: ignore[call-overload]
    assert charts >= 6 * len(chosen) and len(series) == charts and all(s >= 1 for s in series)
    assert max(points) >= 4, points  # metrics every 0.2 s over ~1 s, and the 4-step loss series
    # resource series are drawn as steps (a point is written only when a value changed), result series by step
    results = dom.stdout.count("runtel.result.")
    assert 0 < int(status["stepped"]) < charts and results > 0  # type: ignore[call-overload]
    if which == "comparison":
        assert "runtel.result.loss by step (overlaid)" in dom.stdout and series[0] == 2 and points[0] == 4
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"report-{which.replace(' ', '-')}.png"
    taken = _browser(page, tmp_path, "--window-size=1300,2400", f"--screenshot={shot}")
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]


CHILD_JOB = """
import runtel, time
with runtel.run_span("train"):
    for epoch in range(3):
        with runtel.block("epoch", index=epoch):
            t = time.process_time()
            while time.process_time() - t < 0.01:
                pass
"""


def test_a_wrapper_runs_report_holds_its_commands_runs(tmp_path: Path) -> None:
    """`runtel report` of a `runtel run` wrapper shows the command's run after it (its timeline, its blocks with
    their joules), in Chromium; the wrapper's own spans are only its run span."""
    env = {**os.environ, "RUNTEL_DIR": str(tmp_path / "runs"), "RUNTEL_SAMPLE_INTERVAL": "10"}
    subprocess.run([PY, "-m", "runtel", "run", "-q", "--name", "wrapper", "--", PY, "-c", CHILD_JOB], env=env,
                   cwd=tmp_path, check=True, timeout=120, capture_output=True, text=True)
    page = _report(tmp_path, ["latest"], "wrapper.html")
    text = page.read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script id="report-data"[^>]*>(.*?)</script>', text, flags=re.S).group(1))  # type: ignore[union-attr]
    wrapper, child = data["runs"]
    assert wrapper["name"] == "wrapper" and wrapper["child_of"] is None and wrapper["blocks"] == []
    assert child["name"] == "train" and child["child_of"] == wrapper["id"]
    assert [b["name"] for b in child["blocks"]] == ["epoch"] * 3
    assert all(b["usage"]["energy.total"] > 0 for b in child["blocks"])  # estimated or measured, never blank
    dom = _browser(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_errors(dom.stderr) == []
    status = _status(dom.stdout)
    assert status["runs"] == 2 and status["spans"] == 1 + 4  # the wrapper's run span; train and its 3 epochs
    assert "<h3>Child run train" in dom.stdout and "<h2>Comparison</h2>" not in dom.stdout


def test_a_report_shows_a_bounded_number_of_child_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_CHILD_RUNS the page counts the child runs it left out, earliest kept; nested ones included."""
    from runtel.query import report

    job = """
import runtel
with runtel.run_span("sweep"):
    for i in range(3):
        with runtel.run_span(f"trial-{i}"):
            with runtel.run_span(f"inner-{i}"):
                pass
"""
    env = {**os.environ, "RUNTEL_DIR": str(tmp_path / "runs"), "RUNTEL_SAMPLING": "false"}
    subprocess.run([PY, "-c", job], env=env, cwd=tmp_path, check=True, timeout=120, capture_output=True, text=True)
    (sweep,) = [d for d in (tmp_path / "runs").iterdir() if "-sweep-" in d.name]
    monkeypatch.setattr(report, "MAX_CHILD_RUNS", 4)
    text = report.render_report([sweep])
    data = json.loads(re.search(r'<script id="report-data"[^>]*>(.*?)</script>', text, flags=re.S).group(1))  # type: ignore[union-attr]
    assert [r["name"] for r in data["runs"]] == ["sweep", "trial-0", "inner-0", "trial-1", "inner-1"]
    assert data["runs"][2]["child_of"] == data["runs"][1]["id"]  # a nested run names its own parent
    assert any("2 more child runs not shown" in p for p in data["problems"]), data["problems"]


HOSTILE_JOB = """
import runtel
from opentelemetry import trace
with runtel.run_span("hostile") as run:
    for value in (float("nan"), float("inf"), float("-inf"), 1.0):
        with runtel.block("odd"):
            span = trace.get_current_span()
            for key in ("runtel.usage.cpu.time", "runtel.usage.energy.total", "runtel.usage.memory.rss.max.combined"):
                span.set_attribute(key, value)
    run.log(step=0, loss=float("nan"))
    run.log(step=1, loss=float("inf"))
    run.set_result(accuracy=float("nan"))
print(run.id)
"""


def _job_report(tmp_path: Path, job: str, name: str) -> tuple[Path, str]:
    """Run ``job`` (it prints its run ids), write their report: the page and its embedded data's JSON text."""
    env = {**os.environ, "RUNTEL_DIR": str(tmp_path / "runs"), "RUNTEL_SAMPLING": "false"}
    out = subprocess.run([PY, "-c", job], env=env, cwd=tmp_path, check=True, timeout=120,
                         capture_output=True, text=True)
    page = _report(tmp_path, out.stdout.split(), name)
    text = page.read_text(encoding="utf-8")
    raw = re.search(r'<script id="report-data"[^>]*>(.*?)</script>', text, flags=re.S).group(1)  # type: ignore[union-attr]
    return page, raw

def test_a_report_with_hostile_numbers_still_renders(tmp_path: Path) -> None:
    """Usage figures user code set to NaN and infinities: the page's data is valid JSON (the strings OTLP/JSON
    uses), its script runs in Chromium without a console error and lists the blocks."""
    page, raw = _job_report(tmp_path, HOSTILE_JOB, "hostile.html")

    def reject(token: str) -> None:
        raise AssertionError(f"bare {token} in the page's JSON")

    data = json.loads(raw, parse_constant=reject)
    assert sorted(str(b["usage"]["cpu.time"]) for b in data["runs"][0]["blocks"]) == \
        ["-Infinity", "1.0", "Infinity", "NaN"]
    dom = _browser(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_errors(dom.stderr) == []
    assert _status(dom.stdout)["runs"] == 1


MARKUP_JOB = """
import runtel
config = {"comment": "<!-- <script>", "close": "</script><script>alert(1)</script>", "amp": "&lt; \\u2028"}
with runtel.run_span("markup", config=config) as run:
    with runtel.block("<!-- <script>"):
        pass
    run.set_result(note="</script><!--")
print(run.id)
"""


def test_a_report_with_markup_in_its_strings_still_renders(tmp_path: Path) -> None:
    """Recorded strings holding ``<!-- <script>`` (which, unescaped, puts the HTML parser in the "script data
    double escaped" state so the rest of the page is script text) and ``</script><script>...``: Chromium
    shows the run section with those strings as text, and runs no script but the page's three."""
    page, raw = _job_report(tmp_path, MARKUP_JOB, "markup.html")
    config = json.loads(raw)["runs"][0]["config"]
    assert config == {"comment": "<!-- <script>", "close": "</script><script>alert(1)</script>", "amp": "&lt; \u2028"}
    dom = _browser(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_errors(dom.stderr) == []
    status = _status(dom.stdout)
    assert status.get("runs") == 1 and status["spans"] == 2, status  # the run span and its block ({}: no script ran)
    assert "<h2>Run markup" in dom.stdout and "<h3>Config</h3>" in dom.stdout and "<h3>Results</h3>" in dom.stdout
    assert "<td>&lt;!-- &lt;script&gt;</td>" in dom.stdout  # shown as text, not parsed as markup
    assert "<td>&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;</td>" in dom.stdout
    assert "<td>&amp;lt; \u2028</td>" in dom.stdout
    assert dom.stdout.count("<script") == 3  # uPlot, the data and the page's own: nothing the run recorded
