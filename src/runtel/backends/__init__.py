"""Tracker backends' write path: what a run records, fanned out to each backend of ``RUNTEL_TRACKER``.

:mod:`runtel.backends.base` holds the protocol and the loader (below the recording side, so a run can
drive it without importing the read side); :mod:`runtel.backends.mlflow` writes into an MLflow server.
"""
