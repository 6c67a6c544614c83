"""Compatibility alias: replaying recorded runs to OTLP moved to :mod:`runtel.query.replay`."""

from __future__ import annotations

from runtel.query.replay import ExportResult, export_runs, ids_to_base64

__all__ = ("ExportResult", "export_runs", "ids_to_base64")
