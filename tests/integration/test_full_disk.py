"""A run on a real, small tmpfs that a user's own file fills mid-run (issue 19, full disk).

The record must stay valid JSON at every step, every span written before and after the full period
must be readable, ``runtel ls`` must list the run, and the user's program must go on. Mounting needs
root (or a user namespace); where that is impossible the tests skip loudly, except under CI=true.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import runtel
from runtel.exporters.jsonl import DIRECT_SPANS
from runtel.rundir.reader import read_spans
from runtel.rundir.schema import RECORD_FILE, SPANS_FILE
from runtel.testing import isolated

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs mounted for this test, unmounted after."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        reason = f"CANNOT MOUNT A TMPFS HERE ({proc.stderr.strip() or proc.returncode}): full-disk tests not run"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _fill(fs: Path) -> Path:
    """The user's 4 MB checkpoint, written until the disk is full (the user's own ENOSPC, which they catch)."""
    path = fs / "checkpoint.bin"
    with open(path, "wb", buffering=0) as f:
        try:
            for _ in range(64):
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        else:
            pytest.fail("a 4 MB file fit on the 2 MB tmpfs")
    # the last free blocks too, so that even a short write fails
    with open(fs / "crumbs.bin", "wb", buffering=0) as f:
        try:
            for _ in range(4096):
                f.write(b"\0" * 512)
        except OSError:
            pass
    return path


def _record(run_dir: Path) -> dict[str, object]:
    """run.json, which must parse at every step."""
    data: dict[str, object] = json.loads((run_dir / RECORD_FILE).read_text(encoding="utf-8"))
    return data


def _spans(prefix: str, n: int) -> None:
    for i in range(n):
        with runtel.block(f"{prefix}-{i}", payload="p" * 40):
            pass
    runtel.flush()


def _ls(runs: Path) -> list[dict[str, object]]:
    env = {**os.environ, "RUNTEL_DIR": str(runs), "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "runtel", "ls", "--json"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, object]] = json.loads(proc.stdout)
    return rows


def test_run_survives_a_full_disk_and_records_after_space_returns(
    small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs = small_fs / "runs"
    caplog.set_level(logging.WARNING, logger="runtel")
    with isolated(runs, sampling=False, strict=False), runtel.run_span("train", config={"lr": 0.1}) as run:
        assert run.dir is not None
        _spans("before", 300)
        assert _record(run.dir)["status"] == "running"

        checkpoint = _fill(small_fs)
        _spans("during", 300)  # dropped, counted, never raised
        run.add_metadata(notes="n" * 20_000)  # a longer record that cannot be written now
        run._write_record(force=True)
        assert _record(run.dir)["status"] == "running"  # the last complete record, still valid
        assert [r["id"] for r in _ls(runs)] == [run.id]

        checkpoint.unlink()
        (small_fs / "crumbs.bin").unlink()
        _spans("after", 300)
        assert _record(run.dir)["status"] == "running"
    record = _record(run.dir)
    assert record["status"] == "ok"
    assert record["metadata"] == {"notes": "n" * 20_000}
    names = {s.name for s in read_spans(run.dir)}
    assert {f"before-{i}" for i in range(300)} <= names
    assert {f"after-{i}" for i in range(300)} <= names
    raw = (run.dir / SPANS_FILE).read_bytes().split(b"\n")
    assert len([line for line in raw if line.strip()]) - len(_parsable(raw)) <= 1  # at most one torn line
    assert [(r["id"], r["status"]) for r in _ls(runs)] == [(run.id, "ok")]
    full = [r.getMessage() for r in caplog.records if "no space left" in r.getMessage()]
    assert len(full) == 1, full
    # what could not be written is kept with the run, and `runtel show` says it
    lost = record["telemetry_losses"]
    assert isinstance(lost, dict) and lost.get("spans_lines", 0) >= 1, lost
    env = {**os.environ, "RUNTEL_DIR": str(runs), "PYTHONPATH": str(ROOT / "src")}
    shown = subprocess.run([sys.executable, "-m", "runtel", "show", run.id], env=env, capture_output=True, text=True,
                           timeout=120)
    assert f"{lost['spans_lines']} line(s) of spans.jsonl were lost" in shown.stderr, shown.stderr
    assert shown.returncode == 1  # like every problem a reader reports: the data is incomplete


def _parsable(lines: list[bytes]) -> list[object]:
    out = []
    for line in lines:
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def test_run_that_ends_on_a_full_disk_keeps_its_last_record(small_fs: Path) -> None:
    """The final (longer) record cannot be written: run.json keeps the last one, valid, and ls lists the run."""
    runs = small_fs / "runs"
    with isolated(runs, sampling=False, strict=False):
        with runtel.run_span("train") as run:
            assert run.dir is not None
            # fewer spans than are written directly: no span journal (whose reserved space, freed at the
            # run's end, would let the final record fit)
            _spans("before", DIRECT_SPANS - 1)
            _fill(small_fs)
            run.set_attributes(big="b" * 50_000)
            _spans("during", 50)
        assert _record(run.dir)["status"] == "running"
        assert [r["id"] for r in _ls(runs)] == [run.id]
        assert {f"before-{i}" for i in range(DIRECT_SPANS - 1)} <= {s.name for s in read_spans(run.dir)}
        assert sorted(p.name for p in run.dir.iterdir() if p.name.startswith(".")) == []  # no temporary files
        # space returns: the next run of the process records normally
        (small_fs / "checkpoint.bin").unlink()
        (small_fs / "crumbs.bin").unlink()
        with runtel.run_span("next") as second:
            _spans("next", 10)
        assert second.dir is not None
        assert _record(second.dir)["status"] == "ok"


def test_run_that_starts_on_a_full_disk_records_once_space_returns(
    small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No room even for the first record: one line, the user's code runs, the record appears at the end."""
    runs = small_fs / "runs"
    runs.mkdir()
    caplog.set_level(logging.WARNING, logger="runtel")
    with isolated(runs, sampling=False, strict=False):
        _fill(small_fs)
        ran = []
        with runtel.run_span("starved") as run:
            ran.append(True)
            assert run.dir is None or not (run.dir / RECORD_FILE).exists() or _record(run.dir)
            (small_fs / "checkpoint.bin").unlink()
            (small_fs / "crumbs.bin").unlink()
            _spans("after", 20)
    assert ran == [True]
    if run.dir is not None:  # the folder itself fit (a directory needs no data block on tmpfs)
        assert _record(run.dir)["status"] == "ok"
        assert {f"after-{i}" for i in range(20)} <= {s.name for s in read_spans(run.dir)}
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in messages if "Traceback" in m or "could not" in m], messages
