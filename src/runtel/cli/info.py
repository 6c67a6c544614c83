"""``runtel info``: show what a run started here would record about the machine and environment.

It runs the same collection as a run (same telemetry level and redaction), so users can check what
runtel stores before they run anything, and ``--json`` gives machine inventory to scripts.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from runtel.cli import render
from runtel.config import TELEMETRY_LEVELS, Settings, resolve_settings
from runtel.environment import collect_environment
from runtel.errors import ConfigError
from runtel.redaction import Redactor

__all__ = ("register",)

_logger = logging.getLogger("runtel.cli")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``runtel info [--json] [--level full|minimal]``."""
    parser = subparsers.add_parser(
        "info",
        help="show the machine and environment a run would record",
        description="Show the machine and environment inventory a run started here would record "
        "(same telemetry level and redaction as a run).",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a tree")
    parser.add_argument(
        "--level",
        choices=[level for level in TELEMETRY_LEVELS if level != "off"],
        default=None,
        help="telemetry level to show (default: the RUNTEL_TELEMETRY setting)",
    )
    parser.set_defaults(handler=_cmd)


def _settings() -> Settings:
    try:
        return resolve_settings(os.environ)
    except ConfigError as exc:  # a bad unrelated setting should not hide the inventory
        _logger.warning("ignoring settings: %s", exc)
        return Settings()


def _gpus(settings: Settings) -> list[dict[str, Any]]:
    """GPU inventory from the configured backend; empty when there is no GPU or no backend module."""
    try:
        gpu = importlib.import_module("runtel.gpu")
        backend = gpu.open_backend(settings.gpu_backend, env=os.environ, uuids=settings.gpu_uuids)
    except Exception:
        _logger.debug("no GPU backend", exc_info=True)
        return []
    try:
        return [dict(device.to_dict()) for device in backend.devices()]
    except Exception:
        _logger.debug("GPU inventory failed", exc_info=True)
        return []
    finally:
        try:
            backend.close()
        except Exception:
            _logger.debug("GPU backend close failed", exc_info=True)


def _cmd(args: argparse.Namespace) -> int:
    """Collect and print the inventory; exit code 0."""
    settings = _settings()
    level = args.level or settings.telemetry
    if level == "off":
        if args.json:
            sys.stdout.write('{"level": "off"}\n')
        else:
            sys.stdout.write("telemetry is off (RUNTEL_TELEMETRY=off): runs record no environment\n")
        return 0
    try:
        redactor = Redactor(settings.redact_patterns)
    except Exception as exc:  # an invalid pattern: show the inventory with the built-in rules
        _logger.warning("ignoring RUNTEL_REDACT_PATTERNS: %s", exc)
        redactor = Redactor()
    environment = collect_environment(
        level=level,
        env=os.environ,
        argv=sys.argv,
        cwd=os.getcwd(),
        script_path=None,
        redactor=redactor,
        git_diff_max_bytes=settings.git_diff_max_bytes,
        gpus=_gpus(settings) if level == "full" else (),
    )
    data: dict[str, Any] = {
        "level": level,
        "resource": environment.resource,
        "span": environment.span,
        "record": environment.record,
        "git_diff_bytes": len(environment.git_diff.encode()) if environment.git_diff is not None else None,
    }
    if args.json:
        render.print_json(data)
        return 0
    _print_tree(level, environment.record, environment.span)
    return 0


def _print_tree(level: str, record: Mapping[str, Any], span: Mapping[str, Any]) -> None:
    from rich.markup import escape  # deferred: rich, only for terminal output (~14 ms)
    from rich.tree import Tree  # deferred: rich, only for terminal output (~18 ms)

    tree = Tree(f"[bold]runtel info[/bold] (telemetry level: {escape(level)})")
    order = ("host", "machine", "process", "python", "git", "cluster", "packages_summary", "env")
    for section in (*order, *(k for k in record if k not in order and k != "packages")):
        if section not in record:
            continue
        value = record[section]
        if section == "packages_summary" and isinstance(value, Mapping):
            tree.add(f"[bold]packages[/bold]: {value.get('count')} installed (hash {escape(str(value.get('hash')))})")
            continue
        _add(tree.add(f"[bold]{escape(section)}[/bold]"), value, render.format_bytes)
    if span:
        _add(tree.add("[bold]run span attributes[/bold]"), dict(span), render.format_bytes)
    render.console().print(tree)


def _add(node: Any, value: Any, format_bytes: Any, key: str = "") -> None:
    from rich.markup import escape  # deferred: rich, only for terminal output (~14 ms)

    if isinstance(value, Mapping):
        if not value:
            node.add("[dim](none)[/dim]")
        for k, v in value.items():
            if isinstance(v, (Mapping, list)) and v:
                _add(node.add(escape(str(k))), v, format_bytes, str(k))
            else:
                node.add(f"{escape(str(k))}: {escape(_scalar(str(k), v, format_bytes))}")
    elif isinstance(value, list):
        if not value:
            node.add("[dim](none)[/dim]")
        for i, item in enumerate(value):
            if isinstance(item, (Mapping, list)):
                _add(node.add(escape(f"[{i}]")), item, format_bytes, key)
            else:
                node.add(escape(_scalar(key, item, format_bytes)))
    else:
        node.add(escape(_scalar(key, value, format_bytes)))


def _scalar(key: str, value: Any, format_bytes: Any) -> str:
    if key.endswith("_bytes") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{format_bytes(value)} ({value})"
    return "-" if value is None else str(value)
