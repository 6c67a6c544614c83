"""The span journal: each finished span on disk the moment it ends, until its batch reaches spans.jsonl.

The run folder's span writer (``exporters.jsonl.JsonlSpanWriter``) keeps the last few hundred
milliseconds of spans in memory and appends them to ``spans.jsonl`` as one OTLP/JSON line per batch.
So that a process killed in that window (SIGKILL, the OOM killer, a main thread holding the GIL in a
long C call so no other thread ever runs again) loses nothing, each span is also appended, in the
thread that ends it, to a journal file of its run folder and process, ``.spans.<pid>.journal``: copied
into a shared memory map of the file (no system call per span), or one ``pwrite`` where it cannot be
mapped. After each batch line the journal is emptied: it holds exactly the spans not yet in ``spans.jsonl``. A run that ends normally removes its journal, so its folder is plain
OTLP/JSON lines.

The writing process holds an exclusive ``flock`` on its journal while it lives (the kernel drops it
when the process dies, however it dies). :func:`recover_spans` (called by the readers before they read
a run's spans) turns every journal nobody holds into standard lines appended to ``spans.jsonl``, skipping
spans already there (a kill between a batch line and the truncation), and removes it.

Journal lines (UTF-8, ``\\n``-terminated; texts are JSON, so they hold no raw tab, newline or NUL; the
file's unused rest is NUL bytes):

* ``#<gid>\\t<resource_open>\\t<resource_close>\\t<scope_open>\\t<scope_close>`` declares the frame of
  group ``gid`` (see :func:`runtel.rundir.otlp_json.span_frame`), before any span of that group;
* ``<gid>\\t<span>`` is one OTLP/JSON ``Span`` object of that group;
* ``o<gid>\\t<span>`` is a checkpoint of a span that is still **open**: the span as it was at the
  checkpoint, its end time the checkpoint's time. The span writer writes them to a second journal of the
  process, ``.spans.<pid>.open.journal`` (``open_spans=True``), which batch lines never empty, so a process
  that dies with a run span, an epoch block or a request still open leaves them too.

A process's two journals are recovered together.

A torn or unknown line (a span of a group declared before a truncation) is skipped: its span was in a
batch line already. At recovery an open span's latest checkpoint is written unless the span itself ended
(its own record in the journal or in spans.jsonl): with status ERROR (unless it had an error status of its
own), the message :data:`UNENDED_MESSAGE`, ``runtel.span.unended = true`` and its end at the last moment its
process was seen (the latest end or checkpoint in its journals), so readers show the epoch block that was
running, for at least as long as it ran, instead of nothing.
"""

from __future__ import annotations

import json
import mmap
import os
import re
from pathlib import Path

from runtel import semconv
from runtel._guard import log_once
from runtel.rundir.otlp_json import framed_line
from runtel.rundir.schema import SPANS_FILE, span_segments
from runtel.rundir.writer import LineFile, file_mode, open_run_file

try:
    import fcntl
except ImportError:  # Windows: no flock; a journal is then recovered only once its run is no longer running
    fcntl = None  # type: ignore[assignment]

__all__ = ("JOURNAL_SUFFIX", "UNENDED_MESSAGE", "SpanJournal", "recover_spans")

JOURNAL_PREFIX = ".spans."
JOURNAL_SUFFIX = ".journal"
#: the open-span checkpoints of a process go to ``.spans.<pid>.open.journal``: batch lines never empty it
OPEN_INFIX = ".open"
#: how much of the end of the spans file is searched for journal spans already written (see recover_spans)
TAIL_BYTES = 64 << 20

_FRAME_FIELDS = 4
_HEAD = re.compile(rb'\{"traceId":"([0-9a-f]{32})","spanId":"([0-9a-f]{16})","name":')
#: a rotation size no file reaches: recovery appends to the newest segment and never starts one
_NEVER = 1 << 62
#: the status message of a recovered open span (its end: the last moment its process was seen, a span end or checkpoint)
UNENDED_MESSAGE = "did not end: its process was gone (it ran at least this long: until its process was last seen)"
_UNENDED_KV = {"key": semconv.SPAN_UNENDED, "value": {"boolValue": True}}


