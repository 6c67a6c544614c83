"""``runtel report``: one self-contained HTML file of one or more runs, for a browser with no network.

For each run: the summary, results and config; a timeline of its spans (bars over time, one lane per
thread or overlap); every sampled metric over time (CPU, memory, GPU, power ...) with the run's
top-level blocks marked; the per-block usage table; artifacts and sources; then its child runs the same
way (a ``runtel run`` wrapper's spans are only its run span: the command's runs hold the rest). For several runs, first a
comparison: final results side by side and each ``run.log`` series overlaid. The data come from the
same reading as ``runtel export --format chrome-trace`` (:func:`runtel.query.chrome_trace.iter_chrome_trace`),
streamed: the timeline keeps the :data:`MAX_TIMELINE_SPANS` longest spans of a run and counts the rest,
so a run of a million spans makes a page of the same size as one of five thousand.

Charts are drawn by uPlot (MIT, 51 KB minified, vendored in ``assets/`` from the npm package
``uplot@1.6.32``): small and fast enough for an hour of 1 Hz samples per metric. Everything, the
library included, is inlined into the one file; long series are thinned to :data:`MAX_POINTS` points
(keeping each bucket's minimum and maximum, so peaks stay visible) to bound the file's size.
"""

from __future__ import annotations

import heapq
import html
import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from runtel import semconv
from runtel.query.chrome_trace import iter_chrome_trace
from runtel.query.energy import cpu_energy_factor, with_estimated_energy
from runtel.query.nesting import with_nested_runs
from runtel.rundir.reader import read_record
from runtel.rundir.schema import RunRecord
from runtel.values.jsonable import finite_json

__all__ = ("MAX_CHILD_RUNS", "MAX_POINTS", "render_report", "script_json", "write_report")

#: points kept per metric series (min and max of each bucket), so an hour of 1 Hz samples stays small
MAX_POINTS = 1200
#: spans drawn on the timeline per run: the longest, kept in a heap while the spans stream past, so a run
#: of any size costs this many; the page says "the N longest of M spans" (the rest are counted)
MAX_TIMELINE_SPANS = 5000
#: child runs (nested runs, the runs of child processes, a ``runtel run`` command's) shown after a run, the
#: earliest first; the rest are counted on the page. A wrapper's own spans are only its run span: without its
#: children a ``runtel run`` report would have no timeline and no blocks
MAX_CHILD_RUNS = 50


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """At most ~MAX_POINTS points: each bucket's minimum and maximum, in time order."""
    if len(points) <= MAX_POINTS:
        return points
    size = max(1, len(points) * 2 // MAX_POINTS)
    out: list[tuple[float, float]] = []
    for i in range(0, len(points), size):
        bucket = points[i:i + size]
        low = min(bucket, key=lambda p: p[1])
        high = max(bucket, key=lambda p: p[1])
        out.extend(sorted({low, high}))
    return out


def _usage_row(name: str, dur_ms: float, attributes: Mapping[str, Any]) -> dict[str, Any]:
    prefix = semconv.USAGE_PREFIX
    usage = {k[len(prefix):]: v for k, v in attributes.items() if isinstance(k, str) and k.startswith(prefix)}
    return {"name": name, "ms": round(dur_ms, 3), "usage": usage}


class _RunEvents:
    """What the page keeps of one run's events while they stream past: the longest spans, every counter."""

    def __init__(self) -> None:
        self.longest: list[tuple[float, int, dict[str, Any]]] = []  # a min-heap of (dur, n, event)
        self.spans = 0
        self.counters: list[dict[str, Any]] = []

    def add(self, event: dict[str, Any]) -> None:
        ph = event.get("ph")
        if ph == "X":
            self.spans += 1
            item = (float(event.get("dur") or 0), self.spans, event)
            if len(self.longest) < MAX_TIMELINE_SPANS:
                heapq.heappush(self.longest, item)
            elif item[0] > self.longest[0][0]:
                heapq.heapreplace(self.longest, item)
        elif ph == "C":
            self.counters.append(event)


def _run_data(events: _RunEvents, record: RunRecord, origin_ns: int) -> dict[str, Any]:
    """What the page needs of one run: spans, metric series, blocks, summary (all plain JSON)."""
    longest = sorted(events.longest, key=lambda item: (-item[0], item[1]))  # the longest first, as written
    shown = sorted((e for _, _, e in longest), key=lambda e: float(e.get("ts") or 0))
    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for e in events.counters:
        cat = str(e.get("cat") or "")
        step = cat[5:] if cat.startswith("step ") else ""  # a run.log series: plotted by step, not time
        x = float(step) if step.lstrip("-").replace(".", "", 1).isdigit() else round(float(e["ts"]) / 1e6, 3)
        for label, value in (e.get("args") or {}).items():
            series.setdefault(str(e.get("name")), {}).setdefault(str(label), []).append((x, float(value)))
    metrics = {name: {label: _thin(sorted(points)) for label, points in by_label.items()}
               for name, by_label in sorted(series.items())}
    top = [e for e in shown if e.get("cat") == semconv.KIND_BLOCK]
    factor = cpu_energy_factor(record)  # a short block's CPU estimate is its cpu.time x this (query.energy)
    blocks = [_usage_row(str(e.get("name")), float(e.get("dur") or 0) / 1000,
                         with_estimated_energy(e.get("args") or {}, factor))
              for e in shown if e.get("cat") == semconv.KIND_BLOCK]
    results = record.get("results") or {}
    final = results.get("final") if isinstance(results, Mapping) else None
    return {
        "id": str(record.get("id") or ""),
        "name": str(record.get("name") or ""),
        "status": str(record.get("status") or ""),
        "duration_s": record.get("duration_s"),
        "start_s": 0 if not origin_ns else round((int(record.get("start_time_unix_nano") or origin_ns) - origin_ns) / 1e9, 6),
        "config": record.get("config") if isinstance(record.get("config"), Mapping) else {},
        "results": dict(final) if isinstance(final, Mapping) else {},
        "spans": [[str(e.get("name")), round(float(e["ts"]) / 1e6, 6), round(float(e.get("dur") or 0) / 1e6, 6),
                   int(e.get("tid") or 0)] for e in shown],
        "spans_total": events.spans,
        "marks": [round(float(e["ts"]) / 1e6, 6) for e in top[:200]],
        "metrics": metrics,
        "blocks": blocks[:2000],
        "artifacts": {k: (v.get("path") if isinstance(v, Mapping) else None)
                      for k, v in (record.get("artifacts") or {}).items()},
        "sources": [s.get("path") or s.get("run_id") for s in (record.get("sources") or []) if isinstance(s, Mapping)],
    }


#: what :func:`script_json` spells as a JSON escape: ``<`` ``>`` ``&`` (so no ``</script``, ``<!--`` or ``-->``
#: can end or re-enter the script element) and U+2028/U+2029 (line breaks to a JavaScript parser)
_SCRIPT_UNSAFE = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                  0x2028: "\\u2028", 0x2029: "\\u2029"}


