"""The offline default: spans.jsonl and metrics.jsonl in each run folder.

Each line is one OTLP/JSON ``ExportTraceServiceRequest`` (or ``ExportMetricsServiceRequest``) as in
the OpenTelemetry File Exporter specification. Spans are routed to the run they belong to by their
``runtel.run.id`` attribute (stamped when the span starts), so spans from other instrumentations made
inside a run land in the same file. Lines are appended with a single ``write()`` on an ``O_APPEND``
descriptor: forked workers writing to the same file cannot interleave within a line.

:class:`JsonlSpanWriter` is the span processor of the run folder: no queue and no exporter thread.
A run's first ``DIRECT_SPANS`` spans are each written as their own line when they end (a short run
creates no journal file); after them, the thread that ends a span encodes it and appends it to the run's journal (``rundir.journal``: on
disk at once, whatever happens to the process next) and to an in-memory batch; the batch becomes one
line of spans.jsonl when it holds ``batch`` spans, when its oldest span is ``delay`` old (checked by the
next span to end, and by a small flusher thread for a program that went quiet), and at every flush.
Spans still **open** are checkpointed too: the flusher journals each span open longer than
``OPEN_CHECKPOINT_NS`` (scrubbed, its end time the checkpoint's) into the run's open journal
(``.spans.<pid>.open.journal``, which batch lines never empty), again after twice the previous wait (up to
``OPEN_CHECKPOINT_MAX_NS``) and at most ``OPEN_CHECKPOINT_BUDGET`` spans a round, so a process killed with its
run span or an epoch block open leaves them, marked as not ended (``rundir.journal``), and a service with
thousands of open requests pays a bounded share of a core for it (~25 us a checkpoint). That costs the hot
path one dict insert at start and one removal at end, done by the router (``RunProcessor``).
:class:`JsonlSpanExporter` is the same encoding as an SDK ``SpanExporter`` (batches handed in by a caller).
Neither ever raises; a write failure is logged once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from runtel import semconv
from runtel._guard import guard, log_once
from runtel._internals import open_span_snapshot, span_fields, stored_dict
from runtel.rundir.journal import SpanJournal, journal_group
from runtel.rundir.otlp_json import fields_text, framed_line, span_frame, spans_line
from runtel.rundir.writer import LineFile, RunSinks

_logger = logging.getLogger("runtel.exporters")


_MARKED_KINDS = (semconv.KIND_BLOCK, semconv.KIND_FUNCTION)


_SAMPLES_KEY = semconv.USAGE_PREFIX + "samples"


_UNSAMPLED = '{"key":"' + _SAMPLES_KEY + '","value":{"intValue":"0"}}'  # one encoded OTLP KeyValue


_late = [0]


def late_spans() -> int:
    """Spans this process dropped because they ended after their run had closed."""
    return _late[0]


class JsonlSpanExporter(SpanExporter):
    """Writes each batch of spans, grouped by run, as one OTLP/JSON line per run.

    With ``mark_unsampled`` (the resource sampler is on), block and function spans that no sample
    fell into are written with ``runtel.usage.samples = 0``: an explicit "not measured", added here
    in the exporter thread instead of costing an attribute on every short span's hot path.
    """

    def __init__(self, sinks: RunSinks, *, mark_unsampled: bool = False) -> None:
        self._sinks = sinks
        self.mark_unsampled = mark_unsampled
        #: told how many spans each export received (a batch processor counting its queue sets it)
        self.on_batch: Callable[[int], None] | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Route and append; never raises."""
        on_batch = self.on_batch
        if on_batch is not None:
            on_batch(len(spans))
        try:
            groups: dict[str, list[ReadableSpan]] = {}
            for span in spans:
                attributes = span.attributes
                run_id = attributes.get(semconv.RUN_ID) if attributes else None
                if isinstance(run_id, str):
                    groups.setdefault(run_id, []).append(span)
            ok = True
            for run_id, group in groups.items():
                target = self._sinks.spans(run_id)
                if target is None:
                    _count_late(len(group), run_id)
                    continue
                ok = target.write(spans_line(group, _unsampled_marker if self.mark_unsampled else None)) and ok
            return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE
        except Exception as exc:  # never let an encoding bug reach the SDK worker or the user
            log_once("span-export", "runtel could not export spans to the run folder: %r", exc, exc_info=True)
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Nothing to release: files belong to the runs."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Writes are synchronous, so there is nothing buffered here."""
        return True


