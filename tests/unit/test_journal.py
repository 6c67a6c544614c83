"""The span journal (rundir/journal.py): recovered once its process is gone, never twice, never a live one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import runtel
from runtel.config import Settings
from runtel.rundir.journal import SpanJournal, journal_group, recover_spans
from runtel.rundir.otlp_json import framed_line, span_frame, span_text
from runtel.rundir.reader import read_spans


def _finished_spans(n: int) -> list[Any]:
    """Finished spans built directly (a TracerProvider here would register fork hooks that the fork test trips on)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, TraceFlags

    resource, scope = Resource({"service.name": "journal"}), InstrumentationScope("journal-test", "1.0")
    return [ReadableSpan(f"s{i}", SpanContext(0xABC, 0x100 + i, False, TraceFlags(1)), resource=resource,
                         attributes={"runtel.run.id": "r", "i": i}, start_time=10 + i, end_time=20 + i,
                         instrumentation_scope=scope) for i in range(n)]


def _journal(run_dir: Path, spans: list[Any]) -> SpanJournal:
    """A journal holding ``spans`` as the span writer writes it (its descriptor, and so its lock, still open)."""
    journal = SpanJournal(run_dir)
    frame = span_frame(spans[0].resource, spans[0].instrumentation_scope)
    journal.write(journal_group(1, frame))
    for span in spans:
        journal.write(b"1\t" + span_text(span).encode() + b"\n")
    return journal


