"""Span and trace ids that do not depend on the global ``random`` state.

The SDK's default generator draws from the ``random`` module, which ML code seeds on purpose
(``seed_everything(42)``): two runs seeded alike would then get identical trace and span ids. This
generator keeps a private ``random.Random`` seeded from the OS, and reseeds itself in forked children.
"""

from __future__ import annotations

import os
import random

from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import INVALID_SPAN_ID, INVALID_TRACE_ID

__all__ = ("IndependentIdGenerator",)


class IndependentIdGenerator(IdGenerator):
    """Random 64/128-bit ids from a private generator (unaffected by seeding ``random``)."""

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(32))
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        """Fresh state (after fork, so parent and child never repeat each other's ids)."""
        self._random = random.Random(os.urandom(32))

    def generate_span_id(self) -> int:
        span_id = self._random.getrandbits(64)
        while span_id == INVALID_SPAN_ID:
            span_id = self._random.getrandbits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = self._random.getrandbits(128)
        while trace_id == INVALID_TRACE_ID:
            trace_id = self._random.getrandbits(128)
        return trace_id
