"""Arbitrary user values → OTel-legal span attributes and JSON-safe record values; never raising.

Users hand runtel configs, tags and function arguments of any type. Telemetry must never break their
program, so every public function in this package is pure, bounded in time and size, and never raises:
a value that cannot be converted degrades to a marked placeholder instead. One module per job:

* :mod:`~runtel.values.markers`: the markers (``…[truncated]``, ``<cycle>``...) and the shared depth limit;
* :mod:`~runtel.values.scalars`: OTel's scalar rules (``AttributeValue``, int64), bounded UTF-8-safe text;
* :mod:`~runtel.values.arrays`: array/tensor summaries, duck-typed (numpy, torch... are never imported);
* :mod:`~runtel.values.reprs`: ``safe_repr``, a bounded repr that never raises;
* :mod:`~runtel.values.containers`: ``normalize_config`` (dataclasses, pydantic, OmegaConf, argparse...);
* :mod:`~runtel.values.jsonable`: ``to_jsonable`` / ``json_dumps`` for run.json;
* :mod:`~runtel.values.attributes`: ``to_attribute_value`` / ``to_attributes`` for span attributes.

Import from the module that owns a name: this package re-exports nothing, so importing one module loads
only it and what it needs. The package is in the base layer: standard library imports only.
"""
