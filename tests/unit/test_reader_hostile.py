"""The readers' defences, one at a time: bounded line reading, record validation, span trees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtel.cli.show import MAX_TREE_DEPTH, build_span_tree
from runtel.errors import RunFolderError
from runtel.rundir import reader
from runtel.rundir.reader import LineStats, SpanRecord, iter_jsonl, read_record, read_record_or_corrupt
from runtel.rundir.schema import validate_record


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_lines_across_chunk_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """Lines are split right wherever the chunks end; over-long ones are counted, a torn tail is quiet."""
    monkeypatch.setattr(reader, "READ_CHUNK_BYTES", chunk)
    path = tmp_path / "x.jsonl"
    long = json.dumps({"v": "x" * 40})
    path.write_text("\n".join(['{"a": 1}', long, "", "not json", '{"b": [2]}', long, long + "x", '{"c": 3}', '{"d"']))
    stats = LineStats()
    values = list(reader.iter_jsonl_sized(path, stats, max_line=30))
    assert [v for v, _ in values] == [{"a": 1}, {"b": [2]}, {"c": 3}]
    assert [n for _, n in values] == [9, 11, 9]
    assert stats.oversized == 3 and stats.unreadable == 1 and stats.incomplete_tail
    assert len(stats.problems()) == 2  # the torn tail is not one


def test_unterminated_oversized_tail_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n' + b"\0" * 100)
    stats = LineStats()
    assert list(reader.iter_jsonl_sized(path, stats, max_line=50)) == [({"a": 1}, 9)]
    assert stats.oversized == 1
    assert list(iter_jsonl(tmp_path / "missing.jsonl")) == []
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(RunFolderError, match="not a regular file"):
        list(iter_jsonl(tmp_path / "dir.jsonl"))


def test_validate_record_drops_wrong_types_and_keeps_the_rest() -> None:
    record, problems = validate_record({"id": "e", "status": "ok", "parent": "y"})
    assert record == {"id": "e", "status": "ok"} and problems == ["parent: a string is not a valid value (dropped)"]
    record, problems = validate_record({
        "id": "r", "duration_s": 2, "start_time_unix_nano": 5, "parent": {"run_id": 3, "span_id": "s"},
        "artifacts": [{"name": "m", "size": "big", "hash": "h"}], "sources": [1, {"kind": "run", "run_id": "u"}],
        "future_key": {"kept": True}, "dir": "/forged", "problems": [], "config": json.loads("[" * 150 + "]" * 150),
    })
    assert record["duration_s"] == 2.0 and record["start_time_unix_nano"] == "5"  # lossless fixes, silent
    assert record["parent"] == {"span_id": "s"}
    assert record["artifacts"] == {"m": {"name": "m", "hash": "h"}}
    assert record["sources"] == [{"kind": "run", "run_id": "u"}]
    assert record["future_key"] == {"kept": True}  # type: ignore[typeddict-item]
    assert "dir" not in record and "problems" not in record and "config" not in record
    assert len(problems) == 4 and any("nested deeper" in p for p in problems)


def test_read_record_nan_deep_and_stub(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text('{"id": "n", "duration_s": NaN, "config": {"x": Infinity}}')
    record = read_record(tmp_path)
    assert record["duration_s"] is None and record["config"] == {"x": None} and "problems" not in record
    (tmp_path / "run.json").write_text("[" * 100_000)
    with pytest.raises(RunFolderError, match="nested too deeply"):
        read_record(tmp_path)
    stub = read_record_or_corrupt(tmp_path)
    assert stub["id"] == tmp_path.name and stub.get("unreadable") is True and stub["problems"]


def _span(span_id: str, parent: str | None, start: int = 0) -> SpanRecord:
    return SpanRecord("t", span_id, parent, span_id, start, start + 1, {}, 0, "")


def test_span_tree_cuts_cycles_and_depth() -> None:
    problems: list[str] = []
    trees = build_span_tree([_span("a", "b", 1), _span("b", "a", 2), _span("s", "s", 3)], problems=problems)
    assert [t["name"] for t in trees] == ["a", "s"] and [c["name"] for c in trees[0]["children"]] == ["b"]
    assert problems == ["spans.jsonl: 1 cycle(s) of parent links cut"]
    chain = [_span(str(i), str(i - 1) if i else None, i) for i in range(MAX_TREE_DEPTH + 50)]
    problems = []
    node = build_span_tree(chain, problems=problems)[0]
    depth = 1
    while node["children"]:
        node, depth = node["children"][0], depth + 1
    assert depth == MAX_TREE_DEPTH and node["omitted_descendants"] == 50
    assert problems == [f"spans.jsonl: 50 span(s) nested deeper than {MAX_TREE_DEPTH} levels not shown"]


def test_resource_usage_and_git_are_checked_inside() -> None:
    """The nested parts readers use are checked key by key; what the collectors add beside them is kept."""
    record, problems = validate_record({
        "resource_usage": {"samples": 3, "max_ram": {"combined": {"max_rss_bytes": 1e9}}, "energy": {"total_joules": "a"},
                           "cpu_utilization": {"combined": "x", "max_threads": {"main": 2}}},
        "environment": {"git": {"script": {"commit": 5, "branch": "main"}}, "host": {"name": "h"}},
    })
    assert record["resource_usage"] == {"samples": 3, "max_ram": {"combined": {"max_rss_bytes": 1_000_000_000}},
                                        "energy": {}, "cpu_utilization": {"max_threads": {"main": 2}}}
    assert record["environment"] == {"git": {"script": {"branch": "main"}}, "host": {"name": "h"}}
    assert sorted(p.split(":")[0] for p in problems) == [
        "environment.git.script.commit", "resource_usage.cpu_utilization.combined", "resource_usage.energy.total_joules"]


def test_notebook_runrecord_is_a_deprecated_alias_of_loadedrun() -> None:
    from runtel.query import notebook

    with pytest.warns(DeprecationWarning, match="LoadedRun"):
        assert notebook.RunRecord is notebook.LoadedRun
