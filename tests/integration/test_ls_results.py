"""`runtel ls` (tree, filters, hidden workers, results column) and `runtel show`'s results."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import runtel
from runtel.cli import main as cli_main
from runtel.cli.show import parse_since
from runtel.config import Settings
from runtel.errors import ConfigError
from runtel.rundir.reader import resolve_run


def _ls(capsys: pytest.CaptureFixture[str], runs_dir: Path, *args: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert cli_main(["ls", "--dir", str(runs_dir), "--json", *args]) == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


@pytest.fixture
def runs(rt: Settings, runs_dir: Path) -> dict[str, str]:
    """old (tag team=a, ok) ; sweep with two child trials and a worker ; broken (error, tag team=b)."""
    ids: dict[str, str] = {}
    with runtel.run_span("old", tags={"team": "a"}) as run:
        run.set_result(accuracy=0.5)
    ids["old"] = run.id
    with runtel.run_span("sweep") as sweep:
        for i in range(2):
            with runtel.run_span("trial", tags={"i": str(i)}) as trial:
                trial.log(step=0, loss=1.0 + i)
                trial.log(step=1, loss=0.5 + i)
            ids[f"trial{i}"] = trial.id
        with runtel.run_span("pool.worker") as worker:
            pass
        ids["worker"] = worker.id
    ids["sweep"] = sweep.id
    with pytest.raises(RuntimeError), runtel.run_span("broken", tags={"team": "b"}) as run:
        raise RuntimeError("boom")
    ids["broken"] = run.id
    return ids


def test_tree_workers_hidden_and_latest_agree(runs: dict[str, str], runs_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rows = _ls(capsys, runs_dir)
    assert [(r["id"], r["depth"]) for r in rows] == [
        (runs["broken"], 0), (runs["sweep"], 0), (runs["trial0"], 1), (runs["trial1"], 1), (runs["old"], 0)]
    assert resolve_run("latest", runs_dir).name == rows[0]["id"]
    assert cli_main(["ls", "--dir", str(runs_dir)]) == 0
    text = capsys.readouterr().out
    assert "+1 worker run; --all shows them" in text
    assert "└ trial" in text and "results" in text and "accuracy=0.5" in text and "loss~1.5" in text
    rows = _ls(capsys, runs_dir, "--all")
    assert runs["worker"] in [r["id"] for r in rows] and len(rows) == 6


def test_filters(runs: dict[str, str], runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def ids(*args: str) -> set[object]:
        return {r["id"] for r in _ls(capsys, runs_dir, *args)}

    assert ids("--name", "trial") == {runs["trial0"], runs["trial1"]}
    assert ids("--name", "*o*") == {runs["old"], runs["broken"]}
    assert ids("--tag", "team=a") == {runs["old"]}
    assert ids("--tag", "i=1", "--name", "trial") == {runs["trial1"]}
    assert ids("--status", "error") == {runs["broken"]}
    assert ids("--parent", runs["sweep"][:-2]) == {runs["trial0"], runs["trial1"]}
    assert ids("--parent", runs["sweep"], "--all") == {runs["trial0"], runs["trial1"], runs["worker"]}
    assert ids("--since", "1h") == {runs[k] for k in ("old", "sweep", "trial0", "trial1", "broken")}
    future = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    assert ids("--since", future) == set()
    capsys.readouterr()
    assert cli_main(["ls", "--dir", str(runs_dir), "--since", "yesterday"]) == 1
    assert "--since 'yesterday'" in capsys.readouterr().err


def test_parse_since() -> None:
    now = datetime(2026, 1, 2, 12, 0, tzinfo=timezone.utc)
    assert parse_since("2h", now) == datetime(2026, 1, 2, 10, 0, tzinfo=timezone.utc)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("1.5d", now) == now - timedelta(hours=36)
    assert parse_since("2026-01-01") == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_since("2026-01-01T03:00Z") == datetime(2026, 1, 1, 3, tzinfo=timezone.utc)
    with pytest.raises(ConfigError):
        parse_since("soon")


def test_show_results_and_series(runs: dict[str, str], runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli_main(["show", runs["trial1"], "--dir", str(runs_dir)]) == 0
    text = capsys.readouterr().out
    assert "loss: last 1.5 (step 1), min 1.5, max 2, 2 points" in text
    assert cli_main(["show", runs["old"], "--dir", str(runs_dir)]) == 0
    assert "accuracy = 0.5" in capsys.readouterr().out


def test_a_nan_last_value_shows_as_nan(rt: Settings, runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """JSON holds no NaN: the record keeps null and says it as text; ls and show print nan, not None."""
    with runtel.run_span("diverged") as run:
        run.log(step=0, loss=1.0)
        run.log(step=1, loss=float("nan"))
        run.log(step=0, grad=float("inf"))
    summary = run.record["results"]["series"]
    assert summary["loss"]["last"] is None and summary["loss"]["last_text"] == "nan"
    assert summary["grad"]["last_text"] == "inf"
    capsys.readouterr()
    assert cli_main(["show", run.id, "--dir", str(runs_dir)]) == 0
    text = capsys.readouterr().out
    assert "loss: last nan (step 1), min 1, max 1, 2 points" in text and "None" not in text
    assert "grad: last inf (step 0), min -, max -, 1 points" in text  # no finite value: no min or max
    assert cli_main(["ls", "--dir", str(runs_dir)]) == 0
    assert "loss~nan" in capsys.readouterr().out


@pytest.mark.parametrize(("command", "name"), [
    (["python", "train.py"], "train"),
    (["/usr/bin/python3.11", "-u", "-X", "dev", "src/train.py", "--lr", "1"], "train"),
    (["python", "-m", "pkg.train", "--epochs", "3"], "pkg.train"),
    (["python3", "-c", "print(1)"], "python3"),
    (["bash", "scripts/run.sh"], "run"),
    (["make", "all"], "make"),
])
def test_default_run_names(command: list[str], name: str) -> None:
    from runtel.cli.run import default_run_name

    assert default_run_name(command) == name


def test_markup_in_names_and_results_is_text(rt: Settings, runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with runtel.run_span("[bold]odd[/bold]") as run:
        run.set_result(note="[/x]", score=1)
    capsys.readouterr()
    assert cli_main(["ls", "--dir", str(runs_dir)]) == 0
    text = capsys.readouterr().out
    assert "note=[/x]" in text
    assert cli_main(["show", run.id, "--dir", str(runs_dir)]) == 0
    assert "note = [/x]" in capsys.readouterr().out
