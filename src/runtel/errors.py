"""Errors runtel raises to its callers.

Telemetry failures are never raised into user code (they are logged once, see ``_guard``); these
exceptions reach users only from explicit queries (CLI, ``Tracker``, ``load``) and bad settings::

    RuntelError
    ├── ConfigError          a setting or environment variable has an unusable value
    ├── BackendUnavailable   a GPU/energy backend cannot be used on this machine
    ├── RunNotFound          no run folder matches a run reference
    └── RunFolderError       a run folder exists but cannot be read or written
"""

from __future__ import annotations

__all__ = ("BackendUnavailable", "ConfigError", "RunFolderError", "RunNotFound", "RuntelError")


class RuntelError(Exception):
    """Base class of every error runtel raises on purpose."""


class ConfigError(RuntelError, ValueError):
    """A setting (argument or environment variable) has a value runtel cannot use."""


class BackendUnavailable(RuntelError):
    """A hardware backend (NVML, amdsmi, RAPL) is not usable here; callers fall back quietly."""


class RunNotFound(RuntelError, LookupError):
    """No recorded run matches the given id, prefix, path or alias."""


class RunFolderError(RuntelError, OSError):
    """A run folder cannot be created, read or written."""
