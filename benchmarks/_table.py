"""The plain-text table every benchmark prints (shared so the three scripts format alike)."""

from __future__ import annotations

import sys


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """Print ``rows`` under ``header`` in aligned columns, after a blank line and ``title``."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
    sys.stdout.flush()
