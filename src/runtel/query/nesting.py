"""Which runs nest in which: a run folder and the runs recorded under it (nested runs, child processes,
a ``runtel run`` command's own runs), for readers that show a run together with its children.

``runtel export --format chrome-trace`` and ``runtel report`` both list them this way. The run index answers
when it can (:func:`runtel.rundir.index.descendants`); without a usable index every run.json is read once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from runtel.rundir.index import descendants
from runtel.rundir.reader import list_runs, parent_run_id, read_record_or_corrupt
from runtel.rundir.schema import RunRecord

__all__ = ("with_nested_runs",)


def _start_ns(record: RunRecord) -> int:
    try:
        return int(record.get("start_time_unix_nano") or 0)
    except (TypeError, ValueError):
        return 0


def _records_under(root: Path, run_ids: Sequence[str]) -> list[RunRecord]:
    """Records of the runs nested under ``run_ids``: from the index, else every run of ``root``."""
    found: list[RunRecord] = []
    for run_id in run_ids:
        nested = descendants(root, run_id)
        if nested is None:  # no usable index: a scan, once
            return list_runs(root)
        found.extend(nested)
    return found


def with_nested_runs(run_dirs: Sequence[Path], root: Path | None = None, *, limit: int | None = None,
                     problems: list[str] | None = None) -> list[tuple[Path, str | None]]:
    """Each of ``run_dirs``, then the runs nested under it, depth first, siblings oldest first.

    Returns (folder, the parent run's id), the parent being None for the runs given. A run given itself is
    listed where it was given, not again under its parent. ``root``: the runs folder (default: each run's
    parent folder). ``limit``: at most this many nested runs after each given run; how many more there
    were is said in ``problems``.
    """
    given = [(Path(d), str(read_record_or_corrupt(Path(d)).get("id") or Path(d).name)) for d in run_dirs]
    by_root: dict[Path, list[str]] = {}
    for run_dir, run_id in given:
        by_root.setdefault(root if root is not None else run_dir.parent, []).append(run_id)
    records = [record for folder, ids in by_root.items() for record in _records_under(folder, ids)]
    children: dict[str, list[tuple[int, str, Path]]] = {}
    for record in records:
        parent, run_id = parent_run_id(record), str(record.get("id"))
        if parent is not None and parent != run_id and record.get("dir") and not record.get("unreadable"):
            children.setdefault(parent, []).append((_start_ns(record), run_id, Path(str(record["dir"]))))
    seen = {run_id for _, run_id in given}
    out: list[tuple[Path, str | None]] = []
    for run_dir, run_id in given:
        out.append((run_dir, None))
        shown = skipped = 0
        stack = [(run_id, child) for child in sorted(children.get(run_id, ()), reverse=True)]
        while stack:  # iterative: parent links come from files
            parent, (_, child_id, child_dir) = stack.pop()
            if child_id in seen:
                continue
            seen.add(child_id)
            if limit is not None and shown >= limit:
                skipped += 1
            else:
                shown += 1
                out.append((child_dir, parent))
            stack.extend((child_id, grandchild) for grandchild in sorted(children.get(child_id, ()), reverse=True))
        if skipped and problems is not None:
            problems.append(f"run {run_id}: {skipped} more child runs not shown (the first {limit} are; "
                            "runtel show lists them all)")
    return out
