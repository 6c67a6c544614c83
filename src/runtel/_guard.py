"""Keep telemetry failures out of the user's program: catch, log once per kind, go on.

Every public entry point wraps its internal work in :func:`guard`. A failure to sample, write or
export is logged once (per ``key``) with a clear message, and the user's code continues. With the
``strict`` setting (runtel's own tests) the error is re-raised instead, so bugs cannot hide.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

__all__ = ("guard", "is_strict", "log_once", "note_cut", "reset_log_once", "set_strict")

_logger = logging.getLogger("runtel")
_seen: set[str] = set()
_lock = threading.Lock()
_strict = False


def set_strict(value: bool) -> None:
    """Re-raise internal errors (tests) instead of logging them."""
    global _strict
    _strict = value


def is_strict() -> bool:
    """Whether internal errors (and wrong arguments) are raised rather than logged."""
    return _strict


def log_once(key: str, message: str, *args: object, level: int = logging.WARNING,
             exc_info: bool | tuple[type[BaseException], BaseException, TracebackType | None] = False) -> bool:
    """Log ``message`` the first time ``key`` is seen in this process; return whether it was logged."""
    with _lock:
        if key in _seen:
            return False
        _seen.add(key)
    _logger.log(level, message, *args, exc_info=exc_info)
    return True


def note_cut(kind: str, limit: int) -> None:
    """Say once per kind of value (``attribute``, ``span name`` ...) that runtel cut one to its limit."""
    if f"limit:{kind}" not in _seen:
        log_once(f"limit:{kind}", "runtel cut %s longer than %d characters (limit %s; further cuts are silent)",
                 kind, limit, "attribute_max_length" if kind == "attribute" else "fixed")


def reset_log_once() -> None:
    """Forget which messages were logged (tests, and after fork)."""
    with _lock:
        _seen.clear()


class guard:  # lower case: it reads as a function, ``with guard("key", "do something"):``
    """Run internal work; on ``Exception`` log ``runtel could not <what>`` once and continue.

    A class rather than a ``@contextmanager`` generator: it wraps every step of a run's start and end,
    and the generator machinery cost ~3 us per use.
    """

    __slots__ = ("key", "what")

    def __init__(self, key: str, what: str) -> None:
        self.key = key
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if exc_type is None or not issubclass(exc_type, Exception) or _strict:
            return False  # no error; KeyboardInterrupt/SystemExit; or strict: let it propagate
        log_once(self.key, "runtel could not %s: %s: %s (telemetry continues without it)", self.what,
                 exc_type.__name__, exc, exc_info=(exc_type, exc, tb))  # type: ignore[arg-type]
        return True
