"""run.json writing and reading: the record text, whole-file replacement, full disks, forked writers, torn reads."""

from __future__ import annotations

import errno
import json
import math
import os
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

from runtel.errors import RunFolderError
from runtel.rundir.reader import read_record
from runtel.rundir.schema import RECORD_FILE
from runtel.rundir.writer import LineFile, RecordWriter, record_text

LONG_MAPPING = {f"key_{i}": f"value number {i} — ünïcödé" for i in range(12)}
ENVIRONMENT = {
    "host": {"name": "node-1", "os": {"type": "linux", "name": "Ubuntu"}},
    "packages": {f"pkg{i}": f"1.{i}.0" for i in range(30)},
    "env": {"LANG": "de_DE.UTF-8", "GREETING": "grüß dich ☃"},
    "machine": {"gpus": [], "memory": {"total": 2**40}},
}

RECORDS: list[dict[str, Any]] = [
    {},
    {"id": "r1", "status": "running", "end_time": None, "duration_s": 1.5, "ok": True, "count": 2**62},
    {"tags": {}, "config": {"lr": 0.1, "layers": [64, 32], "nested": {"a": {"b": [1, {"c": None}]}}}},
    {"long": LONG_MAPPING, "short": {"k": "v"}, "long_list": list(range(100)), "text": "x" * 500},
    {"name": "naïve – 東京 – 🚀", "attributes": {"ключ": "значение", "quote\"s": "back\\slash\nnewline\ttab"}},
    {"id": "r2", "environment": ENVIRONMENT, "after": {"k": 1}},
    {"environment": {}, "empty_list": [], "empty_str": "", "zero": 0, "neg": -1.25e-7},
]


@pytest.mark.parametrize("data", RECORDS)
def test_record_text_round_trips(data: dict[str, Any]) -> None:
    """Whatever the mix of short, long, nested and non-ASCII values, the text parses back to the input."""
    assert json.loads(record_text(data)) == data


def test_record_text_keeps_non_ascii_readable() -> None:
    """Non-ASCII text is written as UTF-8 characters, not \\u escapes, in short, long and environment values."""
    text = record_text({"name": "東京 🚀", "long": LONG_MAPPING, "environment": ENVIRONMENT})
    assert "東京 🚀" in text and "ünïcödé" in text and "grüß dich ☃" in text
    assert "\\u" not in text


def test_record_text_layout_one_line_per_key_and_long_mappings_split() -> None:
    """Short values take one line per top-level key; a long top-level mapping is written one key per line."""
    text = record_text({"id": "r", "short": {"a": 1}, "long": LONG_MAPPING})
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert '  "id": "r",' in lines
    assert '  "short": {"a": 1},' in lines
    for key, value in LONG_MAPPING.items():
        assert f"    {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}" in [line.rstrip(",") for line in lines]
    assert len(lines) == 2 + 2 + 2 + len(LONG_MAPPING)  # braces, two short keys, "long": { ... }


def test_record_text_environment_is_reencoded_for_a_new_object() -> None:
    """The cached environment text is only reused for the same object: a new, different section is encoded."""
    first = {"host": {"name": "alpha"}, "packages": {"a": "1"}}
    assert json.loads(record_text({"environment": first}))["environment"] == first
    assert json.loads(record_text({"id": "again", "environment": first})) == {"id": "again", "environment": first}
    second = {"host": {"name": "beta"}, "packages": {"b": "2", "c": "3"}}
    assert json.loads(record_text({"environment": second}))["environment"] == second
    assert "alpha" not in record_text({"environment": second})


@pytest.mark.parametrize(
    "data",
    [
        {"x": math.nan},
        {"x": {"y": [1.0, math.inf]}},
        {"long": {**LONG_MAPPING, "bad": -math.inf}},
        {"environment": {"host": {"load": math.nan}}},
    ],
)
def test_record_text_rejects_non_finite_numbers(data: dict[str, Any]) -> None:
    """NaN and infinities are not JSON: encoding fails loudly instead of writing an unreadable record."""
    with pytest.raises(ValueError):
        record_text(data)


# --- RecordWriter ------------------------------------------------------------------------------------


def _long_record() -> dict[str, Any]:
    return {"id": "run-1", "status": "running", "attributes": {f"a{i}": "v" * 20 for i in range(20)}}


def test_shorter_rewrite_replaces_the_whole_file(tmp_path: Path) -> None:
    """A shorter record replaces a longer one exactly: no padding, no tail of the old text."""
    path = tmp_path / RECORD_FILE
    rf = RecordWriter(path)
    rf.write(_long_record())
    assert json.loads(path.read_text(encoding="utf-8")) == _long_record()
    short = {"id": "run-1", "status": "ok"}
    rf.write(short)
    assert path.read_text(encoding="utf-8") == record_text(short) + "\n"
    assert read_record(tmp_path) == {**short, "dir": str(tmp_path)}


