"""Terminal rendering for the CLI (the only module that imports rich)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

__all__ = ("console", "format_bytes", "format_duration", "print_json", "table")


def console(file: IO[str] | None = None) -> Any:
    """A rich Console writing to ``file`` (stdout by default); plain text when not a terminal."""
    from rich.console import Console

    out = file or sys.stdout
    return Console(file=out, highlight=False, soft_wrap=False, width=None if out.isatty() else 160)


def print_json(data: Any, file: IO[str] | None = None) -> None:
    """Machine-readable output: indented JSON on stdout."""
    out = file or sys.stdout
    out.write(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    out.write("\n")


def format_duration(seconds: float | None) -> str:
    """``1.23 s``, ``2 m 03 s``, ``1 h 02 m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"


def format_bytes(value: float | None) -> str:
    """Binary units (KiB, MiB, GiB); ``-`` when unknown."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], **kwargs: Any) -> Any:
    """A rich Table with the given columns and rows (cells converted with ``str``)."""
    from rich.table import Table

    t = Table(title=title, **kwargs)
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*("" if cell is None else str(cell) for cell in row))
    return t


def kv_lines(mapping: Mapping[str, Any]) -> str:
    """``key: value`` lines for a summary block."""
    width = max((len(k) for k in mapping), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in mapping.items() if v not in (None, "", [], {}))
