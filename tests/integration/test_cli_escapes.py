"""Terminal escape sequences in recorded data are printed escaped by every CLI table and tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PY = sys.executable
HOSTILE = "evil\x1b[2J\x1b]0;title\x07\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\u202erev\r"


def test_escape_sequences_in_names_and_attributes_are_shown_escaped(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """A run name, block name, tag and attribute full of control sequences reach no terminal raw."""
    runs = tmp_path / "runs"
    env = {**clean_env, "RUNTEL_DIR": str(runs)}
    code = ("import runtel, sys\nh = sys.argv[1]\n"
            "with runtel.run_span(h, tags={'t': h}, config={'c': h}) as run:\n"
            "    run.set_attributes(note=h)\n"
            "    with runtel.block(h, x=h):\n        pass\n")
    proc = subprocess.run([PY, "-c", code, HOSTILE], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for args in (["ls"], ["show", "latest"], ["show", "--all-spans", "latest"], ["info"]):
        out = subprocess.run([PY, "-m", "runtel", *args, "--dir", str(runs)] if args != ["info"] else
                             [PY, "-m", "runtel", "info"], env={**env, "TERM": "xterm", "COLUMNS": "300"},
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        for bad in ("\x1b", "\x07", "\u202e", "\r"):
            assert bad not in out.stdout, (args, bad)
        if args != ["info"]:
            assert "\\x1b" in out.stdout, args  # shown, escaped
