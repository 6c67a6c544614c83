"""The run folder's format, both ways: ``schema`` (names, statuses, the record's types), ``writer``,
``reader``, ``artifacts`` (the content-hash index beside the folders), ``otlp_json`` (the line
format of spans.jsonl and metrics.jsonl) and ``reproduce`` (reproduce.sh).

The package imports nothing at import time: each module is loaded by the side that needs it.
"""
