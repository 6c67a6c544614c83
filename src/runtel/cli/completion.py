"""``runtel completion bash|zsh|fish|tcsh``: print a shell completion script generated from the parser by shtab.

The script is static (generated once, sourced by the shell): a TAB never starts Python, and neither
``runtel --version`` nor ``--help`` imports shtab (only this command does).
"""

from __future__ import annotations

import argparse
import sys

from runtel.cli import build_parser

__all__ = ("SHELLS", "completion_script", "register")

SHELLS = ("bash", "zsh", "fish", "tcsh")

_INSTALL = {
    "bash": 'eval "$(runtel completion bash)"  # in ~/.bashrc',
    "zsh": 'eval "$(runtel completion zsh)"  # in ~/.zshrc, after compinit',
    "fish": "runtel completion fish > ~/.config/fish/completions/runtel.fish",
    "tcsh": "eval `runtel completion tcsh`  # in ~/.tcshrc",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``completion`` sub-command."""
    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, fish, tcsh)",
        description="Print the completion script of SHELL (generated from runtel's own parser by shtab). "
        + " ".join(f"{shell}: {how}." for shell, how in _INSTALL.items()),
    )
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    p.set_defaults(handler=_cmd_completion)


def completion_script(shell: str) -> str:
    """The completion script of ``shell`` for the full ``runtel`` parser (``--dir`` completes folders, files else)."""
    import shtab  # deferred: shtab and its importlib.metadata, only to generate a completion script (~130 ms)

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in sub.choices.values():
        for action in command._actions:
            if "--dir" in action.option_strings or "--in" in action.option_strings:
                action.complete = shtab.DIRECTORY
            elif "--output" in action.option_strings:
                action.complete = shtab.FILE
    return str(shtab.complete(parser, shell=shell))


def _cmd_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(completion_script(args.shell))
    return 0