def script_json(value: Any) -> str:
    """``value`` as JSON text that can sit inside an HTML ``<script>`` element whatever its strings hold.

    The HTML parser ends a script at ``</script`` and, after a ``<!--``, a ``<script`` puts it in the "script
    data double escaped" state, where the closing tag no longer closes it and the rest of the page becomes
    script text. Those characters can only be inside JSON strings, where ``\\u003c`` and the rest mean the
    same to ``JSON.parse``, so every one is escaped: no string the run recorded can change the page.
    A hostile NaN or infinity is spelled out as OTLP/JSON does, so the text stays valid JSON.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(finite_json(value), separators=(",", ":"), default=str, allow_nan=False)
    return text.translate(_SCRIPT_UNSAFE)


def _asset(name: str) -> str:
    return resources.files("runtel.query").joinpath("assets").joinpath(name).read_text(encoding="utf-8")


def render_report(run_dirs: Sequence[Path | str | os.PathLike[str]], *, title: str | None = None,
                  problems: list[str] | None = None) -> str:
    """The report's HTML text for the runs in ``run_dirs`` (one run, or a comparison of several).

    Each run is followed by its child runs (``child_of`` names the parent), so a ``runtel run`` wrapper's
    report holds the command's own runs; a comparison compares the runs asked for. What could not be read
    (values of a run.json dropped for their type, skipped lines and spans, as ``runtel show`` words them) is
    listed on the page and appended to ``problems``; the page alone says how many child runs it left out.
    """
    asked = [Path(d) for d in run_dirs]
    notes: list[str] = []
    listed = with_nested_runs(asked, limit=MAX_CHILD_RUNS, problems=notes)
    dirs = [run_dir for run_dir, _parent in listed]
    child_of = [parent for _dir, parent in listed]
    stream, other = iter_chrome_trace(dirs)  # streamed: a run of any size is read in bounded memory
    per_run: list[_RunEvents] = []
    for event in stream:
        if event.get("ph") == "M" and event.get("name") == "process_name":
            per_run.append(_RunEvents())  # each run's events start with its track's name
        elif per_run:
            per_run[-1].add(event)
    origin = int(other.get("origin_unix_nano") or 0)
    runs = [{**_run_data(events, read_record(d), origin), "child_of": parent}
            for d, events, parent in zip(dirs, per_run, child_of, strict=True)]
    page_title = title or ("runtel report: " + ", ".join(r["name"] or r["id"] for r in runs if not r["child_of"]))
    damaged = list(other.get("problems", []))
    if problems is not None:
        problems.extend(damaged)
    page_data = {"runs": runs, "problems": [*damaged, *notes]}
    return _TEMPLATE.format(
        title=html.escape(page_title),
        css=_asset("uPlot.min.css"),
        js=_asset("uPlot.iife.min.js").replace("</script", "<\\/script"),
        data=script_json(page_data),
        app=_APP,
    )


def write_report(run_dirs: Sequence[Path | str | os.PathLike[str]], output: Path | str | os.PathLike[str], *,
                 problems: list[str] | None = None) -> int:
    """Write the report to ``output``; returns its size in bytes. ``problems``: see :func:`render_report`."""
    text = render_report(run_dirs, problems=problems)
    Path(output).write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<style>{css}
body{{font:14px system-ui,sans-serif;margin:1.5em;color:#222}} h1{{font-size:1.4em}} h2{{font-size:1.2em;margin-top:2em}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #ddd;padding:2px 8px;text-align:left}}
.timeline{{position:relative;border:1px solid #ccc;background:#fafafa;overflow:hidden}}
.bar{{position:absolute;height:14px;background:#4c78a8;color:#fff;font-size:10px;white-space:nowrap;overflow:hidden;border-radius:2px}}
.charts{{display:flex;flex-wrap:wrap;gap:12px}} .muted{{color:#888}}
</style></head><body>
<h1>{title}</h1><div id="report"></div><pre id="report-status" hidden>{{}}</pre>
<script>{js}</script>
<script id="report-data" type="application/json">{data}</script>
<script>{app}</script>
</body></html>
"""

