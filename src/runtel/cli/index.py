"""``runtel index``: the run index of a runs root — where it is, how many runs it holds; ``--rebuild`` it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from runtel.cli import render, run_root
from runtel.errors import RunFolderError
from runtel.rundir import index

__all__ = ("register",)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``index`` sub-command."""
    p = sub.add_parser(
        "index",
        help="bring the run index up to date (or --rebuild it) and say what it holds",
        description=f"The run index ({index.INDEX_FILE} in the runs root) lets ls, show latest, prefix lookup, "
        "child runs and lineage FILE answer without reading every run.json. Every command brings it up to "
        "date from the folders by itself; this one does so explicitly, or deletes it and builds it again.",
    )
    p.add_argument("--dir", help="run folder root (default: $RUNTEL_DIR or ./runs)")
    p.add_argument("--rebuild", action="store_true", help="delete the index and build it again from the run folders")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_index)


def _cmd_index(args: argparse.Namespace) -> int:
    root = run_root(args)
    path = root / index.INDEX_FILE
    created = False
    if not root.exists():
        # A runs folder no run has written yet: nothing to index, and nothing is created (`runtel ls` agrees).
        return _report(args, path, 0, note=f"{root} does not exist yet (no runs, no index)")
    if args.rebuild:
        _check_usable(root)
        runs = index.rebuild(root)
    else:
        ix = index.open_index(root)
        if ix is None and not os.path.lexists(path):
            # Readers create no index where there are no runs; this command is asked to: an empty folder
            # gets its (empty) index. Where no index can live, rebuild's error names the reason below.
            _check_usable(root)
            runs, created = index.rebuild(root), True
        elif ix is None:
            raise RunFolderError(f"the run index {path} cannot be opened (commands read the run folders instead; "
                                 "runtel index --rebuild replaces it)")
        else:
            try:
                runs = ix.count()
            finally:
                ix.close()
    return _report(args, path, runs, rebuilt=bool(args.rebuild), created=created)


def _check_usable(root: Path) -> None:
    """Raise the reason no index can live in ``root``: turned off, or a network file system."""
    if not root.is_dir():
        raise RunFolderError(f"{root} is not a folder")
    if not index.enabled():
        raise RunFolderError("the run index is turned off (RUNTEL_RUN_INDEX); commands read the run folders instead")
    fs = index.file_system_type(root)
    if fs in index.NETWORK_FILE_SYSTEMS:
        raise RunFolderError(f"{root} is on a network file system ({fs}), where the run index is not kept; "
                             "commands read the run folders instead")


def _report(args: argparse.Namespace, path: Path, runs: int, *, rebuilt: bool = False, created: bool = False,
            note: str = "") -> int:
    if args.json:
        render.print_json({"index": str(path), "runs": runs, "rebuilt": rebuilt, "created": created,
                           "exists": os.path.lexists(path)})
    elif note:
        render.console().print(f"0 runs: {note}")
    else:
        state = " (rebuilt)" if rebuilt else " (created)" if created else ""
        render.console().print(f"{path}: {runs:,} run{'s' if runs != 1 else ''}{state}")
    return 0
