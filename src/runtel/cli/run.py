"""``runtel run [--name N] [--dir D] [--tag k=v ...] -- CMD [ARGS...]``: record any command as a run.

The wrapper opens a run span, starts CMD as a child with ``TRACEPARENT`` (so a child that uses
runtel nests its own run inside), samples the child's whole process tree (the wrapper excluded),
forwards SIGINT/SIGTERM/SIGHUP, and exits with the child's exit code (128+signal if it was killed).
On Linux the child also gets SIGTERM if the wrapper dies without forwarding anything (``kill -9`` of
the wrapper): its parent-death signal (``PR_SET_PDEATHSIG``) is set between fork and exec.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import runtel
from runtel import _sdk

__all__ = ("default_run_name", "register")

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_INTERRUPTING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``run`` sub-command."""
    p = sub.add_parser(
        "run",
        help="run a command as a recorded run",
        description="Run CMD as a child process under a run span; exits with CMD's exit code.",
        usage="runtel run [--name N] [--dir D] [--tag k=v ...] -- CMD [ARGS...]",
    )
    p.add_argument("--name", help="run name (default: the command's name)")
    p.add_argument("--dir", help="run folder root (default: $RUNTEL_DIR or ./runs)")
    p.add_argument("--tag", action="append", default=[], metavar="K=V", help="tag the run (repeatable)")
    p.add_argument("--telemetry", choices=("full", "minimal", "off"), help="how much environment to record")
    p.add_argument("--quiet", "-q", action="store_true", help="do not print the run folder at the end")
    p.add_argument("--json", action="store_true",
                   help="print the run's summary as JSON on stdout at the end (the command's own stdout then goes "
                   "to stderr, so stdout holds only the JSON)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    p.set_defaults(handler=_cmd_run)



_INTERPRETER = re.compile(r"^(python|pypy)[\d.]*(\.exe)?$|^(ba|z|da|k)?sh$")
_PY_OPTS_WITH_ARG = frozenset({"-X", "-W", "--check-hash-based-pycs"})


def default_run_name(command: Sequence[str]) -> str:
    """The name of a run of ``command``: ``python train.py`` -> ``train``, ``python -m pkg.train`` -> ``pkg.train``.

    An interpreter's script (or module) names the run, not the interpreter; other commands are named
    after their executable.
    """
    exe = Path(command[0]).name
    if not _INTERPRETER.match(exe):
        return exe
    args = iter(command[1:])
    for arg in args:
        if arg == "-m":
            return next(args, exe) or exe
        if arg == "-c" or arg == "-":
            return exe
        if arg in _PY_OPTS_WITH_ARG:
            next(args, None)
            continue
        if arg.startswith("-"):
            continue
        return Path(arg).stem or exe
    return exe

def command_script(command: Sequence[str]) -> str:
    """The file whose repository is the run's project: an interpreter's script, or a command given by its path.

    ``""`` when there is none (``bash -c ...``, ``python -m pkg``, a tool found on PATH): the working
    directory's repository is then the project. Never the wrapper's own entry point, whose repository is
    runtel's install, not the user's code.
    """
    exe = command[0] if command else ""
    if not _INTERPRETER.match(Path(exe).name):
        return os.path.abspath(exe) if os.sep in exe and os.path.isfile(exe) else ""
    args = iter(command[1:])
    for arg in args:
        if arg in ("-m", "-c", "-"):
            return ""
        if arg in _PY_OPTS_WITH_ARG:
            next(args, None)
            continue
        if arg.startswith("-"):
            continue
        return os.path.abspath(arg) if os.path.isfile(arg) else ""
    return ""


def _check_writable(root: Path) -> str | None:
    """None if run folders can be created under ``root``, else a one-line reason."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".runtel-probe-"):
            pass
    except OSError as exc:
        return f"cannot write run folders in {root}: {exc.strerror or exc}"
    return None


def _signals_from_terminal() -> bool:
    """Whether Ctrl-C reaches the child directly (same foreground process group on a terminal)."""
    try:
        return sys.stdin.isatty() and os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except OSError:
        return False


def _usage_error(args: argparse.Namespace, message: str) -> int:
    """One ``runtel: error:`` line (and the JSON error object under ``--json``); exit code 2."""
    sys.stderr.write(f"runtel: error: {message}\n")
    if args.json:
        sys.stdout.write(json.dumps({"error": message, "type": "UsageError", "problems": []}) + "\n")
    return 2


def _cmd_run(args: argparse.Namespace) -> int:
    command: list[str] = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        return _usage_error(args, "no command given (usage: runtel run [options] -- CMD [ARGS...])")

    from runtel.config import resolve_settings  # deferred: runtel.config (~8 ms)

    overrides: dict[str, Any] = {}
    if args.dir:
        overrides["dir"] = args.dir
    settings = resolve_settings(**overrides)
    if settings.json_enabled and not settings.disabled:
        problem = _check_writable(settings.dir)
        if problem:
            return _usage_error(args, problem)
    if overrides:
        runtel.configure(**overrides)

    name = args.name or default_run_name(command)
    for item in args.tag:
        if "=" not in item:
            return _usage_error(args, f"--tag expects K=V, got {item!r}")
    child: subprocess.Popen[bytes] | None = None
    exit_code = 0
    from_terminal = _signals_from_terminal()
    previous: dict[int, Any] = {}

    forwarded: list[int] = []

    early: list[int] = []  # signals that came while the command was being started (no child to pass them to yet)

    def forward(signum: int, frame: FrameType | None) -> None:
        forwarded.append(signum)
        if child is None:
            early.append(signum)
        elif child.poll() is None:
            if signum == signal.SIGINT and from_terminal:
                return  # the terminal already delivered it to the child's process group
            try:
                child.send_signal(signum)
            except ProcessLookupError:
                pass

    from runtel.redaction import Redactor  # deferred: runtel.redaction (~0.4 ms)

    shown = shlex.join(Redactor(settings.redact_patterns).redact_argv(command))
    runtime = _sdk.get_runtime()
    if runtime is not None:
        runtime.prepare_monitor()
        if runtime.monitor is not None:  # measure the command, never the wrapper (also at run start)
            runtime.monitor.set_roots([], include_self=False)
    attributes: dict[str, Any] = {"runtel.command": shown}
    run_span = runtel.RunSpan(name, tags=args.tag, telemetry=args.telemetry, attributes=attributes,
                              _script=command_script(command))
    started = time.monotonic()
    with run_span as run:
        for sig in _FORWARDED:
            previous[sig] = signal.signal(sig, forward)
        try:
            try:
                child = subprocess.Popen(command, env=_child_env(settings.propagate), preexec_fn=_parent_death_signal(),
                                         stdout=sys.stderr.fileno() if args.json else None)
            except OSError as exc:
                message = f"cannot start {command[0]!r}: {exc.strerror or exc}"
                sys.stderr.write(f"runtel: error: {message}\n")
                exit_code = 127
                run.set_command_result(exit_code=exit_code)
                _mark_failed(run, exit_code, message, "error")
            else:
                monitor = runtime.monitor if runtime is not None else None
                if monitor is not None:
                    monitor.set_roots([child.pid], include_self=False)
                for signum in early:  # came while it was starting: passed on now, not lost
                    with contextlib.suppress(ProcessLookupError):
                        child.send_signal(signum)
                returncode, rusage = _wait(child)
                exit_code = 128 - returncode if returncode < 0 else returncode
                killer = signal.Signals(-returncode) if returncode < 0 else None
                child_runs = _child_runs_usage(run.dir.parent, run.id, run.start_time_ns) if run.dir else None
                run.set_command_result(exit_code=exit_code, signal=killer.name if killer else None, rusage=rusage,
                                       child_runs=child_runs)
                if killer is not None:
                    status = "interrupted" if killer in _INTERRUPTING else "error"
                    _mark_failed(run, exit_code, f"command killed by {killer.name}", status)
                elif returncode - 128 in forwarded:  # it ended itself on the signal we passed on (exit 128+N)
                    name = signal.Signals(returncode - 128).name
                    _mark_failed(run, exit_code, f"command exited on {name} (code {returncode})", "interrupted")
                elif returncode != 0:
                    _mark_failed(run, exit_code, f"command exited with code {returncode}", "error")
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
    elapsed = time.monotonic() - started
    if args.json:
        sys.stdout.write(json.dumps({"run": run.id, "name": name, "status": run.status, "exit_code": exit_code,
                                     "duration_s": round(elapsed, 3),
                                     "dir": str(run.dir) if run.dir is not None else None}) + "\n")
    elif not args.quiet and run.dir is not None:
        sys.stderr.write(f"runtel: run {run.id} {run.status} in {elapsed:.2f} s — {run.dir}\n")
    return exit_code


#: holds only ``sitecustomize.py``: request spans for a uvicorn service that has no runtel code
_SITE = Path(__file__).resolve().parent / "_site"


def _child_env(propagate: bool) -> dict[str, str]:
    """The command's environment: the run's trace context, and (propagation on) runtel's start-up hook
    first on ``PYTHONPATH``, so a Python service in it gets request spans (see ``_site/sitecustomize.py``)."""
    env = runtel.inject_env()
    if propagate:
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(_SITE) + (os.pathsep + path if path else "")
    return env


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel send SIGTERM to the child when the wrapper dies (Linux only).

    ``prctl`` is resolved here, before the fork, so the child runs one C call and takes no lock (the
    sampler's threads do not exist in the child, but locks they held would). If the wrapper died before
    the call took effect, the child is re-parented at once: it then ends itself instead of running on.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes  # deferred: ctypes and libc load only for `runtel run` on Linux

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    wrapper = os.getpid()

    def set_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != wrapper:
            os.kill(os.getpid(), signal.SIGTERM)

    return set_signal


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _wait(child: subprocess.Popen[bytes]) -> tuple[int, dict[str, Any] | None]:
    """Wait for the command; with ``wait4`` (POSIX) also return what the kernel counted for it.

    ``ru_maxrss`` is the command's peak RSS, or that of the largest descendant it waited for, exact however
    short the spike; CPU times include those descendants too. ``None`` where ``wait4`` is missing or the
    child was reaped elsewhere (a signal handler's ``poll``), then only the exit status is known.
    """
    wait4 = getattr(os, "wait4", None)
    if wait4 is None:
        return child.wait(), None
    try:
        _, status, usage = wait4(child.pid, 0)
    except ChildProcessError:
        return child.wait(), None
    child.returncode = os.waitstatus_to_exitcode(status)
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB on Linux and the BSDs
    return child.returncode, {
        "max_rss_bytes": int(usage.ru_maxrss) * unit,
        "user_cpu_s": round(usage.ru_utime, 6),
        "system_cpu_s": round(usage.ru_stime, 6),
    }


def _child_runs_usage(root: Path, parent_id: str, since_ns: int) -> dict[str, float] | None:
    """CPU seconds and joules summed over the finished runs under ``root`` whose parent is ``parent_id``.

    The wrapper's own figures must be at least these: its command's processes are inside its tree. Only
    folders changed since the wrapper's run started are opened (a run folder's mtime moves when its
    run.json is replaced), so a root of 10,000 old runs costs one ``scandir`` and a ``stat`` each.
    """
    from runtel.rundir.reader import parent_run_id, read_record  # deferred: runtel.rundir.reader (~3 ms)

    since_s = since_ns / 1e9 - 1.0
    runs, cpu, energy = 0, 0.0, 0.0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return None
    for entry in entries:
        try:
            if not entry.is_dir() or entry.stat().st_mtime < since_s:
                continue
            record = read_record(Path(entry.path))
        except Exception:  # an unreadable folder is not this run's business here
            continue
        if parent_run_id(record) != parent_id:
            continue
        usage = record.get("resource_usage") or {}
        seconds = (usage.get("compute_time") or {}).get("cpu_seconds")
        joules = (usage.get("energy") or {}).get("total_joules")
        runs += 1
        cpu += float(seconds) if isinstance(seconds, (int, float)) else 0.0
        energy += float(joules) if isinstance(joules, (int, float)) else 0.0
    return {"runs": runs, "cpu_s": cpu, "energy_j": energy} if runs else None


def _mark_failed(run: Any, exit_code: int, message: str, status: str) -> None:
    """Record the child's failure as the run outcome (status and span), without a Python traceback."""
    run.set_outcome(status, error_type="ChildFailed", message=message)
