"""Compatibility alias: the query API moved to :mod:`runtel.query.tracker`.

Kept so third-party tracker backends written against ``runtel.tracker`` (``TrackerBackend``,
``match_record``, entry points naming ``runtel.tracker:FolderTracker``) go on working.
"""

from __future__ import annotations

from runtel.query.tracker import *  # noqa: F403
from runtel.query.tracker import __all__ as __all__
