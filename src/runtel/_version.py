"""The installed version of runtel (from package metadata, so it never drifts from pyproject)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("runtel")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
