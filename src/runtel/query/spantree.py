"""Span trees: spans nested under their parents, with child runs grafted where they ran.

``runtel show``, ``runtel compare`` and :func:`runtel.query.compare.compare` read runs through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtel import semconv
from runtel.query.energy import cpu_energy_factor, with_estimated_energy
from runtel.rundir.index import descendants
from runtel.rundir.reader import UNENDED, LineStats, SpanRecord, list_runs, parent_run_id, read_spans, run_span_ref
from runtel.rundir.schema import RunRecord

__all__ = ("MAX_TREE_DEPTH", "build_span_tree", "child_run_trees")

#: spans nested deeper than this are not shown (a tree walk must not recurse without bound)
MAX_TREE_DEPTH = 128


def _node(span: SpanRecord, cpu_energy: float | None) -> dict[str, Any]:
    attributes = with_estimated_energy(span.attributes, cpu_energy)
    return {
        "name": span.name,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "trace_id": span.trace_id,
        "start_time_unix_nano": span.start_ns,
        "duration_s": round(span.duration_s, 9),
        "status": {0: "unset", 1: "ok", 2: "error"}.get(span.status_code, "unset"),
        "status_message": span.status_message,
        "kind": span.attributes.get(semconv.SPAN_KIND),
        "run_id": span.attributes.get(semconv.RUN_ID),
        "attributes": attributes,
        "events": span.events,
        "links": span.links,
        "children": [],
    }


def build_span_tree(spans: Sequence[SpanRecord], extra_roots: Sequence[dict[str, Any]] = (),
                    problems: list[str] | None = None, *, cpu_energy: float | None = None) -> list[dict[str, Any]]:
    """Nest spans under their parents; spans whose parent is not in the file become roots.

    ``extra_roots`` are already-built trees (child runs' spans) grafted under the span they name as parent.
    Parent links that form a cycle are cut (the earliest span of the cycle becomes a root), and spans
    nested deeper than :data:`MAX_TREE_DEPTH` are left out; both are said in ``problems``. ``cpu_energy``: the
    run's CPU estimate, added to spans that record only CPU time (:mod:`runtel.query.energy`).
    """
    nodes = {s.span_id: _node(s, cpu_energy) for s in spans}
    parent_of: dict[str, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for node in nodes.values():
        parent = nodes.get(node["parent_span_id"] or "")
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent["children"].append(node)
            parent_of[node["span_id"]] = parent
    for tree in extra_roots:
        parent = nodes.get(tree.get("parent_span_id") or "")
        (parent["children"] if parent is not None else roots).append(tree)
    reached = _reached(roots)
    cut = 0
    for node in sorted(nodes.values(), key=lambda n: n["start_time_unix_nano"]):
        if id(node) not in reached:  # on a parent cycle: no root leads to it
            parent_of[node["span_id"]]["children"].remove(node)
            roots.append(node)
            reached |= _reached([node])
            cut += 1
    if cut and problems is not None:
        problems.append(f"spans.jsonl: {cut} cycle(s) of parent links cut")
    for node in nodes.values():
        node["children"].sort(key=lambda n: n["start_time_unix_nano"])
    roots.sort(key=lambda n: n["start_time_unix_nano"])
    omitted = _limit_depth(roots, MAX_TREE_DEPTH)
    if omitted and problems is not None:
        problems.append(f"spans.jsonl: {omitted} span(s) nested deeper than {MAX_TREE_DEPTH} levels not shown")
    return roots


def _reached(roots: Sequence[dict[str, Any]]) -> set[int]:
    """ids of every node below ``roots`` (iterative)."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(node["children"])
    return seen


def _limit_depth(roots: Sequence[dict[str, Any]], limit: int) -> int:
    """Cut the trees at ``limit`` levels; returns how many spans were cut (iterative)."""
    omitted = 0
    stack = [(node, 1) for node in roots]
    while stack:
        node, depth = stack.pop()
        if depth >= limit and node["children"]:
            dropped = len(_reached(node["children"]))
            node["children"] = []
            node["omitted_descendants"] = dropped
            omitted += dropped
            continue
        stack.extend((child, depth + 1) for child in node["children"])
    return omitted


def child_run_trees(run_id: str, root: Path, seen: set[str], problems: list[str] | None = None,
                     runs: Sequence[RunRecord] | None = None) -> list[dict[str, Any]]:
    """Span trees of runs that name ``run_id`` as their parent (nested runs and child processes).

    Without ``runs``, the run index finds them (or, without a usable index, a scan of every run.json).
    """
    if runs is None:
        runs = descendants(root, run_id)
    if runs is None:
        runs = list_runs(root)
    trees: list[dict[str, Any]] = []
    for record in runs:
        child_id = str(record.get("id"))
        if parent_run_id(record) != run_id or child_id in seen:
            continue
        seen.add(child_id)
        stats = LineStats()
        spans = read_spans(Path(record.get("dir", "")), stats)
        found = [*record.get("problems", ()), *stats.problems()]
        missing = _missing_run_span(record, spans)
        if missing is not None:  # killed before its run span ended: its spans hang from a stand-in, not loose
            spans = [missing, *spans]
        trees.extend(build_span_tree(spans, child_run_trees(child_id, root, seen, problems, runs), found,
                                     cpu_energy=cpu_energy_factor(record)))
        if problems is not None:
            problems.extend(f"child run {child_id}: {p}" for p in found)
    return trees


def _missing_run_span(record: RunRecord, spans: Sequence[SpanRecord]) -> SpanRecord | None:
    """A stand-in for the run span of a run killed before it ended, when its spans name it as their parent.

    Without it, the run's spans had no parent in the tree and showed beside the parent run's span instead of
    under it (a SIGKILLed child of ``runtel run``). It lasts until the run's last span ended and says why.
    """
    ids = {s.span_id for s in spans}
    if not any(s.parent_span_id and s.parent_span_id not in ids for s in spans):
        return None  # the common case: every parent is there
    ref = run_span_ref(record)
    if ref is None or ref[0] in ids or not any(s.parent_span_id == ref[0] for s in spans):
        return None
    span_id, trace_id, parent, name, start = ref
    return SpanRecord(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name, start_ns=start,
                      end_ns=max([start, *(s.end_ns for s in spans)]),
                      attributes={semconv.SPAN_KIND: semconv.KIND_RUN, semconv.RUN_ID: str(record.get("id"))},
                      status_code=2, status_message=UNENDED)
