"""What differs between two recorded runs: inputs, code, environment and machine (``runtel diff``).

The cost view (time, memory, energy per block) is ``runtel compare``; this is the *why*: config key
by key (nested keys dotted), the command line (run.json ``argv``, as recorded: redacted), tags,
attributes, metadata, results, seed, commit and uncommitted diff, packages, environment variables,
machine (CPU model, GPUs with driver and CUDA) and Python. Only what differs is returned; a key
present in one run only is ``added`` (in B) or ``removed`` (from A).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from runtel.rundir.reader import environment, git_info, read_record
from runtel.rundir.schema import GIT_DIFF_FILE, RunRecord

__all__ = ("SECTIONS", "Difference", "diff_records", "diff_runs", "flatten")

#: the sections compared, in output order
SECTIONS: Final = (
    "config", "argv", "tags", "attributes", "metadata", "results", "seed", "git", "packages", "env", "machine",
    "python",
)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


_MISSING: Final = _Missing()


@dataclass(frozen=True)
class Difference:
    """One difference: ``kind`` is ``changed``, ``added`` (only in B) or ``removed`` (only in A)."""

    section: str
    key: str
    kind: str
    a: Any = None
    b: Any = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``a``/``b`` left out when the key is absent on that side)."""
        data = asdict(self)
        if self.kind == "added":
            del data["a"]
        elif self.kind == "removed":
            del data["b"]
        return data


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys; lists and scalars are leaves (``{}`` for ``None``).

    Example:
        >>> flatten({"opt": {"lr": 0.1, "betas": [0.9, 0.99]}, "epochs": 3})
        {'opt.lr': 0.1, 'opt.betas': [0.9, 0.99], 'epochs': 3}
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, Mapping) and item:
            out.update(flatten(item, name))
        else:
            out[name] = item
    return out


