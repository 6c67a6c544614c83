"""Promises made in prose are kept: README/doc examples run, the README's commands are what CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS_WITH_EXAMPLES = ["README.md", "docs/getting-started.md", "docs/concepts.md", "docs/looking-at-runs.md"]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("doc", DOCS_WITH_EXAMPLES)
def test_python_examples_run(doc: str, tmp_path: Path, clean_env: dict[str, str]) -> None:
    """Every ```python block of the user-facing docs runs cleanly, in order, in a fresh interpreter."""
    blocks = _python_blocks(ROOT / doc)
    assert blocks, f"{doc} has no python examples"
    script = tmp_path / "example.py"
    script.write_text("\n\n".join(blocks))
    env = {**clean_env, "RUNTEL_DIR": str(tmp_path / "runs"), "RUNTEL_STRICT": "true"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert any((tmp_path / "runs").iterdir()), "the examples recorded no run"


def test_readme_two_commands_and_ci() -> None:
    """The README's quick start names `make demo` and `make test`, and CI runs exactly `make test`."""
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    assert "examples/train.py" in makefile and "runtel show" in makefile


def test_docs_links_resolve() -> None:
    """Relative links in README and docs point at files that exist."""
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_cli_reference_is_current() -> None:
    """docs/cli.md holds the help of every sub-command exactly as the parser prints it."""
    from runtel.cli import cli_reference

    assert cli_reference() in (ROOT / "docs" / "cli.md").read_text()
