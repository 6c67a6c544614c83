"""The markers that stand in for what a conversion left out, and the nesting limit they share.

Every values module that cuts, flattens or walks a value uses these, and users see them in run.json and
on span attributes (docs describe them), so they live in one place:

* Strings longer than a limit are cut and end with :data:`TRUNCATION_MARK` (``"…[truncated]"``), so a
  cut string is at most ``limit + len(TRUNCATION_MARK)`` characters (limits count code points).
* A reference cycle becomes :data:`CYCLE_MARK`; nesting deeper than the depth limit (default
  :data:`DEFAULT_MAX_DEPTH`) becomes :data:`DEPTH_MARK`.
* Dropped entries are flagged with :data:`TRUNCATED_KEY` and, in JSON lists, :data:`MORE_ITEMS_FORMAT`.
"""

from __future__ import annotations

from typing import Final

__all__ = (
    "CYCLE_MARK",
    "DEFAULT_MAX_DEPTH",
    "DEPTH_MARK",
    "MORE_ITEMS_FORMAT",
    "TRUNCATED_KEY",
    "TRUNCATION_MARK",
)

TRUNCATION_MARK: Final = "…[truncated]"
CYCLE_MARK: Final = "<cycle>"
DEPTH_MARK: Final = "<max depth>"
TRUNCATED_KEY: Final = "__truncated__"
"""Flattened attributes: ``<prefix>.__truncated__ = True`` when attributes or sequence items were dropped.
JSON: a dict that had more than ``max_items`` entries gets ``"__truncated__": <number of dropped entries>``."""

MORE_ITEMS_FORMAT: Final = "…[{n} more items]"
"""JSON: last element of a list that had more than ``max_items`` elements."""

DEFAULT_MAX_DEPTH: Final = 32
"""Default nesting depth past which to_jsonable and to_attributes write :data:`DEPTH_MARK`
(normalize_config leaves values nested deeper than twice this unconverted)."""
