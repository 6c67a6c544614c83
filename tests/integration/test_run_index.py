"""The run index (.runtel-index.sqlite): written by real runs, repaired from the folders, same answers as a scan.

Every command is run twice where it matters: through the index, and with ``RUNTEL_RUN_INDEX=false``
(the full scan of every run.json, which stays the fallback) as the oracle.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import runtel
from runtel.config import Settings
from runtel.rundir import index
from runtel.rundir.reader import list_runs

PY = sys.executable

#: a small pipeline: a parent with children and tags, results, an artifact that a later run uses
JOB = textwrap.dedent("""
    import sys, runtel
    from pathlib import Path
    out = Path(sys.argv[1])
    with runtel.run_span("prepare", tags={"stage": "prep"}) as prep:
        out.write_text("data v1")
        prep.add_artifact("data", out)
        prep.set_result(rows=3)
    with runtel.run_span("train", tags={"stage": "fit", "lr": "0.1"}) as train:
        train.add_source(out)
        for i in range(3):
            with runtel.run_span(f"fold{i}") as fold:
                fold.log(loss=1.0 / (i + 1))
    with runtel.run_span("pool.worker"):
        pass
""")


def _env(clean_env: dict[str, str], runs: Path, **extra: str) -> dict[str, str]:
    return {**clean_env, "RUNTEL_DIR": str(runs), "COLUMNS": "200", **extra}


def _cli(args: list[str], env: dict[str, str], *, index_on: bool = True) -> subprocess.CompletedProcess[str]:
    env = env if index_on else {**env, "RUNTEL_RUN_INDEX": "false"}
    return subprocess.run([PY, "-m", "runtel", *args], env=env, capture_output=True, text=True, timeout=120)


def _json(args: list[str], env: dict[str, str], *, index_on: bool = True) -> Any:
    proc = _cli([*args, "--json"], env, index_on=index_on)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(runs root, the artifact file) after the JOB ran twice in fresh processes."""
    base = tmp_path_factory.mktemp("index")
    runs, data = base / "runs", base / "data.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNTEL_", "OTEL_", "TRACEPARENT"))}
    env.update(RUNTEL_SAMPLING="false", RUNTEL_DIR=str(runs))
    script = base / "job.py"
    script.write_text(JOB)
    for _ in range(2):
        proc = subprocess.run([PY, str(script), str(data)], env=env, cwd=base, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
    return runs, data


def _copy(corpus: tuple[Path, Path], tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    shutil.copytree(corpus[0], runs)
    return runs


def test_real_runs_write_the_index_privately(corpus: tuple[Path, Path], clean_env: dict[str, str]) -> None:
    """Every run of the job has its row, written by the runs themselves (no reader has run yet)."""
    runs, _ = corpus
    path = runs / index.INDEX_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ix = index.open_index(runs, refresh=False)
    assert ix is not None
    try:
        rows = {r["id"]: r for r in ix.runs()}
    finally:
        ix.close()
    folders = {p.name for p in runs.iterdir() if p.is_dir()}
    assert set(rows) == folders and len(folders) == 2 * 6
    assert {r["status"] for r in rows.values()} == {"ok"}
    train = next(r for r in rows.values() if r.get("name") == "train")
    assert train["tags"] == {"stage": "fit", "lr": "0.1"}
    assert sum(1 for r in rows.values() if (r.get("parent") or {}).get("run_id") == train["id"]) == 3


@pytest.mark.parametrize("args", [
    ["ls"], ["ls", "--all"], ["ls", "-n", "3"], ["ls", "--name", "fold*"], ["ls", "--tag", "stage=fit"],
    ["ls", "--status", "ok"], ["ls", "--since", "1h"], ["show", "latest"],
])
def test_ls_and_show_equal_the_full_scan(corpus: tuple[Path, Path], clean_env: dict[str, str], args: list[str]) -> None:
    """Index and full scan give the same JSON (ls rows, show's record and span tree with child runs)."""
    env = _env(clean_env, corpus[0])
    assert _json(args, env) == _json(args, env, index_on=False)


@pytest.mark.parametrize("args", [["ls"], ["ls", "-n", "3"], ["ls", "-n", "5"], ["ls", "--all"]])
def test_ls_table_equals_the_full_scan(corpus: tuple[Path, Path], clean_env: dict[str, str], args: list[str]) -> None:
    """The terminal table too (the default ls reads only the rows it shows): same text, worker count included."""
    env = _env(clean_env, corpus[0])
    got, scan = _cli(args, env), _cli(args, env, index_on=False)
    assert got.returncode == scan.returncode == 0, got.stderr + scan.stderr
    assert got.stdout == scan.stdout and ("worker run" in got.stdout) == ("--all" not in args)


@pytest.mark.parametrize("args", [
    ["ls", "--tag", "stage=fit"], ["ls", "--name", "fold*"], ["ls", "--status", "ok", "-n", "2"],
    ["ls", "--since", "1d", "--name", "*.worker"], ["ls", "--parent", "nosuchrun"], ["ls", "--status", "corrupt"],
])
def test_filtered_ls_equals_the_full_scan(corpus: tuple[Path, Path], clean_env: dict[str, str], args: list[str]) -> None:
    """Filters narrowed down in the index, then applied exactly: same table, same errors."""
    env = _env(clean_env, corpus[0])
    got, scan = _cli(args, env), _cli(args, env, index_on=False)
    assert (got.returncode, got.stdout, got.stderr) == (scan.returncode, scan.stdout, scan.stderr)


def test_parent_prefix_and_lineage_equal_the_full_scan(corpus: tuple[Path, Path], clean_env: dict[str, str]) -> None:
    """``ls --parent``, ``show PREFIX`` of a parent with children, ``lineage FILE``: same as the scan."""
    runs, data = corpus
    env = _env(clean_env, runs)
    train = next(r for r in list_runs(runs) if r.get("name") == "train")
    prefix = str(train["id"])[:-2]
    for args in (["ls", "--parent", prefix], ["show", prefix], ["lineage", str(data)], ["lineage", "latest"]):
        got = _json(args, env)
        assert got == _json(args, env, index_on=False), args
    shown = _json(["show", prefix], env)
    assert shown["run"]["id"] == train["id"]
    assert sum(1 for t in shown["spans"][0]["children"] if t.get("kind") == "run") == 3  # the children, grafted
    assert _json(["lineage", str(data)], env)["file"]["artifact_name"] == "data"


def test_ls_table_has_a_default_limit_and_says_what_it_left_out(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """60 runs: the table shows the newest 50 and a footer; -n 0 and --all show all."""
    runs = tmp_path / "runs"
    code = "import runtel\nfor i in range(60):\n    with runtel.run_span(f'r{i:02d}'):\n        pass\n"
    env = _env(clean_env, runs)
    assert subprocess.run([PY, "-c", code], env=env, timeout=120).returncode == 0
    out = _cli(["ls"], env).stdout
    assert "r59" in out and "r09" not in out and "10 more runs not shown" in out
    assert "r00" in _cli(["ls", "-n", "0"], env).stdout and "r00" in _cli(["ls", "--all"], env).stdout
    assert len(_json(["ls"], env)) == 60  # --json lists everything unless -n says otherwise


def test_deleted_index_is_rebuilt(corpus: tuple[Path, Path], tmp_path: Path, clean_env: dict[str, str]) -> None:
    runs = _copy(corpus, tmp_path)
    for p in runs.glob(index.INDEX_FILE + "*"):
        p.unlink()
    env = _env(clean_env, runs)
    assert _json(["ls", "--all"], env) == _json(["ls", "--all"], env, index_on=False)
    ix = index.open_index(runs, refresh=False)
    assert ix is not None and ix.count() == 12
    ix.close()


def test_corrupt_index_is_rebuilt_with_one_warning(corpus: tuple[Path, Path], tmp_path: Path,
                                                   clean_env: dict[str, str]) -> None:
    runs = _copy(corpus, tmp_path)
    for p in runs.glob(index.INDEX_FILE + "-*"):
        p.unlink()
    (runs / index.INDEX_FILE).write_bytes(os.urandom(8192))
    env = _env(clean_env, runs)
    proc = _cli(["ls", "--all", "--json"], env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("was corrupt") == 1, proc.stderr
    assert json.loads(proc.stdout) == _json(["ls", "--all"], env, index_on=False)
    again = _cli(["ls", "--all", "--json"], env)
    assert again.returncode == 0 and again.stderr == ""


def test_copied_in_folder_is_picked_up_and_removed_one_dropped(corpus: tuple[Path, Path], tmp_path: Path,
                                                                clean_env: dict[str, str]) -> None:
    """A folder from another root (another machine) appears; a deleted one disappears, with its artifacts."""
    runs = _copy(corpus, tmp_path)
    other = tmp_path / "other"
    env_other = {**_env(clean_env, other)}
    code = "import runtel\nwith runtel.run_span('from-elsewhere', tags={'host': 'b'}):\n    pass\n"
    assert subprocess.run([PY, "-c", code], env=env_other, timeout=60).returncode == 0
    (copied,) = [p for p in other.iterdir() if p.is_dir()]
    shutil.copytree(copied, runs / copied.name)
    env = _env(clean_env, runs)
    assert [r["name"] for r in _json(["ls", "--tag", "host=b"], env)] == ["from-elsewhere"]
    prepare = [r for r in list_runs(runs) if r.get("name") == "prepare"]
    for record in prepare:
        shutil.rmtree(record["dir"])
    listed = {r["id"] for r in _json(["ls", "--all"], env)}
    assert not listed & {r["id"] for r in prepare}
    assert listed == {r["id"] for r in _json(["ls", "--all"], env, index_on=False)}
    data = corpus[1]
    assert _cli(["lineage", str(data)], env).returncode == 1  # its producer is gone: not found, as the scan says


def test_killed_run_shows_interrupted(tmp_path: Path, clean_env: dict[str, str]) -> None:
    runs = tmp_path / "runs"
    env = _env(clean_env, runs)
    code = "import runtel, time\nwith runtel.run_span('doomed'):\n    print('up', flush=True)\n    time.sleep(60)\n"
    proc = subprocess.Popen([PY, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    (row,) = _json(["ls"], env)
    assert row["status"] == "running"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    (row,) = _json(["ls"], env)
    assert row["status"] == "interrupted"
    assert _json(["ls", "--status", "interrupted"], env) == _json(["ls", "--status", "interrupted"], env, index_on=False)


def test_concurrent_writers_are_all_indexed(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """8 processes x 25 runs at once: 200 rows written by the runs (no reader repaired them), no warnings."""
    runs = tmp_path / "runs"
    env = _env(clean_env, runs, RUNTEL_STRICT="true")
    code = "import runtel, sys\nfor i in range(25):\n    with runtel.run_span(f'w{sys.argv[1]}-{i}'):\n        pass\n"
    procs = [subprocess.Popen([PY, "-c", code, str(n)], env=env, stderr=subprocess.PIPE, text=True) for n in range(8)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0 and "index" not in err, err
    ix = index.open_index(runs, refresh=False)
    assert ix is not None
    try:
        assert ix.count() == 200
        assert {r["status"] for r in ix.runs()} == {"ok"}
    finally:
        ix.close()


@pytest.mark.parametrize("obstacle", ["directory", "symlink"])
def test_unusable_index_falls_back_to_the_scan(corpus: tuple[Path, Path], tmp_path: Path, clean_env: dict[str, str],
                                               obstacle: str) -> None:
    """An index path that cannot be opened: every command still answers, from the folders."""
    runs = _copy(corpus, tmp_path)
    for p in runs.glob(index.INDEX_FILE + "*"):
        p.unlink()
    if obstacle == "directory":
        (runs / index.INDEX_FILE).mkdir()
    else:
        (runs / index.INDEX_FILE).symlink_to(tmp_path / "elsewhere.sqlite")
    assert index.open_index(runs) is None
    env = _env(clean_env, runs)
    expected = _json(["ls", "--all"], env, index_on=False)
    assert _json(["ls", "--all"], env) == expected
    assert _json(["show", "latest"], env)["run"]["id"] == _json(["show", "latest"], env, index_on=False)["run"]["id"]
    assert not (tmp_path / "elsewhere.sqlite").exists()


def test_in_process_runs_index_and_a_stale_row_heals(rt: Settings, runs_dir: Path) -> None:
    """A run open now is indexed by the first reader as 'running', its end by the run; a row left behind
    by a failed update is re-read."""
    with runtel.run_span("open-now") as run:
        assert [r["status"] for r in index.list_summaries(runs_dir)] == ["running"]
    assert run.dir is not None
    ix = index.open_index(runs_dir, refresh=False)
    assert ix is not None and [r["status"] for r in ix.runs()] == ["ok"]  # written by the run's end
    ix.close()
    # A writer that could not update the index at the end (locked past its wait): the row says running.
    ix = index.open_index(runs_dir, refresh=False)
    assert ix is not None
    ix.conn.execute("UPDATE runs SET status = 'running', file_key = 'old'")
    ix.close()
    summaries = index.list_summaries(runs_dir)
    assert [r["status"] for r in summaries] == ["ok"]
    # the repaired row is stored: a second reader reads it without re-reading run.json
    ix = index.open_index(runs_dir, refresh=False)
    assert ix is not None and ix.runs()[0]["status"] == "ok"
    ix.close()


def test_rebuild_command(corpus: tuple[Path, Path], tmp_path: Path, clean_env: dict[str, str]) -> None:
    runs = _copy(corpus, tmp_path)
    env = _env(clean_env, runs)
    assert _json(["index", "--rebuild"], env) == {"index": str(runs / index.INDEX_FILE), "runs": 12, "rebuilt": True,
                                                  "created": False, "exists": True}
    assert _json(["index"], env)["runs"] == 12


def test_light_parsers_match_the_modules() -> None:
    """``runtel --help`` built from COMMAND_HELP (no command module imported) prints what the full parser does."""
    from runtel.cli import COMMAND_HELP, build_parser

    full = build_parser()
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    assert {a.dest: a.help for a in sub._choices_actions} == COMMAND_HELP
    assert build_parser(only="").format_help() == full.format_help()


_MODULES_AFTER = textwrap.dedent("""
    import json, sys
    from runtel.cli import main
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
    finally:
        heavy = ("runtel", "rich", "opentelemetry", "psutil", "sqlite3")
        sys.stderr.write(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)) + "\\n")
""")


@pytest.mark.parametrize(("args", "absent"), [
    (["--help"], ("runtel.query", "runtel.rundir", "runtel._sdk", "rich", "opentelemetry", "sqlite3")),
    (["ls", "--json"], ("runtel._sdk", "runtel.environment", "runtel.query.compare", "rich", "opentelemetry",
                        "psutil")),
    (["ls"], ("runtel._sdk", "runtel.environment", "runtel.query.compare", "opentelemetry", "psutil")),
])
def test_help_and_ls_import_only_what_they_use(corpus: tuple[Path, Path], clean_env: dict[str, str],
                                               args: list[str], absent: tuple[str, ...]) -> None:
    env = _env(clean_env, corpus[0])
    proc = subprocess.run([PY, "-c", _MODULES_AFTER, *args], env=env, capture_output=True, text=True, timeout=60)
    loaded = json.loads(proc.stderr.strip().splitlines()[-1])
    assert [m for m in loaded if m.startswith(absent)] == []


def test_network_file_systems_get_no_index(rt: Settings, runs_dir: Path) -> None:
    """A runs root on NFS / Lustre (here: said to be): no index written or read, the scan answers."""
    assert index.file_system_type(runs_dir) not in index.NETWORK_FILE_SYSTEMS
    index._fs_types[str(runs_dir)] = "nfs4"
    try:
        with runtel.run_span("on-nfs"):
            pass
        assert not (runs_dir / index.INDEX_FILE).exists()
        assert index.open_index(runs_dir) is None
        assert [r["name"] for r in index.list_summaries(runs_dir)] == ["on-nfs"]
    finally:
        del index._fs_types[str(runs_dir)]


def test_a_writer_follows_a_deleted_index(rt: Settings, runs_dir: Path) -> None:
    """A long-lived process keeps writing rows after the index was deleted (or rebuilt) under it."""
    with runtel.run_span("before"):
        pass
    for p in runs_dir.glob(index.INDEX_FILE + "*"):
        p.unlink()
    with runtel.run_span("after"):
        pass
    ix = index.open_index(runs_dir, refresh=False)
    assert ix is not None
    try:
        assert [r["name"] for r in ix.runs()] == ["after"]  # written by the run into the new file
    finally:
        ix.close()
    assert [r["name"] for r in index.list_summaries(runs_dir)] == ["after", "before"]  # the reader adds the rest


def test_a_folder_without_runs_gets_no_index(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """`runtel ls --dir` on a folder holding no runs answers and creates nothing there."""
    (tmp_path / "somedir").mkdir()
    proc = _cli(["ls", "--dir", str(tmp_path)], _env(clean_env, tmp_path))
    assert proc.returncode == 0 and "no runs in" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somedir"]


def test_corruption_met_past_the_refresh_falls_back_then_rebuilds(corpus: tuple[Path, Path], tmp_path: Path,
                                                                  clean_env: dict[str, str]) -> None:
    """A malformed table page the refresh does not read: that command scans, the next one rebuilds."""
    import sqlite3

    runs = _copy(corpus, tmp_path)
    env = _env(clean_env, runs)
    expected = _json(["ls", "--all"], env, index_on=False)
    ix = index.open_index(runs)
    assert ix is not None
    ix.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = ix.conn.execute("PRAGMA page_size").fetchone()[0]
    root_page = ix.conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    ix.close()
    with open(runs / index.INDEX_FILE, "r+b") as f:
        f.seek((root_page - 1) * page_size)
        f.write(b"\xff" * page_size)
    with pytest.raises(sqlite3.DatabaseError):
        conn = sqlite3.connect(runs / index.INDEX_FILE)
        try:
            conn.execute("SELECT * FROM runs").fetchall()
        finally:
            conn.close()
    proc = _cli(["ls", "--all", "--json"], env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == expected, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "is corrupt" in proc.stderr, proc.stderr
    again = _cli(["ls", "--all", "--json"], env)
    assert json.loads(again.stdout) == expected and again.stderr == ""
    ix = index.open_index(runs, refresh=False)
    assert ix is not None and ix.count() == 12
    ix.close()
