"""run.json writing and reading: the record text, in-place rewrites, forked writers and torn reads."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runtel.errors import RunFolderError
from runtel.rundir.reader import read_record
from runtel.rundir.schema import RECORD_FILE
from runtel.rundir.writer import RecordWriter, record_text

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


def test_shorter_rewrite_is_padded_and_file_keeps_its_size(tmp_path: Path) -> None:
    """A shorter record overwrites a longer one in place: spaces pad it, the file does not shrink, JSON is exact."""
    path = tmp_path / RECORD_FILE
    rf = RecordWriter(path)
    rf.write(_long_record())
    long_size = path.stat().st_size
    assert json.loads(path.read_text(encoding="utf-8")) == _long_record()
    short = {"id": "run-1", "status": "ok"}
    rf.write(short)
    raw = path.read_bytes()
    assert len(raw) == long_size
    assert raw.endswith(b" \n") and raw.rstrip(b" \n").endswith(b"}")
    assert json.loads(raw) == short
    assert read_record(tmp_path) == {**short, "dir": str(tmp_path)}


def test_rewrites_keep_the_inode(tmp_path: Path) -> None:
    """Later writes go to the same file (no temporary file and rename), whether the text grows or shrinks."""
    path = tmp_path / RECORD_FILE
    rf = RecordWriter(path)
    rf.write({"status": "running"})
    inode = os.stat(path).st_ino
    records = [_long_record(), {"status": "ok"}, {**_long_record(), "extra": "y" * 300}, {}]
    for data in records:
        rf.write(data)
        assert os.stat(path).st_ino == inode
        assert json.loads(path.read_text(encoding="utf-8")) == data
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_FILE]  # no temporary files left


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


def test_read_record_retries_a_torn_write(tmp_path: Path) -> None:
    """A reader that meets a half-written record reads again and gets the complete one written a moment later."""
    path = tmp_path / RECORD_FILE
    path.write_text('{"id": "run-1", "sta', encoding="utf-8")

    def finish_write() -> None:
        time.sleep(0.003)
        path.write_text('{"id": "run-1", "status": "ok"}', encoding="utf-8")

    thread = threading.Thread(target=finish_write)
    thread.start()
    try:
        record = read_record(tmp_path)
    finally:
        thread.join()
    assert record == {"id": "run-1", "status": "ok", "dir": str(tmp_path)}


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
