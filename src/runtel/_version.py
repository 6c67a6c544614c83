"""The version of runtel (a literal, so importing runtel never scans package metadata).

A test checks it against the installed distribution's metadata, so it cannot drift from pyproject.
"""

from __future__ import annotations

__version__ = "0.1.0"