def _compare(section: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> Iterator[Difference]:
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if va is _MISSING:
            yield Difference(section, key, "added", b=vb)
        elif vb is _MISSING:
            yield Difference(section, key, "removed", a=va)
        elif va != vb:
            yield Difference(section, key, "changed", a=va, b=vb)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _argv(record: Mapping[str, Any]) -> dict[str, Any]:
    """The command line as one value (a changed argument shifts the rest, so position by position would
    mislead); absent when the run recorded none (a telemetry level that keeps no command line)."""
    argv = record.get("argv")
    return {"argv": list(argv)} if isinstance(argv, list) else {}


def _git(record: RunRecord, diff_text: str | None) -> dict[str, Any]:
    git = git_info(record)
    out: dict[str, Any] = {k: git[k] for k in ("commit", "branch", "dirty") if k in git}
    if diff_text is None:
        out["diff"] = "none"
    else:
        digest = hashlib.sha256(diff_text.encode()).hexdigest()[:12]
        out["diff"] = f"{len(diff_text.splitlines())} lines, sha256 {digest}"
    return out


def _machine(env: Mapping[str, Any]) -> dict[str, Any]:
    machine = _mapping(env.get("machine"))
    cpu = _mapping(machine.get("cpu"))
    out: dict[str, Any] = {}
    if "model" in cpu:
        out["cpu.model"] = cpu["model"]
    gpus = machine.get("gpus")
    if isinstance(gpus, list):
        out["gpu.count"] = len(gpus)
        for i, gpu in enumerate(gpus):
            for key in ("name", "driver_version", "cuda_version", "memory_total_bytes"):
                value = _mapping(gpu).get(key)
                if value is not None:
                    out[f"gpu[{i}].{key}"] = value
    return out


def _python(env: Mapping[str, Any]) -> dict[str, Any]:
    python = _mapping(env.get("python"))
    return {k: python[k] for k in ("implementation", "version") if k in python}


def diff_records(
    a: RunRecord, b: RunRecord, *, git_diff_a: str | None = None, git_diff_b: str | None = None
) -> list[Difference]:
    """Every difference between two run records (``git_diff_*``: the text of each run's git.diff, if any)."""
    ra: Mapping[str, Any] = a
    rb: Mapping[str, Any] = b
    ea, eb = environment(a), environment(b)
    pairs: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = {
        "config": (flatten(ra.get("config")), flatten(rb.get("config"))),
        "argv": (_argv(ra), _argv(rb)),
        "tags": (_mapping(ra.get("tags")), _mapping(rb.get("tags"))),
        "attributes": (flatten(ra.get("attributes")), flatten(rb.get("attributes"))),
        "metadata": (flatten(ra.get("metadata")), flatten(rb.get("metadata"))),
        "results": (flatten(ra.get("results")), flatten(rb.get("results"))),
        "seed": ({"seed": ra.get("seed")}, {"seed": rb.get("seed")}),
        "git": (_git(a, git_diff_a), _git(b, git_diff_b)),
        "packages": (_mapping(_mapping(ea).get("packages")), _mapping(_mapping(eb).get("packages"))),
        "env": (_mapping(_mapping(ea).get("env")), _mapping(_mapping(eb).get("env"))),
        "machine": (_machine(_mapping(ea)), _machine(_mapping(eb))),
        "python": (_python(_mapping(ea)), _python(_mapping(eb))),
    }
    return [d for section in SECTIONS for d in _compare(section, *pairs[section])]


def _read_diff(run_dir: Path, record: RunRecord) -> str | None:
    name = record.get("git_diff_file")
    if not name:
        return None
    try:
        return (run_dir / GIT_DIFF_FILE).read_text(errors="replace")
    except OSError:
        return None


def diff_runs(dir_a: Path, dir_b: Path) -> list[Difference]:
    """:func:`diff_records` of two run folders, reading their run.json and git.diff."""
    a, b = read_record(dir_a), read_record(dir_b)
    return diff_records(a, b, git_diff_a=_read_diff(dir_a, a), git_diff_b=_read_diff(dir_b, b))


def compare_artifacts(recorded: RunRecord, rerun: RunRecord | None) -> list[tuple[str, str, str]]:
    """``(name, verdict, detail)`` per artifact of ``recorded``: ``identical``, ``differs`` or ``missing``.

    Artifacts are matched by name and compared by content hash (run.json ``artifacts``); an artifact
    the re-run did not record, or either side could not hash, is ``missing``. An artifact only the
    re-run recorded is listed as ``differs`` (``new in the re-run``).
    """
    old = _mapping(_mapping(recorded).get("artifacts"))
    new = _mapping(_mapping(rerun).get("artifacts")) if rerun is not None else {}
    out: list[tuple[str, str, str]] = []
    for name in sorted(old):
        a, b = _mapping(old[name]), _mapping(new.get(name))
        if not b:
            out.append((name, "missing", "not recorded by the re-run"))
        elif not a.get("hash") or not b.get("hash"):
            out.append((name, "missing", str(b.get("error") or a.get("error") or "no content hash")))
        elif (a.get("hash"), a.get("hash_kind")) == (b.get("hash"), b.get("hash_kind")):
            out.append((name, "identical", f"{a.get('algorithm') or 'hash'} {str(a['hash'])[:16]}"))
        else:
            out.append((name, "differs", f"{str(a['hash'])[:16]} -> {str(b['hash'])[:16]}"))
    out.extend((name, "differs", "new in the re-run") for name in sorted(set(new) - set(old)))
    return out


def compare_results(recorded: RunRecord, rerun: RunRecord | None) -> list[tuple[str, str, str]]:
    """``(result key, verdict, detail)`` per recorded result (run.json ``results``, nested keys dotted)."""
    old = flatten(_mapping(recorded).get("results"))
    new = flatten(_mapping(rerun).get("results")) if rerun is not None else {}
    out: list[tuple[str, str, str]] = []
    for key in sorted(old):
        if key not in new:
            out.append((f"result {key}", "missing", "not recorded by the re-run"))
        elif new[key] == old[key]:
            out.append((f"result {key}", "identical", repr(old[key])))
        else:
            out.append((f"result {key}", "differs", f"{old[key]!r} -> {new[key]!r}"))
    return out
