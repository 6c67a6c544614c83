"""Loaded at start-up by every Python process of a ``runtel run`` command (its folder is put first on
``PYTHONPATH``): request spans for a uvicorn service that has no runtel code.

It does nothing unless the process was started from inside a run (``RUNTEL_PARENT_RUN_ID``) with
propagation on, and costs one environment lookup then. When the program imports ``uvicorn.config``,
``Config.load`` is wrapped so the ASGI app uvicorn serves is wrapped in runtel's ``RequestSpans``
(the first request opens the process's worker run, a child of the ``runtel run`` run), and
``Server.shutdown`` closes that worker run once the server has shut down (uvicorn then re-raises the
SIGTERM that stopped it, which would skip ``atexit``). A ``sitecustomize`` of the user's own, found
further on ``sys.path``, is run afterwards, as if this one were not there.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # the idiom type checkers honour: importing typing would cost every Python child ~10 ms
if TYPE_CHECKING:
    from typing import Any

_FALSE = ("0", "false", "no", "off")

#: the uvicorn Server classes whose shutdown is wrapped already
_patched: list[Any] = []


class _UvicornHook:
    """A one-shot meta-path finder: patches ``uvicorn.config`` right after it is executed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "uvicorn.config":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        import importlib.util  # deferred: importlib.util, only when uvicorn is imported (~1 ms)

        spec = importlib.util.find_spec(name)
        loader = getattr(spec, "loader", None)
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            original(module)
            try:
                _patch_uvicorn(module)
            except Exception as exc:  # never stop the service from starting
                _say("could not hook uvicorn", exc)

        loader.exec_module = exec_module
        return spec


def _say(what: str, exc: BaseException) -> None:
    """One stderr line: a failure here is never silent, and never stops the program (runtel's logging is not loaded)."""
    try:
        sys.stderr.write(f"runtel: {what}: {type(exc).__name__}: {exc}\n")
    except Exception:  # a closed stderr: nothing else to tell
        pass


def _patch_uvicorn(config_module: Any) -> None:
    config_class = config_module.Config
    original_load = config_class.load

    def load(self: Any) -> None:
        original_load(self)
        try:
            from runtel.recording.service import RequestSpans  # deferred: runtel, only for a served app (~60 ms)

            if not isinstance(self.loaded_app, RequestSpans):
                self.loaded_app = RequestSpans(self.loaded_app)
            _patch_shutdown()
        except Exception as exc:  # the service runs on without request spans
            _say("could not add request spans to the app uvicorn serves", exc)

    config_class.load = load


def _patch_shutdown() -> None:
    import uvicorn.server  # deferred: loaded already by the server that called Config.load

    server_class = uvicorn.server.Server
    if server_class in _patched:
        return
    _patched.append(server_class)
    original = server_class.shutdown

    async def shutdown(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            await original(self, *args, **kwargs)
        finally:
            try:
                from runtel.recording.workers import close_worker_run  # deferred: loaded already by RequestSpans

                close_worker_run()
            except Exception as exc:
                _say("could not close the service's worker run", exc)

    server_class.shutdown = shutdown  # type: ignore[method-assign]


def _chain_user_sitecustomize() -> None:
    """Run the next ``sitecustomize`` on ``sys.path`` (the user's or the distribution's), as Python would have."""
    here = os.path.dirname(os.path.abspath(__file__))
    import importlib.machinery  # deferred: loaded already at interpreter start-up

    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    import importlib.util  # deferred: importlib.util, only when another sitecustomize exists (~1 ms)

    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


if os.environ.get("RUNTEL_PARENT_RUN_ID") and os.environ.get("RUNTEL_PROPAGATE", "").strip().lower() not in _FALSE:
    sys.meta_path.insert(0, _UvicornHook())
try:
    _chain_user_sitecustomize()
except Exception as exc:  # what Python itself prints for a failing sitecustomize, and goes on
    sys.stderr.write(f"Error in sitecustomize; set PYTHONVERBOSE for traceback:\n{type(exc).__name__}: {exc}\n")