def test_rewrites_rename_a_new_file_over_the_record(tmp_path: Path) -> None:
    """Later writes go to a temporary file renamed over run.json (a new inode each time), none left behind."""
    path = tmp_path / RECORD_FILE
    rf = RecordWriter(path)
    rf.write({"status": "running"})
    inodes = {os.stat(path).st_ino}
    records = [_long_record(), {"status": "ok"}, {**_long_record(), "extra": "y" * 300}, {}]
    for data in records:
        assert rf.write(data)
        inodes.add(os.stat(path).st_ino)
        assert json.loads(path.read_text(encoding="utf-8")) == data
    assert len(inodes) > 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_FILE]  # no temporary files left


def _fail_after(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    """``os.write`` behaves like a disk with ``budget`` bytes free: a short write, then ENOSPC."""
    real_write = os.write
    left = [budget]

    def write(fd: int, data: Any) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(data)[: left[0]])
        left[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("budget", [0, 1, 100, 4096, 5000])
def test_a_record_write_that_runs_out_of_space_leaves_the_old_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """ENOSPC at any byte of a rewrite: run.json still holds the previous record, whole; no temporary file stays."""
    path = tmp_path / RECORD_FILE
    rf = RecordWriter(path)
    first = {"id": "run-1", "status": "running"}
    assert rf.write(first)
    final = {**_long_record(), "status": "ok", "big": "z" * 8000}
    with monkeypatch.context() as m:
        _fail_after(m, budget)
        assert not rf.write(final)
    assert json.loads(path.read_text(encoding="utf-8")) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_FILE]
    assert rf.write(final)  # space is back
    assert json.loads(path.read_text(encoding="utf-8")) == final


