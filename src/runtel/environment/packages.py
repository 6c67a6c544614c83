"""Which Python distributions were importable: ``{name: version}``, a count and a stable hash.

Parsing every METADATA file through :mod:`importlib.metadata` costs tens of milliseconds with a
hundred packages; the installer already encodes name and version in the ``*.dist-info`` /
``*.egg-info`` directory name, so scanning ``sys.path`` directories is ~1 ms. importlib.metadata is
only the fallback (zip imports, unusual layouts). The result is computed once per process.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ("PackageInventory", "canonical_name", "clear_cache", "inventory", "inventory_hash", "scan_paths")

_logger = logging.getLogger("runtel.environment")

_CANON_RE: Final = re.compile(r"[-_.]+")
_PY_TAG_RE: Final = re.compile(r"-py\d+(?:\.\d+)*(?:-.*)?$")
_lock = threading.Lock()
_cached: PackageInventory | None = None


class PackageInventory:
    """Installed distributions (first one on ``sys.path`` wins, as for imports).

    A plain slotted class (a dataclass cost ~1 ms to define on a process's first run; a NamedTuple's
    ``count`` would clash with ``tuple.count``).
    """

    __slots__ = ("count", "hash", "packages")

    def __init__(self, packages: Mapping[str, str], count: int, hash: str) -> None:
        self.packages = packages
        self.count = count
        self.hash = hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PackageInventory):
            return NotImplemented
        return (self.packages, self.count, self.hash) == (other.packages, other.count, other.hash)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PackageInventory(count={self.count}, hash={self.hash!r})"


def _sha256_hex(data: bytes) -> str:
    """SHA-256 from CPython's built-in module when there is one: the same digest without ``import hashlib``,
    which loads OpenSSL (~4 ms of a process's first run) for a hash of a few kilobytes."""
    for module in ("_sha2", "_sha256"):  # CPython >= 3.12, 3.10-3.11
        try:
            impl = importlib.import_module(module).sha256
        except (ImportError, AttributeError):
            continue
        return str(impl(data).hexdigest())
    import hashlib  # deferred: hashlib loads OpenSSL, only for hashing (~3 ms)

    return hashlib.sha256(data).hexdigest()


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name, so ``Foo_Bar`` and ``foo-bar`` are one package."""
    return _CANON_RE.sub("-", name).lower()


def inventory_hash(packages: Mapping[str, str]) -> str:
    """First 16 hex digits of sha256 over sorted ``name==version`` lines: equal environments, equal hash."""
    text = "\n".join(f"{name}=={version}" for name, version in sorted(packages.items()))
    return _sha256_hex(text.encode("utf-8"))[:16]


def _version_from_metadata_file(directory: str) -> str | None:
    """Read ``Version:`` from the header of METADATA / PKG-INFO (egg-info dirs without a version in the name)."""
    for filename in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(directory, filename), encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Version:"):
                        return line.partition(":")[2].strip()
                    if not line.strip():  # end of the header block
                        break
        except OSError:
            continue
    return None


def _parse_entry(directory: str, entry: str) -> tuple[str, str] | None:
    if entry.endswith(".dist-info"):
        stem = entry[: -len(".dist-info")]
    elif entry.endswith(".egg-info"):
        stem = _PY_TAG_RE.sub("", entry[: -len(".egg-info")])
    else:
        return None
    name, sep, version = stem.rpartition("-")
    if not sep or not name or not version or not version[0].isdigit():
        name, version = stem, _version_from_metadata_file(os.path.join(directory, entry)) or ""
        if not version:
            return None
    return canonical_name(name), version


def scan_paths(paths: Iterable[str]) -> dict[str, str]:
    """Distributions found as ``*.dist-info`` / ``*.egg-info`` entries directly inside ``paths``."""
    found: dict[str, str] = {}
    seen: set[str] = set()
    for raw in paths:
        directory = os.path.abspath(raw or os.curdir)
        if directory in seen:
            continue
        seen.add(directory)
        try:
            with os.scandir(directory) as it:
                names = [e.name for e in it if e.name.endswith((".dist-info", ".egg-info"))]
        except OSError:  # missing dirs, zip files, permission
            continue
        for entry in sorted(names):
            parsed = _parse_entry(directory, entry)
            if parsed is not None and parsed[0] not in found:
                found[parsed[0]] = parsed[1]
    return found


def _from_importlib() -> dict[str, str]:
    from importlib import metadata  # deferred: importlib.metadata (~19 ms), only when a path cannot be scanned

    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(canonical_name(name), dist.version)
    return found


def inventory(*, refresh: bool = False) -> PackageInventory:
    """The package inventory of this process, computed on first use (``refresh`` recomputes it)."""
    global _cached
    with _lock:
        if _cached is not None and not refresh:
            return _cached
        packages: dict[str, str] = {}
        try:
            packages = scan_paths(sys.path)
        except Exception:  # never expected; the fallback below still runs
            _logger.debug("package directory scan failed", exc_info=True)
        if not packages:
            try:
                packages = _from_importlib()
            except Exception:
                _logger.debug("importlib.metadata inventory failed", exc_info=True)
        ordered = dict(sorted(packages.items()))
        _cached = PackageInventory(packages=ordered, count=len(ordered), hash=inventory_hash(ordered))
        return _cached


def clear_cache() -> None:
    """Forget the inventory (tests; after installing packages at run time)."""
    global _cached
    with _lock:
        _cached = None
