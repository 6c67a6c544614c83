"""Artifacts, metadata and sources of a run, and lineage between runs (filled in by the lineage work)."""

from __future__ import annotations

__all__ = ("LineageMixin",)


class LineageMixin:
    """Methods of :class:`runtel.Run` that record artifacts, metadata and sources."""
