"""User arguments and user exceptions, made safe: coerced or dropped with one warning, never raised.

A wrong argument to ``run_span``, ``block`` or ``@trace`` is coerced (``name=b"x"`` becomes ``"x"``,
a single ``"key=value"`` string is one tag) or ignored, with one warning; under the ``strict``
setting it raises :class:`~runtel.errors.ConfigError` instead, for those who want bad calls to fail.
An object whose ``__str__`` raises becomes a placeholder text, so neither a tag nor a user's
exception can turn into an error of runtel's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span, Status, StatusCode

from runtel import _guard, semconv
from runtel.config import TELEMETRY_LEVELS
from runtel.errors import ConfigError

if TYPE_CHECKING:
    from runtel.redaction import Redactor

__all__ = (
    "bad_argument",
    "coerce_int",
    "coerce_name",
    "coerce_output_dir",
    "coerce_seed",
    "coerce_tags",
    "coerce_telemetry",
    "record_exception",
    "redacted_attributes",
    "safe_str",
)


def safe_str(value: object) -> str:
    """``str(value)``, or ``<unprintable T>`` when its ``__str__`` raises or returns a non-string."""
    if type(value) is str:
        return value
    try:
        text = str(value)
        if isinstance(text, str):
            return str.__str__(text)
    except Exception:
        pass
    return f"<unprintable {type(value).__name__}>"


def bad_argument(key: str, message: str) -> None:
    """A wrong argument: raise ConfigError in strict mode, else warn once per ``key`` and go on."""
    if _guard.is_strict():
        raise ConfigError(message)
    _guard.log_once(f"argument:{key}", "runtel: %s (the run goes on)", message)


def coerce_name(value: object, what: str = "run_span(name=...)") -> str | None:
    """A span or run name: ``str`` as it is, bytes decoded, anything else through ``str()``; None stays None."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", "replace")
    else:
        text = safe_str(value)
    bad_argument(f"name:{what}", f"{what} should be a str, got {type(value).__name__}; using {text!r}")
    return text


def coerce_tags(tags: object) -> dict[str, str]:
    """Tags as ``{key: value}`` strings from a mapping, an iterable of ``key=value``/``flag``, or one such string."""
    if tags is None:
        return {}
    if isinstance(tags, (str, bytes)):  # one tag, not one per character
        tags = [tags.decode("utf-8", "replace") if isinstance(tags, bytes) else tags]
    out: dict[str, str] = {}
    try:
        if isinstance(tags, Mapping):
            for key, value in tags.items():
                out[_tag_text(key)] = _tag_text(value)
            return out
        if not isinstance(tags, Iterable):
            bad_argument("tags", f"run_span(tags=...) should be a mapping or a list of 'key=value' strings, got "
                         f"{type(tags).__name__}; no tags recorded")
            return out
        for tag in tags:
            key, sep, value = _tag_text(tag).partition("=")
            out[key] = value if sep else "true"
    except ConfigError:
        raise
    except Exception as exc:  # a mapping or iterable that fails part way: keep the tags read so far
        bad_argument("tags-read", f"run_span(tags=...) could not be read ({type(exc).__name__}); "
                     f"{len(out)} tag(s) recorded")
    return out


def _tag_text(value: object) -> str:
    if type(value) is str:
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return safe_str(value)


def coerce_output_dir(value: object) -> str | None:
    """A folder path (str or os.PathLike of str) or None; anything else ignored with a warning."""
    if value is None:
        return None
    try:
        path = os.fspath(value)  # type: ignore[call-overload]
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if isinstance(path, str) and path:
            return path
    except TypeError:
        pass
    bad_argument("output_dir", f"run_span(output_dir=...) should be a path, got {type(value).__name__}; ignored")
    return None


def coerce_telemetry(value: object) -> str | None:
    """A run's telemetry level: ``full``, ``minimal`` or ``off`` (any case); None (the setting) for anything else."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in TELEMETRY_LEVELS:
        return value.strip().lower()
    bad_argument("telemetry", f"run_span(telemetry=...) must be one of {', '.join(TELEMETRY_LEVELS)}, got "
                 f"{safe_str(value)[:80]!r}; using the RUNTEL_TELEMETRY setting")
    return None


def coerce_seed(value: object) -> int | bool | None:
    """``seed``: None, True/False, or an integer (an integral float or a numeric string is converted)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    converted = coerce_int(value)
    if converted is None:
        bad_argument("seed", f"run_span(seed=...) should be an int or True, got {type(value).__name__}; not seeding")
    return converted


def coerce_int(value: object) -> int | None:
    """``value`` as an int when it is one, an integral float or a numeric string; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    try:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
    except (ValueError, OverflowError):
        pass
    return None


def record_exception(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed with ``exc``; never raises, whatever the exception's ``__str__`` does.

    The SDK's ``record_exception`` calls ``str(exc)``; when that raises, the event is added by hand
    with a placeholder message, so the user's exception, not runtel's, is the one that propagates.
    """
    try:
        message = safe_str(exc)
        kind = type(exc).__qualname__
        try:
            span.record_exception(exc, escaped=True)
        except Exception:
            span.add_event("exception", {"exception.type": f"{type(exc).__module__}.{kind}",
                                         "exception.message": message, "exception.escaped": True})
        span.set_attribute(semconv.ERROR_TYPE, kind)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"[:1024]))
    except Exception as inner:  # never replace the user's exception with ours
        _guard.log_once("record-exception", "runtel could not record an exception on a span: %s", safe_str(inner))


def redacted_attributes(redactor: Redactor, attributes: dict[str, Any], max_length: int) -> dict[str, Any]:
    """Flattened attributes (converted with ``SCAN_MARGIN`` past the limit) redacted, name/value pairs among
    them hidden, strings cut to ``max_length``; a cut is said once (the Scrubber's line)."""
    from runtel.redaction import TRUNCATED  # deferred: runtel.redaction (~0.3 ms)

    out = redactor.hide_flat_named_values(redactor.redact_mapping(attributes, max_str=max_length))
    if any(type(v) is str and v.endswith(TRUNCATED) for v in out.values()):
        _guard.note_cut("attribute", max_length)
    return out
