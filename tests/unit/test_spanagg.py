"""The folded span tree built while spans stream past (runtel.query.spanagg)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtel.query.spanagg import FOLD_THRESHOLD, Acc, Group, aggregate_spans, level_json, walk_paths
from runtel.rundir import reader
from runtel.rundir.reader import LineStats, SpanRow, decode_attributes, iter_span_rows, iter_spans


def _row(sid: str, parent: str, name: str, start: int, end: int, code: int = 0) -> SpanRow:
    return (sid, "t" * 32, parent, name, start, end, code, "", [])


def _loop(n_epochs: int, n_steps: int) -> list[SpanRow]:
    """Children before parents, as spans are written when they end."""
    rows = []
    t = 0
    for e in range(n_epochs):
        epoch_start = t
        for s in range(n_steps):
            rows.append(_row(f"s{e}-{s}", f"e{e}", "step", t, t + 10, code=2 if s == 0 else 0))
            t += 10
        rows.append(_row(f"e{e}", "root", "epoch", epoch_start, t))
    rows.append(_row("root", "", "run", 0, t))
    return rows


def test_folds_groups_and_keeps_small_ones() -> None:
    agg = aggregate_spans(_loop(3, 8))
    assert agg.spans == 1 + 3 + 24 and agg.late == 0 and agg.duplicates == 0
    level = agg.root_level()
    (run,) = level["run"].members or []
    epochs = run.children["epoch"]
    assert epochs.count == 3 and not epochs.folded and len(epochs.members or []) == 3
    for epoch in epochs.members or []:
        steps = epoch.children["step"]
        assert steps.folded and steps.count == 8 and steps.errors == 1
        assert (steps.total_ns, steps.min_ns, steps.max_ns) == (80, 10, 10)


def test_folded_groups_merge_their_children_by_name() -> None:
    agg = aggregate_spans(_loop(FOLD_THRESHOLD + 2, 3))
    (run,) = agg.root_level()["run"].members or []
    epochs = run.children["epoch"]
    assert epochs.folded and epochs.count == FOLD_THRESHOLD + 2
    steps = epochs.children["step"]
    assert steps.count == 3 * (FOLD_THRESHOLD + 2) and steps.errors == FOLD_THRESHOLD + 2
    paths = {path: g.count for path, g in walk_paths(agg.root_level(), "root")}
    assert paths == {"epoch": FOLD_THRESHOLD + 2, "epoch/step": 3 * (FOLD_THRESHOLD + 2)}
    (node,) = level_json(agg.root_level())
    assert node["name"] == "run" and node["children"][0]["count"] == FOLD_THRESHOLD + 2


def test_orphans_duplicates_and_late_children() -> None:
    rows = [
        _row("a", "gone", "orphan", 0, 5),  # its parent was never written: a root
        _row("b", "", "parent", 0, 10),
        _row("b", "", "parent", 0, 10),  # written twice: once
        _row("c", "b", "late", 2, 20),  # ended after its parent was read: top level, counted
    ]
    agg = aggregate_spans(rows)
    assert (agg.spans, agg.duplicates, agg.late) == (3, 1, 1)
    assert set(agg.root_level()) == {"orphan", "parent", "late"}
    assert "1 span(s) that ended after their parent" in agg.problems()[0]


def test_graft_hangs_child_run_trees_under_their_parent_span() -> None:
    child = aggregate_spans([_row("x1", "e0", "inner", 1, 2)])
    agg = aggregate_spans(_loop(1, 2), child.roots)
    (run,) = agg.root_level()["run"].members or []
    (epoch,) = run.children["epoch"].members or []
    assert set(epoch.children) == {"step", "inner"}


def test_acc_merge_equals_one_stream() -> None:
    values = [0.5, 2.0, 3.25, 10.0, -1.0, 7.5]
    whole, a, b = Acc(), Acc(), Acc()
    for v in values:
        whole.add(v)
    for v in values[:2]:
        a.add(v)
    for v in values[2:]:
        b.add(v)
    a.merge(b)
    for stat in ("min", "max", "mean", "std", "total"):
        assert abs((a.stat(stat) or 0) - (whole.stat(stat) or 0)) < 1e-12
    assert Acc().stat("mean") is None and isinstance(Group("x"), Group)


BAD_SPANS = [
    {"traceId": 1, "spanId": 2},  # ids not strings
    {"traceId": "a" * 32, "spanId": "b" * 16, "name": 5, "startTimeUnixNano": "x"},  # no number
    {"traceId": "a" * 32, "spanId": "c" * 16, "name": "ok", "startTimeUnixNano": "5", "endTimeUnixNano": 9,
     "status": {"code": 2, "message": "m"}, "attributes": [{"key": "k", "value": {"intValue": "3"}}]},
    {"traceId": "a" * 32, "spanId": "f" * 16, "name": "odd-fields", "status": "bad", "attributes": {"not": "a list"}},
]


@pytest.mark.parametrize("fast", [True, False], ids=["msgspec", "json"])
def test_span_rows_read_what_spans_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    """iter_span_rows (msgspec or json) keeps and counts exactly what the checked SpanRecord reader does."""
    if not fast:
        monkeypatch.setattr(reader, "_fast", [None])
    good = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "a" * 32, "spanId": f"{i:016x}", "name": "fine", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
        for i in range(3)]}]}]}
    lines = [json.dumps(good).encode(), b'{"resourceSpans": "x"}', b'{"resourceSpans": [1, {"scopeSpans": {"spans": 3}}]}',
             bytes(range(256)) * 4, b"[1, 2]", b'{"a": NaN}',
             json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": BAD_SPANS}]}]}).encode(), b'{"torn": ']
    (tmp_path / "spans.jsonl").write_bytes(b"\n".join(lines[:4]) + b"\n")
    (tmp_path / "spans.2.jsonl").write_bytes(b"\n".join(lines[4:]))  # the live segment ends torn
    rows_stats, spans_stats = LineStats(), LineStats()
    rows = list(iter_span_rows(tmp_path, rows_stats))
    spans = list(iter_spans(tmp_path, spans_stats))
    assert [r[0] for r in rows] == [s.span_id for s in spans] and len(rows) == 5
    ok = next(r for r in rows if r[3] == "ok")
    assert ok[4:8] == (5, 9, 2, "m") and decode_attributes(ok[8]) == {"k": 3}
    for key in ("lines", "unreadable", "not_otlp", "bad_records", "oversized", "incomplete_tail"):
        assert getattr(rows_stats, key) == getattr(spans_stats, key), key
    assert rows_stats.not_otlp == 2  # {"resourceSpans": "x"} and the line of a 1 and a dict of spans
    assert rows_stats.problems()[0].startswith("spans.jsonl:")