_APP = r"""
(function () {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const root = document.getElementById("report");
  const status = {charts: 0, stepped: 0, series: [], points: [], spans: 0, runs: data.runs.length};
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
  const el = (tag, html) => { const e = document.createElement(tag); if (html !== undefined) e.innerHTML = html; return e; };
  const table = (rows) => "<table>" + rows.map((r) => "<tr>" + r.map((c) => "<td>" + esc(c) + "</td>").join("") + "</tr>").join("") + "</table>";
  const colors = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d"];
  function marks(times) {
    return {hooks: {draw: [(u) => {
      const ctx = u.ctx; ctx.save(); ctx.strokeStyle = "rgba(0,0,0,.25)"; ctx.setLineDash([4, 4]);
      for (const t of times) { const x = u.valToPos(t, "x", true); ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke(); }
      ctx.restore(); }]}};
  }
  function chart(parent, title, named, times) {
    const xlabel = title.startsWith("runtel.result.") ? "step" : "seconds";
    // metrics.jsonl holds a point only when a value changed: a sampled value holds until the next point
    const stepped = xlabel === "seconds" && uPlot.paths && uPlot.paths.stepped ? uPlot.paths.stepped({align: 1}) : null;
    const xs = Array.from(new Set(named.flatMap(([, pts]) => pts.map((p) => p[0])))).sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const cols = named.map(([, pts]) => { const c = new Array(xs.length).fill(null); for (const [x, y] of pts) c[index.get(x)] = y; return c; });
    const opts = {title: title, width: 560, height: 220, plugins: times && times.length ? [marks(times)] : [],
      scales: {x: {time: false}}, axes: [{label: xlabel}, {}],
      series: [{label: xlabel}, ...named.map(([label], i) => ({label: label, stroke: colors[i % colors.length], spanGaps: true,
        paths: stepped ? stepped : undefined}))]};
    new uPlot(opts, [xs, ...cols], parent);
    status.charts += 1; status.series.push(named.length); status.points.push(xs.length); if (stepped) status.stepped += 1;
  }
  function timeline(run) {
    const box = el("div"); box.className = "timeline";
    const end = Math.max(1e-6, ...run.spans.map((s) => s[1] + s[2]));
    const start = Math.min(...run.spans.map((s) => s[1]), end);
    const lanes = new Map(); let lane = 0;
    for (const s of run.spans) { if (!lanes.has(s[3])) lanes.set(s[3], []); }
    const rows = [];  // greedy rows inside each thread lane, so bars of one row never overlap
    for (const s of run.spans) {
      let row = rows.findIndex((r) => r.tid === s[3] && r.free <= s[1]);
      if (row < 0) { rows.push({tid: s[3], free: 0}); row = rows.length - 1; }
      rows[row].free = s[1] + s[2];
      const bar = el("div", esc(s[0])); bar.className = "bar"; bar.title = s[0] + ": " + (s[2] * 1000).toFixed(3) + " ms";
      bar.style.left = (100 * (s[1] - start) / (end - start)) + "%";
      bar.style.width = Math.max(0.1, 100 * s[2] / (end - start)) + "%"; bar.style.top = (row * 16 + 2) + "px";
      box.appendChild(bar); status.spans += 1; lane = Math.max(lane, row);
    }
    box.style.height = ((lane + 1) * 16 + 4) + "px";
    return box;
  }
  const asked = data.runs.filter((r) => !r.child_of);  // a comparison compares the runs asked for, not their children
  if (asked.length > 1) {
    root.appendChild(el("h2", "Comparison"));
    const keys = Array.from(new Set(asked.flatMap((r) => Object.keys(r.results))));
    if (keys.length) root.appendChild(el("div", table([["result", ...asked.map((r) => r.name + " " + r.id)], ...keys.map((k) => [k, ...asked.map((r) => r.results[k] ?? "")])])));
    const box = el("div"); box.className = "charts"; root.appendChild(box);
    const names = Array.from(new Set(asked.flatMap((r) => Object.keys(r.metrics).filter((n) => n.startsWith("runtel.result.")))));
    for (const name of names) chart(box, name + " by step (overlaid)", asked.filter((r) => r.metrics[name]).map((r) => [r.name + " " + r.id.slice(-6), Object.values(r.metrics[name])[0]]), null);
  }
  for (const run of data.runs) {
    root.appendChild(el(run.child_of ? "h3" : "h2", (run.child_of ? "Child run " : "Run ") + esc(run.name) + " <span class=muted>" + esc(run.id)
      + (run.child_of ? " (child of " + esc(run.child_of) + ")" : "") + "</span>"));
    root.appendChild(el("div", table([["status", run.status], ["duration s", run.duration_s ?? ""], ["spans", run.spans_total]])));
    const results = Object.entries(run.results); if (results.length) { root.appendChild(el("h3", "Results")); root.appendChild(el("div", table(results))); }
    const config = Object.entries(run.config); if (config.length) { root.appendChild(el("h3", "Config")); root.appendChild(el("div", table(config.slice(0, 60).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : v])))); }
    root.appendChild(el("h3", "Timeline" + (run.spans.length < run.spans_total ? " (the " + run.spans.length + " longest of " + run.spans_total + " spans)" : "")));
    root.appendChild(timeline(run));
    root.appendChild(el("h3", "Resources over time (dashed lines: block starts)"));
    const box = el("div"); box.className = "charts"; root.appendChild(box);
    for (const [name, byLabel] of Object.entries(run.metrics)) chart(box, name, Object.entries(byLabel).slice(0, 8), name.startsWith("runtel.result.") ? null : run.marks);
    if (run.blocks.length) {
      const keys = Array.from(new Set(run.blocks.flatMap((b) => Object.keys(b.usage)))).slice(0, 8);
      root.appendChild(el("h3", "Blocks"));
      root.appendChild(el("div", table([["block", "ms", ...keys], ...run.blocks.slice(0, 500).map((b) => [b.name, b.ms, ...keys.map((k) => b.usage[k] ?? "")])])));
    }
    const artifacts = Object.entries(run.artifacts); if (artifacts.length || run.sources.length) {
      root.appendChild(el("h3", "Artifacts and sources"));
      root.appendChild(el("div", table([...artifacts.map(([k, v]) => ["artifact " + k, v ?? ""]), ...run.sources.map((s) => ["source", s ?? ""])])));
    }
  }
  for (const p of data.problems) root.appendChild(el("p", "problem: " + esc(p)));
  document.getElementById("report-status").textContent = JSON.stringify(status);
  document.body.dataset.ready = "1";
})();
"""
