"""The machine a run executed on: host and OS identity, CPU and memory inventory, disks and torch devices.

These facts do not change while a process lives, so :func:`host_facts` computes them once and every
later run in the process reuses them. Everything is read from ``/proc``, ``/etc`` and the standard
library. psutil is only a lazy fallback where /proc cannot answer: importing it costs ~30 ms, more than
the whole cold collection budget. No helper process is spawned (py-cpuinfo costs ~1 s per cold start).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import socket
import sys
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, NamedTuple

__all__ = (
    "HostFacts",
    "arch_name",
    "boot_timestamp",
    "clear_cache",
    "device_info",
    "disk_info",
    "host_facts",
    "os_type_name",
    "read_cpu_model",
)

#: the shared, read-only default of mapping fields (a NamedTuple cannot have per-instance factories)
_EMPTY: Mapping[Any, Any] = MappingProxyType({})

_logger = logging.getLogger("runtel.environment")

# platform.machine() -> semconv host.arch enum (amd64, arm32, arm64, ia64, ppc32, ppc64, s390x, x86)
_ARCH: Final[Mapping[str, str]] = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "x64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "aarch64_be": "arm64",
    "armv6l": "arm32",
    "armv7l": "arm32",
    "armv8l": "arm32",
    "arm": "arm32",
    "i386": "x86",
    "i486": "x86",
    "i586": "x86",
    "i686": "x86",
    "x86": "x86",
    "ia64": "ia64",
    "ppc": "ppc32",
    "ppc64": "ppc64",
    "ppc64le": "ppc64",
    "s390x": "s390x",
}
# sys.platform prefix -> semconv os.type
_OS_TYPES: Final = (
    ("linux", "linux"),
    ("darwin", "darwin"),
    ("win32", "windows"),
    ("cygwin", "windows"),
    ("freebsd", "freebsd"),
    ("netbsd", "netbsd"),
    ("openbsd", "openbsd"),
    ("dragonfly", "dragonflybsd"),
    ("aix", "aix"),
    ("sunos", "solaris"),
    ("zos", "z_os"),
)
_MACHINE_ID_FILES: Final = ("/etc/machine-id", "/var/lib/dbus/machine-id")

_lock = threading.Lock()
_cached: HostFacts | None = None


class HostFacts(NamedTuple):
    """What does not change while the process lives; ``None`` = could not be determined."""

    name: str | None
    machine_id: str | None
    arch: str | None
    os_type: str
    os_name: str | None
    os_version: str | None
    os_description: str | None
    boot_time: str | None
    cpu: Mapping[str, Any] = _EMPTY
    memory: Mapping[str, Any] = _EMPTY


def arch_name(machine: str) -> str:
    """Semconv ``host.arch`` for a ``platform.machine()`` value (unknown values pass through lower-cased)."""
    return _ARCH.get(machine.lower(), machine.lower())


def os_type_name(platform_name: str) -> str:
    """Semconv ``os.type`` for a ``sys.platform`` value."""
    for prefix, name in _OS_TYPES:
        if platform_name.startswith(prefix):
            return name
    return platform_name


def _read_text(path: str, limit: int = 1 << 20) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(limit)
    except OSError:
        return None


def _machine_id() -> str | None:
    # semconv host.id on Linux; both files are world-readable (no privileged source is used)
    for path in _MACHINE_ID_FILES:
        text = _read_text(path, 256)
        if text and text.strip():
            return text.strip()
    return None


def _os_release() -> dict[str, str]:
    text = _read_text("/etc/os-release") or _read_text("/usr/lib/os-release") or ""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("\"'")
    return values


def read_cpu_model(cpuinfo_text: str | None = None) -> dict[str, str]:
    """CPU model name and vendor from ``/proc/cpuinfo`` (x86 and ARM field names)."""
    text = cpuinfo_text if cpuinfo_text is not None else (_read_text("/proc/cpuinfo", 1 << 22) or "")
    model: str | None = None
    vendor: str | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if model is None and key in ("model name", "hardware", "cpu model", "cpu") and value:
            model = value
        elif vendor is None and key in ("vendor_id", "cpu implementer", "vendor") and value:
            vendor = value
        if model is not None and vendor is not None:
            break
    result: dict[str, str] = {}
    if model is None and platform.processor():
        model = platform.processor()
    if model:
        result["model"] = model
    if vendor:
        result["vendor"] = vendor
    return result


def _iso(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc).isoformat()


def _psutil() -> Any:
    """psutil, imported only where /proc cannot answer (its import alone costs ~30 ms cold)."""
    import psutil  # deferred: psutil (~8 ms)

    return psutil


def boot_timestamp() -> float | None:
    """Seconds since the epoch when the machine booted (``btime`` of /proc/stat, psutil elsewhere)."""
    for line in (_read_text("/proc/stat", 1 << 16) or "").splitlines():
        if line.startswith("btime "):
            try:
                return float(line.split()[1])
            except (IndexError, ValueError):
                break
    try:
        return float(_psutil().boot_time())
    except Exception:
        return None


def _physical_cores(cpuinfo: str) -> int | None:
    pairs: set[tuple[str, str]] = set()
    physical = core = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip():
            if core:
                pairs.add((physical, core))
            physical = core = ""
    if core:
        pairs.add((physical, core))
    if pairs:
        return len(pairs)
    try:
        count = _psutil().cpu_count(logical=False)
        return int(count) if count else None
    except Exception:
        return None


def _frequency_mhz(cpuinfo: str) -> float | None:
    khz = _read_text("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", 64)
    if khz and khz.strip().isdigit():
        return int(khz.strip()) / 1000.0
    for line in cpuinfo.splitlines():
        if line.startswith("cpu MHz"):
            try:
                return float(line.partition(":")[2])
            except ValueError:
                break
    try:
        freq = _psutil().cpu_freq()  # may raise or return None on VMs and containers
        return float(freq.max or freq.current) or None if freq is not None else None
    except Exception:
        return None


def _cpu_inventory() -> dict[str, Any]:
    cpuinfo = _read_text("/proc/cpuinfo", 1 << 22) or ""
    cpu: dict[str, Any] = dict(read_cpu_model(cpuinfo))
    cpu["physical_cores"] = _physical_cores(cpuinfo)
    cpu["logical_cores"] = os.cpu_count()
    try:
        cpu["available_cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    cpu["frequency_mhz"] = _frequency_mhz(cpuinfo)
    return cpu


def _memory_inventory() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for line in (_read_text("/proc/meminfo", 1 << 16) or "").splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "SwapTotal"):
            try:
                values["total_bytes" if key == "MemTotal" else "swap_total_bytes"] = int(rest.split()[0]) * 1024
            except (IndexError, ValueError):
                pass
    if "total_bytes" in values:
        return values
    try:
        psutil = _psutil()
        return {"total_bytes": int(psutil.virtual_memory().total), "swap_total_bytes": int(psutil.swap_memory().total)}
    except Exception:
        _logger.debug("memory inventory unavailable", exc_info=True)
        return values


def _boot_time() -> str | None:
    timestamp = boot_timestamp()
    return _iso(timestamp) if timestamp is not None else None


def _compute() -> HostFacts:
    release = _os_release()
    try:
        hostname: str | None = socket.gethostname() or platform.node() or None
    except OSError:
        hostname = platform.node() or None
    uname = platform.uname()
    return HostFacts(
        name=hostname,
        machine_id=_machine_id(),
        arch=arch_name(uname.machine) if uname.machine else None,
        os_type=os_type_name(sys.platform),
        os_name=release.get("NAME") or uname.system or None,
        os_version=uname.release or None,
        os_description=release.get("PRETTY_NAME") or platform.platform() or None,
        boot_time=_boot_time(),
        cpu=_cpu_inventory(),
        memory=_memory_inventory(),
    )


def host_facts(*, refresh: bool = False) -> HostFacts:
    """Host, OS, CPU and memory facts of this machine, computed once per process."""
    global _cached
    with _lock:
        if _cached is None or refresh:
            _cached = _compute()
        return _cached


def clear_cache() -> None:
    """Forget the cached facts (tests)."""
    global _cached
    with _lock:
        _cached = None


def disk_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The file system holding ``path``: mount point, device, type and sizes; never raises.

    Knowing that the data sat on NFS, overlay or a local SSD explains I/O-bound timing differences
    between runs. On any error the result is ``{"path": ..., "error": "..."}``.
    """
    target = os.fspath(path)
    try:
        real = os.path.realpath(target)
        usage = os.statvfs(real)
        info: dict[str, Any] = {
            "path": target,
            "total_bytes": usage.f_blocks * usage.f_frsize,
            "free_bytes": usage.f_bavail * usage.f_frsize,
            "used_bytes": (usage.f_blocks - usage.f_bfree) * usage.f_frsize,
        }
        mount = _mount_of(real)
        if mount is not None:
            info.update(mount)
        return info
    except Exception as exc:
        return {"path": target, "error": f"{type(exc).__name__}: {exc}"}


