"""Run folders are private whatever the umask (or group-readable when shared); no open follows a symlink."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import runtel
from runtel.rundir.artifacts import INDEX_FILE
from runtel.testing import isolated


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under the umask given by parametrisation, restoring the previous one."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.iterdir()]}


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], indirect=True)
def test_run_folder_is_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """0700 for the folder, 0600 for its files (reproduce.sh: 0700), under 022, 002 and 077."""
    with isolated(tmp_path / "runs", sampling=False) as _, runtel.run_span("private") as run:
        with runtel.block("b"):
            pass
    assert run.dir is not None
    modes = _modes(run.dir)
    assert modes.pop(run.dir.name) == 0o700
    assert modes.pop("reproduce.sh", 0o700) == 0o700
    assert modes and all(m == 0o600 for m in modes.values()), modes


@pytest.mark.parametrize("umask", [0o077], indirect=True)
def test_shared_run_dir_is_group_readable(tmp_path: Path, umask: int) -> None:
    """shared_run_dir: 0750 / 0640 exactly, even under a umask that would remove the group bits."""
    with isolated(tmp_path / "runs", sampling=False, shared_run_dir=True), runtel.run_span("shared") as run:
        pass
    assert run.dir is not None
    modes = _modes(run.dir)
    assert modes.pop(run.dir.name) == 0o750
    assert modes.pop("reproduce.sh", 0o750) == 0o750
    assert all(m == 0o640 for m in modes.values()), modes
    with isolated(tmp_path / "runs2", sampling=False), runtel.run_span("private-again") as run2:
        pass
    assert run2.dir is not None and stat.S_IMODE(run2.dir.stat().st_mode) == 0o700


def test_planted_artifact_index_symlink_is_not_followed(tmp_path: Path) -> None:
    """A symlink at RUNTEL_DIR/.runtel-artifacts.jsonl never gets its target appended to."""
    runs = tmp_path / "runs"
    runs.mkdir()
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    (runs / INDEX_FILE).symlink_to(target)
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 10)
    with isolated(runs, sampling=False, strict=False), runtel.run_span("idx") as run:  # refused: logged once
        run.add_artifact("data", data)
    assert target.read_text() == "precious\n"


def test_run_json_swapped_for_a_symlink_mid_run_is_replaced_not_followed(tmp_path: Path) -> None:
    """The record is rewritten at the end: the planted link is replaced, its target untouched."""
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    with isolated(tmp_path / "runs", sampling=False), runtel.run_span("swap") as run:
        assert run.dir is not None
        (run.dir / "run.json").unlink()
        (run.dir / "run.json").symlink_to(target)
    assert target.read_text() == "precious\n"
    assert not (run.dir / "run.json").is_symlink()
    assert '"status": "ok"' in (run.dir / "run.json").read_text()


def test_spans_file_planted_as_symlink_is_refused(tmp_path: Path) -> None:
    """spans.jsonl created as a symlink before the first write: nothing is appended to the target."""
    from runtel.rundir.writer import LineFile

    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    link = tmp_path / "spans.jsonl"
    link.symlink_to(target)
    assert LineFile(link).write(b'{"x": 1}\n') is False
    assert target.read_text() == "precious\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file owned by another user needs root")
def test_artifact_index_owned_by_another_user_is_not_appended_to(tmp_path: Path) -> None:
    """An index planted by another user in the run directory is refused (one warning), not extended."""
    runs = tmp_path / "runs"
    runs.mkdir()
    index = runs / INDEX_FILE
    index.write_text("")
    os.chown(index, 54321, 54321)
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 10)
    with isolated(runs, sampling=False, strict=False), runtel.run_span("foreign") as run:
        run.add_artifact("data", data)
    assert index.read_text() == ""
