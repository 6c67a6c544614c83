"""Reading very large runs: wall time and peak RSS of show / compare / export / report at 100k and 1M spans.

Usage: python benchmarks/stream_bench.py [--sizes 100000,1000000] [--repeat 2] [--baseline REV]

The runs are real: ``run_span`` around a loop of ``block("epoch")`` each holding nine ``block("step")``
(sampler on, as by default), recorded once per size (two runs per size, for ``compare``) and cached under
``build/stream_bench/``. Every command runs in a fresh process under ``/usr/bin/time`` (wall, CPU and
peak RSS of that process); the run with the least CPU of ``--repeat`` is printed. Side by side: with msgspec (the ``fast``
extra) and without (the stdlib ``json`` path), and with ``--baseline REV`` the same commands of an older
revision of this repository (``git archive REV src``), so the ratios come from one run on one machine.
Targets (issue 15): ``show`` of 1M spans <= 5 s and <= 150 MB RSS, of 100k spans <= 0.8 s.
``export`` sends OTLP http/json to a local HTTP sink in this process (it answers 200 and drops the body).
"""

from __future__ import annotations

import argparse
import http.server
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import table

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "stream_bench"
PY = sys.executable

JOB = """
import sys, runtel
n = int(sys.argv[1])
with runtel.run_span(sys.argv[2]):
    for e in range(n // 10):
        with runtel.block("epoch"):
            for s in range(9):
                with runtel.block("step"):
                    pass
"""

#: run the CLI with msgspec disabled (the stdlib json path)
NO_FAST = ("import sys; from runtel.rundir import reader; reader._fast.append(None); "
           "from runtel.cli import main; sys.exit(main(sys.argv[1:]))")
CLI = "import sys; from runtel.cli import main; sys.exit(main(sys.argv[1:]))"


def build(n: int) -> Path:
    """A runs folder with two real runs of ``n`` spans each (cached)."""
    root = CACHE / f"runs-{n}"
    done = root / ".complete"
    if done.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_"))}
    env.update({"RUNTEL_DIR": str(root), "RUNTEL_GPU": "none", "PYTHONPATH": str(ROOT / "src")})
    for name in ("a", "b"):
        t = time.perf_counter()
        subprocess.run([PY, "-c", JOB, str(n), name], env=env, check=True)
        print(f"recorded {n:,} spans ({name}) in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    done.write_text("")
    return root


def _baseline_src(rev: str) -> Path:
    out = CACHE / f"src-{rev}"
    if not out.exists():
        out.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "src"


class _Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def measure(code: str, src: Path, args: list[str], env: dict[str, str], repeat: int) -> tuple[float, float, float]:
    """(wall s, CPU s (user + system), peak RSS MiB) of ``python -c code args`` under /usr/bin/time, the
    run with the least CPU of ``repeat`` (CPU time is what a loaded machine disturbs least)."""
    best: tuple[float, float, float] | None = None
    for _ in range(repeat):
        proc = subprocess.run(["/usr/bin/time", "-f", "@@ %e %U %S %M", PY, "-c", code, *args], capture_output=True,
                              text=True, env={**env, "PYTHONPATH": str(src)})
        m = re.search(r"@@ ([\d.]+) ([\d.]+) ([\d.]+) (\d+)", proc.stderr)
        if proc.returncode != 0 or m is None:
            raise RuntimeError(f"{args} failed: {proc.stderr[-2000:]}")
        got = (float(m.group(1)), float(m.group(2)) + float(m.group(3)), int(m.group(4)) / 1024)
        best = got if best is None or got[1] < best[1] else best
    assert best is not None
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--baseline", metavar="REV", help="also time this git revision's src (e.g. a commit of main)")
    parser.add_argument("--baseline-max", type=int, default=100_000, help="largest size the baseline is run at")
    parser.add_argument("--commands", help="comma-separated subset, e.g. 'show,show --json,compare'")
    opts = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_"))}
    env["COLUMNS"] = "100"
    variants = [("msgspec", CLI, ROOT / "src"), ("json", NO_FAST, ROOT / "src")]
    if opts.baseline:
        variants.append((f"base {opts.baseline[:9]}", CLI, _baseline_src(opts.baseline)))
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in opts.sizes.split(",")):
            root = build(n)
            runs = sorted(p for p in root.iterdir() if p.is_dir())
            a, b = str(runs[0]), str(runs[1])
            size_mb = sum(f.stat().st_size for f in runs[0].glob("spans*.jsonl")) / 2**20  # rotated at 256 MiB
            commands = {
                "show": ["show", a, "--dir", str(root)],
                "show --json": ["show", a, "--json", "--dir", str(root)],
                "compare": ["compare", a, b, "--dir", str(root)],
                "export chrome-trace": ["export", "--format", "chrome-trace", "--no-children", "-o",
                                        f"{tmp}/trace.json", a, "--dir", str(root)],
                "export otlp": ["export", a, "--endpoint", endpoint, "--protocol", "http/json", "--dir", str(root)],
                "report": ["report", a, "-o", f"{tmp}/report.html", "--dir", str(root)],
            }
            if opts.commands:
                commands = {k: v for k, v in commands.items() if k in opts.commands.split(",")}
            rows = []
            for label, args in commands.items():
                row: list[object] = [label]
                for name, code, src in variants:
                    if name.startswith("base") and n > opts.baseline_max:
                        row.append("-")
                        continue
                    wall, cpu, rss = measure(code, src, args, env, opts.repeat)
                    row.append(f"{wall:.2f} / {cpu:.2f} s, {rss:.0f} MiB")
                rows.append(row)
            table(f"{n:,} spans per run ({size_mb:.0f} MiB of spans*.jsonl): wall / CPU, peak RSS (least CPU of "
                  f"{opts.repeat})",
                  ["command", *[v[0] for v in variants]], rows)
    server.shutdown()


if __name__ == "__main__":
    main()