def _mount_of(real_path: str) -> dict[str, str] | None:
    """Longest mount point containing ``real_path`` from /proc/self/mounts (no ``df`` subprocess)."""
    text = _read_text("/proc/self/mounts")
    if text is None:
        return None
    best: dict[str, str] | None = None
    best_len = -1
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        # /proc/mounts escapes spaces etc. as octal (\040)
        mount_point = parts[1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        prefix = mount_point.rstrip("/") + "/"
        if (real_path == mount_point or real_path.startswith(prefix) or mount_point == "/") and len(
            mount_point
        ) > best_len:
            best_len = len(mount_point)
            best = {"mount_point": mount_point, "device": parts[0], "fs_type": parts[2]}
    return best


def device_info(device: object) -> dict[str, Any]:
    """Facts about a ``torch.device`` (name, memory, capability) without importing torch.

    Only works when the program already imported torch; otherwise ``{"error": "torch not imported"}``.
    Never raises.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return {"error": "torch not imported"}
    try:
        dev = torch.device(device) if not isinstance(device, torch.device) else device
        info: dict[str, Any] = {"device": str(dev), "type": dev.type}
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                info["error"] = "cuda not available"
                return info
            index = dev.index if dev.index is not None else torch.cuda.current_device()
            props = torch.cuda.get_device_properties(index)
            info.update(
                {
                    "index": index,
                    "name": props.name,
                    "total_memory_bytes": int(props.total_memory),
                    "capability": f"{props.major}.{props.minor}",
                    "multi_processor_count": int(props.multi_processor_count),
                    "memory_allocated_bytes": int(torch.cuda.memory_allocated(index)),
                    "memory_reserved_bytes": int(torch.cuda.memory_reserved(index)),
                    "max_memory_allocated_bytes": int(torch.cuda.max_memory_allocated(index)),
                }
            )
            cuda_version = getattr(getattr(torch, "version", None), "cuda", None)
            if cuda_version:
                info["cuda_version"] = cuda_version
        elif dev.type == "mps":
            info["name"] = "Apple MPS"
        elif dev.type == "cpu":
            info["name"] = host_facts().cpu.get("model")
        return info
    except Exception as exc:
        return {"device": str(device), "error": f"{type(exc).__name__}: {exc}"}
