"""The write side: runs, blocks and traced calls, what a run records, and how it follows the work.

``run`` (the :class:`~runtel.recording.run.Run` and its record), ``lifecycle`` (``run_span`` and
the named steps of a run's start), ``blocks`` (``block`` and ``@trace``), ``lineage`` (artifacts,
metadata and sources of a run), ``carrier`` (trace context in environment variables), ``workers``
(worker processes), ``capture`` (call values) and ``seeding``. Nothing here imports the read side
(``runtel.query``, ``runtel.cli``).
"""