def _lines(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "spans.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_dead_writers_journal_becomes_standard_lines(tmp_path: Path) -> None:
    spans = _finished_spans(3)
    _journal(tmp_path, spans).abandon()  # the process "died": its descriptor is closed, the file stays
    assert recover_spans(tmp_path) == 3
    (line,) = _lines(tmp_path)
    assert line["resourceSpans"][0]["resource"]["attributes"][0]["key"] == "service.name"
    assert [s["name"] for s in line["resourceSpans"][0]["scopeSpans"][0]["spans"]] == ["s0", "s1", "s2"]
    assert not list(tmp_path.glob(".spans.*.journal"))
    assert recover_spans(tmp_path) == 0


def test_open_span_checkpoints_recover_as_unended_unless_the_span_ended(tmp_path: Path) -> None:
    """Checkpoints (``o<gid>`` records): the latest one of a span that never ended is written, marked; a span
    whose own record is in the journal (or already in spans.jsonl) is written once, unmarked."""
    from runtel import semconv
    from runtel.rundir.journal import UNENDED_MESSAGE

    spans = _finished_spans(4)
    journal = _journal(tmp_path, spans[:1])  # s0 ended (its own record)
    for span, end in ((spans[0], 15), (spans[1], 15), (spans[1], 19), (spans[2], 17), (spans[3], 16)):
        checkpoint = span_text(span).replace(f'"endTimeUnixNano":"{span.end_time}"', f'"endTimeUnixNano":"{end}"')
        if span is spans[2]:  # an error the span had already: its own message stays
            checkpoint = checkpoint[:-1] + ',"status":{"code":2,"message":"failed: disk"}}'
        journal.write(b"o1\t" + checkpoint.encode() + b"\n")
    (tmp_path / "spans.jsonl").write_text(framed_line(((span_frame(spans[3].resource, spans[3].instrumentation_scope),
                                                       (span_text(spans[3]),)),)) + "\n")  # s3 ended, batched
    journal.abandon()
    assert recover_spans(tmp_path) == 3  # s0 once, s1 and s2 unended
    got = {s.name: s for s in read_spans(tmp_path)}
    assert sorted(got) == ["s0", "s1", "s2", "s3"]
    for name in ("s0", "s3"):
        assert semconv.SPAN_UNENDED not in got[name].attributes and got[name].status_code != 2
    # each ends when its process was last seen: the latest end or checkpoint in its journals (s0's end, 20)
    assert got["s1"].end_ns == 20 and got["s2"].end_ns == 20
    for name in ("s1", "s2"):
        assert got[name].attributes[semconv.SPAN_UNENDED] is True and got[name].attributes["i"] in (1, 2)
        assert got[name].status_code == 2
    assert got["s1"].status_message == UNENDED_MESSAGE and got["s2"].status_message == "failed: disk"
    assert recover_spans(tmp_path) == 0 and len(read_spans(tmp_path)) == 4


def test_a_live_writers_journal_is_left_alone(tmp_path: Path) -> None:
    """The writer holds an exclusive flock while it lives: a reader (even in the same process) skips it."""
    journal = _journal(tmp_path, _finished_spans(2))
    assert recover_spans(tmp_path) == 0
    assert journal.path.exists() and not (tmp_path / "spans.jsonl").exists()
    journal.close()
    assert not journal.path.exists()


def test_spans_already_batched_are_not_written_twice(tmp_path: Path) -> None:
    """Killed between a batch line and the journal's truncation: the batch is in spans.jsonl once."""
    spans = _finished_spans(4)
    frame = span_frame(spans[0].resource, spans[0].instrumentation_scope)
    (tmp_path / "spans.jsonl").write_text(framed_line([(frame, [span_text(s) for s in spans[:3]])]) + "\n")
    _journal(tmp_path, spans).abandon()
    assert recover_spans(tmp_path) == 1  # only s3 was not in spans.jsonl yet
    names = [s.name for s in read_spans(tmp_path)]
    assert sorted(names) == ["s0", "s1", "s2", "s3"]
    assert sum(len(ss["spans"]) for line in _lines(tmp_path) for rs in line["resourceSpans"]
               for ss in rs["scopeSpans"]) == 4


def test_torn_and_orphan_records_are_skipped(tmp_path: Path) -> None:
    """A torn last record and a span of a group declared before a truncation are not spans to recover."""
    spans = _finished_spans(2)
    journal = _journal(tmp_path, spans[:1])
    journal.write(b"7\t" + span_text(spans[1]).encode() + b"\n")  # group 7 was never declared
    journal.write(b"1\t" + span_text(spans[1]).encode()[:40])  # torn: no newline
    journal.abandon()
    assert recover_spans(tmp_path) == 1
    assert [s.name for s in read_spans(tmp_path)] == ["s0"]


def test_an_unwritable_folder_keeps_its_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recovery never raises: a spans file it cannot write leaves the journal for a later reader."""
    _journal(tmp_path, _finished_spans(1)).abandon()
    (tmp_path / "spans.jsonl").mkdir()  # not a file: the append fails
    assert recover_spans(tmp_path) == 0
    assert list(tmp_path.glob(".spans.*.journal"))


@pytest.mark.filterwarnings("ignore:This process.*is multi-threaded:DeprecationWarning")
def test_a_forked_child_leaves_its_parents_batch_and_journal_alone(rt: Settings) -> None:
    """Spans buffered in the parent at the fork are written once, by the parent; the child's own at once."""
    with runtel.run_span("parent") as run:
        for i in range(5):
            with runtel.block("before-fork", i=i):
                pass
        pid = os.fork()
        if pid == 0:  # the child inherits the parent's batch and journal descriptor: it must touch neither
            try:
                with runtel.block("in-child"):
                    pass
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        with runtel.block("after-fork"):
            pass
    names = [s.name for s in read_spans(run.dir)]  # type: ignore[arg-type]
    assert names.count("before-fork") == 5 and names.count("in-child") == 1 and names.count("after-fork") == 1
    assert not list(run.dir.glob(".spans.*.journal"))  # type: ignore[union-attr]


def test_a_short_run_writes_its_spans_at_once_and_opens_no_journal(rt: Settings) -> None:
    """A run's first DIRECT_SPANS spans are their own lines, on disk as they end; the journal opens after them."""
    from runtel.exporters.jsonl import DIRECT_SPANS

    with runtel.run_span("short") as run:
        run_dir = Path(run.dir)
        for _ in range(DIRECT_SPANS):
            with runtel.block("step"):
                pass
        assert not [p for p in os.listdir(run_dir) if p.endswith(".journal")]
        assert len(read_spans(run_dir)) == DIRECT_SPANS  # already on disk, before any batch
        for _ in range(3):
            with runtel.block("more"):
                pass
        assert [p for p in os.listdir(run_dir) if p.endswith(".journal")]  # later spans: journal and batch
    assert not [p for p in os.listdir(run_dir) if p.endswith(".journal")]
    assert len(read_spans(run_dir)) == DIRECT_SPANS + 3 + 1


@pytest.mark.parametrize("mapped", [True, False], ids=["memory-mapped", "pwrite"])
def test_journal_grows_empties_and_recovers_mapped_or_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          mapped: bool) -> None:
    """Records past the first map grow it; emptying leaves zeros (read as nothing); the same spans either way."""
    from runtel.rundir import journal as journal_module

    monkeypatch.setattr(journal_module, "MAP_BYTES", 4096)
    monkeypatch.setattr(journal_module, "MAX_MAP_BYTES", 8192)  # then pwrite past the map
    if not mapped:
        def refuse(fd: int, offset: int, length: int) -> None:
            raise OSError(95, "Operation not supported")

        monkeypatch.setattr(os, "posix_fallocate", refuse)
    spans = _finished_spans(60)  # ~13 KB of records: past both the first map and the largest
    journal = _journal(tmp_path, spans[:30])
    assert (journal._map is not None) is mapped
    journal.truncate()
    data = journal.path.read_bytes()
    assert data.strip(b"\0") == b"" and (len(data) == 8192 if mapped else len(data) == 0)
    frame = span_frame(spans[0].resource, spans[0].instrumentation_scope)
    journal.write(journal_group(2, frame))
    for span in spans[30:]:
        journal.write(b"2\t" + span_text(span).encode() + b"\n")
    assert not journal.failed
    journal.abandon()
    assert recover_spans(tmp_path) == 30
    (line,) = _lines(tmp_path)
    assert [s["name"] for s in line["resourceSpans"][0]["scopeSpans"][0]["spans"]] == [f"s{i}" for i in range(30, 60)]


def test_a_torn_record_before_the_zeros_is_skipped(tmp_path: Path) -> None:
    """A process killed in the middle of copying a record leaves part of it before the zeros: it is not recovered."""
    spans = _finished_spans(3)
    journal = _journal(tmp_path, spans[:2])
    journal.write((b"1\t" + span_text(spans[2]).encode())[:50])  # no newline: torn
    journal.abandon()
    assert recover_spans(tmp_path) == 2
    assert [s["name"] for s in _lines(tmp_path)[0]["resourceSpans"][0]["scopeSpans"][0]["spans"]] == ["s0", "s1"]


def test_recovery_after_a_torn_last_line_starts_a_fresh_line(tmp_path: Path) -> None:
    """spans.jsonl ends in a fragment (a write cut by a full disk or a kill): the recovered line is not glued
    to it (which lost every recovered span), and the fragment stays one skipped line."""
    spans = _finished_spans(3)
    (tmp_path / "spans.jsonl").write_text('{"resourceSpans":[{"resource":{"attri')  # torn, no newline
    _journal(tmp_path, spans).abandon()
    assert recover_spans(tmp_path) == 3
    assert [s.name for s in read_spans(tmp_path)] == ["s0", "s1", "s2"]
