"""`runtel compare` on real runs: two `runtel run` wrappers around a script with blocks, compared block by block."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PY = sys.executable
SRC = Path(__file__).resolve().parents[2] / "src"
RSS = "runtel.usage.memory.rss.max.combined"

JOB = textwrap.dedent("""
    import sys, time
    import runtel

    steps = int(sys.argv[1])
    with runtel.run_span("job"):
        with runtel.block("prepare"):
            data = bytearray(int(sys.argv[2]) * 2**20)
            data[::4096] = b"x" * len(data[::4096])
            time.sleep(0.25)
        for i in range(steps):
            with runtel.block("step", index=i):
                time.sleep(0.03)
        if steps > 3:
            with runtel.block("extra"):
                time.sleep(0.01)
""")


@dataclass
class Runs:
    """Two recorded runs of the job: A (3 steps, 20 MiB) and B (6 steps, 120 MiB), and how to call the CLI."""

    root: Path
    env: dict[str, str]
    a: dict[str, Any]
    b: dict[str, Any]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "runtel", *args], env=self.env, cwd=self.root.parent, capture_output=True,
                              text=True, timeout=60)


def _spans(run_dir: Path) -> list[dict[str, Any]]:
    """Raw OTLP spans of a run folder with attributes decoded to plain values."""
    out = []
    for line in (run_dir / "spans.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        for rs in json.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    attrs = {}
                    for kv in span.get("attributes", []):
                        value = kv["value"]
                        attrs[kv["key"]] = next(iter(value.values())) if value else None
                    out.append({**span, "attrs": attrs})
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Record two wrapper runs (with the job's child run inside each) into one folder."""
    base = tmp_path_factory.mktemp("compare")
    root = base / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_", "TRACEPARENT", "TRACESTATE"))}
    env.update(RUNTEL_DIR=str(root), RUNTEL_SAMPLING="true", RUNTEL_SAMPLE_INTERVAL="0.05", RUNTEL_GPU="none",
               PYTHONPATH=str(SRC) + os.pathsep + env.get("PYTHONPATH", ""))
    script = base / "job.py"
    script.write_text(JOB)
    ids = []
    for name, steps, mib in (("a", "3", "20"), ("b", "6", "120")):
        proc = subprocess.run([PY, "-m", "runtel", "run", "--name", f"run-{name}", "--", PY, str(script), steps, mib],
                              env=env, cwd=base, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        ids.append(next(json.loads((p / "run.json").read_text()) for p in root.iterdir() if p.is_dir()
                        if json.loads((p / "run.json").read_text()).get("name") == f"run-{name}"))
    yield Runs(root, env, ids[0], ids[1])


def _child_dir(runs: Runs, wrapper: dict[str, Any]) -> Path:
    """The folder of the job's own run, started under ``wrapper``."""
    for p in (d for d in runs.root.iterdir() if d.is_dir()):
        record = json.loads((p / "run.json").read_text())
        if (record.get("parent") or {}).get("run_id") == wrapper["id"]:
            return p
    raise AssertionError("no child run")


def test_compare_json_matches_spans(runs: Runs) -> None:
    """--json block counts, total times and peak RSS equal the values aggregated from each run's spans."""
    proc = runs.cli("compare", runs.a["id"], runs.b["id"], "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [r["id"] for r in result["runs"]] == [runs.a["id"], runs.b["id"]]
    assert result["baseline"] == runs.a["id"]
    blocks = {b["path"]: b for b in result["blocks"]}
    # paths start below the wrapper's run span, so differently named wrappers still match
    assert {"job", "job/prepare", "job/step"} <= blocks.keys()
    step = blocks["job/step"]["metrics"]
    assert step["count"]["values"] == [3, 6]
    assert step["count"]["diff"] == [0, 3] and step["count"]["ratio"] == [1, 2]
    for i, wrapper in enumerate((runs.a, runs.b)):
        spans = _spans(_child_dir(runs, wrapper))
        steps = [s for s in spans if s["name"] == "step"]
        total = sum(int(s["endTimeUnixNano"]) - int(s["startTimeUnixNano"]) for s in steps) / 1e9
        assert step["total_s"]["values"][i] == pytest.approx(total, abs=1e-6)
        assert step["max_s"]["values"][i] >= step["mean_s"]["values"][i] >= 0.03
        (prepare,) = [s for s in spans if s["name"] == "prepare"]
        assert blocks["job/prepare"]["metrics"]["peak_rss_bytes"]["values"][i] == float(prepare["attrs"][RSS])
    rss = blocks["job/prepare"]["metrics"]["peak_rss_bytes"]
    # B holds 100 MiB more than A while in "prepare"
    assert rss["diff"][1] == pytest.approx(100 * 2**20, rel=0.15)
    assert rss["ratio"][1] == pytest.approx(rss["values"][1] / rss["values"][0])
    extra = blocks["job/extra"]
    assert extra["present"] == [False, True]
    assert extra["metrics"]["count"]["values"] == [None, 1] and extra["metrics"]["count"]["diff"] == [None, None]


def test_compare_run_level_from_record(runs: Runs) -> None:
    """The run-level section reports run.json values: wall time, peak RSS, CPU mean, energy, emissions."""
    proc = runs.cli("compare", runs.a["id"], runs.b["id"], "--json")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)["run"]["metrics"]
    for i, record in enumerate((runs.a, runs.b)):
        usage = record["resource_usage"]
        assert metrics["wall_s"]["values"][i] == pytest.approx(record["duration_s"])
        assert metrics["peak_rss_bytes"]["values"][i] == usage["max_ram"]["combined"]["max_rss_bytes"]
        assert metrics["cpu_mean_cores"]["values"][i] == pytest.approx(
            usage["cpu_utilization"]["combined"]["mean_sum_fraction"])
        assert metrics["energy_j"]["values"][i] == pytest.approx(usage["energy"]["total_joules"])
        assert metrics["emissions_g"]["values"][i] == pytest.approx(usage["emissions"]["grams_co2eq"])
    wall = metrics["wall_s"]
    assert wall["diff"][1] == pytest.approx(wall["values"][1] - wall["values"][0])
    assert metrics["peak_rss_bytes"]["values"][1] > metrics["peak_rss_bytes"]["values"][0] + 80 * 2**20


def test_compare_table_output(runs: Runs) -> None:
    """The human output names both runs, every block, and shows ratios against the baseline."""
    proc = runs.cli("compare", runs.a["id"][:22], runs.b["id"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert runs.a["id"] in out and runs.b["id"] in out and "(baseline)" in out
    for name in ("prepare", "step", "extra", "peak RSS", "wall time"):
        assert name in out
    assert "×2.00" in out  # 6 steps vs 3


def test_compare_three_runs_with_dir_flag(runs: Runs) -> None:
    """--dir selects the folder and three runs (one repeated) compare against the first."""
    env = {k: v for k, v in runs.env.items() if k != "RUNTEL_DIR"}
    proc = subprocess.run([PY, "-m", "runtel", "compare", runs.b["id"], runs.a["id"], runs.b["id"], "--dir",
                           str(runs.root), "--json"], env=env, cwd=runs.root.parent, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    step = {b["path"]: b for b in result["blocks"]}["job/step"]["metrics"]["count"]
    assert step["values"] == [6, 3, 6] and step["ratio"] == [1, 0.5, 1]


def test_compare_unknown_run(runs: Runs) -> None:
    """An unknown run is one error line on stderr and exit code 1, no traceback."""
    proc = runs.cli("compare", runs.a["id"], "no-such-run")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["runtel: error: no run matches 'no-such-run' in " + str(runs.root)]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
