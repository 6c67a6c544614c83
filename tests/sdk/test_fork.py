"""Forked children (DataLoader-style workers) write their spans into the parent's run at once."""

from __future__ import annotations

import os

import pytest

import runtel
from runtel.config import Settings
from runtel.testing import read_run


@pytest.mark.filterwarnings("ignore:This process.*is multi-threaded:DeprecationWarning")
def test_forked_child_span_on_disk_despite_os_exit(rt: Settings) -> None:
    """A span ended in a forked child that leaves through os._exit is in the parent's spans.jsonl."""
    with runtel.run_span("parent") as run:
        with runtel.block("fork-here") as blk:
            pid = os.fork()
            if pid == 0:  # child: no flush, no atexit
                try:
                    with runtel.block("in-child", pid=os.getpid()):
                        pass
                finally:
                    os._exit(0)
            _, status = os.waitpid(pid, 0)
            assert status == 0
    record, spans = read_run(run.dir)  # type: ignore[arg-type]
    child = [s for s in spans if s.name == "in-child"]
    assert len(child) == 1
    assert child[0].parent_span_id == format(blk.span.get_span_context().span_id, "016x")
    assert record["status"] == "ok"  # the child never finalised the parent's run
