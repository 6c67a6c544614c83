"""Terminal rendering for the CLI (the only module that imports rich)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

__all__ = ("console", "escape_controls", "format_bytes", "format_duration", "format_joules", "print_json", "table")

# Control characters (C0 but newline and tab, DEL, C1) and the bidirectional overrides that reorder what a
# terminal shows: recorded data (run names, attributes, error messages) may hold any of them, and printed
# raw they clear the screen, set the title, hide text or forge OSC-8 links.
_CONTROLS: dict[int, str] = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x0A, 0x09)}
_CONTROLS.update({c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))})


def escape_controls(text: str) -> str:
    """``text`` with control characters and escape sequences shown escaped (``\\x1b``), newlines kept."""
    if text.isprintable():
        return text
    return text.translate(_CONTROLS)


def console(file: IO[str] | None = None) -> Any:
    """A rich Console writing to ``file`` (stdout by default); plain text when not a terminal.

    Every string it renders — printed, a table cell, a tree label, a panel — passes
    :func:`escape_controls` first (rich turns each one into Text through ``render_str``), so no command
    can print recorded data raw; rich's own styling is added afterwards and is unaffected.
    """
    from rich.console import Console  # deferred: rich, only for terminal output (~26 ms)

    class _SafeConsole(Console):
        def render_str(self, text: str, **kwargs: Any) -> Any:
            return super().render_str(escape_controls(text), **kwargs)

    out = file or sys.stdout
    return _SafeConsole(file=out, highlight=False, soft_wrap=False, width=None if out.isatty() else 160)


def print_json(data: Any, file: IO[str] | None = None) -> None:
    """Machine-readable output: indented JSON on stdout, always valid JSON.

    A non-finite number (a hostile recorded value) is written as the string ``"NaN"``, ``"Infinity"`` or
    ``"-Infinity"``, as OTLP/JSON writes them, not as the bare tokens ``json`` would emit and parsers reject.
    """
    out = file or sys.stdout
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:  # a non-finite float somewhere: spelled out (rare; the common case is one pass)
        from runtel.values.jsonable import finite_json  # deferred: runtel.values.jsonable, only then (~1 ms)

        text = json.dumps(finite_json(data), indent=2, ensure_ascii=False, default=str, allow_nan=False)
    out.write(text)
    out.write("\n")


def format_duration(seconds: float | None) -> str:
    """``1.23 s``, ``2 m 03 s``, ``1 h 02 m``; ``-`` when unknown; ``nan``/``inf`` as themselves (a hostile
    recorded value is shown, never a crash)."""
    if seconds is None:
        return "-"
    if not math.isfinite(seconds):
        return f"{seconds} s"
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
    if not math.isfinite(size):
        return f"{size} B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def format_joules(value: float) -> str:
    """Joules, or millijoules below 1 J (a 5 ms block's ~0.03 J reads ``27 mJ``, not ``0.0 J``)."""
    if not math.isfinite(value):
        return f"{value} J"
    if abs(value) >= 1:
        return f"{value:.1f} J"
    mj = value * 1000
    return f"{mj:.0f} mJ" if abs(mj) >= 10 or mj == 0 else f"{mj:.2g} mJ"


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], **kwargs: Any) -> Any:
    """A rich Table with the given columns and rows (cells converted with ``str``)."""
    from rich.table import Table  # deferred: rich, only for terminal output (~23 ms)

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