def _count_late(count: int, run_id: str) -> None:
    _late[0] += count
    log_once("late-span", "runtel dropped %d span(s) that ended after run %s closed (work still running when "
             "its run ended; the total is reported at exit)", count, run_id)


Frame = tuple[str, str, str, str]
#: (resource, scope, gid, frame, journal record prefix); the objects are held so their ids stay theirs
_Group = tuple[Any, Any, int, Frame, bytes]


#: a run's first spans written each as its own spans.jsonl line, before its journal is opened
DIRECT_SPANS = 8
#: a span open this long is checkpointed into its run's journal (the flusher looks this often)
OPEN_CHECKPOINT_NS = 500_000_000
#: ... and again after twice its previous wait while it stays open, at most this long: a recovered span that
#: ran for hours ends at most a minute before its process died
OPEN_CHECKPOINT_MAX_NS = 60_000_000_000
#: open spans checkpointed per round at most (the most overdue first; the others wait for the next round)
OPEN_CHECKPOINT_BUDGET = 256
#: a journal is emptied and rewritten with the latest checkpoints when it grows past this or twice their size
OPEN_COMPACT_BYTES = 256 << 10


class _RunBatch:
    """One open run's spans not yet in its spans.jsonl, and its journal."""

    __slots__ = ("closed", "count", "direct", "first_ns", "groups", "journal", "open_journal", "open_records", "sink")

    def __init__(self, sink: LineFile, journal: SpanJournal | None) -> None:
        self.sink = sink
        self.journal = journal
        self.direct = 0  # spans written as their own line, before the journal was opened
        self.groups: dict[int, tuple[Frame, list[str]]] = {}
        self.count = 0
        self.first_ns = 0  # end time of the oldest span in the batch
        self.closed = False
        #: the latest checkpoint record of each open span of the run (span id -> (gid, frame, record))
        self.open_records: dict[int, tuple[int, Frame, bytes]] = {}
        #: where the checkpoints go (``.spans.<pid>.open.journal``): batch lines never empty it
        self.open_journal: SpanJournal | None = None


