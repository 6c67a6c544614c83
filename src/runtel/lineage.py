"""Compatibility alias: hashing and the artifact index moved to :mod:`runtel.rundir.artifacts`.

Kept because docs of earlier releases named ``runtel.lineage.hash_path``, ``find_artifacts``,
``rebuild_index`` and the hashing constants; new code imports them from ``runtel.rundir.artifacts``.
"""

from __future__ import annotations

from runtel.rundir.artifacts import (
    HASH_CHUNK_SIZE,
    INDEX_FILE,
    PARTIAL_BLOCK_SIZE,
    PARTIAL_HASH_LIMIT,
    find_artifacts,
    hash_path,
    rebuild_index,
)

__all__ = (
    "HASH_CHUNK_SIZE",
    "INDEX_FILE",
    "PARTIAL_BLOCK_SIZE",
    "PARTIAL_HASH_LIMIT",
    "find_artifacts",
    "hash_path",
    "rebuild_index",
)
