"""Size-based rotation of spans.jsonl / metrics.jsonl: segments in order, forked writers converging, no line split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runtel.rundir.reader import LineStats, iter_segments_sized
from runtel.rundir.schema import SPANS_FILE, segment_number, segment_path, span_segments
from runtel.rundir.writer import LineFile


def test_segment_names_and_order(tmp_path: Path) -> None:
    """spans.jsonl is segment 1, then spans.2.jsonl ...; listing sorts numerically and ignores other files."""
    for name in ("spans.10.jsonl", "spans.jsonl", "spans.2.jsonl", "spans.1.jsonl", "metrics.3.jsonl",
                 "spans.x.jsonl", "spans.jsonl.tmp", "spans.02.jsonl"):
        (tmp_path / name).write_text("")
    assert [p.name for p in span_segments(tmp_path)] == ["spans.jsonl", "spans.2.jsonl", "spans.10.jsonl"]
    assert segment_path(tmp_path, SPANS_FILE, 1).name == "spans.jsonl"
    assert segment_path(tmp_path, SPANS_FILE, 7).name == "spans.7.jsonl"
    assert segment_number("metrics.3.jsonl", "metrics.jsonl") == 3
    assert segment_number("metrics.3.jsonl", SPANS_FILE) is None
    assert span_segments(tmp_path / "missing") == []


def _line(writer: int, i: int, pad: int) -> bytes:
    return (json.dumps({"w": writer, "i": i, "pad": "x" * pad}) + "\n").encode()


def test_single_writer_rotates_by_size(tmp_path: Path) -> None:
    """Each segment is closed once it reaches the size; every line is read back exactly once, in order."""
    f = LineFile(tmp_path / SPANS_FILE, rotate_bytes=1000)
    for i in range(100):
        assert f.write(_line(0, i, 80))
    f.close()
    paths = span_segments(tmp_path)
    assert len(paths) >= 8
    for p in paths[:-1]:
        assert 1000 <= p.stat().st_size < 1000 + 120
    stats = LineStats()
    got = [v["i"] for v, _ in iter_segments_sized(paths, stats)]
    assert got == list(range(100))
    assert stats.problems() == [] and stats.lines == 100
    # a writer reopening the run (after close) appends to the live (last) segment, not to spans.jsonl
    first = paths[0].stat().st_size
    again = LineFile(tmp_path / SPANS_FILE, rotate_bytes=1000)
    assert again.write(_line(0, 100, 10))
    again.close()
    now = span_segments(tmp_path)
    assert now[: len(paths)] == paths and len(now) <= len(paths) + 1
    assert now[-1].read_bytes().endswith(_line(0, 100, 10))
    assert paths[0].stat().st_size == first


def test_no_rotation_without_size(tmp_path: Path) -> None:
    f = LineFile(tmp_path / SPANS_FILE)
    for i in range(50):
        f.write(_line(0, i, 100))
    f.close()
    assert [p.name for p in span_segments(tmp_path)] == ["spans.jsonl"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_writers_across_rotation_lose_nothing(tmp_path: Path) -> None:
    """Forked children and the parent append through one LineFile across many rotations: every line is
    on disk exactly once, whole, and the writers agree on the segments (no segment far over the size)."""
    f = LineFile(tmp_path / SPANS_FILE, rotate_bytes=4096)
    f.write(_line(99, 0, 10))  # the parent's descriptor is open before the fork, as in a run
    writers, per_writer = 4, 400
    pids = []
    for w in range(writers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                f.after_fork()
                for i in range(per_writer):
                    f.write(_line(w, i, (i * 37) % 150))
                f.close()
            finally:
                os._exit(0)
        pids.append(pid)
    for i in range(per_writer):
        f.write(_line(writers, i, (i * 53) % 150))
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    f.close()
    paths = span_segments(tmp_path)
    assert len(paths) > 10
    seen: dict[int, list[int]] = {}
    for p in paths:
        data = p.read_bytes()
        assert data.endswith(b"\n")
        for raw in data.splitlines():
            value = json.loads(raw)  # a split or interleaved line would not parse
            seen.setdefault(value["w"], []).append(value["i"])
    for w in range(writers + 1):
        assert sorted(seen[w]) == list(range(per_writer)), w
    # each full segment is over the size by at most one line per concurrent writer
    for p in paths[:-1]:
        assert p.stat().st_size < 4096 + (writers + 1) * 220
