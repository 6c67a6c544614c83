"""The runtel command line: ``run``, ``ls``, ``show``, ``compare``, ``diff``, ``reproduce``, ``info``, ...

Each sub-command lives in its own module exposing ``register(subparsers)``; the parser's
``handler`` default receives the parsed arguments and returns the exit code. Expected failures
(``RuntelError``) become one line on stderr and exit code 1, never a traceback; so does anything
else bad data provokes (``--debug`` shows its traceback). Data a command had to skip (a corrupt run
folder in ``ls``, unreadable lines of spans.jsonl in ``show``) is reported with :func:`problem`, one
stderr line each; the command still prints everything it could read, and exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from runtel._version import __version__
from runtel.errors import RuntelError

__all__ = ("main", "problem", "run_root")

#: sub-command modules, in help order (a module missing from an install is skipped)
COMMANDS = ("run", "ls", "show", "compare", "diff", "reproduce", "info", "export", "report", "lineage", "index",
            "completion")
#: the module of each sub-command, where it is not named like the command
_MODULES = {"ls": "show"}
#: each sub-command's one-line help, as its module registers it: ``runtel --help`` and one command's parser
#: are built without importing the other commands' modules (~60 ms: the SDK, rich, the environment
#: probes); tests/integration/test_run_index.py checks these against the modules
COMMAND_HELP = {
    "run": "run a command as a recorded run",
    "ls": "list recorded runs, newest first",
    "show": "show a run's summary and span tree",
    "compare": "compare runs block by block",
    "diff": "what differs between two runs (config, command line, code, packages, environment, machine)",
    "reproduce": "re-run a run from its recorded commit, diff, environment and seed; --check compares artifacts",
    "info": "show the machine and environment a run would record",
    "export": "send recorded runs to an OTLP endpoint (replay offline runs)",
    "report": "write an offline HTML report of one run, or a comparison of several",
    "lineage": "show where a file or run came from (and who used it)",
    "index": "bring the run index up to date (or --rebuild it) and say what it holds",
    "completion": "print a shell completion script (bash, zsh, fish, tcsh)",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser (also used to generate docs/cli.md).

    ``only`` names the one sub-command whose module is imported and registered; the others get a
    placeholder with their :data:`COMMAND_HELP` line (``""``: placeholders only, for ``runtel --help``).
    None builds every sub-command.
    """
    parser = argparse.ArgumentParser(
        prog="runtel",
        description="Record how a result was produced and what it cost (OpenTelemetry-native, offline first).",
    )
    parser.add_argument("--version", action="version", version=f"runtel {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show runtel's own log messages")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if only is not None and name != only:
            if name in COMMAND_HELP and name not in sub.choices:
                sub.add_parser(name, help=COMMAND_HELP[name])
            continue
        module_name = _MODULES.get(name, name)
        try:
            module = importlib.import_module(f"runtel.cli.{module_name}")
        except ImportError:
            continue
        register = getattr(module, f"register_{name}", None) or getattr(module, "register", None)
        if register is not None and name not in sub.choices:
            register(sub)
    return parser


def _command_in(argv: Sequence[str]) -> str:
    """The sub-command ``argv`` names (its first word that is not an option), or ``""``."""
    for word in argv:
        if word == "--":
            return ""
        if not word.startswith("-"):
            return word if word in COMMANDS else ""
    return ""


_problems: list[str] = []


def problem(message: str) -> None:
    """Report data a command skipped or could not use: one stderr line; the command then exits 1."""
    text = " ".join(message.split())
    _problems.append(text)
    sys.stderr.write(f"runtel: warning: {text}\n")


def run_root(args: argparse.Namespace) -> Path:
    """The run folder root of a command: ``--dir``, else the ``dir`` setting (``RUNTEL_DIR``, ``./runs``)."""
    from runtel.config import resolve_settings  # deferred: runtel.config (~9 ms)

    if getattr(args, "dir", None):
        return Path(args.dir)
    return resolve_settings().dir


def cli_reference() -> str:
    """docs/cli.md's generated part: every sub-command's help text (a test keeps the doc in sync)."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # stable wrapping for the generated text (argparse reads it)
    try:
        parser = build_parser()
        parts = ["## `runtel`\n", "```text", parser.format_help().rstrip(), "```\n"]
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name, command in sub.choices.items():
            parts += [f"## `runtel {name}`\n", "```text", command.format_help().rstrip(), "```\n"]
        return "\n".join(parts)
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:
        # Answered before the parser is built: building it imports every sub-command's module.
        sys.stdout.write(f"runtel {__version__}\n")
        return 0
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_command_in(words))
    args = parser.parse_args(words)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="runtel: %(message)s")
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    _problems.clear()
    try:
        code = int(handler(args))
        return 1 if code == 0 and _problems else code
    except BrokenPipeError:  # `runtel ls | head`
        return 0
    except KeyboardInterrupt:
        sys.stderr.write("runtel: interrupted\n")
        return 130
    except Exception as exc:  # RuntelError: expected; anything else: data no check foresaw
        if args.debug:
            traceback.print_exc()
        text = str(exc) if isinstance(exc, RuntelError) else f"{type(exc).__name__}: {exc}".rstrip(": ")
        hint = "" if isinstance(exc, RuntelError) or args.debug else " (runtel --debug shows the traceback)"
        message = " ".join(text.split())[:2000]
        sys.stderr.write(f"runtel: error: {message}{hint}\n")
        if getattr(args, "json", False):  # a machine reading stdout gets the error as JSON, not an empty page
            sys.stdout.write(json.dumps({"error": message, "type": type(exc).__name__,
                                         "problems": list(_problems)}) + "\n")
        return 1