#: bytes of a journal mapped at first, doubled whenever a batch needs more (a batch of 1,024 common spans is
#: ~0.5 MB: four doublings); small, because every open run with more than a few spans has a journal per process
MAP_BYTES = 64 << 10
#: the most a journal maps; records beyond it are written with ``pwrite`` until the next batch empties it
MAX_MAP_BYTES = 64 << 20


class SpanJournal:
    """One process's journal in one run folder; opened after its run's first spans, removed when the run closes.

    Records are copied into a shared memory map of the file (``MAP_SHARED``): the bytes are in the page
    cache as soon as the copy is done, which a killed process cannot take back, and no system call is
    made per span (``os.write`` was ~1.3 us of a ~25 us span on this VM; the copy is ~0.2 us; see
    docs/performance.md, durable spans). The mapped bytes are reserved with ``posix_fallocate`` first (the map grows by doubling),
    so a full disk is an ``OSError`` at reservation, never a ``SIGBUS`` at a copy; where that cannot be
    had (no ``fallocate``, a file system that refuses it, Windows) each record is one ``pwrite``.
    Unused bytes are zeros: the reader stops at the first NUL. Emptying zeroes what was used.

    Not thread-safe by itself: the span writer calls it under its own lock.
    """

    def __init__(self, run_dir: Path, *, open_spans: bool = False) -> None:
        infix = OPEN_INFIX if open_spans else ""
        self.open_spans = open_spans  #: the open-span checkpoints' journal
        self.path = run_dir / f"{JOURNAL_PREFIX}{os.getpid()}{infix}{JOURNAL_SUFFIX}"
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._mapped = 0  # bytes of the file that are mapped (and reserved)
        self._pos = 0  # where the next record goes
        self.declared: set[int] = set()  # groups declared since the last truncation
        self.failed = False  # the journal could not be written: spans are durable only once batched

    @property
    def size(self) -> int:
        """Bytes of records since the last truncation."""
        return self._pos

    def _open(self) -> int:
        fd = open_run_file(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode())
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a file system without locks: still a journal, recovered once the process is gone
                pass
        self._fd = fd
        self._map_to(fd, MAP_BYTES)
        return fd

    def _map_to(self, fd: int, size: int) -> bool:
        """Reserve and map the first ``size`` bytes of the file; False (and records by ``pwrite``) if that fails."""
        if not hasattr(os, "posix_fallocate"):
            return False
        try:
            os.posix_fallocate(fd, 0, size)  # ENOSPC here, not SIGBUS at a copy into a hole
            mapped = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ValueError):
            return False
        if self._map is not None:
            self._map.close()
        self._map, self._mapped = mapped, size
        return True

    def write(self, data: bytes) -> None:
        """Append records (whole lines); a failure is reported once and the journal stops."""
        pos = self._pos
        end = pos + len(data)
        mapped = self._map
        if mapped is not None and end <= self._mapped:  # the hot path: a copy, no system call
            mapped[pos:end] = data
            self._pos = end
            return
        if self.failed:
            return
        try:
            fd = self._fd if self._fd is not None else self._open()
            mapped = self._map
            if mapped is not None and end > self._mapped and self._mapped < MAX_MAP_BYTES:
                self._map_to(fd, min(MAX_MAP_BYTES, max(end, 2 * self._mapped)))
                mapped = self._map
            if mapped is not None and end <= self._mapped:
                mapped[pos:end] = data
            elif hasattr(os, "pwrite"):
                os.pwrite(fd, data, pos)
            else:  # Windows: no pwrite (and the writer's lock keeps the seek and write together)
                os.lseek(fd, pos, os.SEEK_SET)
                os.write(fd, data)
            self._pos = end
        except OSError as exc:
            self.failed = True
            what = ("spans still open when the process is killed will be missing from the run" if self.open_spans
                    else "spans still reach spans.jsonl in batches, but a killed process may lose the last 0.2 s of them")
            log_once(f"journal:{self.path}", "runtel could not write the span journal %s: %s (%s)",
                     self.path, exc.strerror or exc, what)

    def truncate(self) -> None:
        """Every span in the journal is in spans.jsonl now: start it again empty."""
        self.declared.clear()
        used, self._pos = self._pos, 0
        if self._fd is None or self.failed or not used:
            return
        try:
            mapped = self._map
            if mapped is not None:
                mapped[:min(used, self._mapped)] = bytes(min(used, self._mapped))
                if used > self._mapped:
                    os.ftruncate(self._fd, self._mapped)  # what pwrite added past the map
            else:
                os.ftruncate(self._fd, 0)
        except OSError as exc:
            self.failed = True
            log_once(f"journal:{self.path.parent}", "runtel could not truncate the span journal %s: %s",
                     self.path, exc.strerror or exc)

    def close(self) -> None:
        """The run is closed and its spans written: remove the journal."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.abandon()

    def abandon(self) -> None:
        """Unmap and close, leaving the file (a forked child: the journal is its parent's)."""
        mapped, self._map, self._mapped = self._map, None, 0
        if mapped is not None:
            try:
                mapped.close()
            except (OSError, BufferError):
                pass
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def journal_group(gid: int, frame: tuple[str, str, str, str]) -> bytes:
    """The record declaring group ``gid``."""
    return (f"#{gid}\t" + "\t".join(frame) + "\n").encode()


def _written_heads(files: list[Path]) -> set[tuple[bytes, bytes]]:
    """(trace id, span id) of the spans in the last :data:`TAIL_BYTES` of the spans files."""
    heads: set[tuple[bytes, bytes]] = set()
    left = TAIL_BYTES
    for path in files:
        try:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - left))
                data = f.read(left)
        except OSError:
            continue
        heads.update(_HEAD.findall(data))
        left -= len(data)
        if left <= 0:
            break
    return heads