def test_a_first_record_write_that_runs_out_of_space_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No record before, none after: a torn first run.json is removed rather than left unreadable."""
    path = tmp_path / RECORD_FILE
    rf = RecordWriter(path)
    with monkeypatch.context() as m:
        _fail_after(m, 10)
        assert not rf.write(_long_record())
    assert not path.exists()
    assert rf.write(_long_record())
    assert json.loads(path.read_text(encoding="utf-8")) == _long_record()


@pytest.mark.parametrize("budget", [0, 1, 15, 16, 17, 40])
def test_a_torn_append_is_followed_by_a_fresh_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    """A batch cut by ENOSPC leaves at most one torn line; the next batch starts on a new line, so every line
    written before and after is whole, and the lost lines are counted."""
    path = tmp_path / "spans.jsonl"
    lf = LineFile(path)
    line = b'{"n": 1, "pad": "x"}\n'  # 21 bytes
    assert lf.write(line)
    with monkeypatch.context() as m:
        _fail_after(m, budget)
        assert not lf.write(line * 2)
        assert not lf.write(line)  # still full
    assert lf.write(line * 3)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    whole = [ln for ln in lines[:-1] if ln]
    parsed = []
    for ln in whole:
        try:
            parsed.append(json.loads(ln))
        except ValueError:
            parsed.append(None)
    assert parsed.count(None) <= 1  # the one fragment, on a line of its own
    assert len([x for x in parsed if x is not None]) == 1 + budget // 21 + 3
    assert lf.lines == 1 + budget // 21 + 3
    assert lf.dropped == 3 - budget // 21


def test_removed_record_is_recreated(tmp_path: Path) -> None:
    """If run.json disappears between writes, the next write creates it again, and later ones keep working."""
    path = tmp_path / RECORD_FILE
    rf = RecordWriter(path)
    rf.write(_long_record())
    path.unlink()
    rf.write({"status": "ok"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"status": "ok"}
    rf.write({"status": "error"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"status": "error"}


def test_existing_file_on_first_write_is_replaced(tmp_path: Path) -> None:
    """A first write that meets someone else's (longer) file replaces it whole instead of writing into it."""
    path = tmp_path / RECORD_FILE
    path.write_text(json.dumps({"stale": "z" * 1000}), encoding="utf-8")
    rf = RecordWriter(path)
    rf.write({"status": "running"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"status": "running"}
    rf.write({"status": "ok"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"status": "ok"}


@pytest.mark.filterwarnings("ignore:This process.*is multi-threaded:DeprecationWarning")
def test_forked_child_replaces_the_record_atomically(tmp_path: Path) -> None:
    """A forked child writing its parent's RecordWriter renames a new file over it (a different inode)."""
    path = tmp_path / RECORD_FILE
    rf = RecordWriter(path)
    rf.write(_long_record())
    parent_inode = os.stat(path).st_ino
    child_data = {"id": "run-1", "status": "running", "child": "written by the forked child"}
    pid = os.fork()
    if pid == 0:  # child: leave through os._exit whatever happens; the exit status is the verdict
        code = 1
        try:
            rf.write(child_data)
            code = 0 if json.loads(path.read_text(encoding="utf-8")) == child_data else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert json.loads(path.read_text(encoding="utf-8")) == child_data
    assert os.stat(path).st_ino != parent_inode
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_FILE]


def test_parent_write_after_a_longer_child_record_stays_valid(tmp_path: Path) -> None:
    """Regression: a forked child replaced the record with a longer text; the parent's next, shorter in-place
    write must pad to the file's present size (not the size it left), or the child's tail stays behind."""
    path = tmp_path / RECORD_FILE
    rf = RecordWriter(path)
    rf.write({"status": "running"})
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            rf.write({"status": "running", "child": "x" * 500})
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    rf.write({"status": "ok"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"status": "ok"}
    assert read_record(tmp_path)["status"] == "ok"


def test_concurrent_thread_writes_leave_one_whole_record(tmp_path: Path) -> None:
    """Writes from several threads are serialised: after each round of simultaneous writes of different lengths
    the file is exactly one of that round's records, never a mix or a torn text."""
    path = tmp_path / RECORD_FILE
    rf = RecordWriter(path)
    n_threads, n_rounds = 6, 100
    records = [[{"round": r, "writer": t, "pad": "p" * ((t * 7919 + r * 104729) % 2000)} for t in range(n_threads)]
               for r in range(n_rounds)]
    results: list[object] = []

    def check() -> None:  # runs in one thread once all writers of a round are done
        try:
            results.append(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as exc:
            results.append(exc)

    start, done = threading.Barrier(n_threads), threading.Barrier(n_threads, action=check)

    def writer(t: int) -> None:
        for r in range(n_rounds):
            start.wait()
            rf.write(records[r][t])
            done.wait()

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == n_rounds
    assert [r for r, result in enumerate(results) if result not in records[r]] == []


# --- read_record ---------------------------------------------------------------------------------------


def test_read_record_of_a_corrupt_file_raises(tmp_path: Path) -> None:
    """A run.json that stays unparsable is reported as RunFolderError after the retries (not a hang, not a crash)."""
    (tmp_path / RECORD_FILE).write_text('{"id": "torn', encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(RunFolderError, match="cannot read"):
        read_record(tmp_path)
    assert time.monotonic() - started < 0.5


def test_read_record_retries_a_torn_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that meets a half-written record reads again and gets the complete one written a moment later.

    The writer finishes during the reader's pause (its ``time.sleep``), so the test does not depend on a
    thread being scheduled within the few milliseconds the reader waits.
    """
    from runtel.rundir import reader as reader_module

    path = tmp_path / RECORD_FILE
    path.write_text('{"id": "run-1", "sta', encoding="utf-8")
    pauses: list[float] = []

    def finish_write(seconds: float) -> None:
        pauses.append(seconds)
        path.write_text('{"id": "run-1", "status": "ok"}', encoding="utf-8")

    clock = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    clock.sleep = finish_write
    monkeypatch.setattr(reader_module, "time", clock)
    record = read_record(tmp_path)
    assert record == {"id": "run-1", "status": "ok", "dir": str(tmp_path)}
    assert len(pauses) == 1 and 0 < pauses[0] <= 0.01


def test_read_record_of_a_missing_file_raises_at_once(tmp_path: Path) -> None:
    """A folder without run.json is not a run folder."""
    with pytest.raises(RunFolderError, match="not a run folder"):
        read_record(tmp_path)


def test_record_text_writes_non_string_keys_as_json_does() -> None:
    """Keys that are not strings (True, None, 7, 1.5) read back as json.dumps would write them, in short and in
    long (one key per line) mappings alike."""
    short = {True: 1, None: 2, 7: 3, 1.5: 4}
    long = {**short, "pad": "p" * 200}
    data = {"short": short, "long": long}
    assert json.loads(record_text(data)) == json.loads(json.dumps(data))


@pytest.mark.parametrize("value", [0, -1, 2**70, True, False, None, 1.5, -0.0, 1e300, 5e-324, 0.1, "x\u2603\n",
                                   {"a": [1, 2.5, None]}, [True, "s"]])
def test_record_values_are_written_as_json_would(value: Any) -> None:
    """Numbers, booleans, None and strings skip the encoder but give the text json.dumps gives."""
    assert record_text({"v": value}) == '{\n  "v": ' + json.dumps(value, ensure_ascii=False) + "\n}"


def test_record_with_a_non_finite_number_is_refused_like_the_encoder() -> None:
    """NaN is not JSON: the record writer raises as json.dumps(allow_nan=False) does (values are sanitised first)."""
    with pytest.raises(ValueError):
        record_text({"v": float("nan")})
    with pytest.raises(ValueError):
        record_text({"v": {"nested": float("inf")}})


def test_record_with_a_key_json_cannot_hold_is_refused_like_the_encoder() -> None:
    """A tuple key is refused with the encoder's own TypeError (values are sanitised before they get here)."""
    with pytest.raises(TypeError, match="keys must be"):
        record_text({"v": {("a", 1): 2}})
