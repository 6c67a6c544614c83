"""``runtel index``: the run index of a runs root — where it is, how many runs it holds; ``--rebuild`` it."""

from __future__ import annotations

import argparse

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
    if args.rebuild:
        runs = index.rebuild(root)
    else:
        ix = index.open_index(root)
        if ix is None:
            raise RunFolderError(f"no usable run index in {root} (commands read the run folders instead)")
        try:
            runs = ix.count()
        finally:
            ix.close()
    path = root / index.INDEX_FILE
    if args.json:
        render.print_json({"index": str(path), "runs": runs, "rebuilt": bool(args.rebuild)})
    else:
        render.console().print(f"{path}: {runs:,} run{'s' if runs != 1 else ''}" + (" (rebuilt)" if args.rebuild else ""))
    return 0
