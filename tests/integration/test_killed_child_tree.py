"""A child run killed before its run span ended still shows under its parent run, not beside it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from runtel.rundir.reader import UNENDED

ROOT = Path(__file__).resolve().parents[2]

JOB = textwrap.dedent(
    """
    import os, signal, runtel
    with runtel.run_span("k"):
        for i in range(5):
            with runtel.block("step", i=i):
                pass
        runtel.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # the run span never ends
    """
)


def _find(nodes: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    out = []
    for node in nodes:
        if node["name"] == name:
            out.append(node)
        out.extend(_find(node["children"], name))
    return out


def test_steps_of_a_killed_child_hang_under_a_stand_in_of_its_run_span(tmp_path: Path,
                                                                        clean_env: dict[str, str]) -> None:
    (tmp_path / "k.py").write_text(JOB)
    runs = tmp_path / "runs"
    runtel = [sys.executable, "-m", "runtel"]
    done = subprocess.run([*runtel, "run", "--dir", str(runs), "-q", "--", sys.executable, str(tmp_path / "k.py")],
                          env=clean_env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 128 + signal.SIGKILL, done.stderr
    listed = json.loads(subprocess.run([*runtel, "ls", "--dir", str(runs), "--json"], env=clean_env,
                                       capture_output=True, text=True, timeout=60, check=True).stdout)
    (wrapper,) = [r for r in listed if not r.get("parent_run_id")]
    shown = subprocess.run([*runtel, "show", "--dir", str(runs), wrapper["id"], "--json"], env=clean_env,
                           capture_output=True, text=True, timeout=60)
    tree = json.loads(shown.stdout)["spans"]
    assert len(tree) == 1, [n["name"] for n in tree]  # one root: the wrapper's run span, nothing beside it
    (stand_in,) = [n for n in _find(tree, "k") if n["status_message"] == UNENDED]  # the child's run span
    assert stand_in["status"] == "error" and stand_in in tree[0]["children"]
    assert [c["name"] for c in stand_in["children"]] == ["step"] * 5
    # compare's folded trees hang them under the same stand-in (paths below the wrapper's run span)
    compared = json.loads(subprocess.run([*runtel, "compare", "--dir", str(runs), wrapper["id"], wrapper["id"],
                                          "--json"], env=clean_env, capture_output=True, text=True, timeout=60).stdout)
    assert [b["path"] for b in compared["blocks"]] == ["k", "k/step"]
    assert compared["blocks"][1]["metrics"]["count"]["values"] == [5, 5]
