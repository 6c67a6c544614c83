"""What a ``runtel reproduce`` re-run records as its place: the repository, not the worktree it ran in.

``runtel reproduce`` and reproduce.sh re-run a command in a temporary ``git worktree`` (removed
afterwards by ``runtel reproduce``). A re-run that recorded that path as its repository and working
directory could not itself be reproduced. So the re-running side tells the child, through
:data:`WORKTREE_ENV` and :data:`TOPLEVEL_ENV`, which repository the worktree stands for, and the
child records every path under the worktree (git toplevel, cwd, command line) as the same path
under the repository. :data:`OF_ENV` names the run being reproduced (run.json ``reproduces``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple

__all__ = ("OF_ENV", "TOPLEVEL_ENV", "WORKTREE_ENV", "Relocation", "relocation")

WORKTREE_ENV: Final = "RUNTEL_REPRODUCE_WORKTREE"
TOPLEVEL_ENV: Final = "RUNTEL_REPRODUCE_TOPLEVEL"
OF_ENV: Final = "RUNTEL_REPRODUCE_OF"


class Relocation(NamedTuple):
    """Paths under ``worktree`` (as given, or with symlinks resolved) are recorded under ``toplevel``."""

    worktrees: tuple[str, ...]
    toplevel: str

    def path(self, path: str) -> str:
        """``path`` under the repository if it lies in the worktree, else unchanged.

        Example:
            >>> Relocation(("/tmp/w",), "/src/repo").path("/tmp/w/a/b.py"), Relocation(("/tmp/w",), "/r").path("/x")
            ('/src/repo/a/b.py', '/x')
        """
        for worktree in self.worktrees:
            if path == worktree:
                return self.toplevel
            if path.startswith(worktree + os.sep):
                return self.toplevel.rstrip(os.sep) + path[len(worktree):]
        return path

    def argv(self, argv: Sequence[str]) -> list[str]:
        """Each argument that is a path in the worktree, as the path in the repository."""
        return [self.path(a) for a in argv]


def relocation(env: Mapping[str, str]) -> Relocation | None:
    """The worktree-to-repository mapping ``env`` asks for, or ``None`` (not a re-run, or a half-set pair)."""
    worktree, toplevel = env.get(WORKTREE_ENV, ""), env.get(TOPLEVEL_ENV, "")
    if not os.path.isabs(worktree) or not os.path.isabs(toplevel):
        return None
    worktree = os.path.normpath(worktree)
    real = os.path.realpath(worktree)  # os.getcwd() and git report the resolved path (/tmp -> /private/tmp)
    return Relocation((worktree,) if real == worktree else (worktree, real), os.path.normpath(toplevel))