_Frame = tuple[str, str, str, str]


def _parse(data: bytes, frames: dict[int, tuple[_Frame, list[bytes], list[bytes]]]) -> None:
    """Add a journal's ended spans and open-span checkpoints to ``frames``, by group id (a process's two
    journals share its group ids)."""
    declared: dict[int, _Frame] = {}
    data = data.partition(b"\0")[0]  # the unused, zeroed rest of a mapped journal
    for line in data.split(b"\n")[:-1]:  # the part after the last newline is torn (or empty)
        gid_text, sep, rest = line.partition(b"\t")
        if not sep:
            continue
        is_open = gid_text.startswith(b"o")
        try:
            if gid_text.startswith(b"#"):
                fields = rest.decode().split("\t")
                if len(fields) == _FRAME_FIELDS:
                    gid = int(gid_text[1:])
                    declared[gid] = (fields[0], fields[1], fields[2], fields[3])
                    if gid not in frames:
                        frames[gid] = (declared[gid], [], [])
                continue
            gid = int(gid_text[1:] if is_open else gid_text)
        except (ValueError, UnicodeDecodeError):
            continue
        group = frames.get(gid) if gid in declared else None  # a group declared in this journal, since its truncation
        if group is not None and rest.startswith(b'{"traceId":"') and rest.endswith(b"}"):
            (group[2] if is_open else group[1]).append(rest)


_END = re.compile(rb'"endTimeUnixNano":"(\d+)"')


def _end_ns(span: bytes) -> int:
    match = _END.search(span)
    return int(match.group(1)) if match is not None else 0


