"""guard(): internal failures are logged once per kind and swallowed; interrupts and strict mode propagate."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from runtel import _guard
from runtel._guard import guard, reset_log_once, set_strict


@pytest.fixture(autouse=True)
def _lenient() -> Iterator[None]:
    """Lenient, with a fresh once-only memory; whatever strictness was set before is restored after."""
    previous = _guard._strict
    reset_log_once()
    set_strict(False)
    yield
    set_strict(previous)
    reset_log_once()


def test_failure_is_swallowed_and_logged_once_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """The code after the guarded block runs; one warning per key names what failed and carries the traceback."""
    reached = []
    with caplog.at_level(logging.WARNING, logger="runtel"):
        for i in range(3):
            with guard("write-x", "write x"):
                raise OSError(f"disk full {i}")
            reached.append(i)
        with guard("other", "read y"):
            raise ValueError("bad")
    assert reached == [0, 1, 2]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["runtel could not write x: OSError: disk full 0 (telemetry continues without it)",
                        "runtel could not read y: ValueError: bad (telemetry continues without it)"]
    assert caplog.records[0].exc_info is not None and caplog.records[0].exc_info[0] is OSError


def test_no_failure_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="runtel"), guard("k", "do"):
        value = 1 + 1
    assert value == 2 and caplog.records == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)])
def test_interrupts_pass_through(exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    """Ctrl-C and sys.exit are the user's, never telemetry failures."""
    with pytest.raises(type(exc)) as caught, guard("k", "do"):
        raise exc
    assert caught.value is exc and caplog.records == []


def test_strict_mode_reraises_the_same_exception() -> None:
    """runtel's own tests run strict, so internal bugs cannot hide behind the guard."""
    set_strict(True)
    error = RuntimeError("bug")
    with pytest.raises(RuntimeError) as caught, guard("k", "do"):
        raise error
    assert caught.value is error
