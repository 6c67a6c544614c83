"""Exporters: OTLP/JSON encoding, the run-folder JSON Lines files, and opt-in OTLP."""