def _unended(span: bytes, seen_ns: int) -> str | None:
    """An open span's checkpoint as a finished span that says it did not end (``None``: not valid JSON).

    Its end is the last moment its process was seen alive (its latest span end or checkpoint), when that is
    later than the checkpoint's; a status the span already had as an error (its own message) is kept.
    """
    try:
        obj = json.loads(span)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    try:
        if seen_ns > int(obj.get("endTimeUnixNano", 0)):
            obj["endTimeUnixNano"] = str(seen_ns)
    except (TypeError, ValueError):
        pass
    status = obj.get("status")
    if not (isinstance(status, dict) and status.get("code") == 2):
        obj["status"] = {"code": 2, "message": UNENDED_MESSAGE}
    attributes = obj.get("attributes")
    obj["attributes"] = [*(attributes if isinstance(attributes, list) else ()), _UNENDED_KV]
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _recover_one(run_dir: Path, paths: list[Path]) -> int:
    """Recover one dead process's journals (its spans and its open-span checkpoints) as one line."""
    fds: list[int] = []
    try:
        for path in paths:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
            except OSError:
                continue  # gone meanwhile (another reader recovered it), or not ours to touch
            fds.append(fd)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return 0  # its process is alive and still writing it
                except OSError:
                    pass
            try:
                if os.stat(path, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                    return 0  # recovered and removed by another reader while this one waited for the lock
            except FileNotFoundError:
                return 0
        if not fds:
            return 0
        frames: dict[int, tuple[_Frame, list[bytes], list[bytes]]] = {}
        for fd in fds:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            _parse(b"".join(chunks), frames)
        groups = [group for group in frames.values() if group[1] or group[2]]
        count = 0
        if groups:
            written = _written_heads(span_segments(run_dir)[::-1])
            ended = set(written)
            seen_ns = 0  # the last moment the process was seen: its latest span end or checkpoint
            for _, spans, opens in groups:
                ended.update((m.group(1), m.group(2)) for m in map(_HEAD.match, spans) if m is not None)
                seen_ns = max([seen_ns, *map(_end_ns, spans), *map(_end_ns, opens)])
            unended: dict[tuple[bytes, bytes], tuple[int, bytes]] = {}  # the latest checkpoint of each open span
            for index, (_, _, opens) in enumerate(groups):
                for span in opens:
                    match = _HEAD.match(span)
                    if match is not None and (match.group(1), match.group(2)) not in ended:
                        key = (match.group(1), match.group(2))
                        if key not in unended or _end_ns(span) >= _end_ns(unended[key][1]):
                            unended[key] = (index, span)
            fresh = []
            for index, (frame, spans, _) in enumerate(groups):
                kept = []
                for span in spans:
                    match = _HEAD.match(span)
                    if match is not None and (match.group(1), match.group(2)) not in written:
                        kept.append(span.decode())
                for at, span in unended.values():
                    text = _unended(span, seen_ns) if at == index else None
                    if text is not None:
                        kept.append(text)
                if kept:
                    fresh.append((frame, kept))
                    count += len(kept)
            if fresh:
                target = LineFile(run_dir / SPANS_FILE, rotate_bytes=_NEVER)  # the newest segment, never a new one
                ok = target.write((framed_line(fresh) + "\n").encode())
                target.close()
                if not ok:
                    return 0  # reported by LineFile; the journal stays for a later try
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return count
    finally:
        for fd in fds:
            os.close(fd)


def recover_spans(run_dir: Path) -> int:
    """Append the spans of journals left by processes that died to the run's spans.jsonl; how many.

    A process's journal and its open-span journal (``.spans.<pid>.open.journal``) are recovered together.
    Cheap when there is nothing to do (one directory listing). Never raises: a folder that cannot be
    written (another user's run) keeps its journals, and its reader sees the spans batched before the kill.
    """
    try:
        names = [n for n in os.listdir(run_dir) if n.startswith(JOURNAL_PREFIX) and n.endswith(JOURNAL_SUFFIX)]
    except (OSError, ValueError):
        return 0
    by_process: dict[str, list[Path]] = {}
    for name in sorted(names):
        stem = name[len(JOURNAL_PREFIX):-len(JOURNAL_SUFFIX)]
        by_process.setdefault(stem.removesuffix(OPEN_INFIX), []).append(run_dir / name)
    count = 0
    for paths in by_process.values():
        try:
            count += _recover_one(run_dir, paths)
        except OSError as exc:
            log_once(f"recover:{run_dir}", "runtel could not recover the spans journal in %s: %s (the spans "
                     "written before the process ended are still read)", run_dir, exc.strerror or exc)
    return count