class JsonlSpanWriter(SpanProcessor):
    """The run folder's span processor: each span durable as it ends, batched into spans.jsonl lines.

    Lossless by construction: there is no queue to fill; a thread that fills a batch writes it. With
    ``synchronous`` (forked and pool workers, which often leave through ``os._exit``), every span is
    its own line of spans.jsonl at once and no journal is kept.
    """

    def __init__(self, sinks: RunSinks, *, mark_unsampled: bool = False, batch: int = 1024, delay: float = 0.2,
                 synchronous: bool = False) -> None:
        self._sinks = sinks
        self.mark_unsampled = mark_unsampled
        self.batch = max(1, batch)
        self.delay = delay
        self._delay_ns = int(delay * 1e9)
        self.synchronous = synchronous
        self._runs: dict[str, _RunBatch] = {}
        #: runs closed recently (their files may still be routed for a moment; insertion-ordered, bounded)
        self._closed: dict[str, None] = {}
        self._lock = threading.Lock()
        self._groups: dict[tuple[int, int], _Group] = {}
        self._last: _Group | None = None
        self._next_gid = 0
        self._flusher: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopped = False
        self._pid = os.getpid()
        #: redacts a snapshot of an open span before it is checkpointed (set by the runtime; None: no checkpoints)
        self.scrub: Callable[[ReadableSpan], ReadableSpan] | None = None
        #: the SDK spans open now, by the id of their SpanContext: filled and emptied by the router
        #: (``RunProcessor.open_spans``)
        self.open_spans: dict[int, Any] = {}
        self._checkpointed_ns = 0
        #: when each open span is due for its next checkpoint, and the wait after that (flusher thread only)
        self._due: dict[int, tuple[int, int]] = {}

    def start(self) -> None:
        """A run opened: start the flusher thread now (it also checkpoints open spans, before any span ended)."""
        if self._flusher is None:
            with self._lock:
                if self._flusher is None:
                    self._start_flusher()

    # --- the hot path (``on_start`` is the base class's no-op: the router does not call it) -------------
    def on_end(self, span: ReadableSpan) -> None:
        """Encode the span, journal it and add it to its run's batch (in the thread that ended it)."""
        try:
            fields = span_fields(span)
            if not fields[3] & 1:  # not sampled: not exported (as the SDK's processors)
                return
            attributes = fields[10]
            run_id = stored_dict(attributes).get(semconv.RUN_ID) if attributes else None
            if type(run_id) is not str:
                return
            state = self._runs.get(run_id)
            if state is None:
                state = self._open(run_id)
                if state is None:
                    _count_late(1, run_id)
                    return
            text = fields_text(fields, span, _unsampled_marker if self.mark_unsampled else None)
            resource, scope = fields[14], fields[15]
            group = self._last
            if group is None or group[0] is not resource or group[1] is not scope:
                group = self._group(resource, scope)
            if self.synchronous:
                state.sink.write((framed_line(((group[3], (text,)),)) + "\n").encode())
                if state.open_records:
                    with self._lock:
                        state.open_records.pop(fields[2], None)  # its own record rules now
                return
            gid = group[2]
            with self._lock:
                if state.closed:
                    _count_late(1, run_id)
                    return
                if state.open_records:
                    state.open_records.pop(fields[2], None)  # its own record rules now
                journal = state.journal
                if journal is None:
                    if state.direct < DIRECT_SPANS and not state.count:
                        # A run's first spans are their own lines: durable at once, and a short run creates no
                        # journal file (creating and removing one cost a short run more than these lines do).
                        state.direct += 1
                        state.sink.write((framed_line(((group[3], (text,)),)) + "\n").encode())
                        return
                    if state.direct >= 0:
                        state.direct = -1  # the journal is opened once; -1: do not try again if it failed
                        journal = state.journal = SpanJournal(Path(state.sink.path).parent)
                entry = state.groups.get(gid)
                if entry is None:
                    entry = state.groups[gid] = (group[3], [])
                entry[1].append(text)
                count = state.count = state.count + 1  # counted with the batch first: a failing journal loses nothing
                end_ns = fields[9] or 0
                if count == 1:
                    state.first_ns = end_ns
                    if self._flusher is None:
                        self._start_flusher()
                if journal is not None:  # the span's journal record: its group's prefix, its text
                    if gid in journal.declared:
                        journal.write(group[4] + text.encode() + b"\n")
                    else:
                        journal.declared.add(gid)
                        journal.write(journal_group(gid, group[3]) + group[4] + text.encode() + b"\n")
                if count >= self.batch or end_ns - state.first_ns >= self._delay_ns:
                    self._commit(state)
        except Exception as exc:  # never let an encoding or disk problem reach the user's code
            log_once("span-write", "runtel could not write spans to the run folder: %r", exc, exc_info=True)

    def _open(self, run_id: str) -> _RunBatch | None:
        sink = self._sinks.spans(run_id)
        if sink is None:
            return None
        with self._lock:
            if run_id in self._closed:  # closed between the lookup above and now: the span is late
                return None
            state = self._runs.get(run_id)
            if state is None:
                state = self._runs[run_id] = _RunBatch(sink, None)  # the journal opens after DIRECT_SPANS
        return state

    def _group(self, resource: Any, scope: Any) -> _Group:
        key = (id(resource), id(scope))
        group = self._groups.get(key)
        if group is None or group[0] is not resource or group[1] is not scope:
            with self._lock:
                if len(self._groups) > 64:
                    self._groups.clear()
                gid = self._next_gid = self._next_gid + 1  # never reused: batches and journals key by it
                group = self._groups[key] = (resource, scope, gid, span_frame(resource, scope), b"%d\t" % gid)
        self._last = group
        return group

    def _commit(self, state: _RunBatch) -> None:
        """Write the run's batch as one line and empty its journal (under the lock)."""
        if not state.count:
            return
        line = framed_line(state.groups.values()) + "\n"
        state.groups = {}
        state.count = 0
        state.sink.write(line.encode())  # a failure is counted and reported by the LineFile
        if state.journal is not None:
            state.journal.truncate()

    def _rejournal(self, state: _RunBatch) -> None:
        """Write the open spans' latest checkpoints into the emptied open journal (copies of kept bytes)."""
        journal = state.open_journal
        if journal is None:
            return
        for gid, frame, record in state.open_records.values():
            if gid not in journal.declared:
                journal.declared.add(gid)
                journal.write(journal_group(gid, frame))
            journal.write(record)

    # --- checkpoints of open spans -------------------------------------------------------------------
    def _checkpoint(self, now: int) -> None:
        """Journal every span open longer than OPEN_CHECKPOINT_NS as it is now (in the flusher thread).

        The snapshot is taken under the span's own lock (its attributes and events may be changing in
        another thread), scrubbed like an ended span and encoded outside the writer's lock.
        """
        scrub = self.scrub
        if scrub is None or now - self._checkpointed_ns < OPEN_CHECKPOINT_NS:
            return
        self._checkpointed_ns = now
        opened = list(self.open_spans.items())
        due = self._due
        if len(due) > len(opened):
            live = {key for key, _ in opened}
            for gone in [k for k in due if k not in live]:
                del due[gone]
        ready = []
        for key, span in opened:
            start = span.start_time or now
            if now - start >= OPEN_CHECKPOINT_NS:
                at, wait = due.get(key, (0, OPEN_CHECKPOINT_NS))
                if at <= now:
                    ready.append((at, key, wait, span))
        ready.sort(key=lambda item: item[0])  # the most overdue first (never checkpointed: 0)
        records: list[tuple[_RunBatch, int, int, _Group, str]] = []
        for _, key, wait, span in ready[:OPEN_CHECKPOINT_BUDGET]:
            due[key] = (now + wait, min(2 * wait, OPEN_CHECKPOINT_MAX_NS))
            snapshot = open_span_snapshot(span, now, ReadableSpan)
            if snapshot is None:
                continue
            run_id = snapshot.attributes.get(semconv.RUN_ID) if snapshot.attributes else None
            if type(run_id) is not str:
                continue
            state = self._runs.get(run_id) or self._open(run_id)
            if state is None:
                continue
            clean = scrub(snapshot)
            fields = span_fields(clean)
            group = self._group(fields[14], fields[15])
            records.append((state, key, fields[2], group, fields_text(fields, clean)))
        if not records:
            return
        with self._lock:
            written: dict[int, _RunBatch] = {}
            for state, key, span_id, group, text in records:
                if state.closed or key not in self.open_spans:
                    continue  # ended meanwhile: its own record is the truth
                journal = state.open_journal
                if journal is None:
                    journal = state.open_journal = SpanJournal(Path(state.sink.path).parent, open_spans=True)
                gid = group[2]
                record = b"o" + group[4] + text.encode() + b"\n"
                state.open_records[span_id] = (gid, group[3], record)
                if gid not in journal.declared:
                    journal.declared.add(gid)
                    journal.write(journal_group(gid, group[3]))
                journal.write(record)
                written[id(state)] = state
            for state in written.values():  # bounded: old checkpoints go, the latest stay
                journal = state.open_journal
                latest = sum(len(entry[2]) for entry in state.open_records.values())
                if journal is not None and journal.size > max(OPEN_COMPACT_BYTES, 2 * latest):
                    journal.truncate()
                    self._rejournal(state)

    # --- the time bound for a program that went quiet ----------------------------------------------
    def _start_flusher(self) -> None:
        """Start the thread that writes batches older than ``delay`` (under the lock, once per process)."""
        if self._stopped:
            return
        thread = threading.Thread(target=self._flush_loop, name="runtel-span-writer", daemon=True)
        self._flusher = thread
        try:
            thread.start()
        except RuntimeError:  # interpreter shutdown: the exit hook flushes
            self._flusher = None

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait(self.delay)
            if self._stopped:
                return
            now = time.time_ns()
            with guard("span-flush", "write spans to the run folder"), self._lock:
                for state in self._runs.values():
                    if state.count and now - state.first_ns >= self._delay_ns // 2:
                        self._commit(state)
            with guard("span-checkpoint", "checkpoint open spans in the run folder"):
                self._checkpoint(now)

    # --- flushes and run ends ----------------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Write every batch now (in the caller's thread)."""
        with guard("span-flush", "write spans to the run folder"), self._lock:
            for state in self._runs.values():
                self._commit(state)
        return True

    def close_run(self, run_id: str) -> None:
        """The run closes: write its batch, remove its journal and stop routing to it."""
        with self._lock:
            self._closed[run_id] = None
            if len(self._closed) > 1024:
                del self._closed[next(iter(self._closed))]
            state = self._runs.pop(run_id, None)
            self._forget_open(run_id)
            if state is None:
                return
            state.closed = True
            with guard("span-flush", "write spans to the run folder"):
                self._commit(state)
            for journal in (state.journal, state.open_journal):
                if journal is not None:
                    journal.close()

    def _forget_open(self, run_id: str) -> None:
        """Drop the run's spans from the open registry: any still open will end late (counted then), and one
        that never ends (a leak) must not hold a registry slot, or its memory, for the rest of the process."""
        opened = self.open_spans
        for key, span in list(opened.items()):
            attributes = getattr(span, "attributes", None)
            if attributes is not None and attributes.get(semconv.RUN_ID) == run_id:
                opened.pop(key, None)

    def shutdown(self) -> None:
        """Write everything and stop the flusher thread (journals stay until their runs close)."""
        self._stopped = True
        self._wake.set()
        self.force_flush()

    def after_fork(self) -> None:
        """In a forked child: the batches and journals are the parent's (it writes them); write each span at once.

        Called after the fork with no other thread running, so the parent's lock is replaced, not taken.
        """
        self._lock = threading.Lock()
        for state in self._runs.values():
            for journal in (state.journal, state.open_journal):
                if journal is not None:
                    journal.abandon()
        self._runs = {}
        self._flusher = None
        self._wake = threading.Event()
        self.synchronous = True
        self.open_spans.clear()  # the parent's open spans are the parent's to checkpoint (the router shares it)
        self._pid = os.getpid()

    def write_synchronously(self) -> None:
        """From now on every span is its own line at once (a worker process that may leave via ``os._exit``)."""
        self.force_flush()
        with self._lock:
            self.synchronous = True  # every span is on disk as it ends: no journal (checkpoints still are)
            for state in self._runs.values():
                if state.journal is not None:
                    state.journal.close()
                    state.journal = None


def _unsampled_marker(attributes: Mapping[str, object]) -> str:
    """``runtel.usage.samples = 0`` for a block or function span that no sample fell into, else nothing."""
    if attributes.get(semconv.SPAN_KIND) in _MARKED_KINDS and _SAMPLES_KEY not in attributes:
        return _UNSAMPLED
    return ""
