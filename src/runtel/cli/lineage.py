"""``runtel lineage RUN|PATH``: which run produced a file, from which inputs, at which commit — upstream, recursively."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtel.cli import problem, render, run_root
from runtel.errors import RunNotFound
from runtel.rundir.schema import STATUS_CORRUPT

if TYPE_CHECKING:
    from runtel.query.tracker import Lineage, LineageNode, Tracker

__all__ = ("register",)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``lineage`` sub-command."""
    p = sub.add_parser(
        "lineage",
        help="show where a file or run came from (and who used it)",
        description="Show the lineage of a run or of a file: the run that produced the file (found by content "
        "hash), the inputs and upstream runs it was made from, recursively, with their git commits, and the "
        "runs that used its outputs. RUN is a run id, unique prefix, run folder or 'latest'; PATH is any file or directory.",
    )
    p.add_argument("target", metavar="RUN|PATH", help="run id, unique prefix, run folder, 'latest', or a file")
    p.add_argument("--dir", help="run folder root (default: $RUNTEL_DIR or ./runs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_lineage)




def _resolve(target: str, tracker: Tracker) -> tuple[str, dict[str, Any] | None]:
    """(run id, file info or None) for a run reference or a file path."""
    path = Path(target)
    if path.exists() and not (path / "run.json").is_file():
        from runtel.rundir.artifacts import hash_path  # deferred: runtel.rundir.artifacts (~2 ms)

        info = hash_path(path)
        producer = tracker.backend.find_artifacts(info["hash"])
        if not producer:
            raise RunNotFound(f"no recorded run in {tracker.root} produced {target} (sha256 {info['hash'][:12]}…)")
        art = producer[-1]
        return str(art.run_id), {"path": str(path.resolve()), "hash": info["hash"], "hash_kind": info["hash_kind"],
                                 "artifact_name": art.name, "produced_path": art.path, "run_id": art.run_id}
    return str(tracker.record(target).get("id") or target), None


def _node_label(node: LineageNode, nodes: dict[str, LineageNode]) -> str:
    from rich.markup import escape  # deferred: rich, only for terminal output (~13 ms)

    if node.kind != "run":
        what = "input file" if node.kind == "file" else "external source"
        extra = f"  [dim]sha256 {node.hash[:12]}…[/dim]" if node.hash else ""
        return f"{what} [bold]{escape(node.path or node.id)}[/bold]{extra}"
    status = node.status or "?"
    color = {"ok": "green", "error": "red", "running": "yellow", "interrupted": "yellow"}.get(status, "white")
    parts = [f"run [bold]{escape(node.name or '?')}[/bold] {escape(node.id)} [{color}]{escape(status)}[/{color}]"]
    parts.append(f"commit {node.commit[:12]}" if node.commit else "[dim]no git commit[/dim]")
    parent = nodes.get(node.parent_run_id) if node.parent_run_id else None
    if node.parent_run_id:
        inside = parent.name if parent is not None and parent.name else node.parent_run_id
        parts.append(f"[dim]inside run {escape(str(inside))}[/dim]")
    return "  ".join(parts)


def _add_upstream(tree: Any, graph: Lineage, names: dict[str, LineageNode], node_id: str, seen: set[str]) -> None:
    from rich.markup import escape  # deferred: rich, only for terminal output (~13 ms)

    for edge in graph.parents(node_id):
        parent = graph.nodes.get(edge.parent)
        if parent is None:
            continue
        via = f"← [cyan]{escape(edge.artifact_name)}[/cyan] " if edge.artifact_name else "← "
        branch = tree.add(via + _node_label(parent, names))
        if edge.parent in seen:
            branch.add("[dim](shown above)[/dim]")
            continue
        seen.add(edge.parent)
        _add_upstream(branch, graph, names, edge.parent, seen)


def _cmd_lineage(args: argparse.Namespace) -> int:
    from runtel.rundir.index import session  # deferred: runtel.rundir.index (~5 ms)

    with session():  # the file's producer, then the graph: one refresh of the run index
        return _lineage(args)


def _lineage(args: argparse.Namespace) -> int:
    from runtel.query.tracker import Tracker  # deferred: runtel.query.tracker (~9 ms)

    tracker = Tracker(run_root(args))
    run_id, file_info = _resolve(args.target, tracker)
    graph = tracker.lineage(run_id)
    for node in graph.nodes.values():
        if node.status == STATUS_CORRUPT:
            for text in tracker.record(node.id).get("problems", ()):
                problem(f"run {node.id}: {text}")
    # Enclosing runs (e.g. the `runtel run` wrapper around a script's run), named in the labels.
    enclosing: dict[str, LineageNode] = {}
    for node in graph.nodes.values():
        if node.parent_run_id and node.parent_run_id not in graph.nodes and node.parent_run_id not in enclosing:
            enclosing[node.parent_run_id] = tracker.backend._node(node.parent_run_id)
    if args.json:
        from dataclasses import asdict  # deferred: dataclasses (~5 ms)

        render.print_json({"target": args.target, "file": file_info, "run": graph.root, "lineage": graph.to_dict(),
                           "enclosing_runs": {k: asdict(v) for k, v in enclosing.items()}})
        return 0
    names = {**enclosing, **graph.nodes}
    from rich.markup import escape  # deferred: rich, only for terminal output (~13 ms)
    from rich.tree import Tree  # deferred: rich, only for terminal output (~25 ms)

    root_node = graph.nodes[graph.root]
    if file_info is not None:
        top = Tree(f"file [bold]{escape(file_info['path'])}[/bold]  [dim]sha256 {file_info['hash'][:12]}…[/dim]")
        label = f"produced as [cyan]{escape(str(file_info['artifact_name']))}[/cyan] by " + _node_label(root_node, names)
        start = top.add(label)
    else:
        top = Tree(_node_label(root_node, names))
        start = top
    _add_upstream(start, graph, names, graph.root, {graph.root})
    if not graph.parents(graph.root):
        start.add("[dim](no recorded inputs)[/dim]")
    downstream = graph.descendants()
    if downstream:
        used = top.add("[bold]used by[/bold]")
        for node_id in downstream:
            consumer = graph.nodes.get(node_id)
            if consumer is not None:
                via = ", ".join(sorted({str(e.artifact_name) for e in graph.parents(node_id) if e.artifact_name}))
                used.add(_node_label(consumer, names) + (f"  [dim]via {escape(via)}[/dim]" if via else ""))
    render.console().print(top)
    return 0
